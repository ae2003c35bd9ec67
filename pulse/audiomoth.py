"""AudioMoth triggered recordings (`...T.WAV`): the silent stretches the recorder left out, found to be put back.

With an amplitude or frequency trigger, an AudioMoth writes only the buffers that triggered (and a few after);
each run of quiet buffers it leaves out becomes one 512-byte marker in the file: 32 samples of +1/-1 (the
count of 256-sample units left out, least significant bit first) and 224 zeros. The WAV is therefore shorter
than the night it spans, and a song 40 minutes into the night may sit 3 minutes into the file: read as is,
every time after the first quiet stretch is early. The AudioMoth Configuration App expands such files; this
module finds the markers so that `pulse.io` reads each as the silence it stands for and times are the night's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MARKER_SAMPLES = 256  # one 512-byte unit of 16-bit samples: a marker, and the unit it counts in
COUNT_BITS = 32
SCAN_SAMPLES = 1 << 22  # samples examined at a time (8 MB), so that memory does not grow with the file


def is_triggered(chunks: str) -> bool:
    """Whether libsndfile's account of a WAV's chunks (`SoundFile.extra_info`) shows an AudioMoth's with a trigger
    set, as its comment says ("Amplitude threshold was ...", "Frequency trigger ..."): only those files are
    searched for markers, which reads the whole file."""
    return "IART : AudioMoth" in chunks and ("threshold" in chunks or "trigger" in chunks)


def left_out(path: str | Path, first: int, frames: int) -> tuple[tuple[int, int], ...]:
    """(sample index, samples it stands for) of every marker in the 16-bit mono samples `frames` long from byte
    `first` of `path`, in order; the samples a marker stands for include its own 256."""
    data = np.memmap(path, dtype="<i2", mode="r", offset=first, shape=(frames,))
    found = []
    for start in range(0, frames - MARKER_SAMPLES + 1, SCAN_SAMPLES):
        chunk = np.asarray(data[start:start + SCAN_SAMPLES + MARKER_SAMPLES - 1])
        for at in _markers(chunk):
            bits = chunk[at:at + COUNT_BITS] > 0
            count = int(np.dot(bits, 1 << np.arange(COUNT_BITS, dtype=np.int64)))
            if count:
                found.append((start + int(at), count * MARKER_SAMPLES))
    return tuple(found)


def _markers(samples: np.ndarray) -> np.ndarray:
    """Where in `samples` a marker starts: 32 samples of +-1, then 224 zeros (never overlapping: a marker's
    zeros cannot start another). Positions whose ends fit are checked whole; in sound there are few."""
    ends = len(samples) - MARKER_SAMPLES + 1
    if ends <= 0:
        return np.zeros(0, np.int64)
    signed, silent = np.abs(samples) == 1, samples == 0
    fits = signed[:ends] & signed[COUNT_BITS - 1:COUNT_BITS - 1 + ends] & silent[COUNT_BITS:COUNT_BITS + ends]
    fits &= silent[MARKER_SAMPLES - 1:MARKER_SAMPLES - 1 + ends]
    return np.array([at for at in np.flatnonzero(fits) if signed[at:at + COUNT_BITS].all()
                     and silent[at + COUNT_BITS:at + MARKER_SAMPLES].all()], np.int64)
