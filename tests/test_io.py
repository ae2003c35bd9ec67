"""Audio input: formats, rates, channels, streaming, and every kind of bad file."""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf

from pulse.discovery import find_audio
from pulse.io import AudioReadError, audio_info, read_audio, read_span, stream_audio

RATE = 44100


def tone(seconds: float, rate: int, freq: float = 3000.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x * (c + 1) / channels for c in range(channels)], axis=1) if channels > 1 else x


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".mp3", ".ogg"])
def test_formats_decode_to_model_rate(tmp_path, suffix):
    path = tmp_path / f"a{suffix}"
    sf.write(path, tone(2.0, 32000), 32000)
    audio = read_audio(path, RATE)
    assert audio.dtype == np.float32
    assert abs(len(audio) - 2 * RATE) < 0.03 * RATE  # lossy codecs add a little priming
    spectrum = np.abs(np.fft.rfft(audio[: RATE]))
    assert abs(np.argmax(spectrum) * RATE / RATE - 3000) < 5  # 1 s of audio: bins are 1 Hz apart


@pytest.mark.parametrize("suffix, fmt, subtype", [(".opus", "OGG", "OPUS"), (".caf", "CAF", "PCM_16")])
def test_opus_and_caf_are_read(tmp_path, suffix, fmt, subtype):
    path = tmp_path / f"a{suffix}"
    sf.write(path, tone(2.0, 48000), 48000, format=fmt, subtype=subtype)
    audio = read_audio(path, RATE)
    assert abs(len(audio) - 2 * RATE) < 0.03 * RATE
    assert abs(np.argmax(np.abs(np.fft.rfft(audio[: RATE]))) - 3000) < 5
    assert [p for p, _ in find_audio([tmp_path])] == [path]


