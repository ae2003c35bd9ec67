"""`scores.csv`: every analysed window with every species' score, for users' own thresholds and evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from export.atomic import atomic_path
from pulse.writers import WRITERS

if TYPE_CHECKING:
    import pandas as pd


@WRITERS.register("scores")
class ScoresCsvWriter:
    suffix = "scores.csv"
    table = "scores"
    per_file = False

    def write(self, table: pd.DataFrame, path: Path) -> None:
        with atomic_path(path) as tmp:
            table.to_csv(tmp, float_format="%.5f", errors="backslashreplace")  # as write_text
