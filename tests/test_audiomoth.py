"""AudioMoth triggered recordings (T.WAV) read on the night's clock: each marker is the silence it stands for; and
the UTC offset of the clock an AudioMoth names its files by, which only its comment states."""

from __future__ import annotations

import struct
from datetime import datetime, timedelta

import numpy as np
import pytest
import soundfile as sf

from pulse.io import audio_info, open_audio, read_audio
from pulse.timestamps import recording_start, stated_start

RATE = 48000
HEADER_SAMPLES = 244  # an AudioMoth's 488-byte header overwrites the first buffer's first samples
FIRST = 188 * 256 - HEADER_SAMPLES  # ~1 s of song: the firmware writes whole 512-byte units, header included
SECOND = 188 * 256
TRIGGERED = (b"Recorded at 21:00:00 01/07/2024 (UTC) by AudioMoth 24F3190361DA5E28 at medium gain while battery was "
             b"4.2V and temperature was 20.1C. Amplitude threshold was 0.1% with 0s minimum trigger duration.")


def audiomoth_wav(path, data: np.ndarray, comment: bytes = TRIGGERED, rate: int = RATE) -> None:
    """A WAV laid out as the AudioMoth firmware writes it: RIFF, fmt, LIST/INFO (ICMT 384, IART 32), data."""
    info = (b"INFO" + b"ICMT" + struct.pack("<I", 384) + comment.ljust(384, b"\0")
            + b"IART" + struct.pack("<I", 32) + b"AudioMoth 24F3190361DA5E28".ljust(32, b"\0"))
    samples = data.astype("<i2").tobytes()
    body = (b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16)
            + b"LIST" + struct.pack("<I", len(info)) + info + b"data" + struct.pack("<I", len(samples)) + samples)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def marker(units: int) -> np.ndarray:
    """The firmware's 512-byte marker for `units` x 256 samples left out: the count in +-1, LSB first, then 0s."""
    return np.array([1 if units >> i & 1 else -1 for i in range(32)] + [0] * 224, np.int16)


def burst(samples: int, freq: float, seed: int) -> np.ndarray:
    t = np.arange(samples) / RATE
    noise = np.random.default_rng(seed).standard_normal(samples)
    return (8000 * np.sin(2 * np.pi * freq * t) + 300 * noise).astype(np.int16)


