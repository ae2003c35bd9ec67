"""When a recording started: from its file name, as recorders name each file by its start time, or else from a WAV's
own metadata (a file renamed, or a recorder that names files by number).

AudioMoth writes `20250701_213000.WAV`, Song Meters `SMA12345_20250701_213000.wav` (an SM3 that set its clock from
GPS `SM3_0+1_20250701$213000.wav`), Frontier Labs' BAR-LT `20250701T213000+1000_REC.flac`. All use the recorder's clock
(AudioMoth's is UTC unless configured otherwise), so `recording_start` gives times as named, without a time zone. A
WAV whose name holds no time may carry one: GUANO's `Timestamp` (Song Meters, most bat detectors; `guan` chunk), an
AudioMoth's comment (`LIST` chunk), or Broadcast WAV's origination date and time (Zoom, Tascam and Sound Devices
recorders; `bext` chunk). Those too are given as the clock read, a UTC offset after them left off, as Kaleidoscope's
DATE and TIME are local times. `stated_start` keeps the offset where the name (BAR-LT's `+1000`), GUANO (`-04:00`,
`Z`) or an AudioMoth's comment (`(UTC+1)`) gives one, for `pulse activity --timezone` to place the recording in time;
GUANO's or the comment's offset places a name's time too where the two times agree (`SMA12345_20250701_213000.wav`,
`Timestamp: 2025-07-01T21:30:00-04:00`), as a recorder names its files by the clock it stamps them with.

GUANO also says how fast a bat detector's file plays: a time-expansion detector (`TE: 10`) stores what it recorded at
384 kHz as 38.4 kHz, ten times slower; `pulse.io` reads such a file at its true rate, so songs and times are real.
"""

from __future__ import annotations

import math
import re
import string
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pulse.pieced import riff_chunks

# YYYYMMDD_HHMMSS, not inside a longer number, and a UTC offset +HHMM after it (BAR-LT)
_STAMP = re.compile(r"(?<!\d)(\d{8})[_T$-]?(\d{6})(?:([+-])(\d\d)(\d\d))?(?!\d)")
# how far a name's time may be from the one its metadata gives and still be of the same clock (a name's whole seconds)
SAME_CLOCK = timedelta(seconds=5)
CHUNK_READ = 1 << 16  # bytes of a guan or bext chunk read (GUANO writers may pre-allocate room)
# around GUANO's keys and values, NUL too: a detector may fill the room it set aside (GUANO|Size) with NUL bytes
GUANO_BLANKS = string.whitespace + "\0"
# bext: OriginationDate "yyyy-mm-dd" at byte 320, OriginationTime "hh:mm:ss" at 330; EBU Tech 3285 allows any of
# - _ : space . between the numbers
_BEXT_TIME = re.compile(rb"(\d{4})[-_:. ](\d\d)[-_:. ](\d\d)(\d\d)[-_:. ](\d\d)[-_:. ](\d\d)")
# an AudioMoth's comment (LIST/INFO ICMT), "Recorded at 21:00:00 24/02/2022 (UTC+1) by AudioMoth ...": its clock, the
# time zone it was set to as the firmware writes it, (UTC), (UTC-5), (UTC+5:30) or (UTC-0:30)
_AUDIOMOTH_TIME = re.compile(rb"Recorded at (\d\d:\d\d:\d\d \d\d/\d\d/\d{4}) \(UTC(?:([+-])(\d\d?)(?::(\d\d))?)?\)")


def recording_start(path: str | Path) -> datetime | None:
    """The start time in the file name, else in a WAV's GUANO or bext chunk, as the recorder's clock read (a UTC
    offset given left off); None when neither gives one (or an impossible date, or the file cannot be read)."""
    start = stated_start(path)
    return None if start is None else start.replace(tzinfo=None)


