"""AudioMoth triggered recordings (`...T.WAV`): the silent stretches the recorder left out, found to be put back.

With an amplitude or frequency trigger, an AudioMoth writes only the buffers that triggered (and a few after);
each run of quiet buffers it leaves out becomes one 512-byte marker at a 512-byte boundary of the file: 32
samples of +1/-1 (the count of 256-sample units left out, least significant bit first) and 224 zeros. The WAV
is therefore shorter than the night it spans, and a song 40 minutes into the night may sit 3 minutes into the
file: read as is, every time after the first quiet stretch is early. The AudioMoth Configuration App expands such
files; this module finds the markers so that `pulse.io` reads each as the silence it stands for and times are the
night's.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

MARKER_SAMPLES = 256  # one 512-byte unit of 16-bit samples: a marker, and the unit it counts in
COUNT_BITS = 32
NIGHT_SAMPLES = (1 << 31) - 1  # the most a file spans: the firmware ends a recording at 4 GiB, left-out buffers counted
SCAN_SAMPLES = 1 << 22  # samples examined at a time (8 MB, whole units), so that memory does not grow with the file
_ARTIST = re.compile(r"^ *IART : AudioMoth ", re.MULTILINE)
_TRIGGER = re.compile(r"^ *ICMT : .*(?:threshold|trigger)", re.MULTILINE)  # the comment's line, not the file's path


def is_triggered(chunks: str) -> bool:
    """Whether libsndfile's account of a WAV's chunks (`SoundFile.extra_info`) shows an AudioMoth's with a trigger
    set, as its comment says ("Amplitude threshold was ...", "Frequency trigger ..."): only those files are
    searched for markers, which reads the whole file. Only those chunks' lines count: the account starts with the
    file's path, and a folder named for a threshold study is no trigger."""
    return bool(_ARTIST.search(chunks) and _TRIGGER.search(chunks))


def left_out(path: str | Path, first: int, frames: int) -> np.ndarray:
    """[markers, 2] int64: (sample index, samples it stands for) of every marker in the 16-bit mono samples
    `frames` long from byte `first` of `path`, in order; the samples a marker stands for include its own 256. An
    array, as it is kept for every file `pulse.io` has seen lately: a busy night's thousands of markers as tuples
    took ~120 bytes each.

    Only the file's 512-byte units are looked at, as the Configuration App does: the firmware writes whole units
    from byte 0 (its header over the start of the first buffer), so a marker starts at a multiple of 512. Between
    them, a sound dying away through +1 into digital silence would read as a marker of 2^32 units (265 days). At
    one, a unit that would take the night past `NIGHT_SAMPLES` is such a sound, not a marker: the firmware counts the
    buffers it leaves out towards the 4 GiB it stops a file at, so no count it wrote is over 2^23."""
    if first % 2:
        return np.zeros((0, 2), np.int64)  # not a file the firmware wrote (its header is 488 bytes)
    skip = -first // 2 % MARKER_SAMPLES  # the first sample at a 512-byte boundary of the file
    found, night = [], frames
    with open(path, "rb") as f:  # read, not mapped: a file cut short meanwhile gives fewer samples, not SIGBUS
        for start in range(skip, frames - MARKER_SAMPLES + 1, SCAN_SAMPLES):
            f.seek(first + 2 * start)
            chunk = np.frombuffer(f.read(2 * min(SCAN_SAMPLES, frames - start)), "<i2")
            units = chunk[:len(chunk) // MARKER_SAMPLES * MARKER_SAMPLES].reshape(-1, MARKER_SAMPLES)
            for unit in _markers(units):
                bits = units[unit, :COUNT_BITS] > 0
                count = int(np.dot(bits, 1 << np.arange(COUNT_BITS, dtype=np.int64)))
                if count and night + (count - 1) * MARKER_SAMPLES <= NIGHT_SAMPLES:
                    night += (count - 1) * MARKER_SAMPLES
                    found.append((start + int(unit) * MARKER_SAMPLES, count * MARKER_SAMPLES))
    markers = np.array(found, np.int64).reshape(-1, 2)
    markers.setflags(write=False)  # kept in pulse.io's cache and shared by every reader of the file
    return markers


def _markers(units: np.ndarray) -> np.ndarray:
    """Which rows of `units` (256 samples each) are markers: 32 samples of +-1, then 224 zeros. A row's first and
    last samples are checked first: in sound, few rows pass them."""
    maybe = np.flatnonzero((np.abs(units[:, 0]) == 1) & (units[:, -1] == 0))
    rows = units[maybe]
    whole = (np.abs(rows[:, :COUNT_BITS]) == 1).all(axis=1) & (rows[:, COUNT_BITS:] == 0).all(axis=1)
    return maybe[whole]
