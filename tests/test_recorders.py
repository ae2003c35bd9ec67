"""Recorders other than AudioMoth: their WAV metadata chunks (GUANO, bext, wamd, iXML, LIST) and the start times
they give, built to the formats' layouts (GUANO specification 1.0; EBU Tech 3285 Broadcast WAV)."""

from __future__ import annotations

import io
import struct
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pulse.io import AudioReadError, audio_info, read_audio
from pulse.timestamps import recording_start, stated_start
from pulse.writers import WRITERS

RATE = 22050


def chunk(name: bytes, content: bytes) -> bytes:
    """A RIFF chunk, with the pad byte an odd length takes."""
    return name + struct.pack("<I", len(content)) + content + b"\0" * (len(content) % 2)


def wav_with_chunks(path: Path, samples: np.ndarray, before=(), after=(), rate: int = RATE) -> Path:
    """16-bit mono WAV with (id, content) chunks between fmt and data, and after data."""
    body = (b"WAVE" + chunk(b"fmt ", struct.pack("<HHIIHH", 1, 1, rate, 2 * rate, 2, 16))
            + b"".join(chunk(*c) for c in before) + chunk(b"data", samples.astype("<i2").tobytes())
            + b"".join(chunk(*c) for c in after))
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def guano(**fields: str) -> bytes:
    """A guan chunk's text: `key: value` lines (Song Meters write `Timestamp` with the recorder's UTC offset)."""
    lines = {"GUANO|Version": "1.0", "Make": "Wildlife Acoustics, Inc.", "Model": "Song Meter SM4", **fields}
    return "\n".join(f"{key}: {value}" for key, value in lines.items()).encode()


def bext(date: bytes, time: bytes) -> bytes:
    """A bext chunk as a Zoom recorder writes it: description, originator, reference, OriginationDate (byte 320),
    OriginationTime (330), time reference, version, UMID, loudness, reserved, coding history (odd length here)."""
    fixed = b"ZOOM H5".ljust(256, b"\0") + b"ZOOM H5".ljust(32, b"\0") + bytes(32) + date + time
    return fixed + struct.pack("<QH", 0, 1) + bytes(64 + 10 + 180) + b"A=PCM,F=22050,W=16,M=mono,T=ZOOM H5;\r\n\0"


@pytest.fixture()
def samples() -> np.ndarray:
    t = np.arange(RATE) / RATE
    return (8000 * np.sin(2 * np.pi * 3000 * t)).astype(np.int16)


def test_a_wav_name_without_a_time_gives_its_guano_or_bext_start(tmp_path, samples):
    """A Song Meter file renamed by its user, a Zoom's ZOOM0001.WAV: the start time is in the file, not its name.
    GUANO before or after the samples, odd lengths padded; the clock as read, a UTC offset or Z left off."""
    ixml = (b"iXML", b"<?xml version=\"1.0\"?><BWFXML><IXML_VERSION>1.5</IXML_VERSION></BWFXML>")
    info = (b"LIST", b"INFO" + chunk(b"ISFT", b"ZOOM H5\0"))
    wamd = (b"wamd", b"\x01\x00\x02\x00SM4")  # older Wildlife Acoustics metadata, passed over
    files = {
        "site3_night1.wav": ([wamd, (b"guan", guano(Timestamp="2025-07-01T21:30:00-04:00"))], []),
        "renamed_after.wav": ([], [(b"guan", guano(Timestamp="2025-07-01T01:30:00.250Z", Samplerate="22050"))]),
        "ZOOM0001.WAV": ([(b"bext", bext(b"2025-07-01", b"21:30:00")), ixml], [info]),
        "TASCAM_0001.wav": ([(b"bext", bext(b"2025:07:01", b"21.30.00"))], []),
        "SD_0001.wav": ([(b"bext", bext(b"2025.07.01", b"21_30_00"))], []),  # any of - _ : space . between
        "spaced.wav": ([(b"guan", guano(**{"Timestamp ": " 2025-07-01T21:30:00"}))], []),  # whitespace trimmed
        # saved again by an audio editor, which wrote its own bext (the edit's time): GUANO's is the recording's
        "edited.wav": ([(b"bext", bext(b"2025-08-15", b"10:00:00"))],
                       [(b"guan", guano(Timestamp="2025-07-01T21:30:00"))]),
    }
    expected = {"site3_night1.wav": "2025-07-01 21:30:00", "renamed_after.wav": "2025-07-01 01:30:00",
                "ZOOM0001.WAV": "2025-07-01 21:30:00", "TASCAM_0001.wav": "2025-07-01 21:30:00",
                "SD_0001.wav": "2025-07-01 21:30:00", "spaced.wav": "2025-07-01 21:30:00",
                "edited.wav": "2025-07-01 21:30:00"}
    plain = read_audio(wav_with_chunks(tmp_path / "plain.wav", samples), RATE)
    for name, (before, after) in files.items():
        path = wav_with_chunks(tmp_path / name, samples, before, after)
        assert np.array_equal(read_audio(path, RATE), plain)  # the chunks are passed over, not read as sound
        assert f"{recording_start(path):%Y-%m-%d %H:%M:%S}" == expected[name]
    # for `pulse activity --timezone`, GUANO's offset (or Z) is kept; bext has none
    offsets = {name: stated_start(tmp_path / name).utcoffset() for name in files}
    assert offsets == {**dict.fromkeys(files), "site3_night1.wav": timedelta(hours=-4),
                       "renamed_after.wav": timedelta(0)}


