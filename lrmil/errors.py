"""errors.csv: one row per failed slide of this run (path, stage, error type, message), so a batch goes on.

A new log removes the previous run's file, so errors.csv never lists failures a rerun fixed; it is
rewritten atomically after every failure, so it is complete even if the job dies.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from export.atomic import error_line, write_text

log = logging.getLogger(__name__)
COLUMNS = ("path", "stage", "error_type", "message")


class ErrorLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: list[tuple[str, str, str, str]] = []
        self.path.unlink(missing_ok=True)

    @property
    def count(self) -> int:
        return len(self.rows)

    def summary(self) -> dict:
        """The run summary's error fields: how many failed and where they are listed ("" when none)."""
        return {"failed": self.count, "errors_csv": str(self.path) if self.count else ""}

    def add(self, item: str | Path, stage: str, exc: BaseException) -> None:
        # one line, whatever the library put in it; a file that cannot be written as `X: Is a directory`
        message = " ".join((error_line(exc) if isinstance(exc, OSError) else str(exc)).split())
        message = message.removeprefix(f"{item}: ")  # the path has its own column
        log.error("%s failed at %s: %s", item, stage, message, exc_info=log.isEnabledFor(logging.DEBUG))
        self.record(item, stage, type(exc).__name__, message)

    def record(self, item: str | Path, stage: str, error_type: str, message: str) -> None:
        """A row for a failure its caller has already logged in its own words (`write_left_out`)."""
        self.rows.append((str(item), stage, error_type, message))
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([COLUMNS, *self.rows])
        write_text(self.path, buffer.getvalue())


def leave_out(left_out: list[dict] | None, slide_id: str, path: str | Path, error_type: str, reason: str,
              where: str | Path | None = None, then: str = "slide skipped") -> None:
    """Say in one line that a training run goes on without a slide (naming `where`, by default `path`, and what it
    does `then`), and note it for `write_left_out` and the run's metrics ("left_out")."""
    log.error("%s: %s; %s", path if where is None else where, reason, then)
    if left_out is not None:
        left_out.append({"slide_id": slide_id, "path": str(path), "error_type": error_type, "reason": reason})


def write_left_out(path: str | Path, left_out: list[dict], stage: str) -> None:
    """A training run's errors.csv: the slides it left out, this run's only (as `lrmil extract`'s errors.csv)."""
    errors = ErrorLog(path)
    for slide in left_out:
        errors.record(slide["path"], stage, slide["error_type"], f"{slide['slide_id']}: {slide['reason']}")
