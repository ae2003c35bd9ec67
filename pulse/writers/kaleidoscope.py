"""Kaleidoscope CSV: every detection of the run in the layout Wildlife Acoustics' Kaleidoscope imports.

Columns as BirdNET-Analyzer's `--rtype kaleidoscope` (minus its lat/lon/week/sensitivity, which PULSE
has no use for): INDIR is the folder above the recording's folder, FOLDER that folder's name, IN FILE
the file name, OFFSET and DURATION the detection in seconds (a window, or a run of them with
--merge-consecutive). The path is made absolute first, so INDIR is never empty and the table opens from
anywhere. DATE, TIME and HOUR, as Kaleidoscope names them, give when
the detection starts where the recording's start is known (`pulse.timestamps`: its name, or a WAV's GUANO or bext
chunk); empty otherwise.
"""

from __future__ import annotations

import os.path
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from export.atomic import write_text
from pulse.schema import Columns
from pulse.timestamps import recording_start
from pulse.writers import WRITERS, csv_text, rows

KALEIDOSCOPE_COLUMNS = ("INDIR", "FOLDER", "IN FILE", "OFFSET", "DURATION", "DATE", "TIME", "HOUR",
                        "scientific_name", "common_name", "confidence")


@WRITERS.register("kaleidoscope")
class KaleidoscopeWriter:
    suffix = "kaleidoscope.csv"
    table = "detections"
    per_file = False

    def write(self, table: Columns, path: Path) -> None:
        records = []
        started = lru_cache(maxsize=None)(recording_start)  # once per recording, not per detection
        for file, start, end, label, name, score in rows(table, ("file", "start_s", "end_s", "label", "common_name",
                                                                  "score")):
            folder, file_name = os.path.split(os.path.abspath(file))
            when = ("", "", "")
            if (recording := started(file)) is not None:
                at = recording + timedelta(seconds=float(start))
                when = (f"{at:%Y-%m-%d}", f"{at:%H:%M:%S}", at.hour)
            records.append((*os.path.split(folder), file_name, start, end - start, *when, label, name, score))
        write_text(path, csv_text(KALEIDOSCOPE_COLUMNS, records))