def test_a_guano_block_filled_out_with_nul_bytes_gives_its_start(tmp_path, samples):
    """A detector that sets aside room for its GUANO (GUANO|Size) and fills what it leaves unused with NUL bytes,
    which the specification counts as whitespace: its Timestamp, the last line, was read with the NULs and the
    file had no start time (DATE and TIME empty in kaleidoscope.csv)."""
    text = guano(**{"GUANO|Size": "512", "Timestamp": "2025-07-01T21:30:00-04:00"}).ljust(512, b"\0")
    path = wav_with_chunks(tmp_path / "bat_0001.wav", samples, after=[(b"guan", text)])
    assert f"{recording_start(path):%Y-%m-%d %H:%M:%S}" == "2025-07-01 21:30:00"


@pytest.mark.parametrize("before", [
    [],
    [(b"guan", guano(Timestamp="not a time"))],
    [(b"guan", guano())],  # no Timestamp
    [(b"bext", bext(bytes(10), bytes(8)))],  # origination date and time left empty
    [(b"bext", bext(b"2025-13-01", b"21:30:00"))],
])
def test_no_start_time_where_the_metadata_gives_none(tmp_path, samples, before):
    assert recording_start(wav_with_chunks(tmp_path / "ZOOM0002.WAV", samples, before)) is None


def test_a_wav_whose_recorder_left_out_the_pad_byte_after_an_odd_chunk_is_read(tmp_path, samples):
    """RIFF pads an odd-length chunk with a zero byte; some recorders leave it out. Before the samples, libsndfile
    found no data chunk ("not readable as audio"); anywhere, the chunk walk lost its step and missed the GUANO
    start behind it. The chunks are found where the recorder put them, and the audio is the recording's."""
    unpadded_list = b"LIST" + struct.pack("<I", 19) + b"INFOISFT" + struct.pack("<I", 7) + b"Rec1.0\0"
    text = guano(Timestamp="2025-07-01T21:30:00", Serial="12")
    unpadded_guan = b"guan" + struct.pack("<I", len(text)) + text
    assert len(text) % 2
    plain = read_audio(wav_with_chunks(tmp_path / "plain.wav", samples), RATE)
    for name, (before, after) in {"list_before.wav": (unpadded_list, b""), "guan_before.wav": (unpadded_guan, b""),
                                  "list_after.wav": (b"", unpadded_list + chunk(b"guan", text))}.items():
        body = (b"WAVE" + chunk(b"fmt ", struct.pack("<HHIIHH", 1, 1, RATE, 2 * RATE, 2, 16)) + before
                + chunk(b"data", samples.astype("<i2").tobytes()) + after)
        path = tmp_path / name
        path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
        assert np.array_equal(read_audio(path, RATE), plain)
        assert recording_start(path) == (None if name == "list_before.wav" else datetime(2025, 7, 1, 21, 30))
    # written to a pipe: a RIFF size of 0xFFFFFFFF, "to the end of the file", that the pad put back cannot raise
    streamed = tmp_path / "streamed.wav"
    streamed.write_bytes(b"RIFF" + b"\xff" * 4 + (tmp_path / "list_before.wav").read_bytes()[8:])
    assert np.array_equal(read_audio(streamed, RATE), plain)


