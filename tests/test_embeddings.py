"""`pulse embeddings`: per-window embeddings of recordings in HDF5, as `pulse analyze` cuts the windows."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import onnx
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from pulse.cli import app
from pulse.config import InferConfig
from pulse.embeddings import embed
from pulse.recording import analyze_recording
from tests.test_analyze import as_an_older_pulse, level_meter_onnx, other_weights, song, time_expanded
from tests.test_journal import replace_keeping_size_and_time

EXAMPLES = Path(__file__).resolve().parents[1] / "pulse" / "assets" / "examples"


def _examples(folder: Path) -> list[Path]:
    """Two of the bundled example recordings, copied (a test changes one)."""
    folder.mkdir()
    for clip in sorted(EXAMPLES.glob("*.flac"))[:2]:
        (folder / clip.name).write_bytes(clip.read_bytes())
    return sorted(folder.glob("*.flac"))


def test_embeddings_are_the_windows_pulse_analyze_scores_and_a_bad_file_is_one_row(tmp_path):
    clips = _examples(tmp_path / "in")
    (tmp_path / "in" / "notes.wav").write_text("not audio\n" * 100)
    sf.write(tmp_path / "in" / "cut.flac", np.tile(sf.read(clips[0], dtype="float32")[0], 3), 44100)
    data = (tmp_path / "in" / "cut.flac").read_bytes()
    (tmp_path / "in" / "cut.flac").write_bytes(data[: len(data) // 2])  # a copy cut short: embedded up to the break
    command = ["embeddings", str(tmp_path / "in"), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 1, result.output
    assert "3 embedded, 1 failed, 0 skipped" in result.output
    cut, notes = pd.read_csv(tmp_path / "out" / "errors.csv").itertuples()
    assert notes.path.endswith("notes.wav") and notes.error_type == "AudioReadError" and "not readable" in notes.message
    assert cut.path.endswith("cut.flac") and cut.error_type == "PartlyReadable" and "truncated after" in cut.message
    with h5py.File(tmp_path / "out" / "cut.flac.embeddings.h5") as f:
        analysed_s = float(cut.message.split("after ")[1].split(" s")[0])
        assert abs(f["ends_s"][-1] - analysed_s) < 0.01 and f.attrs["warning"] == cut.message
    assert "0 embedded, 1 failed, 3 skipped" in CliRunner().invoke(app, command).output
    assert pd.read_csv(tmp_path / "out" / "errors.csv").message.tolist() == [cut.message, notes.message]  # said again
    for clip in clips:
        recording = analyze_recording(clip)  # the bundled default, as `pulse analyze` scores it
        with h5py.File(tmp_path / "out" / f"{clip.name}.embeddings.h5") as f:
            np.testing.assert_allclose(f["starts_s"][:], recording.scores.index.get_level_values("start_s"), atol=1e-6)
            np.testing.assert_allclose(f["ends_s"][:], recording.scores.index.get_level_values("end_s"), atol=1e-6)
            np.testing.assert_allclose(f["embedding"][:], recording.embeddings, atol=1e-5)
            assert f["embedding"].shape == (len(recording.scores), 256)
            assert f.attrs["source"] == str(clip.resolve()) and f.attrs["model"].endswith("default/model.onnx")
    again = CliRunner().invoke(app, [*command, "--overlap", "1.0"])  # the last line says how many were done again
    assert "3 embedded (3 again, as the model or settings changed), 1 failed, 0 skipped" in again.output


def test_a_rerun_skips_what_is_done_and_embeds_a_changed_recording_or_setting_again(tmp_path, monkeypatch):
    clips = _examples(tmp_path / "in")
    out = tmp_path / "out"
    assert embed([tmp_path / "in"], out).files_done == 2
    again = embed([tmp_path / "in"], out)
    assert (again.files_done, again.files_skipped) == (0, 2)
    monkeypatch.chdir(tmp_path)  # the same recordings by another path: still done
    assert embed([Path("in")], out).files_skipped == 2
    audio, rate = sf.read(clips[0], dtype="float32")
    sf.write(clips[0], audio[: len(audio) // 2], rate)  # the recording changed since
    os.utime(clips[0], ns=(1, 1))
    changed = embed([tmp_path / "in"], out)
    assert (changed.files_done, changed.files_skipped) == (1, 1)
    with h5py.File(out / f"{clips[0].name}.embeddings.h5") as f:
        assert f["ends_s"][-1] <= len(audio) / 2 / rate + 1e-3
    other = bytearray(clips[1].read_bytes())
    other[30] ^= 0xFF  # in the STREAMINFO's MD5 of the audio: another file that decodes all the same
    replace_keeping_size_and_time(clips[1], bytes(other))
    assert embed([tmp_path / "in"], out).files_done == 1
    assert embed([tmp_path / "in"], out).files_skipped == 2
    overlapping = embed([tmp_path / "in"], out, InferConfig(overlap=1.5))
    assert (overlapping.files_done, overlapping.files_skipped) == (2, 0)
    with h5py.File(out / f"{clips[1].name}.embeddings.h5") as f:
        assert np.allclose(np.diff(f["starts_s"][:]), 1.5) and f.attrs["overlap_s"] == 1.5
        # every setting the windows depend on is readable, the level floor above all (quiet recordings are raised)
        assert (f.attrs["min_len_s"], f.attrs["channel"], f.attrs["level_floor_dbfs"]) == (1.0, -1, -20.0)


def test_a_model_reinstalled_or_moved_embeds_nothing_again_and_another_one_everything(tmp_path):
    """Embeddings files named their model by its place (and the key by its place, size and time): a reinstall of
    pulse or a model copied elsewhere embedded every file again, to the same embeddings."""
    import shutil

    clips = _examples(tmp_path / "in")
    model = level_meter_onnx(tmp_path / "meter.onnx")
    out = tmp_path / "out"
    assert embed([tmp_path / "in"], out, InferConfig(model=str(model))).files_done == len(clips)
    os.utime(model, ns=(1, 1))  # written anew by a reinstall
    moved = Path(shutil.copy(model, tmp_path / "elsewhere.onnx"))
    for same in (model, moved):
        assert embed([tmp_path / "in"], out, InferConfig(model=str(same))).files_skipped == len(clips), same
    other = other_weights(Path(shutil.copy(model, tmp_path / "retrained.onnx")))
    assert embed([tmp_path / "in"], out, InferConfig(model=str(other))).files_done == len(clips)


def test_a_rerun_that_embeds_files_again_says_first_which_model_or_settings_changed(tmp_path, monkeypatch, caplog):
    """Files embedded again with another model or settings were embedded with no word why: one line says so
    before any is embedded, with counts; a recording that changed is embedded again for that alone."""
    import hashlib
    import logging
    import shutil

    import pulse.embeddings

    clips = _examples(tmp_path / "in")
    model = level_meter_onnx(tmp_path / "meter.onnx")
    out = tmp_path / "out"
    assert embed([tmp_path / "in"], out, InferConfig(model=str(model))).files_done == len(clips)
    retrained = other_weights(Path(shutil.copy(model, tmp_path / "retrained.onnx")))
    digests = [hashlib.sha256(m.read_bytes()).hexdigest()[:12] for m in (model, retrained)]
    sf.write(clips[0], sf.read(clips[0], dtype="float32")[0][:44100 * 4], 44100)  # changed since
    windows = pulse.embeddings.window_outputs

    def embedding(*args, **kwargs):
        assert "embedded again" in caplog.text  # said before the first file is embedded
        return windows(*args, **kwargs)

    monkeypatch.setattr("pulse.embeddings.window_outputs", embedding)
    with caplog.at_level(logging.INFO, logger="pulse.embeddings"):
        again = embed([tmp_path / "in"], out, InferConfig(model=str(retrained), overlap=1.0))
    why = (f"the model changed (was sha256 {digests[0]}..., now sha256 {digests[1]}...) and settings changed "
           "(overlap 0.0 -> 1.0)")
    assert (again.files_done, dict(again.redone)) == (2, {why: 1})
    assert [r.getMessage() for r in caplog.records if "again" in r.getMessage()] == [
        f"1 file(s) embedded before into {out} are embedded again: {why}"]


def test_a_file_embedded_again_that_fails_is_not_counted_as_embedded_again(tmp_path):
    """The files embedded again as the settings changed were counted before the work: a rerun with --channel 1 over
    mono and stereo recordings, the mono ones failing, ended on '0 embedded (3 again, ...)'. Only those embedded
    count."""
    clips = _examples(tmp_path / "in")
    mono = sf.read(clips[0], dtype="float32")[0]
    sf.write(tmp_path / "in" / "stereo.wav", np.stack([mono, mono], axis=1), 44100)
    command = ["embeddings", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model",
               str(level_meter_onnx(tmp_path / "meter.onnx"))]
    assert CliRunner().invoke(app, command).exit_code == 0
    result = CliRunner().invoke(app, [*command, "--channel", "1"])
    assert result.exit_code == 1, result.output
    assert ("1 embedded (1 again, as the model or settings changed), 2 failed, 0 skipped "
            f"(embedded before with these settings) -> {tmp_path / 'out'}") in result.output


def test_a_recording_pulse_now_reads_otherwise_is_embedded_again(tmp_path, monkeypatch):
    """A time-expansion WAV (GUANO TE: 10) embedded before TE was read has windows over ten times its length at a
    tenth of its pitch, and a rerun skipped it. It is embedded again, the recording beside it skipped."""
    (tmp_path / "in").mkdir()
    time_expanded(tmp_path / "in" / "bat.wav", 6.0)
    sf.write(tmp_path / "in" / "plain.wav", song(4.0), 44100)
    out, cfg = tmp_path / "out", InferConfig(model=str(level_meter_onnx(tmp_path / "meter.onnx")))
    with as_an_older_pulse(monkeypatch):
        assert embed([tmp_path / "in"], out, cfg).files_done == 2
    with h5py.File(out / "bat.wav.embeddings.h5") as f:
        assert f["ends_s"][-1] == 60.0
    again = embed([tmp_path / "in"], out, cfg)
    assert (again.files_done, again.files_skipped) == (1, 1)
    with h5py.File(out / "bat.wav.embeddings.h5") as f:
        assert f["ends_s"][-1] == 6.0 and f.attrs["source_sample_rate"] == 88200


def test_birdnet_embeddings_are_its_1024_d_pool(tmp_path, shared_data):
    clip = shared_data / "audio" / "backgrounds" / "OSS_birds_10s_Pennsylvania.flac"
    summary = embed([clip], tmp_path / "out", InferConfig(model="birdnet"))
    assert summary.files_done == 1
    with h5py.File(tmp_path / "out" / f"{clip.name}.embeddings.h5") as f:
        assert f["embedding"].shape == (4, 1024) and np.isfinite(f["embedding"][:]).all()
        assert f["embedding"][:].std() > 0 and f.attrs["model"].endswith(".tflite")


def test_a_model_without_an_embedding_output_is_one_line(tmp_path):
    path = level_meter_onnx(tmp_path / "meter.onnx")
    model = onnx.load(path)
    model.graph.output.pop()  # keep "scores" only
    onnx.save(model, path)
    _examples(tmp_path / "in")
    result = CliRunner().invoke(app, ["embeddings", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                                      "--model", str(path)])
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: {path}: the model has no 'embedding' output "
                                     "(export it with `pulse export`)")


def test_ctrl_c_keeps_the_files_done_and_the_errors_so_far(tmp_path, monkeypatch):
    import pulse.embeddings

    clips = _examples(tmp_path / "in")
    (tmp_path / "in" / "A_bad.wav").write_bytes(b"")  # first in file order
    window_outputs = pulse.embeddings.window_outputs

    def interrupted_at_the_second_recording(path, *args):
        if Path(path) == clips[1]:
            raise KeyboardInterrupt
        return window_outputs(path, *args)

    monkeypatch.setattr(pulse.embeddings, "window_outputs", interrupted_at_the_second_recording)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["embeddings", str(tmp_path / "in"), "--out", str(out)])
    assert result.exit_code == 130
    assert f"interrupted: files finished so far are kept in {out}; run the same command again" in result.output
    assert [p.name for p in out.glob("*.h5")] == [f"{clips[0].name}.embeddings.h5"]
    assert pd.read_csv(out / "errors.csv").path.map(lambda p: Path(p).name).tolist() == ["A_bad.wav"]
    monkeypatch.undo()
    summary = embed([tmp_path / "in"], out)
    assert (summary.files_done, summary.files_skipped, summary.files_failed) == (1, 1, 1)


def test_a_missing_path_is_one_row_an_out_that_is_a_file_one_line_and_no_audio_exit_1(tmp_path):
    _examples(tmp_path / "in")
    result = CliRunner().invoke(app, ["embeddings", str(tmp_path / "in"), str(tmp_path / "gone.wav"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "2 embedded, 1 failed, 0 skipped" in result.output  # the batch went on
    (row,) = pd.read_csv(tmp_path / "out" / "errors.csv").itertuples()
    assert row.path == str(tmp_path / "gone.wav") and row.message == "no such file or folder"
    (tmp_path / "a_file").write_text("")
    result = CliRunner().invoke(app, ["embeddings", str(tmp_path / "in"), "--out", str(tmp_path / "a_file")])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {tmp_path / 'a_file'}: --out must be a folder, and this is a file"
    (tmp_path / "nothing").mkdir()
    result = CliRunner().invoke(app, ["embeddings", str(tmp_path / "nothing"), "--out", str(tmp_path / "out2")])
    assert result.exit_code == 1 and f"no audio files found in: {tmp_path / 'nothing'}" in result.output


def test_an_ultrasonic_recording_is_told_that_the_model_does_not_hear_above_its_band(tmp_path, caplog):
    """As `pulse analyze` says it: an embedding of a 384 kHz recording holds nothing of its ultrasound."""
    model = level_meter_onnx(tmp_path / "meter.onnx")
    sf.write(tmp_path / "20250701_213000.WAV", song(3.0, 384000), 384000)
    with caplog.at_level("WARNING"):
        embed([tmp_path / "20250701_213000.WAV"], tmp_path / "out", InferConfig(model=str(model)))
    (said,) = [r.getMessage() for r in caplog.records if "not used" in r.getMessage()]
    assert "recorded at 384000 Hz" in said and "above 22050 Hz (up to 192000 Hz)" in said


def test_stereo_is_mixed_with_the_note_pulse_analyze_gives_and_channel_picks_one(tmp_path, caplog):
    """`pulse embeddings` mixed a stereo Song Meter's two microphones without a word, where `pulse analyze` says
    once per run that the mix can cancel a song and offers --channel N. Said alike, and not with --channel; a
    negative --channel is a bad option, not a failure of every file."""
    left = sf.read(_examples(tmp_path / "mono")[0], dtype="float32")[0]
    (tmp_path / "in").mkdir()
    for name in ("S4U12345_0+1_20250701_213000.wav", "S4U12345_0+1_20250701_223000.wav"):
        sf.write(tmp_path / "in" / name, np.stack([left, np.zeros_like(left)], axis=1), 44100)

    def said(out: str, **kw) -> list[str]:
        caplog.clear()
        with caplog.at_level("WARNING"):
            embed([tmp_path / "in"], tmp_path / out, InferConfig(**kw))
        return [r.getMessage() for r in caplog.records if "mixed to mono" in r.getMessage()]

    mixed = said("mixed")
    assert len(mixed) == 1 and "--channel N" in mixed[0] and "S4U12345_0+1_20250701_213000.wav" in mixed[0]
    sf.write(tmp_path / "in" / "S4U12345_0+1_20250702_213000.wav", np.stack([left, left], axis=1), 44100)
    assert said("mixed") == [mixed[0].replace("20250701_213000", "20250702_213000")]  # a rerun: the new file's
    assert said("second", channel=1) == []
    with h5py.File(tmp_path / "second" / "S4U12345_0+1_20250701_213000.wav.embeddings.h5") as f:
        assert f.attrs["channel"] == 1
    result = CliRunner().invoke(app, ["embeddings", str(tmp_path / "in"), "--out", str(tmp_path / "bad"),
                                      "--channel", "-1"])
    assert result.exit_code == 2 and "--channel is a 0-based channel index, got -1" in result.output


def test_a_file_that_cannot_be_written_is_one_row_and_the_batch_goes_on_but_a_full_out_stops_it(tmp_path, monkeypatch,
                                                                                                 caplog):
    """A folder where one recording's embeddings file goes ended the run ('error: OUT/x.embeddings.h5: Is a
    directory'), the recordings after it not embedded and errors.csv empty; a full --out still stops the run."""
    import errno

    import pulse.embeddings
    from export.atomic import OutputUnwritable

    clips, out = _examples(tmp_path / "in"), tmp_path / "out"
    (out / f"{clips[0].name}.embeddings.h5").mkdir(parents=True)
    result = CliRunner().invoke(app, ["embeddings", str(tmp_path / "in"), "--out", str(out)])
    assert result.exit_code == 1 and "1 embedded, 1 failed, 0 skipped" in result.output, result.output
    (row,) = pd.read_csv(out / "errors.csv").itertuples()
    assert row.path == str(clips[0]) and row.stage == "write" and row.error_type == "IsADirectoryError"
    assert row.message == f"{out / clips[0].name}.embeddings.h5: Is a directory"  # not "[Errno 21] ...: 'X' -> 'X'"
    assert f"{clips[0]}: write failed: {row.message}" in caplog.text
    assert (out / f"{clips[1].name}.embeddings.h5").is_file()

    def disk_full(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pulse.embeddings, "atomic_path", disk_full)
    (out / f"{clips[0].name}.embeddings.h5").rmdir()
    with pytest.raises(OutputUnwritable, match="free some space"):
        embed([tmp_path / "in"], out)


def test_a_recording_the_model_fails_on_is_a_row_of_its_own_stage(tmp_path, monkeypatch, caplog):
    """A recording the model fails on is an 'embed' row, told as itself, not as a file that could not be written."""
    import pulse.embeddings

    clips, out = _examples(tmp_path / "in"), tmp_path / "out"
    window_outputs = pulse.embeddings.window_outputs

    def fails_on_the_first(path, *args):
        if path == clips[0]:
            raise RuntimeError("the model ran out of memory")
        return window_outputs(path, *args)

    monkeypatch.setattr(pulse.embeddings, "window_outputs", fails_on_the_first)
    summary = embed([tmp_path / "in"], out)
    assert (summary.files_done, summary.files_failed) == (1, 1)
    (row,) = pd.read_csv(out / "errors.csv").itertuples()
    assert (row.path, row.stage, row.message) == (str(clips[0]), "embed", "the model ran out of memory")
    assert f"{clips[0]}: the model ran out of memory" in caplog.text and "write failed" not in caplog.text