def stated_start(path: str | Path) -> datetime | None:
    """As `recording_start`, with the UTC offset where the name, GUANO or an AudioMoth's comment gives one (an aware
    datetime), without a time zone where none does: the recorder's clock, in a zone only its user knows. A name's
    own offset comes first; a name without one takes the offset of the time `metadata_start` gives (GUANO's before
    the comment's) where that time is the name's, within SAME_CLOCK: a recorder names its files by the clock it
    stamps them with, and a file renamed to another time says nothing of its name's zone."""
    match = _STAMP.search(Path(path).stem)
    if match is None:
        return metadata_start(path)
    date, time, sign, hours, minutes = match.groups()
    try:
        start = datetime.strptime(date + time, "%Y%m%d%H%M%S")
    except ValueError:
        return None
    if sign and int(hours) <= 14 and int(minutes) % 15 == 0:  # an offset; a counter like -0001 is none
        offset = timedelta(hours=int(hours), minutes=int(minutes))
        return start.replace(tzinfo=timezone(offset if sign == "+" else -offset))
    stated = metadata_start(path)
    if stated is None or abs(stated.replace(tzinfo=None) - start) > SAME_CLOCK:  # renamed, or named by another clock
        return start
    return start.replace(tzinfo=stated.tzinfo)


def metadata_start(path: str | Path) -> datetime | None:
    """The start time a WAV's GUANO `Timestamp` gives (with its UTC offset where it has one), else an AudioMoth's
    comment (with its offset), else its Broadcast WAV origination date and time; chunks before or after the samples.
    None for other files, and where none is there or makes sense."""
    found = _metadata_chunks(path)
    return (_guano_start(found.get(b"guan", b"")) or _audiomoth_start(found.get(b"LIST", b""))
            or _bext_start(found.get(b"bext", b"")))


def time_expansion(path: str | Path) -> float:
    """A WAV's GUANO `TE`, how many times slower than recorded its samples play at the rate its header gives; 1
    (GUANO's default) for other files, and where it is missing or not a positive number."""
    try:
        factor = float(_guano_fields(_metadata_chunks(path).get(b"guan", b"")).get("TE", 1))
    except ValueError:
        return 1.0
    return factor if math.isfinite(factor) and factor > 0 else 1.0


def _metadata_chunks(path: str | Path) -> dict[bytes, bytes]:
    """The first CHUNK_READ bytes of a WAV's first guan, bext and LIST chunks, before or after the samples; none of
    another file or one that cannot be read."""
    found = {}
    try:
        with open(path, "rb") as f:
            for name, first, length in riff_chunks(f):
                if name in (b"guan", b"bext", b"LIST") and name not in found:
                    f.seek(first)
                    found[name] = f.read(min(length, CHUNK_READ))
    except OSError:
        return {}
    return found


def _guano_fields(text: bytes) -> dict[str, str]:
    """A guan chunk's `key: value` lines (keys and values trimmed of GUANO_BLANKS; the first of a key kept)."""
    fields = {}
    for line in text.decode("utf-8", "replace").split("\n"):
        key, colon, value = line.partition(":")
        if colon:
            fields.setdefault(key.strip(GUANO_BLANKS), value.strip(GUANO_BLANKS))
    return fields


def _guano_start(text: bytes) -> datetime | None:
    """GUANO's `Timestamp: 2025-07-01T21:30:00-04:00` line (ISO 8601: local, UTC with Z, or with its UTC offset)."""
    try:
        return datetime.fromisoformat(_guano_fields(text)["Timestamp"])
    except (KeyError, ValueError):
        return None


def _bext_start(chunk: bytes) -> datetime | None:
    match = _BEXT_TIME.fullmatch(chunk[320:338])
    try:
        return datetime(*map(int, match.groups())) if match else None
    except ValueError:
        return None


def _audiomoth_start(chunk: bytes) -> datetime | None:
    """The time an AudioMoth's comment gives, with the UTC offset it states ("(UTC)" too: the clock was UTC)."""
    match = _AUDIOMOTH_TIME.search(chunk)
    if match is None:
        return None
    time, sign, hours, minutes = match.groups()
    offset = timedelta(hours=int(hours or 0), minutes=int(minutes or 0))
    try:
        return datetime.strptime(time.decode(), "%H:%M:%S %d/%m/%Y").replace(
            tzinfo=timezone(-offset if sign == b"-" else offset))
    except ValueError:  # an impossible date, or an offset of a day or more
        return None
