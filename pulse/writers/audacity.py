"""Audacity label track, one per recording: `start<TAB>end<TAB>label`, importable via File > Import > Labels."""

from __future__ import annotations

from pathlib import Path

from export.atomic import write_text
from pulse.schema import Columns
from pulse.writers import WRITERS, rows


@WRITERS.register("audacity")
class AudacityWriter:
    suffix = ".pulse.results.txt"
    table = "detections"
    per_file = True

    def write(self, table: Columns, path: Path) -> None:
        lines = [f"{start:.3f}\t{end:.3f}\t{name}, {score:.4f}\n"
                 for start, end, name, score in rows(table, ("start_s", "end_s", "common_name", "score"))]
        write_text(path, "".join(lines))
