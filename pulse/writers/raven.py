"""Raven Pro selection table, one per recording, with BirdNET-Analyzer's columns and layout."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from export.atomic import atomic_path
from pulse.writers import WRITERS

RAVEN_COLUMNS = ("Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
                 "High Freq (Hz)", "Common Name", "Species Code", "Confidence", "Begin Path", "File Offset (s)")


@WRITERS.register("raven")
class RavenWriter:
    suffix = ".pulse.selection.table.txt"
    table = "detections"
    per_file = True

    def write(self, table: pd.DataFrame, path: Path) -> None:
        rows = ["\t".join(RAVEN_COLUMNS)]
        for i, d in enumerate(table.itertuples(index=False), start=1):
            rows.append("\t".join(map(str, (
                i, "Spectrogram 1", d.channel, _num(d.start_s), _num(d.end_s), _num(d.low_hz), _num(d.high_hz),
                d.common_name, d.code, f"{d.score:.4f}", d.file, _num(d.start_s)))))
        with atomic_path(path) as tmp:
            tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")


def _num(value: float) -> str:
    """Seconds and hertz without float noise (3 decimals covers any sample period above 1 kHz)."""
    return f"{value:.3f}".rstrip("0").rstrip(".")
