"""Kaleidoscope CSV: every detection of the run in the layout Wildlife Acoustics' Kaleidoscope imports.

Columns as BirdNET-Analyzer's `--rtype kaleidoscope` (minus its lat/lon/week/sensitivity, which PULSE
has no use for): INDIR is the folder above the recording's folder, FOLDER that folder's name, IN FILE
the file name, OFFSET and DURATION the window in seconds.
"""

from __future__ import annotations

import os.path
from pathlib import Path

import pandas as pd

from export.atomic import atomic_path
from pulse.writers import WRITERS


@WRITERS.register("kaleidoscope")
class KaleidoscopeWriter:
    suffix = "kaleidoscope.csv"
    table = "detections"
    per_file = False

    def write(self, table: pd.DataFrame, path: Path) -> None:
        folder_and_name = [os.path.split(file) for file in table["file"]]
        indir_and_folder = [os.path.split(folder) for folder, _ in folder_and_name]
        out = pd.DataFrame({
            "INDIR": [indir for indir, _ in indir_and_folder], "FOLDER": [folder for _, folder in indir_and_folder],
            "IN FILE": [name for _, name in folder_and_name],
            "OFFSET": table["start_s"].to_numpy(), "DURATION": (table["end_s"] - table["start_s"]).to_numpy(),
            "scientific_name": table["label"].to_numpy(), "common_name": table["common_name"].to_numpy(),
            "confidence": table["score"].to_numpy(),
        })
        with atomic_path(path) as tmp:
            out.to_csv(tmp, index=False, float_format="%.4f")
