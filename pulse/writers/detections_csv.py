"""`detections.csv`: every detection of the run in one table, with BirdNET-Analyzer's CSV columns."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from export.atomic import atomic_path
from pulse.writers import WRITERS

CSV_COLUMNS = {"start_s": "Start (s)", "end_s": "End (s)", "label": "Scientific name",
               "common_name": "Common name", "score": "Confidence", "file": "File"}


@WRITERS.register("csv")
class DetectionsCsvWriter:
    suffix = "detections.csv"
    table = "detections"
    per_file = False

    def write(self, table: pd.DataFrame, path: Path) -> None:
        out = table[list(CSV_COLUMNS)].rename(columns=CSV_COLUMNS)
        with atomic_path(path) as tmp:
            out.to_csv(tmp, index=False, float_format="%.4f")
