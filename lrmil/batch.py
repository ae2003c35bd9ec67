"""The slide loop that `lrmil patch`, `extract` and `predict` share: one slide at a time, a bad one logged.

Outputs are named by slide id (the file stem, or a DICOM slide's folder name; slides of one name in different
folders with their folders' last names, `SlideIds`), so a slide whose id an earlier slide of the batch still holds
fails with a message naming both, instead of overwriting the first one's outputs. A run first removes the
temporaries a killed run left in --out (`export.folder_lock.sweep_killed_runs`: a heatmap, a feature file, megabytes
each), only those untouched for an hour: lrmil holds no lock on --out, as jobs that share one (a feature extraction
split over GPUs) must not lose the files they are writing. Progress is `export.progress`'s: a bar at a terminal, a
plain line a minute in a log file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

from export.atomic import fails_for_folder, stop_if_unwritable
from export.progress import progress
from lrmil.errors import ErrorLog
from lrmil.slide import SlideIds, SlideReadError

ERRORS_FILE = "errors.csv"
Result = TypeVar("Result")


def run_batch(slides: list[Path], work: Callable[[Path, str], Result], out: Path, stage: str, strict: bool,
              desc: str) -> tuple[list[Result], ErrorLog]:
    """`work(path, slide id)` for every slide; failures go to OUT/errors.csv (this run's only) unless `strict`. A full
    or read-only --out stops the batch (OutputUnwritable): each slide after it would be read and encoded in vain."""
    errors, ids, results = ErrorLog(Path(out) / ERRORS_FILE), SlideIds(slides), []
    with stop_if_unwritable(out), progress(slides, unit="slides", desc=desc) as bar:
        for path in bar:
            try:
                results.append(work(path, ids.claim(path)))
            except (SlideReadError, OSError, ValueError) as exc:
                if strict or fails_for_folder(exc):
                    raise
                errors.add(path, stage, exc)
    return results, errors
