"""Manifests: CSV tables that list the audio a run uses, with paths relative to an audio root.

Two schemas (documented in data_manifests/README.md):
- labelled recordings: path, species (weak, clip-level), split, license, recordist, duration_s, sample_rate;
- unlabelled recordings (backgrounds, negatives, the unlabelled pool): path, split, license, source,
  duration_s, sample_rate.
Validation collects every problem (one line each) so a user fixes a manifest in one pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd

LABELLED_COLUMNS = ("path", "species", "split", "license", "recordist", "duration_s", "sample_rate")
UNLABELLED_COLUMNS = ("path", "split", "license", "source", "duration_s", "sample_rate")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message lists every problem, one per line."""


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest CSV as strings (numbers are parsed where used)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def is_labelled(frame: pd.DataFrame) -> bool:
    return "species" in frame.columns


def validate_manifest(frame: pd.DataFrame, audio_root: str | Path, labels: Iterable[str] | None = None,
                      splits: Iterable[str] = ("train", "validation"), name: str = "manifest") -> list[str]:
    """Every problem of a manifest as one readable line each; an empty list means it is usable.

    Checks: required columns, empty paths, duplicate paths, missing files under `audio_root`,
    species outside `labels` (labelled manifests), and each required split being non-empty.
    """
    required = LABELLED_COLUMNS if is_labelled(frame) else UNLABELLED_COLUMNS
    missing_cols = [c for c in required if c not in frame.columns]
    if missing_cols:
        return [f"{name}: missing column(s) {', '.join(missing_cols)} (expected {', '.join(required)})"]
    problems = []
    root = Path(audio_root)
    for row, path in enumerate(frame["path"], start=2):  # row 1 is the header
        if not path.strip():
            problems.append(f"{name}:{row}: empty path")
        elif not (root / path).is_file():
            problems.append(f"{name}:{row}: missing file {root / path}")
    for path, count in frame["path"].value_counts().items():
        if count > 1 and path.strip():
            problems.append(f"{name}: duplicate path {path} ({count} rows)")
    if labels is not None and is_labelled(frame):
        known = set(labels)
        for row, species in enumerate(frame["species"], start=2):
            if species not in known:
                problems.append(f"{name}:{row}: unknown species {species!r}")
    for split in splits:
        if not (frame["split"] == split).any():
            problems.append(f"{name}: split {split!r} is empty")
    return problems


def load_manifest(path: str | Path, audio_root: str | Path, labels: Iterable[str] | None = None,
                  splits: Iterable[str] = ("train", "validation")) -> pd.DataFrame:
    """Read and validate; raise ManifestError listing all problems if there are any."""
    frame = read_manifest(path)
    problems = validate_manifest(frame, audio_root, labels, splits, name=str(path))
    if problems:
        raise ManifestError("\n".join(problems))
    return frame


def select_split(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    return frame[frame["split"] == split].reset_index(drop=True)
