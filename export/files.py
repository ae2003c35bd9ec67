"""Which files in a folder given as input are inputs: shared by PULSE (recordings) and LRMIL (slides)."""

from __future__ import annotations

from pathlib import Path


def hidden(relative: Path) -> bool:
    """A dot name anywhere below the folder searched (macOS's ._ twins, .Trashes on SD cards and drives, an
    analysis's own .pulse): never an input."""
    return any(part.startswith(".") for part in relative.parts)
