"""Cut a stream of audio blocks into fixed analysis windows with their start sample.

Windows start every `hop` samples until the recording's end is covered; the last one (and the
only one, for clips shorter than a window) is zero-padded, so no clip is rejected for being
short. As in BirdNET-Analyzer (`--min_len`), a trailing window holding less than `min_len`
samples of audio is dropped unless it is the first: a window of 20 ms of audio and 2.98 s of
zeros says nothing about the recording and invites spurious detections. Even with `--min-len 0`
a tail needs MIN_TAIL_S of audio. The result does not depend on how the stream was blocked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from pulse.io import AudioInfo, AudioReadError, PartlyDecoded

# The tables' time resolution: a 1-sample tail was a "6.000-6.000" row, scored as the padding's silence.
MIN_TAIL_S = 0.001


@dataclass(frozen=True)
class WindowSpec:
    """Window, hop and shortest analysed tail in samples, from the model's window and the user's settings."""

    window: int
    hop: int
    sample_rate: int
    min_len: int = 0

    @classmethod
    def from_seconds(cls, window_s: float, overlap_s: float, sample_rate: int,
                     min_len_s: float = 0.0) -> "WindowSpec":
        if not 0 <= overlap_s < window_s:
            raise ValueError(f"overlap must be in [0, {window_s}) seconds, got {overlap_s}")
        if min_len_s < 0:
            raise ValueError(f"min_len must be at least 0 seconds, got {min_len_s}")
        window = int(round(window_s * sample_rate))  # a min_len beyond the window asks for full windows only
        return cls(window, max(1, window - int(round(overlap_s * sample_rate))), sample_rate,
                   int(round(min(max(min_len_s, MIN_TAIL_S), window_s) * sample_rate)))

    @property
    def min_len_s(self) -> float:
        return self.min_len / self.sample_rate

    def count(self, n_samples: int) -> int:
        """Windows analysed in `n_samples`: enough to cover them, less tails shorter than `min_len` (at least one)."""
        covering = 1 + math.ceil(max(0, n_samples - self.window) / self.hop)
        long_enough = (n_samples - self.min_len) // self.hop + 1 if n_samples >= self.min_len else 1
        return max(1, min(covering, long_enough))


def frame_windows(blocks: Iterable[np.ndarray], spec: WindowSpec,
                  max_windows: int = 64) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (start_samples [n], windows [n, window]) chunks of at most `max_windows` windows.

    A recording that breaks off (PartlyDecoded) is framed as if it ended there, its last window
    included, and the error is raised after that window: the caller learns of the break too.
    """
    buf = np.zeros(0, np.float32)
    offset = 0  # stream index of buf[0]
    next_start = 0
    broken = None
    try:
        for block in blocks:
            buf = np.concatenate([buf, block]) if len(buf) else np.asarray(block, np.float32)
            n_full = 0 if len(buf) < next_start - offset + spec.window else \
                (len(buf) - (next_start - offset) - spec.window) // spec.hop + 1
            if n_full:
                first = next_start - offset
                yield from _chunks(buf, first, n_full, next_start, spec, max_windows)
                next_start += n_full * spec.hop
            keep = next_start - offset  # samples no later window needs; never more than len(buf)
            buf, offset = buf[keep:], offset + keep
    except PartlyDecoded as exc:
        broken = exc
    total = offset + len(buf)
    n_tail = spec.count(total) - (next_start // spec.hop)
    if n_tail > 0:
        padded = np.zeros(next_start - offset + (n_tail - 1) * spec.hop + spec.window, np.float32)
        padded[:len(buf)] = buf
        yield from _chunks(padded, next_start - offset, n_tail, next_start, spec, max_windows)
    if broken is not None:
        raise broken


def _chunks(buf: np.ndarray, first: int, n: int, start: int, spec: WindowSpec,
            max_windows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    view = np.lib.stride_tricks.sliding_window_view(buf[first:], spec.window)[::spec.hop][:n]
    for i in range(0, n, max_windows):
        part = view[i:i + max_windows]
        starts = start + spec.hop * np.arange(i, i + len(part), dtype=np.int64)
        yield starts, np.ascontiguousarray(part)


def cut_too_short(seconds: float, reason: str, spec: WindowSpec) -> str:
    """Why a recording that breaks off after `seconds` is not analysed ("" if it holds `--min-len`).

    An intact clip shorter than a window is analysed, padded: it is what the user chose to give. The
    few milliseconds left of a broken file are not: 10 ms of noise padded to 3 s scored 0.56 Dark
    Bush-cricket with the bundled model.
    """
    return f"{reason}, under the {spec.min_len_s:g} s of audio a window needs (--min-len): not analysed" \
        if seconds < spec.min_len_s else ""


def refuse_truncated(path: Path, info: AudioInfo, spec: WindowSpec) -> None:
    """A file whose header promises more audio than it holds is analysed only if what it holds fills --min-len; one
    read whole all the same (an MP3 whose header misstated its length) is a clip like any other."""
    if info.warning and not info.whole and (
            short := cut_too_short(info.duration_s, f"truncated to {info.duration_s:.2f} s", spec)):
        raise AudioReadError(path, short)


def window_times(starts: list[np.ndarray], spec: WindowSpec, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (s) of every window; the last one ends where the recording (or what was read of it) ends."""
    starts_s = np.round(np.concatenate(starts) / spec.sample_rate, 6)
    return starts_s, np.round(np.minimum(starts_s + spec.window / spec.sample_rate, duration_s), 6)
