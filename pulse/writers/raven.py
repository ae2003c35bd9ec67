"""Raven Pro selection table, one per recording, with BirdNET-Analyzer's columns and layout.

Begin Path is absolute: Raven opens the recording from it, wherever the table is opened from (the field app
writes the uploaded file's name instead: the server's copy of it means nothing to the user).
A tab or line break in a text cell (Linux allows both in a file name) is written as `\\t`, `\\n`: the table has
no quoting, and one such name split its rows into cells that Raven read as other columns.
"""

from __future__ import annotations

import os.path
from pathlib import Path

import numpy as np

from export.atomic import write_text
from pulse.schema import Columns
from pulse.writers import WRITERS, rows

RAVEN_COLUMNS = ("Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
                 "High Freq (Hz)", "Common Name", "Species Code", "Confidence", "Begin Path", "File Offset (s)")


@WRITERS.register("raven")
class RavenWriter:
    suffix = ".pulse.selection.table.txt"
    table = "detections"
    per_file = True

    def __init__(self, absolute_paths: bool = True):
        self.absolute_paths = absolute_paths

    def write(self, table: Columns, path: Path) -> None:
        write_text(path, self.text(table))

    def text(self, table: Columns, offsets: np.ndarray | None = None) -> str:
        """The table; `offsets`: where each row's recording begins in a sequence of recordings, which shifts its
        Begin and End Time (File Offset stays the time in its recording) and adds Raven's Begin File column."""
        lines = ["\t".join(RAVEN_COLUMNS + (() if offsets is None else ("Begin File",)))]
        begin_path = os.path.abspath if self.absolute_paths else str
        columns = ("channel", "start_s", "end_s", "low_hz", "high_hz", "common_name", "code", "score", "file")
        shifts = np.zeros(len(table["file"])) if offsets is None else offsets
        for i, ((channel, start, end, low, high, name, code, score, file), at) in enumerate(
                zip(rows(table, columns), shifts), start=1):
            cells = (i, "Spectrogram 1", channel, _num(at + start), _num(at + end), _num(low), _num(high), _cell(name),
                     _cell(code), f"{score:.4f}", _cell(begin_path(file)), _num(start))
            lines.append("\t".join(map(str, cells if offsets is None else (*cells, _cell(os.path.basename(file))))))
        return "\n".join(lines) + "\n"


_ESCAPES = str.maketrans({"\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _cell(text: str) -> str:
    """Text as one cell of a table without quoting (see the module docstring)."""
    return text.translate(_ESCAPES)


def _num(value: float) -> str:
    """Seconds and hertz without float noise, to 3 decimals (a millisecond: finer than any window hop), always with a
    decimal point as Raven writes them: crowsetta's Raven reader refused a column of whole numbers ("0", "3")."""
    text = f"{value:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text