@pytest.mark.parametrize("rate", [8000, 22050, 192000, 384000, 500000])
def test_any_rate_is_resampled(tmp_path, rate):
    path = tmp_path / "r.wav"
    sf.write(path, tone(1.0, rate, freq=1000.0), rate)
    audio = read_audio(path, RATE)
    assert len(audio) == RATE
    assert np.argmax(np.abs(np.fft.rfft(audio))) == 1000
    assert 0.25 < np.abs(audio[RATE // 4: -RATE // 4]).max() < 0.35  # amplitude kept


def test_channels_mixed_or_picked(tmp_path):
    path = tmp_path / "eight.wav"
    data = tone(0.5, RATE, channels=8)  # channel c has amplitude 0.3 * (c + 1) / 8
    sf.write(path, data, RATE, subtype="FLOAT")
    np.testing.assert_allclose(read_audio(path, RATE), data.mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(read_audio(path, RATE, channel=7), data[:, 7], atol=1e-6)
    with pytest.raises(AudioReadError, match="channel 8 requested but the file has 8"):
        read_audio(path, RATE, channel=8)


@pytest.mark.parametrize("fmt, channels", [("WAV", 1), ("WAV", 2), ("AIFF", 1), ("W64", 2)])
def test_16_bit_pcm_gives_libsndfiles_own_float_samples(tmp_path, fmt, channels):
    """16-bit PCM is read as integers and scaled in numpy (faster): every value as libsndfile's float read."""
    path = tmp_path / f"a.{fmt.lower()}"
    values = np.arange(-32768, 32768, dtype=np.int16)  # every 16-bit value, the extremes included
    data = np.stack([values, values[::-1]], axis=1)[:, :channels]
    sf.write(path, data, RATE, format=fmt, subtype="PCM_16")
    expected = sf.read(path, dtype="float32", always_2d=True)[0]
    blocks = list(stream_audio(path, RATE, block_s=0.3, channel=channels - 1))
    np.testing.assert_array_equal(np.concatenate(blocks), expected[:, channels - 1])
    np.testing.assert_array_equal(read_audio(path, RATE), expected.mean(axis=1))


@pytest.mark.parametrize("rate", [RATE, 48000])
def test_streaming_matches_whole_file(tmp_path, rate):
    path = tmp_path / "long.flac"
    rng = np.random.default_rng(0)
    sf.write(path, (0.1 * rng.standard_normal(int(7.3 * rate))).astype(np.float32), rate)
    whole = read_audio(path, RATE, block_s=100.0)
    blocks = list(stream_audio(path, RATE, block_s=0.37))
    assert max(len(b) for b in blocks) < 2 * 0.37 * RATE  # bounded by the block (plus resampler delay), not the file
    np.testing.assert_allclose(np.concatenate(blocks), whole, atol=1e-5)


class CountingPool(ThreadPoolExecutor):
    """A thread pool that counts the blocks submitted to it."""
    blocks = 0

    def submit(self, *args, **kwargs):
        self.blocks += 1
        return super().submit(*args, **kwargs)


def _decoded(path, block_s: float = 1.0, **kw) -> tuple[np.ndarray, str]:
    """Everything `stream_audio` yields before it stops, and how it stopped."""
    blocks, error = [], ""
    try:
        for block in stream_audio(path, RATE, block_s=block_s, **kw):
            blocks.append(block)
    except AudioReadError as exc:
        error = f"{type(exc).__name__}: {exc}"
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32), error


@pytest.mark.parametrize("damage", ["none", "cut", "garbled middle", "last frames gone", "real", "real at 48 kHz"])
def test_a_long_flac_decoded_on_several_threads_is_the_same_samples_and_errors(tmp_path, damage, request):
    """Blocks decoded at once on pool threads (each seeking to its start) give one reader's samples, and a file that
    breaks off stops where and as the one-thread reader stops."""
    path = tmp_path / "long.flac"
    if damage.startswith("real"):
        clip = request.getfixturevalue("shared_data") / "audio" / "insectset32" / "Gryllus_campestris" / \
            "Grylluscampestris_dat003-004.M.flac"
        audio, rate = sf.read(clip, dtype="float32")
        sf.write(path, audio, 48000 if "48" in damage else rate)  # resampled to the model's rate on the way
    else:
        sf.write(path, (0.1 * np.random.default_rng(0).standard_normal(20 * RATE)).astype(np.float32), RATE)
    data = path.read_bytes()
    half = len(data) // 2
    path.write_bytes({"cut": data[:half], "garbled middle": data[:half] + bytes(20000) + data[half + 20000:],
                      "last frames gone": data[:-5000]}.get(damage, data))
    one_thread = _decoded(path)
    with CountingPool(3) as pool:
        pooled = _decoded(path, pool=pool, ahead=3)
    assert pool.blocks >= 3  # the blocks were decoded on the pool, not by the one-thread reader
    np.testing.assert_array_equal(pooled[0], one_thread[0])
    assert pooled[1] == one_thread[1]
    said = {"cut": "truncated", "last frames gone": "truncated", "garbled middle": "damaged at"}.get(damage)
    assert said in one_thread[1] if said else one_thread[1] == ""


def _truncate(path, keep: float = 0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_wav_cut_short_is_read_as_far_as_it_goes(tmp_path):
    """A recorder whose battery died leaves a WAV whose header promises more than the file holds."""
    path = tmp_path / "battery.wav"
    sf.write(path, tone(2.0, RATE), RATE)
    _truncate(path)
    info = audio_info(path)
    assert info.duration_s == pytest.approx(1.0, abs=0.01)
    assert "truncated: header promises 176400 data bytes" in info.warning and "1.00 s present" in info.warning
    np.testing.assert_allclose(read_audio(path, RATE), tone(2.0, RATE)[: info.frames], atol=1e-4)
    sf.write(tmp_path / "whole.wav", tone(2.0, RATE), RATE)
    assert audio_info(tmp_path / "whole.wav").warning == ""


BAD_FILES = {
    "zero.wav": (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    "empty.wav": (lambda p: sf.write(p, np.zeros(0, np.float32), RATE), "zero-length"),
    "notes.flac": (lambda p: p.write_text("this is not audio at all\n" * 50), "not readable as audio"),
    "random.mp3": (lambda p: p.write_bytes(np.random.default_rng(1).bytes(5000)), "not readable as audio"),
    "notes.mp3": (lambda p: p.write_text("this is not audio at all\n" * 50), "not readable as audio (format not"),
    "cut.flac": (lambda p: (sf.write(p, tone(2.0, RATE), RATE), _truncate(p)), "truncated"),
    "cut.mp3": (lambda p: (sf.write(p, tone(4.0, RATE), RATE), _truncate(p)), "truncated"),
    "cut.ogg": (lambda p: (sf.write(p, tone(4.0, RATE), RATE), _truncate(p)), "truncated"),
    "nan.wav": (lambda p: sf.write(p, np.r_[tone(1.0, RATE), [np.nan]], RATE, subtype="FLOAT"), "NaN/Inf"),
    "inf.wav": (lambda p: sf.write(p, np.r_[[np.inf], tone(1.0, RATE)], RATE, subtype="FLOAT"), "NaN/Inf"),
    "slow.wav": (lambda p: sf.write(p, tone(1.0, 4000), 4000), "outside 8000-500000 Hz"),
    "missing.wav": (lambda p: None, "no such file"),
    "folder.wav": (lambda p: p.mkdir(), "a folder, not a file"),
    "phone.m4a": (lambda p: p.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(4000)),
                  "AAC (M4A) audio cannot be decoded here: convert it to WAV or FLAC (e.g. ffmpeg -i phone.m4a "
                  "phone.flac)"),
    "night.wac": (lambda p: p.write_bytes(b"WAac" + bytes(4000)), "convert it to WAV or FLAC with Wildlife Acoustics"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_raise_one_clear_error(tmp_path, name):
    make, reason = BAD_FILES[name]
    path = tmp_path / name
    make(path)
    with pytest.raises(AudioReadError) as err:
        read_audio(path, RATE)
    assert reason in err.value.reason
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_info_and_discovery(tmp_path):
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "sub" / "b.flac", tone(1.5, 32000), 32000)
    sf.write(tmp_path / "a.WAV", tone(0.5, RATE), RATE)
    (tmp_path / "readme.txt").write_text("skip me")
    (tmp_path / "sub" / "phone.m4a").write_bytes(bytes(100))  # found, to fail with how to convert it
    (tmp_path / ".hidden.wav").write_bytes(b"")
    (tmp_path / "._a.WAV").write_bytes(b"\x00\x05\x16\x07" * 1024)  # the AppleDouble twin macOS writes on exFAT cards
    (tmp_path / ".Trashes" / "501").mkdir(parents=True)
    sf.write(tmp_path / ".Trashes" / "501" / "deleted.wav", tone(0.5, RATE), RATE)  # a card's deleted recording
    found = find_audio([tmp_path], undecodable=True)  # as `pulse analyze` lists them, to fail each with a reason
    assert [str(rel) for _, rel in found] == ["a.WAV", "sub/b.flac", "sub/phone.m4a"]
    assert [str(rel) for _, rel in find_audio([tmp_path])] == ["a.WAV", "sub/b.flac"]  # calibration, training
    sf.write(tmp_path / "sub" / "phone.flac", tone(0.5, RATE), RATE)  # converted as the error said: the .m4a goes
    assert [str(rel) for _, rel in find_audio([tmp_path], undecodable=True)] == ["a.WAV", "sub/b.flac",
                                                                                 "sub/phone.flac"]
    info = audio_info(found[1][0])
    assert (info.sample_rate, info.channels, info.frames) == (32000, 1, 48000)
    assert info.duration_s == pytest.approx(1.5)


def test_windows_recycle_bins_and_system_folders_are_not_searched(tmp_path):
    """A recorder's drive used on Windows keeps deleted recordings in $RECYCLE.BIN, each as $R....WAV beside a few
    bytes of metadata named $I....WAV: the deleted recording was analysed and the metadata failed as a bad WAV."""
    sf.write(tmp_path / "20250701_213000.WAV", tone(0.5, RATE), RATE)
    for folder in ("$RECYCLE.BIN/S-1-5-21-1004", "RECYCLER/S-1-5-21-1004", "System Volume Information", "lost+found"):
        (tmp_path / folder).mkdir(parents=True)
        sf.write(tmp_path / folder / "$RQ1X2Y3.WAV", tone(0.5, RATE), RATE)
        (tmp_path / folder / "$IQ1X2Y3.WAV").write_bytes(bytes(544))
    assert [rel.as_posix() for _, rel in find_audio([tmp_path], undecodable=True)] == ["20250701_213000.WAV"]
    assert len(find_audio([tmp_path / "$RECYCLE.BIN"])) == 2  # given itself, it is searched


def test_a_users_folder_named_recycled_is_searched_unless_it_holds_a_recycle_bin(tmp_path):
    """A site called Recycled (a project on recycled habitats) was skipped in silence as Windows 95-XP's recycle
    bin, whose name it shares; a bin of theirs holds its index (INFO2) or a folder per user (S-1-5-21-...)."""
    for folder in ("Recycled", "sites/recycler", "card/RECYCLED", "drive/RECYCLER/S-1-5-21-1004"):
        (tmp_path / folder).mkdir(parents=True)
        sf.write(tmp_path / folder / "Dc1.WAV", tone(0.5, RATE), RATE)
    (tmp_path / "card" / "RECYCLED" / "INFO2").write_bytes(bytes(820))
    assert [rel.as_posix() for _, rel in find_audio([tmp_path])] == ["Recycled/Dc1.WAV", "sites/recycler/Dc1.WAV"]


def test_links_to_nothing_and_folders_that_cannot_be_listed_are_listed_to_fail_with_their_reason(tmp_path,
                                                                                              unlistable):
    """Last season linked in from an archive drive that is not mounted, a recording linked from it and a colleague's
    cards on a shared NAS (their folder, mode 700): all were passed over (the folders with a warning), and the run
    ended with exit status 0 as if every recording had been analysed. Found with the run's root user stripped of its
    power to read any folder; here os.scandir refuses, as it did."""
    for site in ("siteA", "siteB"):
        (tmp_path / site).mkdir()
        sf.write(tmp_path / site / "20250701_213000.WAV", tone(0.5, RATE), RATE)
    (tmp_path / "2024").symlink_to(tmp_path / "archive" / "2024")
    (tmp_path / "siteA" / "20250702_213000.WAV").symlink_to(tmp_path / "archive" / "x.WAV")
    (tmp_path / "siteA" / "notes.txt").symlink_to(tmp_path / "archive" / "notes.txt")  # passed over, as notes.txt is
    unlistable("siteB")
    found = dict((rel.as_posix(), path) for path, rel in find_audio([tmp_path]))
    assert list(found) == ["siteA/20250701_213000.WAV", "2024", "siteA/20250702_213000.WAV", "siteB"]
    with pytest.raises(AudioReadError, match=f"^{tmp_path / '2024'}: a link to .*2024, which is not there"):
        audio_info(found["2024"])
    with pytest.raises(AudioReadError, match="20250702_213000.WAV: a link to .*x.WAV, which is not there"):
        audio_info(found["siteA/20250702_213000.WAV"])
    with pytest.raises(AudioReadError, match=r"siteB: a folder that cannot be searched \(Permission denied\)"):
        audio_info(found["siteB"])
    assert [rel.as_posix() for _, rel in find_audio([tmp_path / "siteB"])] == ["siteB"]  # given itself


def test_discovery_gives_each_file_once_and_its_own_output_name(tmp_path):
    """Two recorder cards with the same timestamped names, a file given twice, g.ogg beside g.aiff."""
    for rel in ("AM01/20240701_220000.WAV", "AM02/20240701_220000.WAV", "AM02/other.wav", "mix/g.ogg", "mix/G.aiff"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        sf.write(tmp_path / rel, tone(0.1, 8000), 8000)
    found = find_audio([tmp_path / "AM01", tmp_path / "AM02", tmp_path / "AM02" / "other.wav"])
    assert [(p.relative_to(tmp_path).as_posix(), rel.as_posix()) for p, rel in found] == [
        ("AM01/20240701_220000.WAV", "AM01/20240701_220000.WAV"),
        ("AM02/20240701_220000.WAV", "AM02/20240701_220000.WAV"), ("AM02/other.wav", "other.wav")]
    assert [rel.as_posix() for _, rel in find_audio([tmp_path / "mix"])] == ["G_aiff.aiff", "g_ogg.ogg"]
    assert [rel.as_posix() for _, rel in find_audio([tmp_path])][:2] == ["AM01/20240701_220000.WAV",
                                                                        "AM02/20240701_220000.WAV"]


def test_cards_in_folders_of_the_same_name_keep_which_site_they_came_from(tmp_path):
    """Song Meter cards copied as site1/Data, site2/Data and given as `*/Data` (or AudioMoth cards as
    site*/deploy01): every clashing name was numbered, 20250701_213000_WAV_1 ... _2, in one folder, which site each
    came from lost. Now as many of the folders' last names as tell them apart; a drive's letter for a drive."""
    from pathlib import Path, PureWindowsPath

    from pulse.discovery import _distinct_output_names

    for site in ("north/site1", "south/site1", "site2"):
        (tmp_path / site / "Data").mkdir(parents=True)
        sf.write(tmp_path / site / "Data" / "20250701_213000.WAV", tone(0.1, 8000), 8000)
    sf.write(tmp_path / "site2" / "Data" / "20250702_213000.WAV", tone(0.1, 8000), 8000)
    found = find_audio([tmp_path / "north/site1/Data", tmp_path / "south/site1/Data", tmp_path / "site2/Data"])
    assert [rel.as_posix() for _, rel in found] == [
        "north/site1/Data/20250701_213000.WAV", "south/site1/Data/20250701_213000.WAV",
        "site2/Data/20250701_213000.WAV", "20250702_213000.WAV"]  # a name on one card only stays as it was
    two_readers = [(Path("20250701_213000.WAV"), PureWindowsPath(drive)) for drive in ("D:\\", "E:\\")]
    assert [rel.as_posix() for rel in _distinct_output_names(two_readers)] == [
        "D/20250701_213000.WAV", "E/20250701_213000.WAV"]


def test_output_folders_of_network_shares_and_nested_cards_are_told_apart():
    """Two cards shared from a NAS and given as \\\\nas\\card1 and \\\\nas\\card2 (Windows) have no folder names
    of their own, only their shares': the run ended in a KeyError. A folder whose names all end another's (/data/Data
    beside /mnt/usb/data/Data) and two told apart only by their first names keep them too."""
    from pathlib import Path, PurePosixPath, PureWindowsPath

    from pulse.discovery import _distinct_output_names

    def labelled(*folders):
        return [rel.as_posix() for rel in _distinct_output_names([(Path("x.WAV"), f) for f in folders])]

    assert labelled(PureWindowsPath("\\\\nas\\card1\\"), PureWindowsPath("\\\\nas\\card2\\")) == [
        "card1/x.WAV", "card2/x.WAV"]
    assert labelled(PurePosixPath("/data/Data"), PurePosixPath("/mnt/usb/data/Data")) == [
        "data/Data/x.WAV", "usb/data/Data/x.WAV"]
    assert labelled(PurePosixPath("/north/Data"), PurePosixPath("/south/Data")) == [
        "north/Data/x.WAV", "south/Data/x.WAV"]


def test_cards_in_folders_named_alike_but_for_case_keep_which_site_they_came_from(tmp_path):
    """north/Card and south/card (a card reader's CARD copied by hand twice) were told apart by Card and card alone,
    which a Mac's or Windows' file system takes for one folder: both were numbered, 20250701_213000_flac_1 and _2,
    which site each came from lost."""
    for site in ("north/Card", "south/card"):
        (tmp_path / site).mkdir(parents=True)
        sf.write(tmp_path / site / "20250701_213000.flac", tone(0.1, 8000), 8000)
    found = find_audio([tmp_path / "north/Card", tmp_path / "south/card"])
    assert [rel.as_posix() for _, rel in found] == ["north/Card/20250701_213000.flac",
                                                     "south/card/20250701_213000.flac"]


def test_blocks_decoding_ahead_hold_no_more_than_one_block_budget(tmp_path, monkeypatch):
    """A 384 kHz multichannel FLAC on many cores must not queue many big blocks at once: together they hold at most
    MAX_BLOCK_SAMPLES samples, two blocks at least."""
    import pulse.io

    path = tmp_path / "stereo.flac"
    sf.write(path, tone(10.0, RATE, channels=2), RATE)
    monkeypatch.setattr(pulse.io, "MAX_BLOCK_SAMPLES", 2 * RATE * 2)  # two 1 s stereo blocks
    with CountingPool(4) as pool:
        blocks = stream_audio(path, RATE, block_s=1.0, pool=pool, ahead=4)
        next(blocks)
        assert pool.blocks == 3  # two queued at the start, one more once the first was taken
        assert sum(len(b) for b in blocks) == 9 * RATE


def without_length(path) -> None:
    """Zero a FLAC's total sample count in its STREAMINFO, as an encoder writing to a pipe, or a recorder that
    stopped before closing the file, leaves it (the 36 bits end 26 bytes in)."""
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC"
    data[21] &= 0xF0
    data[22:26] = bytes(4)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("end", ["whole", "cut", "damaged"])
def test_a_flac_without_its_length_in_the_header_is_read_to_where_it_decodes(tmp_path, end):
    """libsndfile gives such a FLAC a length of 2**63 - 1 frames and its last read fails; seeks in it decode
    from the start. Counted once, it is read to where it stops decoding (also by a decoding pool, which then
    reads it in order), and the note says whether that is its end or a break."""
    path = tmp_path / "stream.flac"
    sf.write(path, (0.1 * np.random.default_rng(0).standard_normal(12 * RATE + 1234)).astype(np.float32), RATE)
    original = sf.read(path, dtype="float32")[0]
    without_length(path)
    data = path.read_bytes()
    if end == "cut":  # mid-frame, two thirds in
        path.write_bytes(data[:2 * len(data) // 3 + 7])
    elif end == "damaged":  # 3000 bytes zeroed a third in: the rest is lost, and said to be
        path.write_bytes(data[:len(data) // 3] + bytes(3000) + data[len(data) // 3 + 3000:])
    info = audio_info(path)
    assert info.counted and info.warning.startswith("the FLAC header does not give its length")
    if end == "whole":
        assert info.frames == len(original)
        assert info.warning.endswith(f"the {info.duration_s:.2f} s that decode were analysed")
    else:
        assert (7 if end == "cut" else 3) * RATE < info.frames < (9 if end == "cut" else 5) * RATE
        assert f"decoding stops at {info.duration_s:.2f} s (cut short or damaged there: flac decoder" in info.warning
    np.testing.assert_array_equal(read_audio(path, RATE, block_s=5.0), original[:info.frames])
    with ThreadPoolExecutor(2) as pool:
        audio, said = _decoded(path, block_s=1.0, pool=pool, ahead=2)
    assert said == "" and np.array_equal(audio, original[:info.frames])


def test_a_flac_without_its_length_that_ends_on_a_block_boundary_ends_without_a_word(tmp_path):
    """Its last block read whole, the next read finds the end: no seek may come first (such a FLAC cannot seek, or
    say where it stands, at its end), or a whole recording was listed as "corrupt or truncated" there too."""
    path = tmp_path / "stream.flac"
    sf.write(path, (0.1 * np.random.default_rng(0).standard_normal(6 * RATE)).astype(np.float32), RATE)
    original = sf.read(path, dtype="float32")[0]
    without_length(path)
    audio, said = _decoded(path, block_s=2.0)
    assert said == "" and np.array_equal(audio, original)


def unfinished(path) -> None:
    """Zero a WAV's RIFF and data sizes, as the header a recorder writes first and fills in on closing the file."""
    data = bytearray(path.read_bytes())
    first = data.index(b"data")
    data[4:8], data[first + 4:first + 8] = bytes(4), bytes(4)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("subtype, channels", [("PCM_16", 1), ("PCM_24", 2), ("FLOAT", 1), ("PCM_U8", 1)])
def test_a_wav_whose_header_was_never_finished_is_read_whole(tmp_path, subtype, channels):
    """libsndfile reads 0 frames from a WAV whose data chunk says 0 bytes (a recorder that stopped before closing
    the file): it used to fail as "zero-length". The bytes after the header are its samples, read raw."""
    path = tmp_path / "night.wav"
    sf.write(path, tone(3.0, RATE, channels=channels), RATE, subtype=subtype)
    original = sf.read(path, dtype="float32", always_2d=True)[0]
    unfinished(path)
    path.write_bytes(path.read_bytes()[:-channels])  # and a last frame cut short: dropped
    info = audio_info(path)
    assert info.frames == len(original) - 1 and info.warning == (
        "the WAV header was never finished (written to a pipe, or by a recorder that stopped before closing "
        "the file): the 3.00 s its data holds were analysed")
    np.testing.assert_array_equal(read_audio(path, RATE, block_s=0.7), original[:-1].mean(axis=1))
    np.testing.assert_array_equal(read_audio(path, RATE, channel=channels - 1), original[:-1, channels - 1])
    np.testing.assert_array_equal(read_span(path, 1.0, 0.5, RATE), original[RATE:RATE + RATE // 2].mean(axis=1))


def test_a_wav_from_a_pipe_is_read_whole_and_not_called_truncated(tmp_path):
    """An encoder writing to a pipe cannot go back to fill in the sizes: it writes 0xFFFFFFFF, "to the end of the
    file" (ffmpeg; older versions wrote 0 bytes: a header never finished). Not a recording cut short: nothing to
    say about it."""
    path = tmp_path / "pipe.wav"
    sf.write(path, tone(2.0, RATE), RATE, subtype="PCM_16")
    original = sf.read(path, dtype="float32")[0]
    data = bytearray(path.read_bytes())
    first = data.index(b"data")
    data[4:8], data[first + 4:first + 8] = b"\xff" * 4, b"\xff" * 4
    path.write_bytes(bytes(data))
    info = audio_info(path)
    assert (info.frames, info.warning) == (len(original), "")
    np.testing.assert_array_equal(read_audio(path, RATE), original)


def test_a_wav_over_4_gib_is_read_to_its_end(tmp_path):
    """A WAV's sizes are 32-bit: past 4 GiB (12.4 h of 48 kHz 16-bit mono) a plain WAV's data size wraps round
    and libsndfile read only the remainder, here 10 s of 12.4 h, without a word. (A sparse file: no 4 GiB on disk.)"""
    rate, held = 48000, (1 << 32) + 2 * 48000 * 10
    path = tmp_path / "long.wav"
    header = (b"RIFF" + ((36 + held) % (1 << 32)).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
              + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + rate.to_bytes(4, "little")
              + (2 * rate).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
              + b"data" + (held % (1 << 32)).to_bytes(4, "little"))
    last_second = (tone(1.0, rate) * 32767).astype("<i2")
    with open(path, "wb") as f:
        f.write(header)
        f.seek(len(header) + held - last_second.nbytes)
        f.write(last_second.tobytes())
    assert sf.info(path).frames == 10 * rate  # what libsndfile alone reads
    info = audio_info(path)
    assert info.frames == held // 2 and info.warning.startswith("over 4 GiB, more than a WAV header can say")
    np.testing.assert_allclose(read_span(path, info.duration_s - 1.0, 1.0, rate), last_second / 32768, atol=1e-6)


def test_a_finished_wav_with_no_samples_is_still_empty(tmp_path):
    """An empty data chunk followed by a LIST chunk (tags), the RIFF size covering both: nothing to read as audio."""
    path = tmp_path / "tagged.wav"
    sf.write(path, np.zeros(0, np.float32), RATE, subtype="PCM_16")
    tags = b"LIST" + (12).to_bytes(4, "little") + b"INFOINAM" + (4).to_bytes(4, "little") + b"song"
    data = path.read_bytes() + tags
    path.write_bytes(data[:4] + (len(data) - 8).to_bytes(4, "little") + data[8:])
    with pytest.raises(AudioReadError, match="zero-length"):
        audio_info(path)


def test_an_unfinished_wave_format_extensible_file_is_read(tmp_path):
    path = tmp_path / "multi.wav"
    sf.write(path, tone(1.0, RATE, channels=4), RATE, format="WAVEX", subtype="PCM_16")
    original = sf.read(path, dtype="float32", always_2d=True)[0]
    unfinished(path)
    assert audio_info(path).frames == RATE
    np.testing.assert_array_equal(read_audio(path, RATE), original.mean(axis=1))


def rot(path, size: int, at: float = 1 / 3) -> None:
    """Zero `size` bytes `at` that share of the way into a file, as bit rot or a card error leaves a FLAC."""
    data = bytearray(path.read_bytes())
    first = int(len(data) * at)
    data[first:first + size] = bytes(size)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("block_s, audio", [(10.0, "noise"), (1.0, "noise"), (10.0, "real songs")])
def test_a_flac_damaged_mid_file_is_decoded_around_the_damage(tmp_path, block_s, audio, request):
    """Bit rot or a card error in a long FLAC used to end the analysis there, hours before the end: decoding now
    resumes at the first frame that reads again, with silence (and a note) for the stretch that does not."""
    path = tmp_path / "rot.flac"
    if audio == "real songs":  # three real recordings, end to end, as one 44.1 kHz FLAC of about 30 s
        clips = sorted((request.getfixturevalue("shared_data") / "audio" / "insectset32").glob("*/*.flac"))
        songs = [a for a, r in (sf.read(c, dtype="float32", always_2d=True) for c in clips[:12]) if r == RATE]
        sf.write(path, np.concatenate([a.mean(axis=1) for a in songs])[:30 * RATE], RATE)
    else:
        sf.write(path, (0.1 * np.random.default_rng(0).standard_normal(30 * RATE)).astype(np.float32), RATE)
    original = sf.read(path, dtype="float32")[0]
    rot(path, 30000)
    audio, said = _decoded(path, block_s=block_s)
    assert said.startswith("DamagedStretches: ") and "damaged at" in said
    assert len(audio) == len(original)  # the timeline is kept: detections after the damage keep their times
    changed = np.flatnonzero(audio != original)
    first, last = changed[0], changed[-1] + 1  # every sample before and after is the original's
    assert 5 * RATE < first < last < 20 * RATE and last - first < 2 * RATE  # one stretch, some way in, ~1 s
    assert not audio[first:last].any()  # silence in its place
    start, end = (float(t) for t in said.split("damaged at ")[1].split(" s")[0].split("-"))
    assert start <= first / RATE + 0.01 and last / RATE <= end + 0.01


def test_folders_linked_to_are_searched_once_and_the_runs_own_output_folder_never(tmp_path):
    """A card folder linked into a project was skipped without a word (Path.rglob does not follow links); clips
    `pulse segments` cut into an --out inside the input folder were analysed as recordings on the next run."""
    cards = tmp_path / "cards" / "AM02"
    cards.mkdir(parents=True)
    project = tmp_path / "project"
    (project / "AM01").mkdir(parents=True)
    (project / "results" / "clips" / "Gryllus campestris").mkdir(parents=True)
    for path in (cards / "20250701_213000.WAV", project / "AM01" / "20250701_213000.WAV",
                 project / "results" / "clips" / "Gryllus campestris" / "0.990_20250701_213000_3s.wav"):
        sf.write(path, np.zeros(RATE, np.float32), RATE)
    (project / "AM02").symlink_to(cards)
    (cards / "loop").symlink_to(project)  # a link back up: searched once, not forever
    found = [relative.as_posix() for _, relative in find_audio([project], outputs=project / "results")]
    assert found == ["AM01/20250701_213000.WAV", "AM02/20250701_213000.WAV"]
    (project / "A_link").symlink_to(project / "AM01")  # a folder reached directly and through a link: its own name
    assert [relative.as_posix() for _, relative in find_audio([project], outputs=project / "results")] == found
    assert len(find_audio([project], outputs=project)) == 3  # --out the input folder itself: nothing skipped


def test_a_recording_and_a_hard_link_to_it_are_analysed_once(tmp_path):
    """A card copied with `cp -l` beside the original (or a backup made with rsync --link-dest, given with it): both
    names were analysed and every detection of the recording was in detections.csv twice."""
    sf.write(tmp_path / "20250701_213000.WAV", tone(0.1, 8000), 8000)
    sf.write(tmp_path / "20250701_214000.WAV", tone(0.1, 8000), 8000)
    (tmp_path / "copy").mkdir()
    os.link(tmp_path / "20250701_213000.WAV", tmp_path / "copy" / "20250701_213000.WAV")
    assert [rel.as_posix() for _, rel in find_audio([tmp_path])] == ["20250701_213000.WAV", "20250701_214000.WAV"]
    assert [p.relative_to(tmp_path).as_posix() for p, _ in find_audio([tmp_path / "copy", tmp_path])] == [
        "copy/20250701_213000.WAV", "20250701_214000.WAV"]  # under the first name given


def test_a_folder_linked_from_another_keeps_its_own_name_and_a_link_up_is_not_followed(tmp_path):
    """Cards copied side by side, site1 holding a link to site2 and one back up to the cards: site2's recording was
    listed as site1/also_site2/..., its detections credited to site1 in every table, and site1 given alone brought
    in site2 and site3 through the link up, as site1/loop/site3/...; site3 given beside site1 was site1's too."""
    cards = tmp_path / "cards"
    for site in ("site1", "site2", "site3"):
        (cards / site).mkdir(parents=True)
        sf.write(cards / site / "20250701_213000.WAV", tone(0.1, 8000), 8000)
    (cards / "site1" / "also_site2").symlink_to(cards / "site2")
    (cards / "site1" / "loop").symlink_to(cards)
    (cards / "site3" / "00_first.WAV").symlink_to(cards / "site3" / "20250701_213000.WAV")  # sorts before it
    assert [(p.relative_to(cards).as_posix(), rel.as_posix()) for p, rel in find_audio([cards])] == [
        ("site1/20250701_213000.WAV", "site1/20250701_213000.WAV"),
        ("site2/20250701_213000.WAV", "site2/20250701_213000.WAV"),
        ("site3/20250701_213000.WAV", "site3/20250701_213000.WAV")]
    assert [rel.as_posix() for _, rel in find_audio([cards / "site1"])] == [
        "20250701_213000.WAV", "also_site2/20250701_213000.WAV"]  # a link out of it is followed, not one up
    found = find_audio([cards / "site1", cards / "site3"])
    assert [p.relative_to(cards).as_posix() for p, _ in found] == [
        "site1/20250701_213000.WAV", "site1/also_site2/20250701_213000.WAV", "site3/20250701_213000.WAV"]


def test_a_site_given_beside_a_folder_linking_to_it_keeps_its_own_recordings(tmp_path, monkeypatch):
    """site1 holds links to site2 (two of them) and a link up; site10's name starts with site1's. site2 given after
    site1 stays site2's (not site1/also_site2/...), in the order given; of two links to one folder the first name
    is kept; a link from site10 to site1 is a link across, not up; inputs given relative from inside a card are
    told apart by their real folders' names."""
    cards = tmp_path / "cards"
    for site in ("site1", "site2", "site10"):
        (cards / site).mkdir(parents=True)
        sf.write(cards / site / "20250701_213000.WAV", tone(0.1, 8000), 8000)
    sf.write(cards / "site1" / "zz_last.WAV", tone(0.1, 8000), 8000)
    (cards / "site1" / "also_site2").symlink_to(cards / "site2")
    (cards / "site1" / "b_site2").symlink_to(cards / "site2")
    (cards / "site10" / "old_site1").symlink_to(cards / "site1")
    found = find_audio([cards / "site1", cards / "site2"])
    assert [(p.relative_to(cards).as_posix(), rel.as_posix()) for p, rel in found] == [
        ("site1/20250701_213000.WAV", "site1/20250701_213000.WAV"), ("site1/zz_last.WAV", "zz_last.WAV"),
        ("site2/20250701_213000.WAV", "site2/20250701_213000.WAV")]
    assert [rel.as_posix() for _, rel in find_audio([cards / "site1"])] == [
        "20250701_213000.WAV", "also_site2/20250701_213000.WAV", "zz_last.WAV"]
    assert [rel.as_posix() for _, rel in find_audio([cards / "site10"])] == [
        "20250701_213000.WAV", "old_site1/20250701_213000.WAV", "old_site1/also_site2/20250701_213000.WAV",
        "old_site1/zz_last.WAV"]
    monkeypatch.chdir(cards / "site1")
    assert [rel.as_posix() for _, rel in find_audio([".", "../site2"])][0::2] == [
        "site1/20250701_213000.WAV", "site2/20250701_213000.WAV"]


def test_files_are_not_taken_for_hard_links_where_a_file_system_gives_no_real_inodes(tmp_path, monkeypatch):
    """FAT and exFAT cards (through FUSE, or an SMB share) may give every file inode 0, or 1 link and inode numbers
    that repeat: two recordings there are two recordings, never one file with two names."""
    for name in ("20250701_213000.WAV", "20250701_214000.WAV"):
        sf.write(tmp_path / name, tone(0.1, 8000), 8000)
    stat = os.stat
    for inode, links in ((0, 2), (7, 1)):
        def card_stat(path, *args, **kwargs):
            real = stat(path, *args, **kwargs)
            if not str(path).endswith(".WAV"):
                return real
            return os.stat_result((real.st_mode, inode, real.st_dev, links, *real[4:10]))

        monkeypatch.setattr(os, "stat", card_stat)
        assert len(find_audio([tmp_path])) == 2, (inode, links)


def test_clips_of_an_earlier_segments_run_are_not_searched_for_recordings(tmp_path, caplog):
    """Clips `pulse segments` cut into a folder inside the recordings were analysed as recordings by the next
    `pulse analyze` into another --out (found by following the README: 11 files analysed instead of 6)."""
    from pulse.segments import extract_segments

    project = tmp_path / "project"
    (project / "AM01").mkdir(parents=True)
    recording = project / "AM01" / "20250701_213000.WAV"
    sf.write(recording, tone(4.0, RATE), RATE)
    results = tmp_path / "results"
    results.mkdir()
    (results / "detections.csv").write_text("Start (s),End (s),Scientific name,Common name,Confidence,File\n"
                                            f"0.0,3.0,Gryllus campestris,Field Cricket,0.9,{recording}\n",
                                            encoding="utf-8")
    extract_segments(results, project / "clips")
    assert list((project / "clips").rglob("*.wav"))  # the clip is there to be found
    found = [relative.as_posix() for _, relative in find_audio([project])]
    assert found == ["AM01/20250701_213000.WAV"]
    assert "clips cut by `pulse segments`" in caplog.text and str(project / "clips") in caplog.text
    assert len(find_audio([project / "clips"])) == 1  # the clips folder given itself: its clips are analysed
    (project / "clips" / "segments.json").write_text("[]", encoding="utf-8")  # another tool's file of that name
    assert len(find_audio([project])) == 2



def test_a_clips_folder_reached_through_links_too_is_said_once(tmp_path, caplog):
    """Linked from a card's folder and from the project: the note that its clips are not searched came once per
    way in, three lines for one folder."""
    import json

    project = tmp_path / "project"
    (project / "AM01").mkdir(parents=True)
    (project / "clips").mkdir()
    sf.write(project / "AM01" / "a.wav", tone(1.0, RATE), RATE)
    sf.write(project / "clips" / "clip.wav", tone(1.0, RATE), RATE)
    (project / "clips" / "segments.json").write_text(json.dumps({"results": "r", "results_sha1": "0" * 40}))
    (project / "AM01" / "clips_link").symlink_to(project / "clips")
    (project / "z_link").symlink_to(project / "clips")
    with caplog.at_level("WARNING"):
        assert [relative.as_posix() for _, relative in find_audio([project])] == ["AM01/a.wav"]
    assert caplog.text.count("clips cut by `pulse segments`") == 1

def examined_later(monkeypatch) -> None:
    """`audio_info` as a training run calls it, long after its files were written: it keeps what it examined."""
    from types import SimpleNamespace

    from pulse import io as pulse_io

    monkeypatch.setattr(pulse_io, "time", SimpleNamespace(time_ns=lambda: time.time_ns() + 60 * 10**9), raising=False)


def test_a_relative_name_is_examined_anew_in_another_folder(tmp_path, monkeypatch):
    """Two recorders on one schedule leave files of the same name, size and time (kept by cp -p, rsync -t, unzip):
    a name relative to the working folder is another file after a chdir, not the one examined before."""
    examined_later(monkeypatch)
    for site, rate in (("a", 32000), ("b", 64000)):  # as many bytes: 1 s at 32 kHz, 0.5 s at 64 kHz
        (tmp_path / site).mkdir()
        sf.write(tmp_path / site / "20240701_210000.WAV", tone(32000 / rate, rate), rate, subtype="PCM_16")
        os.utime(tmp_path / site / "20240701_210000.WAV", ns=(10**18, 10**18))
    for site, rate in (("a", 32000), ("b", 64000)):
        monkeypatch.chdir(tmp_path / site)
        assert audio_info("20240701_210000.WAV").sample_rate == rate


def test_a_file_copied_over_with_its_size_and_time_is_examined_anew(tmp_path, monkeypatch):
    """`cp -p`/`shutil.copy2` over a recording examined before keeps its name, size and modification time."""
    examined_later(monkeypatch)
    path, other = tmp_path / "rec.wav", tmp_path / "other.wav"
    sf.write(path, tone(1.0, 32000), 32000, subtype="PCM_16")
    sf.write(other, tone(0.5, 64000), 64000, subtype="PCM_16")
    for p in (path, other):
        os.utime(p, ns=(10**18, 10**18))
    assert audio_info(path).sample_rate == 32000
    shutil.copy2(other, path)
    assert audio_info(path).sample_rate == 64000


def test_a_file_rewritten_within_its_timestamps_tick_is_examined_anew(tmp_path, monkeypatch):
    """An SD card's FAT keeps times to 2 s (NTFS to the clock's tick, ~16 ms): a recording rewritten in place with
    as many bytes within that tick looks, to os.stat, like the one examined before."""
    from types import SimpleNamespace

    from pulse import io as pulse_io

    tick = time.time_ns()  # every write below lands in the tick that starts here, and the reads 1 s into it

    class Fat:
        """`os` as on such a card."""

        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def stat(path):
            st = os.stat(path)
            return SimpleNamespace(st_mode=st.st_mode, st_size=st.st_size, st_dev=st.st_dev, st_ino=st.st_ino,
                                   st_mtime_ns=tick, st_ctime_ns=tick)

    monkeypatch.setattr(pulse_io, "os", Fat())
    monkeypatch.setattr(pulse_io, "time", SimpleNamespace(time_ns=lambda: tick + 10**9), raising=False)
    path = tmp_path / "rec.wav"
    sf.write(path, tone(1.0, 32000), 32000, subtype="PCM_16")
    assert audio_info(path).sample_rate == 32000
    sf.write(path, tone(0.5, 64000), 64000, subtype="PCM_16")
    assert audio_info(path).sample_rate == 64000


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="open files are listed in /proc/self/fd")
def test_closing_a_recording_read_through_pieces_closes_the_file(tmp_path):
    """soundfile leaves a file object it reads from open: a WAV read raw (or a stated MP3, an AudioMoth's triggered
    WAV) stayed open after close() until the garbage collector came, on Windows a recording that cannot be moved."""
    from pulse.io import open_audio

    path = tmp_path / "night.wav"
    sf.write(path, tone(1.0, RATE), RATE, subtype="PCM_16")
    unfinished(path)
    info = audio_info(path)
    assert info.raw_data

    def open_on_it() -> int:
        return sum(os.path.realpath(f"/proc/self/fd/{fd}") == str(path.resolve()) for fd in os.listdir("/proc/self/fd"))

    f = open_audio(path, 100, info)
    assert len(f.read(100)) == 100 and open_on_it() == 1
    f.close()
    assert open_on_it() == 0