def rf64_with_chunks(path: Path, samples: np.ndarray, before=(), after=()) -> Path:
    """16-bit mono RF64 as libsndfile writes it (ds64 chunk, data size 0xFFFFFFFF), with (id, content) chunks
    before and after data, its ds64 RIFF size counting them."""
    written = io.BytesIO()
    sf.write(written, samples, RATE, format="RF64", subtype="PCM_16")
    at = written.getvalue().index(b"data\xff\xff\xff\xff")
    body = bytearray(written.getvalue()[:at] + b"".join(chunk(*c) for c in before) + written.getvalue()[at:]
                     + b"".join(chunk(*c) for c in after))
    assert body[:4] == b"RF64" and body[12:16] == b"ds64"
    body[20:28] = struct.pack("<Q", len(body) - 8)
    path.write_bytes(body)
    return path


def test_an_rf64_wav_gives_its_guano_or_bext_start_and_time_expansion(tmp_path, samples):
    """RF64, the WAV over 4 GiB (Sound Devices, Zoom, bat detectors on long nights), gives its chunks' sizes in a
    ds64 chunk: the chunk walk stopped at its first bytes, and such a file had no start time or time expansion."""
    plain = read_audio(wav_with_chunks(tmp_path / "plain.wav", samples), RATE)
    text = guano(Timestamp="2025-07-01T21:30:00")
    before = rf64_with_chunks(tmp_path / "before.wav", samples, before=[(b"guan", text)])
    after = rf64_with_chunks(tmp_path / "ZOOM0001.WAV", samples, after=[(b"bext", bext(b"2025-07-01", b"21:30:00"))])
    for path in (before, after):
        assert np.array_equal(read_audio(path, RATE), plain)
        assert recording_start(path) == datetime(2025, 7, 1, 21, 30)
    expanded = rf64_with_chunks(tmp_path / "D500X_0001.wav", samples, after=[(b"guan", guano(TE="2"))])
    assert (audio_info(expanded).sample_rate, audio_info(expanded).duration_s) == (2 * RATE, 0.5)


def test_a_time_expansion_recording_is_read_at_the_rate_it_was_recorded_at(tmp_path, samples):
    """A time-expansion bat detector (GUANO `TE: 10`) stores what it recorded at RATE as RATE / 10, ten times
    slower: it was analysed as a recording ten times longer, its songs a tenth of their pitch. Read at RATE, it is
    the recording itself."""
    expanded = wav_with_chunks(tmp_path / "D500X_0001.wav", samples, rate=RATE // 10,
                               after=[(b"guan", guano(Make="Pettersson", Model="D500X", TE="10"))])
    info = audio_info(expanded)
    assert (info.sample_rate, info.duration_s) == (RATE, 1.0)
    plain = wav_with_chunks(tmp_path / "plain.wav", samples)
    assert np.array_equal(read_audio(expanded, RATE), read_audio(plain, RATE))
    for te in ("1", "0", "-10", "ten", "nan", "inf"):  # the rate its header gives: not expanded, or no factor
        path = wav_with_chunks(tmp_path / f"te_{te}.wav", samples, after=[(b"guan", guano(TE=te))])
        assert audio_info(path).sample_rate == RATE
    # 22050 x 2.3 is 50714.99999999999 in floating point: the nearest Hz, not the one below
    decimal = wav_with_chunks(tmp_path / "te_2.3.wav", samples, after=[(b"guan", guano(TE="2.3"))])
    assert audio_info(decimal).sample_rate == 50715


def test_a_time_expansion_beyond_the_rates_read_says_so(tmp_path, samples):
    """A TE that puts the rate past 500 kHz failed with 'sample rate 882000 Hz is outside 8000-500000 Hz', where a
    player, soxi or the detector's software shows the header's 44100 Hz: the error says where the rate came from."""
    path = wav_with_chunks(tmp_path / "D500X_0001.wav", samples, rate=44100, after=[(b"guan", guano(TE="20"))])
    with pytest.raises(AudioReadError) as info:
        audio_info(path)
    assert info.value.reason == ("sample rate 882000 Hz (its header's 44100 Hz times its GUANO time expansion, "
                                 "TE: 20) is outside 8000-500000 Hz")


def test_a_file_that_is_no_wav_or_gone_has_no_metadata_start(tmp_path, samples):
    sf.write(tmp_path / "REC0001.flac", samples, RATE)
    assert recording_start(tmp_path / "REC0001.flac") is None
    assert recording_start(tmp_path / "gone.wav") is None


