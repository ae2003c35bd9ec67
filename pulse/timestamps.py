"""When a recording started, from its file name: recorders name each file by its start time.

AudioMoth writes `20250701_213000.WAV`, Song Meters `SMA12345_20250701_213000.wav` (an SM3 that set its clock from
GPS `SM3_0+1_20250701$213000.wav`), Frontier Labs' BAR-LT `20250701T213000+1000_REC.flac`. All use the recorder's clock
(AudioMoth's is UTC unless configured otherwise), so times are given as named, without a time zone.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

_STAMP = re.compile(r"(?<!\d)(\d{8})[_T$-]?(\d{6})(?!\d)")  # YYYYMMDD_HHMMSS, not inside a longer number


def recording_start(path: str | Path) -> datetime | None:
    """The start time in the file name, or None when it holds none (or an impossible date)."""
    match = _STAMP.search(Path(path).stem)
    if match is None:
        return None
    try:
        return datetime.strptime("".join(match.groups()), "%Y%m%d%H%M%S")
    except ValueError:
        return None