@pytest.fixture()
def night(tmp_path):
    """~1 s of song, 10 s left out, ~1 s of another, 20 s left out, 0.5 s: ~32.5 s of night in ~2.5 s of file.
    Markers sit where the firmware puts them, 512-byte aligned in the file."""
    data = np.concatenate([burst(FIRST, 3000, 1), marker(10 * RATE // 256), burst(SECOND, 6000, 2),
                           marker(20 * RATE // 256), burst(RATE // 2, 4000, 3)])
    path = tmp_path / "20240701_210000T.WAV"
    audiomoth_wav(path, data)
    return path, data


def peak_hz(audio: np.ndarray) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(audio)))) * RATE / len(audio)


def test_a_triggered_file_is_as_long_as_the_night_it_spans(night):
    path, data = night
    assert sf.info(str(path)).frames == len(data)  # what the file holds: 2.5 s
    info = audio_info(path)
    expected = len(data) + (10 * RATE - 256) + (20 * RATE - 256)
    assert info.frames == expected and info.duration_s == pytest.approx(32.5, abs=0.01)
    assert info.warning == ""  # a file as the recorder meant it, not a damaged one: no errors.csv row


def test_each_song_is_at_its_time_in_the_night_and_the_left_out_stretches_are_silence(night):
    path, data = night
    audio = read_audio(path, RATE)
    scale = 1 / 32768
    second = FIRST + 10 * RATE  # the second song starts after the first and the 10 s left out
    np.testing.assert_array_equal(audio[:FIRST], data[:FIRST] * np.float32(scale))
    assert not audio[FIRST:second].any()
    after_marker = data[FIRST + 256:FIRST + 256 + SECOND]
    np.testing.assert_array_equal(audio[second:second + SECOND], after_marker * np.float32(scale))
    assert peak_hz(audio[second:second + SECOND]) == pytest.approx(6000, abs=2)
    assert not audio[second + SECOND:second + SECOND + 20 * RATE].any()
    assert peak_hz(audio[-RATE // 2:]) == pytest.approx(4000, abs=3)


def test_a_seek_lands_on_the_nights_sample(night):
    """`pulse segments` cuts clips at detection times, training reads windows: both seek."""
    path, _ = night
    info = audio_info(path)
    whole = read_audio(path, RATE)
    for position in (100, FIRST + 5 * RATE, FIRST + 10 * RATE + 300, info.frames - 1000):
        with open_audio(path, position, info) as f:
            np.testing.assert_array_equal(f.read(800, dtype="int16") * np.float32(1 / 32768),
                                          whole[position:position + 800])


def test_a_sound_dying_into_digital_silence_between_units_is_not_a_marker(tmp_path):
    """The firmware writes markers only at the file's 512-byte boundaries (whole units from byte 0), and the
    Configuration App looks nowhere else. A sound fading through +1 into digital silence (a DC-blocked input gone
    flat) elsewhere is 32 samples of +-1 and 224 zeros too: read as a marker it was 265 days of silence."""
    path = tmp_path / "20240701_210000T.WAV"
    fade = np.concatenate([np.ones(40, np.int16), np.zeros(300, np.int16)])  # from FIRST + 100: between units
    data = np.concatenate([burst(FIRST + 100, 3000, 1), fade, burst(72, 3000, 2), marker(10 * RATE // 256),
                           burst(SECOND, 6000, 3)])
    audiomoth_wav(path, data)
    info = audio_info(path)
    assert info.left_out.tolist() == [[FIRST + 512, 10 * RATE]]  # the marker at the next boundary is still one
    assert info.frames == len(data) + 10 * RATE - 256
    audio = read_audio(path, RATE)
    np.testing.assert_array_equal(audio[FIRST + 100:FIRST + 440], fade * np.float32(1 / 32768))


@pytest.mark.parametrize("units", [2**23 + 1, 2**31, 2**32 - 1])
def test_a_unit_that_would_make_the_night_longer_than_a_recording_can_be_is_sound(tmp_path, units):
    """The firmware counts what it leaves out towards the 4 GiB it ends a file at (2^31 samples, 2^23 units): a
    unit at a boundary that reads as more is sound that looks like a marker (all +1 is a fade into digital silence),
    read as it is, not as months of silence; the markers before and after it are still put back."""
    path = tmp_path / "20240701_210000T.WAV"
    data = np.concatenate([burst(FIRST, 3000, 1), marker(10 * RATE // 256), burst(SECOND, 6000, 2),
                           marker(units), burst(SECOND, 5000, 3), marker(2**22), burst(RATE // 2, 4000, 4)])
    audiomoth_wav(path, data)
    info = audio_info(path)
    last = FIRST + 256 + SECOND + 256 + SECOND
    assert info.left_out.tolist() == [[FIRST, 10 * RATE], [last, 2**22 * 256]]
    assert info.frames == len(data) + 10 * RATE - 256 + (2**22 - 1) * 256
    with open_audio(path, FIRST + 10 * RATE + SECOND, info) as f:  # the unit, in the night
        np.testing.assert_array_equal(f.read(256, dtype="int16"), marker(units))


@pytest.mark.parametrize("unit", [
    np.array([-1] * 32 + [0] * 224, np.int16),  # a fade through -1 into digital silence: a count of 0
    np.concatenate([marker(10 * RATE // 256)[:32], [5], np.zeros(223, np.int16)]).astype(np.int16),  # sound at 32
])
def test_a_unit_at_a_boundary_that_only_looks_like_a_marker_is_sound(tmp_path, unit):
    """A marker counts at least one unit left out and has 224 zeros after its count: a unit at a boundary that
    counts none, or has sound right after its 32 +-1 samples, is audio, read as it is and not taken out of the night."""
    path = tmp_path / "20240701_210000T.WAV"
    data = np.concatenate([burst(FIRST, 3000, 1), unit, burst(SECOND, 6000, 2), marker(10 * RATE // 256),
                           burst(RATE // 2, 4000, 3)])
    audiomoth_wav(path, data)
    info = audio_info(path)
    assert info.left_out.tolist() == [[FIRST + 256 + SECOND, 10 * RATE]]
    assert info.frames == len(data) + 10 * RATE - 256
    with open_audio(path, FIRST, info) as f:
        np.testing.assert_array_equal(f.read(256, dtype="int16"), unit)


def test_an_audiomoth_file_without_a_trigger_is_read_as_it_is(tmp_path):
    """Continuous recordings are not searched (it reads the whole file): a marker-like run stays as recorded."""
    path = tmp_path / "20240701_210000.WAV"
    data = np.concatenate([burst(RATE, 3000, 1), marker(100), burst(RATE, 3000, 2)])
    audiomoth_wav(path, data, comment=TRIGGERED.split(b" Amplitude")[0])
    info = audio_info(path)
    assert (info.frames, info.left_out.tolist(), info.raw_data) == (len(data), [], ())


@pytest.mark.parametrize("trigger", [
    b" Amplitude threshold was 10.",  # firmware 1.4-1.5
    b" Amplitude threshold was -40 dB with 2s minimum trigger duration.",  # 1.6 on
    b" Frequency trigger (4.0kHz and window length of 128 samples) threshold was 1.0% with 0s minimum trigger"
    b" duration. Band-pass filter with frequencies of 1.0kHz and 8.0kHz applied.",  # 1.8 on
])
def test_each_firmwares_trigger_comment_is_recognised(tmp_path, trigger):
    path = tmp_path / "20240701_210000T.WAV"
    data = np.concatenate([burst(FIRST, 3000, 1), marker(100), burst(RATE, 3000, 2)])
    comment = (b"Recorded at 21:00:00 01/07/2024 (UTC+10:30) during deployment 0123456789ABCDEF using external "
               b"microphone at low gain while battery was 3.6V and temperature was -1.5C." + trigger)
    audiomoth_wav(path, data, comment=comment)
    assert audio_info(path).left_out.tolist() == [[FIRST, 100 * 256]]


def test_a_continuous_recording_in_a_folder_named_for_a_trigger_is_read_as_it_is(tmp_path):
    """libsndfile's account of the chunks starts with the file's path: only the comment's line says whether a
    trigger was set."""
    folder = tmp_path / "amplitude threshold and frequency trigger trials"
    folder.mkdir()
    path = folder / "20240701_210000.WAV"
    data = np.concatenate([burst(FIRST, 3000, 1), marker(100), burst(RATE, 3000, 2)])
    audiomoth_wav(path, data, comment=TRIGGERED.split(b" Amplitude")[0])
    info = audio_info(path)
    assert (info.frames, info.left_out.tolist(), info.raw_data) == (len(data), [], ())


def test_pulse_analyze_reports_a_song_at_its_time_in_the_night(tmp_path):
    """The bundled default on a real field cricket recorded after 60 s the AudioMoth left out: detected from 60 s
    on, where a reader of the file as it is would put it at 1 s."""
    import pandas as pd
    import soxr

    from pulse.analyze import analyze
    from pulse.config import InferConfig

    recording, rate = sf.read("pulse/assets/examples/Gryllus_campestris_dat003-004.flac", dtype="float32")
    song = soxr.resample(recording[:6 * rate], rate, RATE)
    quiet = (np.random.default_rng(0).standard_normal(FIRST) * 30).astype(np.int16)
    data = np.concatenate([quiet, marker(60 * RATE // 256 - 1), (song * 16000).astype(np.int16)])
    folder = tmp_path / "card"
    folder.mkdir()
    audiomoth_wav(folder / "20240701_210000T.WAV", data)
    summary = analyze([folder], tmp_path / "out", InferConfig(min_conf=0.5))
    assert summary.files_done == 1 and not summary.errors
    assert summary.audio_s == pytest.approx(66 + FIRST / RATE, abs=0.01)
    found = pd.read_csv(tmp_path / "out" / "detections.csv")
    assert set(found["Scientific name"]) == {"Gryllus campestris"}
    assert found["Start (s)"].min() >= 60.0 - 3.0 + FIRST / RATE  # its first window can start in the silence


def test_a_cut_short_triggered_file_says_how_much_of_the_night_was_analysed(night):
    """A card pulled mid-write: the note gives the seconds analysed, the left-out stretches counted."""
    path, data = night
    path.write_bytes(path.read_bytes()[:-2000])  # the last 1000 samples of the last song
    info = audio_info(path)
    assert info.duration_s == pytest.approx((len(data) - 1000 + 30 * RATE - 512) / RATE)
    assert f"the {info.duration_s:.2f} s present were analysed" in info.warning
    assert len(read_audio(path, RATE)) == info.frames


def test_markers_are_searched_in_what_the_file_holds_when_it_shrank_since_its_header_was_read(night):
    """A card file cut while it is read: the search finds what is there (a mapped file would raise or crash),
    and the markers it gives cannot be changed by one reader under the others."""
    from pulse.audiomoth import left_out

    path, data = night
    markers = left_out(path, 488, len(data) + 10 * RATE)
    assert markers.tolist() == [[FIRST, 10 * RATE], [FIRST + 256 + SECOND, 20 * RATE]]
    with pytest.raises(ValueError):
        markers[0, 0] = 0


@pytest.mark.parametrize("zone, offset_h", [
    ("UTC", 0.0),  # the firmware's default: the clock is UTC, said so
    ("UTC+1", 1.0),  # set to a zone's standard time (the firmware has no DST)
    ("UTC-5", -5.0),
    ("UTC+5:30", 5.5),
    ("UTC-0:30", -0.5),  # under an hour west: the firmware writes -0 and the minutes
    ("UTC+12:45", 12.75),
])
def test_the_offset_an_audiomoths_comment_states_is_its_file_names(tmp_path, zone, offset_h):
    """The firmware names files by the clock of the time zone it was set to, which it states in the comment only:
    the name's time with the comment's offset places the recording in time, as a BAR-LT's name or GUANO does.
    The named time stays as it was (Kaleidoscope's DATE and TIME)."""
    comment = TRIGGERED.replace(b"(UTC)", f"({zone})".encode()).split(b" Amplitude")[0]
    audiomoth_wav(tmp_path / "20240701_210000.WAV", burst(RATE, 3000, 1), comment=comment)
    start = stated_start(tmp_path / "20240701_210000.WAV")
    assert (start.replace(tzinfo=None), start.utcoffset()) == (datetime(2024, 7, 1, 21), timedelta(hours=offset_h))
    assert recording_start(tmp_path / "20240701_210000.WAV") == datetime(2024, 7, 1, 21)


def test_a_renamed_audiomoth_file_takes_its_start_from_its_comment_and_a_names_offset_comes_first(tmp_path):
    comment = (b"Recorded at 21:00:05 01/07/2024 (UTC+10:30) during deployment 0123456789ABCDEF at medium gain while "
               b"battery was 4.2V and temperature was 20.1C.")
    for name in ("site4_night1.WAV", "20240701T210000+1000_REC.wav"):
        audiomoth_wav(tmp_path / name, burst(RATE, 3000, 1), comment=comment)
    assert stated_start(tmp_path / "site4_night1.WAV").isoformat() == "2024-07-01T21:00:05+10:30"
    assert stated_start(tmp_path / "20240701T210000+1000_REC.wav").isoformat() == "2024-07-01T21:00:00+10:00"
    # renamed to another time keeping its comment, which says nothing of that name's clock: the name's, no offset
    audiomoth_wav(tmp_path / "20240702_030000.WAV", burst(RATE, 3000, 1), comment=comment)
    assert stated_start(tmp_path / "20240702_030000.WAV") == datetime(2024, 7, 2, 3)
    # a comment that is none of an AudioMoth's, or an impossible date, states no offset
    for text in (b"Recorded at 21:00:00 01/07/2024 by Zoom H5", b"Recorded at 21:00:00 31/02/2024 (UTC+1) by"):
        audiomoth_wav(tmp_path / "20240701_210000.WAV", burst(RATE, 3000, 1), comment=text)
        assert stated_start(tmp_path / "20240701_210000.WAV") == datetime(2024, 7, 1, 21)
