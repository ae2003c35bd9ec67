"""`detections.csv`: every detection of the run in one table, with BirdNET-Analyzer's CSV columns."""

from __future__ import annotations

from pathlib import Path

from export.atomic import write_text
from pulse.schema import Columns
from pulse.writers import WRITERS, csv_text, rows

CSV_COLUMNS = {"start_s": "Start (s)", "end_s": "End (s)", "label": "Scientific name",
               "common_name": "Common name", "score": "Confidence", "file": "File"}


@WRITERS.register("csv")
class DetectionsCsvWriter:
    suffix = "detections.csv"
    table = "detections"
    per_file = False

    def write(self, table: Columns, path: Path) -> None:
        write_text(path, csv_text(CSV_COLUMNS.values(), rows(table, tuple(CSV_COLUMNS))))