def test_the_file_name_comes_first(tmp_path, samples):
    """A Song Meter's name and its GUANO agree; a name that gives a time is not second-guessed, and where GUANO's
    time is another (a file renamed, or named by another clock), its offset says nothing of the name's."""
    path = wav_with_chunks(tmp_path / "S4U12345_20250701_213000.wav", samples,
                           [(b"guan", guano(Timestamp="2024-01-01T00:00:00+00:00"))])
    assert f"{recording_start(path):%Y-%m-%d %H:%M:%S}" == "2025-07-01 21:30:00"
    assert stated_start(path) == datetime(2025, 7, 1, 21, 30)


def test_a_song_meters_name_takes_the_utc_offset_its_guano_states_for_the_same_time(tmp_path, samples):
    """A Song Meter names its files by the clock its GUANO `Timestamp` gives with the UTC offset; the name's time
    was left without it, so `pulse activity --timezone` needed --clock-timezone for what the file says. GUANO's
    offset comes before an AudioMoth-style comment's, as its time does for a file named otherwise."""
    comment = (b"LIST", b"INFO" + chunk(b"ICMT", b"Recorded at 21:30:00 01/07/2025 (UTC+1) by AudioMoth 24F319"))
    files = {
        "SMA12345_20250701_213000.wav": [(b"guan", guano(Timestamp="2025-07-01T21:30:00-04:00"))],
        "S4U12345_20250701_213000.wav": [(b"guan", guano(Timestamp="2025-07-01T21:30:00.250Z"))],  # its fraction
        "SMA12345_20250701$213000.wav": [(b"guan", guano(Timestamp="2025-07-01T21:30:00-04:00")), comment],
        "SMA12345_20250701_213003.wav": [(b"guan", guano(Timestamp="2025-07-01T21:30:00"))],  # no offset stated
    }
    for name, before in files.items():
        wav_with_chunks(tmp_path / name, samples, before)
    assert {name: stated_start(tmp_path / name).isoformat() for name in files} == {
        "SMA12345_20250701_213000.wav": "2025-07-01T21:30:00-04:00",
        "S4U12345_20250701_213000.wav": "2025-07-01T21:30:00+00:00",
        "SMA12345_20250701$213000.wav": "2025-07-01T21:30:00-04:00",
        "SMA12345_20250701_213003.wav": "2025-07-01T21:30:03"}
    assert recording_start(tmp_path / "SMA12345_20250701_213000.wav") == datetime(2025, 7, 1, 21, 30)  # as named
    # renamed to another night's time, or an hour off (named by a clock GUANO's is not): the name's time, no offset
    for name in ("SMA12345_20250702_213000.wav", "SMA12345_20250701_223000.wav", "SMA12345_20250701_213006.wav"):
        path = wav_with_chunks(tmp_path / name, samples, [(b"guan", guano(Timestamp="2025-07-01T21:30:00-04:00"))])
        assert stated_start(path).tzinfo is None


def test_kaleidoscope_dates_a_zoom_recording_from_its_bext_chunk(tmp_path, samples):
    path = wav_with_chunks(tmp_path / "ZOOM0001.WAV", samples, [(b"bext", bext(b"2025-07-01", b"23:59:58"))])
    table = {"file": np.array([str(path)], object), "channel": np.array([1]), "start_s": np.array([3.0]),
             "end_s": np.array([6.0]), "low_hz": np.array([500.0]), "high_hz": np.array([11025.0]),
             "label": np.array(["Gryllus campestris"], object), "common_name": np.array(["Field Cricket"], object),
             "code": np.array(["GRYCAM"], object), "score": np.array([0.9])}
    WRITERS.create("kaleidoscope").write(table, tmp_path / "kaleidoscope.csv")
    row = (tmp_path / "kaleidoscope.csv").read_text().splitlines()[1]
    assert row == (f"{tmp_path.parent},{tmp_path.name},ZOOM0001.WAV,3.0000,3.0000,2025-07-02,00:00:01,0,"
                   "Gryllus campestris,Field Cricket,0.9000")


def test_the_chunk_walk_stops_at_samples_a_header_never_announced(tmp_path):
    """A WAV whose header was never finished (data size 0) has its samples where the walk looks for the next chunk:
    a silent night, read as chunks of no length, was walked 8 bytes at a time through gigabytes. No chunk id there
    is four printable characters, so the walk ends at them."""
    from pulse.pieced import riff_chunks
    from tests.test_io import unfinished

    path = tmp_path / "night.wav"
    sf.write(path, np.zeros(RATE, np.int16), RATE, subtype="PCM_16")
    unfinished(path)
    with open(path, "rb") as f:
        assert [name for name, _, _ in riff_chunks(f)] == [b"fmt ", b"data"]
