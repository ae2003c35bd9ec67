"""Gradio apps for the field (audio) and the lab (slides); they call the same functions as the CLIs."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from export.atomic import utf8_text

KEEP_OUTPUTS_S = 24 * 3600  # per-request output folders older than this are removed by later requests


def in_page_terms(exc: Exception, upload: str | Path) -> str:
    """The error as the page says it: its reason, and the uploaded file by its name, never the server's
    upload path (which means nothing to the user and tells a visitor about the server); a name that is not UTF-8
    escaped, as the page cannot carry it."""
    reason, name = getattr(exc, "reason", None) or str(exc), Path(upload).name
    reason = reason.replace(f"{upload}: ", "").replace(str(upload), name)
    return utf8_text(reason.replace(repr(str(upload))[1:-1], repr(name)[1:-1]))  # an OSError quotes it as repr


def prune_old_outputs(work_root: Path, prefix: str, max_age_s: float = KEEP_OUTPUTS_S) -> None:
    """A server left running for weeks would otherwise keep every request's images and tables."""
    cutoff = time.time() - max_age_s
    for folder in work_root.glob(f"{prefix}*"):
        if folder.is_dir() and folder.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
