"""MP3s whose header misstates their length are read whole (`pulse.mpeg`), and seek to the exact sample."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from pulse.io import audio_info, open_audio, read_audio
from pulse.mpeg import _frame

RATE = 44100


def song(seconds: float, freq: float, seed: int) -> np.ndarray:
    """A tone over noise whose level swells and fades, so that a VBR encoder's bitrate varies frame to frame."""
    t = np.arange(int(seconds * RATE)) / RATE
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return ((0.2 * np.sin(2 * np.pi * freq * t) + 0.1 * noise) * (1 + np.sin(2 * np.pi * 0.7 * t))).astype(np.float32)


def mp3(path, seconds: float, freq: float, seed: int = 0) -> bytes:
    sf.write(path, song(seconds, freq, seed), RATE, format="MP3")
    return path.read_bytes()


def without_tag(data: bytes) -> bytes:
    """The stream less its first frame, the LAME Info tag that gives its length (as some encoders write it)."""
    return data[_frame(data[:4])[0]:]


def peak_hz(audio: np.ndarray) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(audio[:RATE])))) * RATE / len(audio[:RATE])


def test_an_mp3_whose_header_is_right_is_read_as_libsndfile_reads_it(tmp_path):
    path = tmp_path / "a.mp3"
    mp3(path, 4.0, 3000)
    info = audio_info(path)
    assert (info.stated, info.warning, info.frames) == ((), "", sf.info(str(path)).frames)


@pytest.mark.parametrize("join", [
    lambda a, b: a + b,  # `cat a.mp3 b.mp3`: the first file's Info tag gives its own length only
    lambda a, b: without_tag(a) + without_tag(b),  # no tag: libsndfile estimates from the first frame's bitrate
    lambda a, b: (b"ID3\x04\x00\x00\x00\x00\x01\x00" + bytes(128) + a + b"TAG" + bytes(125)
                  + b"ID3\x04\x00\x00\x00\x00\x00\x20" + bytes(32) + b),  # each file with its ID3 tags
])
def test_joined_mp3s_are_read_to_the_end(tmp_path, join):
    first, second = mp3(tmp_path / "a.mp3", 4.0, 3000, 1), mp3(tmp_path / "b.mp3", 4.0, 6000, 2)
    path = tmp_path / "joined.mp3"
    path.write_bytes(join(first, second))
    assert len(sf.read(str(path))[0]) < 4.1 * RATE  # what libsndfile alone reads
    info = audio_info(path)
    assert 8.0 <= info.duration_s < 8.1  # each file's encoder delay and padding stay in the middle
    assert "frames hold 8.0" in info.warning and "all 8.0" in info.warning
    audio = read_audio(path, RATE)
    assert len(audio) == info.frames
    assert peak_hz(audio[RATE:]) == pytest.approx(3000, abs=2)
    assert peak_hz(audio[-RATE:]) == pytest.approx(6000, abs=2)  # the second file's song, at the end


def test_a_vbr_mp3_without_a_length_tag_is_read_to_the_end(tmp_path):
    path = tmp_path / "vbr.mp3"
    path.write_bytes(without_tag(mp3(tmp_path / "tagged.mp3", 6.0, 3000)))
    assert abs(sf.info(str(path)).duration - 6.0) > 0.5  # libsndfile's estimate from the first frame is off
    info = audio_info(path)
    assert 6.0 <= info.duration_s < 6.05
    assert len(read_audio(path, RATE)) == info.frames


