"""The project's line length is 120: lines over it had crept into 64 files (155 lines) while nothing checked it."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINE = 120


def _python_files() -> list[Path]:
    """The tracked .py files; outside a git checkout (an unpacked sdist), those of the source folders."""
    try:
        listed = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
        return [ROOT / name for name in listed.stdout.splitlines()]
    except (OSError, subprocess.CalledProcessError):
        folders = ("apps", "bench", "export", "lrmil", "pulse", "tests")
        return [path for folder in folders for path in (ROOT / folder).rglob("*.py")]


def test_no_python_line_is_over_120_characters():
    files = _python_files()
    too_long = [f"{path.relative_to(ROOT)}:{number}: {len(line)} characters"
                for path in files if path.is_file()
                for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if len(line) > MAX_LINE]
    assert files and not too_long, "\n".join(too_long)
