"""Framing: window counts, zero padding, and independence from how the stream is blocked."""

from __future__ import annotations

import numpy as np
import pytest

from pulse.windows import WindowSpec, cut_too_short, frame_windows


def frames(signal: np.ndarray, spec: WindowSpec, block: int, max_windows: int = 3):
    blocks = [signal[i:i + block] for i in range(0, len(signal), block)]
    chunks = list(frame_windows(blocks, spec, max_windows))
    assert all(len(s) <= max_windows for s, _ in chunks)
    return np.concatenate([s for s, _ in chunks]), np.concatenate([w for _, w in chunks])


@pytest.mark.parametrize("n", [1, 5, 29, 30, 31, 47, 50, 51, 137])
@pytest.mark.parametrize("overlap_s", [0.0, 1.0, 2.5])
@pytest.mark.parametrize("min_len_s", [0.0, 1.0, 3.0])
def test_block_size_never_changes_the_windows(n, overlap_s, min_len_s):
    spec = WindowSpec.from_seconds(3.0, overlap_s, sample_rate=10, min_len_s=min_len_s)
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
    assert n > (starts[-2] + spec.window if len(starts) > 1 else 0)  # no window beyond what covers the file
    # Every window but the first holds at least min_len samples; the one after the last would not.
    assert (np.minimum(spec.window, n - starts[1:]) >= spec.min_len).all()
    assert starts[-1] + spec.window >= n or n - (starts[-1] + spec.hop) < spec.min_len


def test_short_tail_is_dropped_but_a_short_file_is_not():
    spec = WindowSpec.from_seconds(3.0, 0.0, sample_rate=100, min_len_s=1.0)
    assert frames(np.ones(302, np.float32), spec, block=64)[0].tolist() == [0]  # 20 ms tail: dropped
    assert frames(np.ones(400, np.float32), spec, block=64)[0].tolist() == [0, 300]  # 1 s tail: kept
    assert frames(np.ones(20, np.float32), spec, block=64)[0].tolist() == [0]  # a 0.2 s file is still analysed
    assert WindowSpec.from_seconds(3.0, 0.0, sample_rate=100).count(302) == 2  # min_len 0 covers every sample


def test_min_len_0_still_drops_a_tail_under_a_millisecond():
    """A 1-sample tail at 44.1 kHz was scored as the silence padding it and reported as "6.000-6.000"."""
    spec = WindowSpec.from_seconds(3.0, 0.0, 44100, min_len_s=0.0)
    assert [spec.count(6 * 44100 + tail) for tail in (1, 43, 44)] == [2, 2, 3]
    assert spec.count(1) == 1  # a file that short is still analysed: it is all the user gave


def test_short_clip_is_one_padded_window():
    spec = WindowSpec.from_seconds(3.0, 0.0, sample_rate=100)
    starts, windows = frames(np.ones(50, np.float32), spec, block=8)
    assert starts.tolist() == [0]
    assert windows.shape == (1, 300) and windows[0, :50].all() and not windows[0, 50:].any()


def test_window_spec_checks_overlap_and_min_len():
    assert WindowSpec.from_seconds(3.0, 1.5, 44100).hop == 66150
    with pytest.raises(ValueError, match="overlap"):
        WindowSpec.from_seconds(3.0, 3.0, 44100)
    with pytest.raises(ValueError, match="overlap"):
        WindowSpec.from_seconds(3.0, -1.0, 44100)
    with pytest.raises(ValueError, match="min_len"):
        WindowSpec.from_seconds(3.0, 0.0, 44100, min_len_s=-0.5)
    assert WindowSpec.from_seconds(0.5, 0.0, 100, min_len_s=1.0).min_len == 50  # short-window models: full windows


def test_overlap_in_tenths_of_a_second_gives_the_hop_it_names():
    """0.7 s x 44.1 kHz is 30869.999... in floating point: truncated, the hop came out a sample long and every
    window start drifted a sample further from the --overlap asked for."""
    assert WindowSpec.from_seconds(3.0, 0.7, 44100).hop == 3 * 44100 - 30870
    assert WindowSpec.from_seconds(3.0, 2.3, 48000).hop == 3 * 48000 - 110400


def test_a_broken_file_holding_exactly_min_len_is_analysed():
    """--min-len is the audio a window needs: a recording that breaks off after exactly that much holds it."""
    spec = WindowSpec.from_seconds(3.0, 0.0, 100, min_len_s=1.0)
    assert cut_too_short(1.0, "truncated", spec) == ""
    assert "not analysed" in cut_too_short(0.99, "truncated", spec)


def test_streamed_file_gives_the_same_windows_as_whole_file_decoding(tmp_path):
    import soundfile as sf

    from pulse.io import read_audio, stream_audio

    path = tmp_path / "field.flac"
    sf.write(path, (0.1 * np.random.default_rng(0).standard_normal(int(9.7 * 48000))).astype(np.float32), 48000)
    spec = WindowSpec.from_seconds(3.0, 1.0, 44100)
    whole = list(frame_windows([read_audio(path, 44100, block_s=100.0)], spec, max_windows=100))
    streamed = list(frame_windows(stream_audio(path, 44100, block_s=0.37), spec, max_windows=2))
    np.testing.assert_array_equal(np.concatenate([s for s, _ in streamed]), np.concatenate([s for s, _ in whole]))
    np.testing.assert_allclose(np.concatenate([w for _, w in streamed]), np.concatenate([w for _, w in whole]),
                               atol=1e-5)
    assert sum(len(s) for s, _ in whole) == spec.count(int(9.7 * 44100)) == 5