def test_a_vbr_mp3_that_starts_silent_at_24_khz_is_read_to_the_end(tmp_path):
    """Its first frame, silence at 8 kbps, is 24 bytes: too small for the tag that states the length, which goes in a
    frame of a higher bitrate."""
    audio = np.repeat(song(3.0, 3000, 0)[:, None], 2, axis=1)
    audio[:RATE // 2] = 0
    sf.write(tmp_path / "tagged.mp3", audio, 24000, format="MP3")
    path = tmp_path / "vbr.mp3"
    path.write_bytes(without_tag((tmp_path / "tagged.mp3").read_bytes()))
    assert _frame(path.read_bytes()[:4])[0] == 24
    info = audio_info(path)
    assert len(audio) <= info.frames < len(audio) + 1200
    assert len(read_audio(path, 24000)) == info.frames


def test_a_short_mp3_whose_header_misstates_its_length_is_analysed_as_a_whole_clip(tmp_path):
    """A clip shorter than --min-len is padded and analysed when whole; only a recording that breaks off before it
    is refused. An untagged VBR MP3 of 0.8 s is read whole, to its last frame: it was refused as "truncated to
    0.82 s" (libsndfile alone had read 0.27 s of it, and analysed those)."""
    from pulse.windows import WindowSpec, refuse_truncated

    path = tmp_path / "clip.mp3"
    path.write_bytes(without_tag(mp3(tmp_path / "tagged.mp3", 0.8, 3000)))
    info = audio_info(path)
    assert info.stated and "frames hold 0.82 s" in info.warning  # still listed in errors.csv
    refuse_truncated(path, info, WindowSpec.from_seconds(3.0, 0.0, RATE, min_len_s=1.0))


@pytest.mark.parametrize("rate, channels, join", [
    (22050, 1, lambda a, b: a + b),  # another sample rate, each file with its Info tag
    (RATE, 2, lambda a, b: without_tag(a) + without_tag(b)),  # another channel count, no tags
])
def test_mp3s_of_different_formats_joined_say_what_was_not_read(tmp_path, rate, channels, join):
    """libmpg123 stops where the format changes: the first file's audio is analysed, and the rest named unread."""
    first = mp3(tmp_path / "a.mp3", 4.0, 3000, 1)
    second = np.repeat(song(4.0, 6000, 2)[:4 * rate, None], channels, axis=1)
    sf.write(tmp_path / "b.mp3", second, rate, format="MP3")
    path = tmp_path / "joined.mp3"
    path.write_bytes(join(first, (tmp_path / "b.mp3").read_bytes()))
    info = audio_info(path)
    assert 4.0 <= info.duration_s < 4.05
    assert info.warning.startswith("4.") and "MP3 frames follow its first 4.0" in info.warning
    assert "only the first 4.0" in info.warning
    assert len(read_audio(path, RATE)) == info.frames


def test_a_joined_mp3_over_4_gib_is_stated_as_far_as_its_tag_can(tmp_path, monkeypatch):
    """Days of recordings joined at 128 kbps: the byte count goes past the Info tag's 32 bits (libmpg123 only checks
    it against the file's size), the frame count does not."""
    from pulse import mpeg

    path = tmp_path / "joined.mp3"
    path.write_bytes(mp3(tmp_path / "a.mp3", 3.0, 3000, 1) + mp3(tmp_path / "b.mp3", 3.0, 6000, 2))
    walk = mpeg._frames

    def frames(f, position, size, stream):  # as if the last frame lay 5 GiB on, not written here
        yield from walk(f, position, size, stream)
        yield 5 << 30, 417

    monkeypatch.setattr(mpeg, "_frames", frames)
    start = mpeg.stated_start(path, audio_info(tmp_path / "a.mp3").frames)
    at = mpeg._tag_offset(start.head)
    assert start.head[at + 12:at + 16] == b"\xff\xff\xff\xff"


def test_seeks_in_a_joined_mp3_land_on_the_sample(tmp_path):
    """`pulse segments` and the training windows open a recording at a frame: the same samples as one read."""
    path = tmp_path / "joined.mp3"
    path.write_bytes(mp3(tmp_path / "a.mp3", 3.0, 3000, 1) + mp3(tmp_path / "b.mp3", 3.0, 6000, 2))
    info = audio_info(path)
    with open_audio(path, 0, info) as f:
        whole = f.read(dtype="float32")
    for position in (1000, 2 * RATE, 4 * RATE, 5 * RATE):
        with open_audio(path, position, info) as f:
            np.testing.assert_allclose(f.read(4096, dtype="float32"), whole[position:position + 4096], atol=1e-6)


def test_a_truncated_mp3_is_still_said_to_be_truncated(tmp_path):
    """The tag promises more than the frames hold: cut short, not misstated (the audio there is analysed)."""
    path = tmp_path / "cut.mp3"
    data = mp3(tmp_path / "whole.mp3", 6.0, 3000)
    path.write_bytes(data[:len(data) // 2])
    info = audio_info(path)
    assert info.stated == () and info.duration_s > 5.9


def test_an_mp3_damaged_part_way_is_said_to_break_off_there(tmp_path):
    """4 KiB zeroed mid-file (more than libmpg123 resyncs across): its tag still gives the whole length, and the
    audio after the damage is not called another stream."""
    from pulse.io import PartlyDecoded, stream_audio

    path = tmp_path / "damaged.mp3"
    data = mp3(tmp_path / "whole.mp3", 4.0, 3000)
    path.write_bytes(data[:len(data) // 2] + bytes(4096) + data[len(data) // 2 + 4096:])
    info = audio_info(path)
    assert (info.stated, info.warning) == ((), "") and info.duration_s == pytest.approx(4.0)
    with pytest.raises(PartlyDecoded):
        list(stream_audio(path, RATE, 1.0, info=info))


def test_an_mp3_is_examined_once_per_version_however_many_windows_are_read(tmp_path, monkeypatch):
    """Training reads thousands of windows from each file: its frames are counted once, and again once changed
    (read as a training run reads its pool, well after the files were written: one written within RECENT_NS is
    examined each time)."""
    import os
    import time
    from types import SimpleNamespace

    from pulse import io as pulse_io
    from pulse.io import read_span

    path = tmp_path / "pool.mp3"
    mp3(path, 3.0, 3000)
    counted = []
    monkeypatch.setattr(pulse_io, "stated_start", lambda *args: counted.append(args) and None)
    monkeypatch.setattr(pulse_io, "time", SimpleNamespace(time_ns=lambda: time.time_ns() + 10 * pulse_io.RECENT_NS))
    for start_s in (0.0, 0.5, 1.0, 1.5):
        assert len(read_span(path, start_s, 1.0, RATE)) == RATE
    assert len(counted) == 1
    mtime_ns = path.stat().st_mtime_ns
    mp3(path, 5.0, 3000)
    os.utime(path, ns=(mtime_ns + 10**9, mtime_ns + 10**9))
    assert audio_info(path).duration_s == pytest.approx(5.0) and len(counted) == 2


@pytest.mark.parametrize("rate", [16000, 22050, 24000])
def test_a_tagged_mpeg2_mp3_of_any_length_is_read_as_libsndfile_reads_it(tmp_path, rate):
    """At MPEG-2 rates LAME's delay and padding come to as much as three 576-sample frames: measured against the
    tag's own frame count, not libsndfile's length, a whole file is never taken for a joined one."""
    for seconds in np.linspace(1.0, 2.0, 12):
        path = tmp_path / f"{seconds:.3f}.mp3"
        sf.write(path, song(seconds, 3000, 0)[::2], rate, format="MP3")
        info = audio_info(path)
        assert (info.stated, info.warning) == ((), ""), path.name


# libsndfile 1.2.2 garbled the start of an MP3's read after a seek (soundfile seeks after every read too) where a
# frame's data lay further back in the bit reservoir than libmpg123 starts again: the tests' 22.05 kHz song at
# libsndfile's default quality, and at the lowest quality, with a quiet stretch (frames at the lowest bitrate)
# before its loud part, a 24 kHz stereo MP3 (2 s back) and a 44.1 kHz one.
LOW_RATE_MP3S = [(22050, 1, {}), (24000, 2, {"compression_level": 0.99}), (RATE, 1, {"compression_level": 0.99})]


def low_rate_mp3(path, rate: int, channels: int, seconds: float = 13.0, **quality) -> np.ndarray:
    """The song at `rate` (its pitch scaled) and half its level (not clipped in a 16-bit clip), 1 s of it all but
    silent, written as an MP3 and read whole."""
    audio = 0.5 * song(seconds * RATE / rate, 1100, 3)[:int(seconds * rate)]
    audio[2 * rate:3 * rate] *= 0.001
    sf.write(path, np.stack([audio, np.roll(audio, 777)], axis=1)[:, :channels], rate, format="MP3", **quality)
    return sf.read(str(path), dtype="float32", always_2d=True)[0]


@pytest.mark.parametrize("rate, channels, quality", LOW_RATE_MP3S)
def test_a_low_rate_mp3_streams_the_samples_of_one_read(tmp_path, rate, channels, quality):
    path = tmp_path / "low.mp3"
    expected = low_rate_mp3(path, rate, channels, **quality).mean(axis=1)
    for block_s in (1.0, 10.0):  # float32's last bit differs by block; a garbled frame by 0.08-1
        np.testing.assert_allclose(read_audio(path, rate, block_s=block_s), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("rate, channels, quality", LOW_RATE_MP3S)
def test_training_windows_of_a_low_rate_mp3_are_its_samples(tmp_path, rate, channels, quality):
    from pulse.io import read_span

    path = tmp_path / "low.mp3"
    expected = low_rate_mp3(path, rate, channels, **quality).mean(axis=1)
    for start_s in np.linspace(0.01, 9.9, 13):
        first = int(round(start_s * rate))
        np.testing.assert_allclose(read_span(path, start_s, 3.0, rate), expected[first:first + 3 * rate],
                                   rtol=0, atol=1e-6, err_msg=f"from {start_s:.3f} s")


@pytest.mark.parametrize("make", [
    lambda path, a, b: path.write_bytes(a + b),  # stated: read through a first frame that states the length
    lambda path, a, b: path.write_bytes(without_tag(a) + without_tag(b)),
])
def test_reads_from_one_open_low_rate_mp3_back_and_forth_are_its_samples(tmp_path, make):
    """`pulse segments` reads its clips from one open file: forwards, backwards and into the second of two MP3s
    joined, any length."""
    from pulse.io import read_frames

    low_rate_mp3(tmp_path / "a.mp3", 22050, 1, 5.0)
    low_rate_mp3(tmp_path / "b.mp3", 22050, 1, 5.0, compression_level=0.99)
    path = tmp_path / "joined.mp3"
    make(path, (tmp_path / "a.mp3").read_bytes(), (tmp_path / "b.mp3").read_bytes())
    info = audio_info(path)
    assert info.stated
    with open_audio(path, 0, info) as f:
        expected = f.read(dtype="float32", always_2d=True)
    spans = np.random.default_rng(0).integers([0, 1], [info.frames, 30000], size=(40, 2))
    with open_audio(path, 0, info) as f:
        for first, count in spans.tolist():
            np.testing.assert_allclose(read_frames(f, info, first, count), expected[first:first + count],
                                       rtol=0, atol=1e-6, err_msg=f"{count} from {first}")


def test_clips_of_a_low_rate_mp3_are_its_samples(tmp_path):
    """Clips widened to 4 s around windows every 1.5 s are cut from one open file, each seeking back into the last;
    those after the quiet stretch seek forward past it."""
    import pandas as pd

    from pulse.analyze import analyze
    from pulse.config import InferConfig, SegmentConfig
    from pulse.segments import extract_segments
    from tests.test_analyze import level_meter_onnx

    rate, path = 22050, tmp_path / "low.mp3"
    expected = low_rate_mp3(path, rate, 1, compression_level=0.99)[:, 0]
    model = level_meter_onnx(tmp_path / "meter.onnx")
    analyze([path], tmp_path / "out", InferConfig(model=str(model), min_conf=0.5, overlap=1.5))
    summary = extract_segments(tmp_path / "out", tmp_path / "clips", SegmentConfig(seq_length=4.0))
    detections = pd.read_csv(tmp_path / "out" / "detections.csv")
    assert summary.clips_written == len(detections) > 5 and summary.clips_failed == 0
    columns = ["Start (s)", "End (s)", "Scientific name", "Confidence"]
    for begin, end, label, confidence in detections[columns].itertuples(index=False):
        (clip,) = (tmp_path / "clips" / label).glob(f"{confidence:.3f}_low_{begin:g}s.wav")
        first = int(round(min(max(0.0, (begin + end) / 2 - 2.0), len(expected) / rate - 4.0) * rate))
        # atol 2 / 2**15: a 16-bit WAV (libsndfile scales by 32767)
        np.testing.assert_allclose(sf.read(clip, dtype="float32")[0], expected[first:first + 4 * rate],
                                   rtol=0, atol=2 / 2**15, err_msg=clip.name)
