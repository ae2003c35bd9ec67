"""Framing: window counts, zero padding, and independence from how the stream is blocked."""

from __future__ import annotations

import numpy as np
import pytest

from pulse.windows import WindowSpec, frame_windows


def frames(signal: np.ndarray, spec: WindowSpec, block: int, max_windows: int = 3):
    blocks = [signal[i:i + block] for i in range(0, len(signal), block)]
    chunks = list(frame_windows(blocks, spec, max_windows))
    assert all(len(s) <= max_windows for s, _ in chunks)
    return np.concatenate([s for s, _ in chunks]), np.concatenate([w for _, w in chunks])


@pytest.mark.parametrize("n", [1, 5, 29, 30, 31, 47, 50, 51, 137])
@pytest.mark.parametrize("overlap_s", [0.0, 1.0, 2.5])
def test_block_size_never_changes_the_windows(n, overlap_s):
    spec = WindowSpec.from_seconds(3.0, overlap_s, sample_rate=10)
    signal = np.arange(1, n + 1, dtype=np.float32)
    starts, windows = frames(signal, spec, block=10_000)
    for block in (1, 7, 30, 31):
        s, w = frames(signal, spec, block)
        np.testing.assert_array_equal(s, starts)
        np.testing.assert_array_equal(w, windows)
    assert len(starts) == spec.count(n)
    np.testing.assert_array_equal(starts, spec.hop * np.arange(len(starts)))
    # Every window holds exactly the samples at its position, zeros past the end.
    for start, window in zip(starts, windows):
        expected = np.zeros(spec.window, np.float32)
        part = signal[start:start + spec.window]
        expected[:len(part)] = part
        np.testing.assert_array_equal(window, expected)
    assert starts[-1] + spec.window >= n > (starts[-2] + spec.window if len(starts) > 1 else 0)


def test_short_clip_is_one_padded_window():
    spec = WindowSpec.from_seconds(3.0, 0.0, sample_rate=100)
    starts, windows = frames(np.ones(50, np.float32), spec, block=8)
    assert starts.tolist() == [0]
    assert windows.shape == (1, 300) and windows[0, :50].all() and not windows[0, 50:].any()


def test_window_spec_checks_overlap():
    assert WindowSpec.from_seconds(3.0, 1.5, 44100).hop == 66150
    with pytest.raises(ValueError, match="overlap"):
        WindowSpec.from_seconds(3.0, 3.0, 44100)
    with pytest.raises(ValueError, match="overlap"):
        WindowSpec.from_seconds(3.0, -1.0, 44100)
