"""Cut a stream of audio blocks into fixed analysis windows with their start sample.

Windows start every `hop` samples until the recording's end is covered; the last one (and the
only one, for clips shorter than a window) is zero-padded, so every sample is analysed and
no clip is rejected for being short. The result does not depend on how the stream was blocked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np


@dataclass(frozen=True)
class WindowSpec:
    """Window and hop in samples, derived from the model's window and the user's overlap."""

    window: int
    hop: int
    sample_rate: int

    @classmethod
    def from_seconds(cls, window_s: float, overlap_s: float, sample_rate: int) -> "WindowSpec":
        if not 0 <= overlap_s < window_s:
            raise ValueError(f"overlap must be in [0, {window_s}) seconds, got {overlap_s}")
        window = int(round(window_s * sample_rate))
        return cls(window, max(1, window - int(round(overlap_s * sample_rate))), sample_rate)

    def count(self, n_samples: int) -> int:
        """Windows needed to cover `n_samples` (at least one)."""
        return 1 + math.ceil(max(0, n_samples - self.window) / self.hop)


def frame_windows(blocks: Iterable[np.ndarray], spec: WindowSpec,
                  max_windows: int = 64) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (start_samples [n], windows [n, window]) chunks of at most `max_windows` windows."""
    buf = np.zeros(0, np.float32)
    offset = 0  # stream index of buf[0]
    next_start = 0
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
    total = offset + len(buf)
    n_tail = spec.count(total) - (next_start // spec.hop)
    if n_tail > 0:
        padded = np.zeros(next_start - offset + (n_tail - 1) * spec.hop + spec.window, np.float32)
        padded[:len(buf)] = buf
        yield from _chunks(padded, next_start - offset, n_tail, next_start, spec, max_windows)


def _chunks(buf: np.ndarray, first: int, n: int, start: int, spec: WindowSpec,
            max_windows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    view = np.lib.stride_tricks.sliding_window_view(buf[first:], spec.window)[::spec.hop][:n]
    for i in range(0, n, max_windows):
        part = view[i:i + max_windows]
        starts = start + spec.hop * np.arange(i, i + len(part), dtype=np.int64)
        yield starts, np.ascontiguousarray(part)
