"""Audacity label track, one per recording: `start<TAB>end<TAB>label`, importable via File > Import > Labels."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from export.atomic import atomic_path
from pulse.writers import WRITERS


@WRITERS.register("audacity")
class AudacityWriter:
    suffix = ".pulse.results.txt"
    table = "detections"
    per_file = True

    def write(self, table: pd.DataFrame, path: Path) -> None:
        lines = [f"{d.start_s:.3f}\t{d.end_s:.3f}\t{d.common_name}, {d.score:.4f}\n"
                 for d in table.itertuples(index=False)]
        with atomic_path(path) as tmp:
            tmp.write_text("".join(lines), encoding="utf-8")
