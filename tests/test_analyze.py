"""`pulse analyze` end to end: bad files among good ones, outputs, resume, crash safety, real data.

Most tests use a hand-built ONNX "level meter" (built in milliseconds, no torch) whose scores
rise with a window's loudness, class 0 first; it exercises the default ONNX Runtime path with
a model whose answers we can predict. One test runs a real (untrained) PULSE checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from export.artifact import set_onnx_metadata
from export.predictor import load_predictor
from pulse.analyze import analyze
from pulse.cli import app
from pulse.config import InferConfig, ModelConfig
from pulse.io import AudioReadError, read_audio
from pulse.model_names import MODEL_ALIASES, above_band_note, below_rate_note
from pulse.recording import analyze_recording
from pulse.scoring import decoding_threads
from pulse.writers.raven import RAVEN_COLUMNS
from tests.test_io import rot, unfinished, without_length
from tests.test_journal import replace_keeping_size_and_time

RATE = 44100
REPO = Path(__file__).resolve().parents[1]


def level_meter_onnx(path: Path, cfg: ModelConfig = ModelConfig()) -> Path:
    """scores[c] = sigmoid(2 * ln(mean |x| / 0.01) - c); embedding = (mean |x|, max |x|)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = cfg.num_classes
    consts = {"axes": np.array([1], np.int64), "eps": np.array([1e-6], np.float32),
              "gain": np.full((1, n), 2.0, np.float32),
              "bias": (-2 * np.log(0.01) - np.arange(n)).astype(np.float32)[None]}
    nodes = [helper.make_node("Abs", ["waveform"], ["abs"]),
             helper.make_node("ReduceMean", ["abs", "axes"], ["level"], keepdims=1),
             helper.make_node("ReduceMax", ["abs", "axes"], ["peak"], keepdims=1),
             helper.make_node("Add", ["level", "eps"], ["level_eps"]),
             helper.make_node("Log", ["level_eps"], ["log_level"]),
             helper.make_node("Mul", ["log_level", "gain"], ["scaled"]),
             helper.make_node("Add", ["scaled", "bias"], ["logits"]),
             helper.make_node("Sigmoid", ["logits"], ["scores"]),
             helper.make_node("Concat", ["level", "peak"], ["embedding"], axis=1)]
    graph = helper.make_graph(
        nodes, "level_meter",
        [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["batch", cfg.window_samples])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", n]),
         helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    set_onnx_metadata(model, cfg.to_dict())
    onnx.save(model, path)
    return path


def other_weights(path: Path) -> Path:
    """The ONNX model at `path` with other weights of the same size, as a retrained model is."""
    import onnx
    from onnx import numpy_helper

    retrained = onnx.load(path)
    weights = next(t for t in retrained.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * 2 + 1, weights.name))
    onnx.save(retrained, path)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return level_meter_onnx(tmp_path_factory.mktemp("model") / "meter.onnx")


def song(seconds: float, rate: int = RATE, channels: int = 1, loud: float = 0.3, freq: float = 3000) -> np.ndarray:
    """A loud pulsed 'trill' (mean |x| ~ 0.1 at loud=0.3): class 0 scores ~1."""
    t = np.arange(int(seconds * rate)) / rate
    x = (loud * np.sin(2 * np.pi * freq * t) * (np.sin(2 * np.pi * 30 * t) > 0)).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


def time_expanded(path: Path, seconds: float) -> Path:
    """A time-expansion bat detector's WAV of `song`: recorded at 88.2 kHz, stored at 8820 Hz with GUANO `TE: 10`."""
    from tests.test_recorders import guano, wav_with_chunks

    return wav_with_chunks(path, np.round(song(seconds, 88200) * 32767), rate=8820, after=[(b"guan", guano(TE="10"))])


@contextlib.contextmanager
def as_an_older_pulse(monkeypatch):
    """Run as a pulse that read GUANO's TE and an AudioMoth's left-out stretches otherwise: as if neither was read."""
    import pulse.audiomoth
    import pulse.io

    with monkeypatch.context() as before:
        before.setattr(pulse.io, "time_expansion", lambda path: 1.0)
        before.setattr(pulse.audiomoth, "left_out", lambda *args: np.zeros((0, 2), np.int64))
        yield
    pulse.io._examined.cache_clear()  # the headers as that pulse read them


def make_batch(root: Path) -> dict[str, str | None]:
    """Good and bad recordings side by side; value = expected error reason (None: good)."""
    (root / "site1").mkdir(parents=True)
    sf.write(root / "site1" / "good.flac", song(7.0), RATE)
    sf.write(root / "site1" / "short.wav", song(0.5), RATE)
    sf.write(root / "hi_rate.wav", song(4.0, 192000), 192000)
    sf.write(root / "eight_channels.wav", song(3.5, channels=8), RATE)
    sf.write(root / "low_rate.ogg", song(5.0, 8000, freq=1000), 8000)
    sf.write(root / "lossy.mp3", song(4.0), RATE)
    (root / "zero.wav").write_bytes(b"")
    (root / "text.flac").write_text("not audio\n" * 100)
    sf.write(root / "nan.wav", np.r_[song(4.0), [np.nan]], RATE, subtype="FLOAT")
    sf.write(root / "cut.flac", song(6.0), RATE)
    data = (root / "cut.flac").read_bytes()
    (root / "cut.flac").write_bytes(data[: len(data) // 2])
    return {"site1/good.flac": None, "site1/short.wav": None, "hi_rate.wav": None, "eight_channels.wav": None,
            "low_rate.ogg": None, "lossy.mp3": None, "zero.wav": "empty file", "text.flac": "not readable",
            "nan.wav": "NaN/Inf", "cut.flac": "truncated"}


def test_bad_files_among_good_ones(tmp_path, model):
    expected = make_batch(tmp_path / "in")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["analyze", str(tmp_path / "in"), "--out", str(out), "--model", str(model),
                                      "--format", "raven,csv,audacity,scores,kaleidoscope"])
    assert result.exit_code == 1, result.output  # the batch finished; scripts still learn that files failed
    assert f"3 file(s) failed: see {out / 'errors.csv'}" in result.output  # cut.flac: analysed up to the break
    errors = pd.read_csv(out / "errors.csv")
    assert list(errors.columns) == ["path", "stage", "error_type", "message"]
    bad = {k: v for k, v in expected.items() if v}
    assert [Path(p).relative_to(tmp_path / "in").as_posix() for p in errors.path] == sorted(bad)  # in file order
    for row in errors.itertuples():
        assert bad[Path(row.path).relative_to(tmp_path / "in").as_posix()] in row.message
        partly = row.path.endswith("cut.flac")
        assert row.stage == "read" and row.error_type == ("PartlyReadable" if partly else "AudioReadError")
    for rel, reason in expected.items():
        raven = out / Path(rel).parent / (Path(rel).stem + ".pulse.selection.table.txt")
        audacity = raven.with_name(Path(rel).stem + ".pulse.results.txt")
        assert raven.is_file() == audacity.is_file() == (reason is None or rel == "cut.flac"), rel
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["files_done"], summary["files_failed"], summary["files_skipped"]) == (7, 3, 0)
    cut_s = float(errors.message[errors.path.str.endswith("cut.flac")].iloc[0].split("after ")[1].split(" s")[0])
    assert 2.5 < cut_s < 3.0  # half the bytes of 6 s, all read up to the break
    assert summary["audio_hours"] == pytest.approx((7 + 0.5 + 4 + 3.5 + 5 + 4 + cut_s) / 3600, rel=0.01)
    wall_s = summary["wall_s"]  # rounded to the millisecond, a few % of a fast run's: the speed within that
    assert wall_s > 0 and (summary["audio_s"] / (wall_s + 0.0005) - 0.05 <= summary["x_realtime"]
                           <= summary["audio_s"] / (wall_s - 0.0005) + 0.05)
    assert json.loads((out / "config.json").read_text())["config"]["min_conf"] == InferConfig().min_conf

    scores = pd.read_csv(out / "scores.csv")
    assert list(scores.columns[:3]) == ["file", "start_s", "end_s"] and len(scores.columns) == 3 + 9
    per_file = scores.groupby("file").size().rename(lambda p: Path(p).relative_to(tmp_path / "in").as_posix())
    # 7 s: windows at 0, 3 and 6 s (a 1 s tail is analysed); 3.5 s: the 0.5 s tail is under min_len.
    assert per_file.to_dict() == {"site1/good.flac": 3, "site1/short.wav": 1, "hi_rate.wav": 2,
                                  "eight_channels.wav": 1, "low_rate.ogg": 2, "lossy.mp3": 2, "cut.flac": 1}
    short = scores[scores.file.str.endswith("short.wav")].iloc[0]
    assert (short.start_s, short.end_s) == (0.0, 0.5)  # padded and analysed, not rejected
    assert short["Chorthippus biguttulus"] > 0.5  # even padded to 3 s the song is heard
    detections = pd.read_csv(out / "detections.csv")
    assert len(detections) == (scores.iloc[:, 3:] >= 0.25).to_numpy().sum()
    kaleidoscope = pd.read_csv(out / "kaleidoscope.csv", keep_default_na=False)
    paths = kaleidoscope[["INDIR", "FOLDER", "IN FILE"]].apply(lambda r: Path(*r), axis=1)
    assert paths.tolist() == [Path(f) for f in detections["File"]]
    np.testing.assert_allclose(kaleidoscope["OFFSET"] + kaleidoscope["DURATION"], detections["End (s)"], atol=1e-4)


def test_a_folder_that_cannot_be_listed_and_a_link_to_nothing_fail_the_run_as_bad_files_do(tmp_path, model,
                                                                                              unlistable):
    """A colleague's cards (mode 700 on a NAS) and a season on an archive drive not mounted: warned of, and the run
    ended with exit status 0, so a cron job never learnt that part of the card was not analysed."""
    for site in ("siteA", "siteB"):
        (tmp_path / "card" / site).mkdir(parents=True)
        sf.write(tmp_path / "card" / site / "20250701_213000.WAV", song(3.0), RATE)
    (tmp_path / "card" / "2024").symlink_to(tmp_path / "archive" / "2024")
    unlistable("siteB")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["analyze", str(tmp_path / "card"), "--out", str(out), "--model", str(model)])
    assert result.exit_code == 1, result.output
    assert "1 done, 2 failed, 0 skipped" in result.output
    errors = pd.read_csv(out / "errors.csv")
    assert [Path(p).name for p in errors.path] == ["2024", "siteB"]
    assert "which is not there" in errors.message[0]
    assert errors.message[1] == "a folder that cannot be searched (Permission denied); nothing in it is analysed"


def test_a_phone_m4a_is_one_line_saying_how_to_convert_it_and_the_batch_goes_on(tmp_path, model):
    sf.write(tmp_path / "good.wav", song(3.0), RATE)
    (tmp_path / "phone.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(2000))
    (tmp_path / "memo.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(2000))
    sf.write(tmp_path / "memo.flac", song(3.0), RATE)  # converted already: the .m4a beside it is not listed
    summary = analyze([tmp_path], tmp_path / "out", InferConfig(model=str(model)))
    assert (summary.files_done, summary.files_failed) == (2, 1)
    (row,) = pd.read_csv(tmp_path / "out" / "errors.csv").itertuples()
    assert row.path.endswith("phone.m4a") and "convert it to WAV or FLAC (e.g. ffmpeg -i phone.m4a" in row.message


def test_a_text_file_named_mp3_is_one_clear_error_and_the_batch_goes_on(tmp_path, model):
    (tmp_path / "notes.mp3").write_text("field notes, not audio\n" * 50)
    sf.write(tmp_path / "good.wav", song(3.0), RATE)
    summary = analyze([tmp_path], tmp_path / "out", InferConfig(model=str(model)))
    errors = pd.read_csv(tmp_path / "out" / "errors.csv")
    assert (summary.files_done, summary.files_failed) == (1, 1)
    assert list(errors.message) == ["not readable as audio (format not recognised)"]


def test_scores_a_broken_model_gives_outside_0_1_fail_that_file_at_the_model_stage(tmp_path):
    """scores = 100 x mean |x|: within [0, 1] for a quiet file, above 1 for a loud one."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cfg = ModelConfig()
    consts = {"axes": np.array([1], np.int64), "scale": np.full((1, cfg.num_classes), 100.0, np.float32)}
    graph = helper.make_graph(
        [helper.make_node("Abs", ["waveform"], ["abs"]), helper.make_node("ReduceMean", ["abs", "axes"], ["level"]),
         helper.make_node("Mul", ["level", "scale"], ["scores"])], "overflowing",
        [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["batch", cfg.window_samples])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", cfg.num_classes])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    broken = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    set_onnx_metadata(broken, cfg.to_dict())
    onnx.save(broken, tmp_path / "broken.onnx")
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "loud.wav", song(3.0), RATE)
    sf.write(tmp_path / "in" / "quiet.wav", song(3.0, loud=0.001), RATE)
    out = tmp_path / "out"
    summary = analyze([tmp_path / "in"], out, InferConfig(model=str(tmp_path / "broken.onnx"), formats=("scores",),
                                                          level_floor=-200.0))  # the quiet file stays quiet
    assert (summary.files_done, summary.files_failed) == (1, 1)
    row = pd.read_csv(out / "errors.csv").iloc[0]
    assert (Path(row.path).name, row.stage, row.error_type) == ("loud.wav", "model", "SchemaError")
    assert row.message == "SchemaError: scores must be finite and within [0, 1]"
    assert set(pd.read_csv(out / "scores.csv")["file"].map(lambda f: Path(f).name)) == {"quiet.wav"}


def test_a_wav_cut_short_is_analysed_as_far_as_it_goes_and_listed(tmp_path, model):
    sf.write(tmp_path / "battery.wav", song(9.0), RATE)
    data = (tmp_path / "battery.wav").read_bytes()
    (tmp_path / "battery.wav").write_bytes(data[: len(data) * 2 // 3])  # 6 s of the 9 the header promises
    summary = analyze([tmp_path], tmp_path / "out", InferConfig(model=str(model), formats=("scores",)))
    assert (summary.files_done, summary.files_failed) == (1, 0)
    assert pd.read_csv(tmp_path / "out" / "scores.csv")["start_s"].tolist() == [0.0, 3.0]
    (row,) = pd.read_csv(tmp_path / "out" / "errors.csv").itertuples()
    assert row.error_type == "PartlyReadable" and "truncated" in row.message and "6.00 s present" in row.message


def test_a_recording_that_breaks_off_before_min_len_is_one_line_not_a_window(tmp_path, model):
    """A recorder that stopped at once: the milliseconds left, padded to a window, were scored as song."""
    sf.write(tmp_path / "header.wav", song(9.0), RATE)
    data = (tmp_path / "header.wav").read_bytes()
    (tmp_path / "header.wav").write_bytes(data[:44 + 2 * 441])  # 10 ms of the 9 s the header promises
    sf.write(tmp_path / "cut.flac", np.tile(song(3.0), 10), RATE)
    data = (tmp_path / "cut.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 60])  # breaks off within its first second
    sf.write(tmp_path / "clip.wav", song(0.5), RATE)  # an intact short clip is what the user gave: analysed
    summary = analyze([tmp_path], tmp_path / "out", InferConfig(model=str(model), formats=("scores",)))
    assert (summary.files_done, summary.files_failed) == (1, 2)
    assert pd.read_csv(tmp_path / "out" / "scores.csv").file.tolist() == [str(tmp_path / "clip.wav")]
    errors = pd.read_csv(tmp_path / "out" / "errors.csv").set_index("path").message
    assert errors[str(tmp_path / "header.wav")] == ("truncated to 0.01 s, under the 1 s of audio a window needs "
                                                    "(--min-len): not analysed")
    assert errors[str(tmp_path / "cut.flac")].startswith("corrupt or truncated after 0.")
    assert errors[str(tmp_path / "cut.flac")].endswith("under the 1 s of audio a window needs (--min-len): "
                                                       "not analysed")
    with pytest.raises(AudioReadError, match="under the 1 s"):  # the field app says the same
        analyze_recording(tmp_path / "cut.flac", InferConfig(model=str(model)))
    relaxed = analyze([tmp_path], tmp_path / "all", InferConfig(model=str(model), formats=("scores",), min_len=0.0))
    assert (relaxed.files_done, relaxed.files_failed) == (3, 0)


def test_a_flac_that_breaks_off_is_analysed_up_to_the_break(tmp_path, model):
    """A card error or a copy cut short mid-file: the blocks before the break are scored, the file is listed."""
    sf.write(tmp_path / "cut.flac", np.tile(song(3.0), 10), RATE)  # 30 s
    data = (tmp_path / "cut.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) * 3 // 4])
    summary = analyze([tmp_path], tmp_path / "out", InferConfig(model=str(model), formats=("scores",), block_s=5.0))
    assert (summary.files_done, summary.files_failed) == (1, 0)
    starts = pd.read_csv(tmp_path / "out" / "scores.csv")["start_s"].tolist()
    assert starts[:6] == [0.0, 3.0, 6.0, 9.0, 12.0, 15.0] and starts[-1] < 27.0
    (row,) = pd.read_csv(tmp_path / "out" / "errors.csv").itertuples()
    analysed_s = float(row.message.split("after ")[1].split(" s")[0])
    assert pd.read_csv(tmp_path / "out" / "scores.csv")["end_s"].max() == pytest.approx(analysed_s, abs=0.01)
    assert row.error_type == "PartlyReadable" and "corrupt or truncated after" in row.message
    assert row.message.endswith("the audio before it was analysed")
    resumed = analyze([tmp_path], tmp_path / "out", InferConfig(model=str(model), formats=("scores",), block_s=5.0))
    assert resumed.files_skipped == 1  # and errors.csv still says that the file breaks off
    assert pd.read_csv(tmp_path / "out" / "errors.csv").message.tolist() == [row.message]
    rethresholded = analyze([tmp_path], tmp_path / "out", InferConfig(model=str(model), formats=("scores", "csv"),
                                                                       block_s=5.0, min_conf=0.9))
    assert rethresholded.files_rewritten == 1 and (tmp_path / "out" / "detections.csv").is_file()
    assert pd.read_csv(tmp_path / "out" / "errors.csv").message.tolist() == [row.message]  # said again
    with pytest.raises(AudioReadError, match="corrupt or truncated after"):  # training clips must be whole
        read_audio(tmp_path / "cut.flac", RATE)
    shared = analyze([tmp_path], tmp_path / "two", InferConfig(model=str(model), formats=("scores",), block_s=5.0,
                                                                workers=2))  # its blocks decoded on two threads
    assert (shared.files_done, shared.files_failed) == (1, 0)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "two" / "scores.csv"),
                                  pd.read_csv(tmp_path / "out" / "scores.csv"))
    assert pd.read_csv(tmp_path / "two" / "errors.csv").message.tolist() == [row.message]
    (tmp_path / "a.wav").write_bytes(b"")  # a bad file added before a rerun: errors.csv stays in file order
    analyze([tmp_path], tmp_path / "two", InferConfig(model=str(model), formats=("scores",), block_s=5.0, workers=2))
    assert [Path(p).name for p in pd.read_csv(tmp_path / "two" / "errors.csv").path] == ["a.wav", "cut.flac"]


def test_recordings_without_detections_hold_no_table_to_the_end_of_the_run(tmp_path, model, monkeypatch):
    """Most recordings of a season hold no detection, and each one's empty table (ten arrays, ~1.5 KB) was held
    until detections.csv was written: 45 MB of a 30 000-file run's 209 MB when re-thresholded to 4 460 detections.
    Tables with rows are still held; a recording that failed holds none; a resumed one gets the same from the
    journal."""
    import pulse.analyze

    sf.write(tmp_path / "night.wav", song(6.0), RATE)
    sf.write(tmp_path / "quiet.wav", np.zeros(6 * RATE, np.float32), RATE)
    (tmp_path / "junk.wav").write_bytes(b"not a recording")
    held, write_run_tables = {}, pulse.analyze._write_run_tables

    def noting_what_is_held(files, run, config):
        write_run_tables(files, run, config)
        held.update({f.path.name: f.run_tables for f in files})

    monkeypatch.setattr(pulse.analyze, "_write_run_tables", noting_what_is_held)
    cfg = InferConfig(model=str(model), formats=("csv", "scores", "raven_combined"))
    analyze([tmp_path], tmp_path / "out", cfg)
    assert set(held["night.wav"]) == {"detections", "scores", "sequence"}
    assert set(held["quiet.wav"]) == {"scores", "sequence"} and held["junk.wav"] is None
    assert held["quiet.wav"]["sequence"][2] is None  # the combined table: its name and length only
    first = pd.read_csv(tmp_path / "out" / "detections.csv")
    assert set(first["File"].map(lambda f: Path(f).name)) == {"night.wav"}
    analyze([tmp_path], tmp_path / "out", cfg)  # resumed: rebuilt from the journal, the same tables
    assert set(held["quiet.wav"]) == {"scores", "sequence"} and held["quiet.wav"]["sequence"][2] is None
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out" / "detections.csv"), first)
    assert len(pd.read_csv(tmp_path / "out" / "scores.csv")) == 4  # two windows each


def test_a_rerun_with_other_settings_names_the_outputs_it_leaves_stale(tmp_path, model, caplog):
    sf.write(tmp_path / "a.wav", song(3.0), RATE)
    analyze([tmp_path / "a.wav"], tmp_path / "out", InferConfig(model=str(model), formats=("csv", "scores")))
    with caplog.at_level("WARNING", logger="pulse.analyze"):
        analyze([tmp_path / "a.wav"], tmp_path / "out", InferConfig(model=str(model), formats=("csv",), min_conf=0.9))
        analyze([tmp_path / "a.wav"], tmp_path / "out", InferConfig(model=str(model), formats=("csv",), min_conf=0.9))
    (warning,) = [r.getMessage() for r in caplog.records if "earlier run" in r.getMessage()]
    assert "another min_conf wrote scores output there" in warning
    # the same settings, a recording added: scores.csv of the earlier run lacks it, and that is said too
    analyze([tmp_path / "a.wav"], tmp_path / "again", InferConfig(model=str(model), formats=("csv", "scores")))
    sf.write(tmp_path / "b.wav", song(3.0), RATE)
    caplog.clear()
    with caplog.at_level("WARNING", logger="pulse.analyze"):
        analyze([tmp_path / "a.wav", tmp_path / "b.wav"], tmp_path / "again",
                InferConfig(model=str(model), formats=("csv",)))
    (warning,) = [r.getMessage() for r in caplog.records if "earlier run" in r.getMessage()]
    assert "an earlier run wrote scores output there" in warning and "may not match its recordings" in warning


def test_raven_band_never_above_nyquist(tmp_path, model):
    sf.write(tmp_path / "phone.wav", song(3.0, 8000, freq=1000), 8000)
    sf.write(tmp_path / "studio.wav", song(3.0, 96000), 96000)
    analyze([tmp_path / "phone.wav", tmp_path / "studio.wav"], tmp_path / "out", InferConfig(model=str(model)))
    phone = pd.read_csv(tmp_path / "out" / "phone.pulse.selection.table.txt", sep="\t")
    studio = pd.read_csv(tmp_path / "out" / "studio.pulse.selection.table.txt", sep="\t")
    assert len(phone) and len(studio)
    assert (phone["High Freq (Hz)"] == 4000).all() and (studio["High Freq (Hz)"] == ModelConfig().f_max).all()
    assert (phone["Low Freq (Hz)"] < phone["High Freq (Hz)"]).all()


def test_recordings_below_the_model_rate_are_flagged_once(tmp_path, model, caplog):
    for name in ("a.wav", "b.wav"):
        sf.write(tmp_path / name, song(3.0, 22050), 22050)
    sf.write(tmp_path / "c.wav", song(3.0), RATE)
    with caplog.at_level("WARNING", logger="pulse.analyze"):
        summary = analyze([tmp_path], tmp_path / "out", InferConfig(model=str(model)))
    flagged = [r.getMessage() for r in caplog.records if "below the model's" in r.getMessage()]
    assert summary.files_done == 3 and len(flagged) == 1
    assert "22050 Hz" in flagged[0] and "above 11025 Hz" in flagged[0]
    assert below_rate_note(22050, 15000.0, "birdnet") and not below_rate_note(44100, 15000.0, "birdnet")
    caplog.clear()  # re-thresholded from the saved scores, the files are not decoded, and the note is said again
    with caplog.at_level("WARNING", logger="pulse.analyze"):
        summary = analyze([tmp_path], tmp_path / "out", InferConfig(model=str(model), min_conf=0.5))
    assert summary.files_rewritten == 3
    assert [r.getMessage() for r in caplog.records if "below the model's" in r.getMessage()] == flagged


def test_ultrasonic_recordings_are_told_once_that_the_model_does_not_hear_above_its_band(tmp_path, model, caplog):
    """A bush-cricket's AudioMoth file at 192-384 kHz was resampled to 44.1 kHz without a word, its ultrasound
    dropped, while its spectrogram shows it: said once per run, and again when outputs are rewritten from the saved
    scores; a 48 kHz recording holds no ultrasound and is not flagged."""
    sf.write(tmp_path / "48k.wav", song(3.0, 48000), 48000)
    for name in ("a.wav", "b.wav"):
        sf.write(tmp_path / name, song(3.0, 192000), 192000)

    def said(**kw) -> list[str]:
        caplog.clear()
        with caplog.at_level("WARNING", logger="pulse.analyze"):
            analyze([tmp_path], tmp_path / "out", InferConfig(model=str(model), **kw))
        return [r.getMessage() for r in caplog.records if "not used" in r.getMessage()]

    (flagged,) = said()
    band = f"{ModelConfig().f_min:g}-{ModelConfig().f_max:g} Hz"
    assert "a.wav: recorded at 192000 Hz" in flagged and f"it hears {band} only" in flagged
    assert f"resampled to the model's {ModelConfig().sample_rate} Hz" in flagged
    assert "above 22050 Hz (up to 96000 Hz) is not used" in flagged
    assert said(min_conf=0.5) == [flagged]  # rewritten from the saved scores
    assert not above_band_note(48000, 44100, (1000.0, 22050.0)) and above_band_note(96000, 48000, (0.0, 15000.0))


def test_a_run_that_mixes_channels_says_so_once(tmp_path, model, caplog):
    """Two microphones apart (a stereo Song Meter's) hear a song at different times, and their mix can cancel it:
    here a 2205 Hz song reaches the second half a period later, and the mix is silent. Said once per run, with
    --channel to analyse one microphone; not said with --channel."""
    left = song(6.0, freq=2205)
    stereo = np.stack([left, np.r_[np.zeros(10, np.float32), left[:-10]]], axis=1)  # 10 samples: half a period
    for name in ("S4U12345_0+1_20250701_213000.wav", "S4U12345_0+1_20250701_223000.wav"):
        sf.write(tmp_path / name, stereo, RATE)

    def run(out: str, **kw) -> tuple[pd.DataFrame, list[str]]:
        caplog.clear()
        with caplog.at_level("WARNING", logger="pulse.analyze"):
            analyze([tmp_path], tmp_path / out, InferConfig(model=str(model), formats=("scores",), **kw))
        said = [r.getMessage() for r in caplog.records if "mixed to mono" in r.getMessage()]
        return pd.read_csv(tmp_path / out / "scores.csv"), said

    mixed, said = run("mixed")
    assert mixed["Chorthippus biguttulus"].max() < 0.1 and len(said) == 1 and "--channel N" in said[0]
    one, said = run("channel0", channel=0)
    assert one["Chorthippus biguttulus"].min() > 0.9 and said == []
    (tmp_path / "mono").mkdir()
    sf.write(tmp_path / "mono" / "20250701_213000.WAV", left, RATE)
    caplog.clear()
    with caplog.at_level("WARNING", logger="pulse.analyze"):
        analyze([tmp_path / "mono"], tmp_path / "mono_out", InferConfig(model=str(model), formats=("scores",)))
    assert "mixed to mono" not in caplog.text  # one channel: nothing mixed


def test_workers_zero_decodes_with_one_thread_per_two_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert decoding_threads(0) == 8 and decoding_threads(3) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert decoding_threads(0) == 1


def test_errors_csv_lists_files_in_the_order_they_were_given_and_found(tmp_path, model):
    for rel in ("zz/b.wav", "in/rec/x.wav", "in/rec.1/x.wav", "aa/a.wav"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    inputs = [tmp_path / "zz", tmp_path / "in", tmp_path / "aa"]
    analyze(inputs, tmp_path / "out", InferConfig(model=str(model), workers=3))
    listed = [Path(p).relative_to(tmp_path).as_posix() for p in pd.read_csv(tmp_path / "out" / "errors.csv").path]
    assert listed == ["zz/b.wav", "in/rec/x.wav", "in/rec.1/x.wav", "aa/a.wav"]


def test_overlap_channel_and_threshold(tmp_path, model):
    stereo = np.stack([np.zeros(int(9 * RATE), np.float32), song(9.0)], axis=1)
    sf.write(tmp_path / "stereo.wav", stereo, RATE)
    out = tmp_path / "out"

    def run(**kw) -> pd.DataFrame:
        analyze([tmp_path / "stereo.wav"], out, InferConfig(model=str(model), formats=("scores",), resume=False, **kw))
        return pd.read_csv(out / "scores.csv")

    assert run(overlap=1.5).start_s.tolist() == [0, 1.5, 3, 4.5, 6]
    assert run(channel=0)["Chorthippus biguttulus"].max() < 0.01  # the silent channel
    assert run(channel=1)["Chorthippus biguttulus"].min() > 0.9
    mixed = run()["Chorthippus biguttulus"]
    assert 0.5 < mixed.min() < 0.99  # half as loud when mixed to mono


def test_merge_consecutive_makes_a_song_one_row_in_every_table_and_rewrites_them_on_resume(tmp_path, model):
    """12 s of song then 6 s of silence then 6 s of song: BirdNET-Analyzer's --merge_consecutive."""
    sf.write(tmp_path / "night.wav", np.r_[song(12.0), np.zeros(6 * RATE, np.float32), song(6.0)], RATE)
    out, formats = tmp_path / "out", ("raven", "csv", "scores", "kaleidoscope")

    def run(merge: int):
        summary = analyze([tmp_path], out, InferConfig(model=str(model), formats=formats, merge_consecutive=merge))
        found = pd.read_csv(out / "detections.csv")  # BirdNET-Analyzer's CSV columns
        return summary, found[found["Scientific name"] == "Chorthippus biguttulus"]

    done, per_window = run(1)
    assert per_window["Start (s)"].tolist() == [0, 3, 6, 9, 18, 21] and done.files_done == 1
    done, zero = run(0)  # 0 is "no merging" too, as in BirdNET-Analyzer: nothing to redo
    assert done.files_skipped == 1 and zero["Start (s)"].tolist() == per_window["Start (s)"].tolist()
    done, merged = run(100)
    assert (done.files_done, done.files_rewritten) == (0, 1)  # another merge: its tables rewritten, not skipped
    assert list(zip(merged["Start (s)"], merged["End (s)"])) == [(0, 12), (18, 24)]
    windows = pd.read_csv(out / "scores.csv")["Chorthippus biguttulus"]
    best3 = np.sort(windows[:4])[-3:].mean()
    assert merged["Confidence"].iloc[0] == pytest.approx(best3, abs=1e-4)  # the mean of the run's 3 best windows
    capped = run(3)[1]  # at most 3 windows a row
    assert list(zip(capped["Start (s)"], capped["End (s)"])) == [(0, 9), (9, 12), (18, 24)]
    raven = pd.read_csv(out / "night.pulse.selection.table.txt", sep="\t")
    song_rows = raven[raven["Common Name"] == "Bow-winged Grasshopper"]
    assert list(zip(song_rows["Begin Time (s)"], song_rows["End Time (s)"])) == [(0, 9), (9, 12), (18, 24)]
    kaleidoscope = pd.read_csv(out / "kaleidoscope.csv")
    assert sorted(kaleidoscope.loc[kaleidoscope.scientific_name == "Chorthippus biguttulus", "DURATION"]) == [3, 6, 9]
    assert len(pd.read_csv(out / "scores.csv")) == 8  # every window kept


def test_resume_skips_finished_files(tmp_path, model):
    for name in ("a", "b", "c"):
        sf.write(tmp_path / f"{name}.wav", song(3.0 + ord(name) % 3), RATE)
    out, cfg = tmp_path / "out", InferConfig(model=str(model), formats=("raven", "csv", "scores"))
    first = analyze([tmp_path], out, cfg)
    tables = {p.name: p.read_bytes() for p in out.glob("*.csv")}
    assert (first.files_done, first.files_skipped) == (3, 0)
    again = analyze([tmp_path], out, cfg)
    assert (again.files_done, again.files_skipped) == (0, 3)
    assert {p.name: p.read_bytes() for p in out.glob("*.csv")} == tables  # run-wide tables still complete
    sf.write(tmp_path / "b.wav", song(9.0), RATE)  # a changed file is analysed again
    assert (analyze([tmp_path], out, cfg).files_done) == 1
    rethresholded = analyze([tmp_path], out, InferConfig(model=str(model), min_conf=0.9))  # tables from saved scores
    assert (rethresholded.files_done, rethresholded.files_rewritten) == (0, 3)
    assert analyze([tmp_path], out, InferConfig(model=str(model), overlap=1.0)).files_done == 3  # new scores
    assert analyze([tmp_path], out, InferConfig(model=str(model), resume=False, min_conf=0.9)).files_skipped == 0
    again = CliRunner().invoke(app, ["analyze", str(tmp_path), "--out", str(out), "--model", str(model),
                                     "--min-conf", "0.9"])
    assert again.exit_code == 0 and "0 done, 0 failed, 3 skipped (finished by an earlier run" in again.output
    assert "h of audio" not in again.output  # not "0.0 h of audio at 0.0x real time"
    redo = CliRunner().invoke(app, ["analyze", str(tmp_path), "--out", str(out), "--model", str(model),
                                    "--min-conf", "0.9", "--no-resume"])
    assert redo.exit_code == 0 and "3 done, 0 failed, 0 skipped" in redo.output
    # Back to the first settings: the 0.9 runs rewrote every Raven table, so nothing may be skipped; the model
    # need not run again, and the rewritten tables are those a fresh run writes.
    back = CliRunner().invoke(app, ["analyze", str(tmp_path), "--out", str(out), "--model", str(model),
                                    "--format", "raven,csv,scores"])
    assert back.exit_code == 0 and "0 done, 0 failed, 0 skipped, 3 rewritten from saved scores" in back.output
    analyze([tmp_path], tmp_path / "fresh", cfg)
    for name in ("a.pulse.selection.table.txt", "b.pulse.selection.table.txt", "c.pulse.selection.table.txt",
                 "detections.csv", "scores.csv"):
        assert (out / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes(), name
    (out / "a.pulse.selection.table.txt").unlink()  # a deleted output is written again
    assert analyze([tmp_path], out, cfg).files_rewritten == 1 and (out / "a.pulse.selection.table.txt").is_file()
    scored_anew = CliRunner().invoke(app, ["analyze", str(tmp_path), "--out", str(out), "--model", str(model),
                                           "--format", "raven,csv,scores", "--overlap", "1.0"])
    assert "3 done (3 again, as the model or settings changed), 0 failed" in scored_anew.output  # said after, too


def test_the_combined_raven_table_shifts_each_recording_by_the_lengths_of_those_before_it(tmp_path, model,
                                                                                           monkeypatch):
    """BirdNET-Analyzer's combined selection table: Raven Pro opens the recordings as one sequence, so each
    selection's Begin/End Time is its time in its recording plus the lengths of the recordings before it, in the
    run's order: a recording without detections shifts those after it, one that failed is not in the sequence, and
    recordings an earlier run finished keep their place. The list
    beside it, which Raven opens as that sequence, names the recordings without detections too."""
    examples, first = REPO / "pulse/assets/examples", tmp_path / "in"
    first.mkdir()
    shutil.copy(examples / "Chorthippus_biguttulus_Take22_0-8s.flac", first / "a_chorthippus.flac")
    sf.write(first / "b_quiet.wav", np.zeros(int(5.5 * RATE), np.float32), RATE)  # no detection
    (first / "c_junk.wav").write_bytes(b"not a recording")  # fails
    shutil.copy(examples / "Gryllus_campestris_dat003-004.flac", first / "d_gryllus.flac")
    out, cfg = tmp_path / "out", InferConfig(model=str(model), min_conf=0.001, formats=("csv", "raven_combined"))
    with as_an_older_pulse(monkeypatch):
        analyze([first], out, cfg)
    shutil.copy(examples / "Tettigonia_viridissima_200726_0062.flac", first / "e_tettigonia.flac")
    shutil.copy(examples / "mix_Roeseliana_roeselii_in_bird_chorus_snr6dB.flac", first / "f_roeseliana.flac")
    summary = analyze([first], out, cfg)
    assert (summary.files_skipped, summary.files_done, summary.files_failed) == (3, 2, 1)
    combined = pd.read_csv(out / "combined.selection.table.txt", sep="\t")
    assert list(combined.columns) == [*RAVEN_COLUMNS, "Begin File"]
    order = ["a_chorthippus.flac", "b_quiet.wav", "d_gryllus.flac", "e_tettigonia.flac", "f_roeseliana.flac"]
    starts = dict(zip(order, np.cumsum([0.0] + [sf.info(first / name).duration for name in order[:-1]])))
    assert list(combined["Begin File"].unique()) == ["a_chorthippus.flac", "d_gryllus.flac", "e_tettigonia.flac",
                                                     "f_roeseliana.flac"]
    assert combined["Selection"].tolist() == list(range(1, len(combined) + 1))
    shift = combined["Begin Time (s)"] - combined["File Offset (s)"]
    np.testing.assert_allclose(shift, combined["Begin File"].map(starts), atol=1.5e-3)
    assert starts["f_roeseliana.flac"] > starts["e_tettigonia.flac"] + 5.0  # b_quiet's 5.5 s are counted
    listed = (out / "combined.selection.table.list.txt").read_text().splitlines()
    assert listed == [os.path.abspath(first / name) for name in order]
    detections = pd.read_csv(out / "detections.csv")  # the same rows, in the same order
    assert combined["Begin Path"].tolist() == [os.path.abspath(f) for f in detections["File"]]
    np.testing.assert_allclose(combined["File Offset (s)"], detections["Start (s)"], atol=1e-3)
    np.testing.assert_allclose(combined["End Time (s)"] - shift, detections["End (s)"], atol=1e-3)
    for column in ("Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)", "File Offset (s)"):
        assert combined[column].dtype == np.float64, column
    analyze([first], tmp_path / "fresh", cfg)  # rebuilt from the journal: what a run of all of them at once writes
    for name in ("combined.selection.table.txt", "combined.selection.table.list.txt"):
        assert (out / name).read_text() == (tmp_path / "fresh" / name).read_text(), name


def test_a_recording_pulse_now_reads_otherwise_is_analysed_again_and_only_it(tmp_path, model, monkeypatch, caplog):
    """A time-expansion WAV (GUANO TE: 10) analysed before TE was read was scored over ten times its length at a
    tenth of its pitch, and an AudioMoth's triggered WAV without the stretches it left out; a rerun into the same
    --out skipped them (or rewrote their outputs from those scores) and kept them. They are analysed again; the
    recording beside them, read as before, is skipped or rewritten."""
    from tests.test_audiomoth import FIRST, SECOND, audiomoth_wav, burst, marker

    time_expanded(tmp_path / "bat.wav", 6.0)
    audiomoth_wav(tmp_path / "20240701_210000T.WAV",
                  np.concatenate([burst(FIRST, 3000, 1), marker(10 * 48000 // 256), burst(SECOND, 6000, 2)]))
    # 4.0000227 s, whose last window's end the journal keeps to the microsecond, 4.000023: a hair past it
    sf.write(tmp_path / "plain.wav", song(4.1)[:4 * RATE + 1], RATE)
    sf.write(tmp_path / "lossy.mp3", song(4.0), RATE)
    out, cfg = tmp_path / "out", InferConfig(model=str(model), formats=("raven", "scores"))
    with as_an_older_pulse(monkeypatch):
        assert analyze([tmp_path], out, cfg).files_done == 4
    ends = {Path(f).name: end for f, end in pd.read_csv(out / "scores.csv").groupby("file")["end_s"].max().items()}
    assert ends == pytest.approx({"bat.wav": 60.0, "20240701_210000T.WAV": 2.006, "plain.wav": 4.0, "lossy.mp3": 4.0},
                                 abs=1e-3)
    shutil.copytree(out, tmp_path / "other_threshold")
    with caplog.at_level(logging.INFO, logger="pulse.analyze"):
        again = analyze([tmp_path], out, cfg)
    redone = 2
    assert (again.files_done, again.files_skipped, again.files_rewritten) == (redone, 4 - redone, 0)
    assert f"{redone} file(s) an earlier run into {out} analysed are analysed again, as they read otherwise" in (
        caplog.text)
    ends = {Path(f).name: end for f, end in pd.read_csv(out / "scores.csv").groupby("file")["end_s"].max().items()}
    assert ends == pytest.approx({"bat.wav": 6.0, "20240701_210000T.WAV": 12.0, "plain.wav": 4.0, "lossy.mp3": 4.0},
                                 abs=1e-3)
    assert analyze([tmp_path], out, cfg).files_skipped == 4  # done now
    rethresholded = analyze([tmp_path], tmp_path / "other_threshold", InferConfig(model=str(model), min_conf=0.9,
                                                                                formats=("raven", "scores")))
    assert (rethresholded.files_done, rethresholded.files_rewritten) == (redone, 4 - redone)
    assert (rethresholded.rethresholded.total(), rethresholded.redone.total()) == (4 - redone, 0)  # as said
    assert (tmp_path / "other_threshold" / "scores.csv").read_bytes() == (out / "scores.csv").read_bytes()


def test_a_scores_version_bump_has_every_journalled_file_analysed_again(tmp_path, model, monkeypatch):
    """SCORES_VERSION is bumped when scoring changes every file's scores: it kept journalled scores from being
    re-thresholded, but a rerun with the same settings skipped the files and kept their outputs."""
    sf.write(tmp_path / "a.wav", song(3.0), RATE)
    out, cfg = tmp_path / "out", InferConfig(model=str(model))
    assert analyze([tmp_path], out, cfg).files_done == 1
    monkeypatch.setattr("pulse.analyze.SCORES_VERSION", 2)
    again = analyze([tmp_path], out, cfg)
    assert (again.files_done, again.files_skipped, again.files_rewritten) == (1, 0, 0)
    assert again.redone == {"settings changed (scores_version 1 -> 2)": 1}


def test_a_rerun_tries_files_that_failed_again_and_says_so(tmp_path, model, caplog):
    """A card's file half-copied (here, not audio at all) fails; the rerun tried it again, as it should (copied
    again, it may be whole), but said nothing of it, so the same failure looked like a new one."""
    sf.write(tmp_path / "a.wav", song(3.0), RATE)
    (tmp_path / "b.wav").write_bytes(b"RIFF" + bytes(100))
    (tmp_path / "c.wav").write_bytes(b"")
    out, cfg = tmp_path / "out", InferConfig(model=str(model))
    assert (analyze([tmp_path], out, cfg).files_failed) == 2
    with caplog.at_level(logging.INFO, logger="pulse.analyze"):
        again = analyze([tmp_path], out, cfg)
    assert (again.files_done, again.files_failed, again.files_skipped) == (0, 2, 1)
    assert f"2 file(s) that failed in an earlier run into {out} are tried again" in caplog.text
    sf.write(tmp_path / "b.wav", song(3.0), RATE)  # copied again, whole
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pulse.analyze"):
        fixed = analyze([tmp_path], out, cfg)
    assert (fixed.files_done, fixed.files_failed, fixed.files_skipped) == (1, 1, 1)
    assert f"2 file(s) that failed in an earlier run into {out} are tried again" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pulse.analyze"):
        analyze([tmp_path], out, InferConfig(model=str(model), resume=False))
    assert "tried again" not in caplog.text  # --no-resume analyses every file again: nothing to tell apart


def test_a_format_left_stale_by_a_run_without_it_is_made_again_when_asked_for_again(tmp_path, model):
    """Formats are part of what a journal entry was made under: a run at another threshold without --format
    audacity leaves the earlier Audacity labels as they were; asking for them again at the new threshold must not
    skip the files as done and keep those stale labels."""
    sf.write(tmp_path / "a.wav", song(3.0), RATE)
    out = tmp_path / "out"
    analyze([tmp_path], out, InferConfig(model=str(model), min_conf=0.5, formats=("raven", "audacity")))
    analyze([tmp_path], out, InferConfig(model=str(model), min_conf=0.95, formats=("raven",)))
    both = InferConfig(model=str(model), min_conf=0.95, formats=("raven", "audacity"))
    assert analyze([tmp_path], out, both).files_skipped == 0
    analyze([tmp_path], tmp_path / "fresh", both)
    name = "a.pulse.results.txt"
    assert (out / name).read_text() == (tmp_path / "fresh" / name).read_text()


def test_a_model_is_known_by_its_content_not_its_place_or_time(tmp_path, model):
    """The journal keyed a model file by its place, size and time: a reinstall of pulse (the bundled model written
    anew) or a model copied elsewhere had a whole archive analysed again, to the same scores; a retrained model
    copied over the old one keeping its size and time (cp -p) had its recordings skipped with the old model's
    detections. It is keyed by its bytes."""
    import os
    import shutil

    sf.write(tmp_path / "a.wav", song(3.0), RATE)
    mine = tmp_path / "models" / "meter.onnx"
    mine.parent.mkdir()
    shutil.copy(model, mine)
    out = tmp_path / "out"
    assert analyze([tmp_path / "a.wav"], out, InferConfig(model=str(mine))).files_done == 1
    stat = mine.stat()
    os.utime(mine, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # written again, a second later
    moved = Path(shutil.copy(mine, tmp_path / "elsewhere.onnx"))
    for same in (mine, moved):
        again = analyze([tmp_path / "a.wav"], out, InferConfig(model=str(same)))
        assert (again.files_done, again.files_skipped) == (0, 1), same
    other_weights(mine)
    os.utime(mine, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # as cp -p leaves it: the same size and time
    assert mine.stat().st_size == stat.st_size
    again = analyze([tmp_path / "a.wav"], out, InferConfig(model=str(mine)))
    assert (again.files_done, again.files_skipped, again.files_rewritten) == (1, 0, 0)
    exported = tmp_path / "exported"  # a `pulse export` folder as --model: its model.onnx runs
    exported.mkdir()
    shutil.copy(model, exported / "model.onnx")
    assert analyze([tmp_path / "a.wav"], out, InferConfig(model=str(exported))).files_done == 1
    other_weights(exported / "model.onnx")
    assert analyze([tmp_path / "a.wav"], out, InferConfig(model=str(exported))).files_done == 1


def test_the_combined_raven_table_alone_is_made_from_the_detections(tmp_path, model, monkeypatch):
    """--format raven_combined alone: the detections are built for it though no other writer reads them. Its list
    names a recording given by a relative path by its absolute one, as Raven Pro opens the list from anywhere."""
    sf.write(tmp_path / "a.wav", song(6.0), RATE)
    monkeypatch.chdir(tmp_path)
    summary = analyze(["a.wav"], tmp_path / "out", InferConfig(model=str(model), formats=("raven_combined",)))
    assert (summary.files_done, summary.files_failed) == (1, 0)
    assert len(pd.read_csv(tmp_path / "out" / "combined.selection.table.txt", sep="\t")) > 0
    assert (tmp_path / "out" / "combined.selection.table.list.txt").read_text() == f"{tmp_path / 'a.wav'}\n"


def test_a_rerun_that_does_files_again_says_once_which_model_or_settings_changed_and_counts_them(tmp_path, model,
                                                                                                 caplog):
    """A rerun into an --out with another model or settings did every file again without a word why (the journal
    kept a hash): a 30,000-file archive redone for a model or threshold given by mistake. One line before the work
    names the model's digests or the settings, with counts, and summary.json counts them. Files whose outputs are
    only rewritten from their saved scores (a threshold changed) were said to be "done again", as if analysed anew:
    they are said, and counted, apart."""
    import hashlib
    import json
    import shutil

    for name in ("a", "b", "c"):
        sf.write(tmp_path / f"{name}.wav", song(3.0), RATE)
    out, digest = tmp_path / "out", hashlib.sha256(model.read_bytes()).hexdigest()[:12]
    analyze([tmp_path], out, InferConfig(model=str(model)))
    analyze([tmp_path / "b.wav"], out, InferConfig(model=str(model), min_conf=0.5))
    sf.write(tmp_path / "a.wav", song(4.0), RATE)  # a changed recording is analysed again, for that reason alone

    def rerun(cfg: InferConfig) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="pulse.analyze"):
            analyze([tmp_path], out, cfg)
        return [r.getMessage() for r in caplog.records if "an earlier run into" in r.getMessage()]

    assert rerun(InferConfig(model=str(model), min_conf=0.9)) == [
        f"2 file(s) an earlier run into {out} finished get new outputs from their saved scores: 1 as settings "
        "changed (min_conf 0.5 -> 0.9); 1 as settings changed (min_conf 0.25 -> 0.9)"]  # as many each: file order
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["files_done"], summary["files_rewritten"], summary["files_redone"]) == (1, 2, 0)
    assert summary["rewritten_because"] == {"settings changed (min_conf 0.25 -> 0.9)": 1,
                                            "settings changed (min_conf 0.5 -> 0.9)": 1}
    retrained = other_weights(Path(shutil.copy(model, tmp_path / "retrained.onnx")))
    other = hashlib.sha256(retrained.read_bytes()).hexdigest()[:12]
    assert rerun(InferConfig(model=str(retrained), min_conf=0.9, overlap=1.0)) == [
        f"3 file(s) an earlier run into {out} finished are analysed again: the model changed (was sha256 "
        f"{digest}..., now sha256 {other}...) and settings changed (overlap 0.0 -> 1.0)"]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["files_done"], summary["files_redone"], summary["rewritten_because"]) == (3, 3, {})
    assert rerun(InferConfig(model=str(retrained), min_conf=0.9, overlap=1.0)) == []  # all skipped
    assert json.loads((out / "summary.json").read_text())["files_redone"] == 0
    assert rerun(InferConfig(model=str(model), resume=False)) == []  # --no-resume: every file, as asked


def test_a_file_done_again_that_fails_is_not_counted_as_done_again(tmp_path, model):
    """The files done again as the model or settings changed were counted before the work: a rerun whose file then
    failed (its output blocked, a drive unplugged part way) ended on '0 done (1 again, ...)', and summary.json
    counted it as redone. Only the files analysed again, or rewritten from their saved scores, count."""
    for name in ("a", "b", "c"):
        sf.write(tmp_path / f"{name}.wav", song(3.0), RATE)
    out = tmp_path / "out"
    analyze([tmp_path], out, InferConfig(model=str(model)))
    blocked = out / "a.pulse.selection.table.txt"
    blocked.unlink()
    blocked.mkdir()  # its table cannot be written: a.wav fails

    def summary_of(cfg: InferConfig) -> tuple:
        analyze([tmp_path], out, cfg)
        summary = json.loads((out / "summary.json").read_text())
        return (summary["files_done"], summary["files_rewritten"], summary["files_failed"], summary["files_redone"],
                summary["redone_because"], summary["rewritten_because"])

    assert summary_of(InferConfig(model=str(model), overlap=1.0)) == (
        2, 0, 1, 2, {"settings changed (overlap 0.0 -> 1.0)": 2}, {})
    assert summary_of(InferConfig(model=str(model), overlap=1.0, min_conf=0.9)) == (
        0, 2, 1, 0, {}, {"settings changed (min_conf 0.25 -> 0.9)": 2})


def test_a_model_folder_listed_in_another_order_is_the_same_model(tmp_path, model, monkeypatch):
    """A file system lists a folder in an order of its own (ext4 by a hash seeded per disk): a `pulse export` folder
    copied to another disk, listing its files in another order, is the same model, and nothing is analysed again."""
    import shutil

    sf.write(tmp_path / "a.wav", song(3.0), RATE)
    exported = tmp_path / "exported"
    exported.mkdir()
    shutil.copy(model, exported / "model.onnx")
    (exported / "labels.txt").write_text("meter\n")
    out = tmp_path / "out"
    assert analyze([tmp_path / "a.wav"], out, InferConfig(model=str(exported))).files_done == 1
    listed = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda folder: reversed(list(listed(folder))))
    assert analyze([tmp_path / "a.wav"], out, InferConfig(model=str(exported))).files_skipped == 1


def test_a_file_whose_rewrite_fails_is_analysed_and_its_error_listed_while_the_others_are_rewritten(tmp_path, model):
    for name in ("a", "b", "c"):
        sf.write(tmp_path / f"{name}.wav", song(3.0), RATE)
    out = tmp_path / "out"
    analyze([tmp_path], out, InferConfig(model=str(model)))
    (out / "b.pulse.selection.table.txt").unlink()
    (out / "b.pulse.selection.table.txt").mkdir()  # its table cannot be written
    again = analyze([tmp_path], out, InferConfig(model=str(model), min_conf=0.9))
    assert (again.files_rewritten, again.files_done, again.files_failed) == (2, 0, 1)
    (row,) = pd.read_csv(out / "errors.csv").itertuples()
    assert row.path == str(tmp_path / "b.wav") and row.stage == "write"
    # as the commands say a file, not os.replace's "[Errno 21] Is a directory: 'X' -> 'X'"
    assert row.message == f"{out / 'b.pulse.selection.table.txt'}: Is a directory"


def test_two_cards_in_two_runs_into_one_out_never_leave_a_wrong_table(tmp_path, model, caplog):
    """AM01/REC001.WAV, then AM02/REC001.WAV in a second command: the second replaces the first's table."""
    for card, seconds in (("AM01", 3.0), ("AM02", 9.0)):
        (tmp_path / card).mkdir()
        sf.write(tmp_path / card / "REC001.wav", song(seconds), RATE)
    out, cfg = tmp_path / "out", InferConfig(model=str(model))
    table = out / "REC001.pulse.selection.table.txt"
    analyze([tmp_path / "AM01"], out, cfg)
    first = table.read_bytes()
    with caplog.at_level(logging.WARNING):
        analyze([tmp_path / "AM02"], out, cfg)
    assert "1 recording(s) replace per-file outputs an earlier run wrote" in caplog.text and "AM01" in caplog.text
    again = analyze([tmp_path / "AM01"], out, cfg)  # its table was replaced: written again (from its scores)
    assert (again.files_rewritten, again.files_skipped) == (1, 0) and table.read_bytes() == first


def test_a_second_card_given_with_the_first_moves_clashing_names_and_says_the_old_files_are_left(tmp_path, model,
                                                                                                  caplog):
    for card in ("AM01", "AM02"):
        (tmp_path / card).mkdir()
        sf.write(tmp_path / card / "REC001.wav", song(3.0), RATE)
    out, cfg = tmp_path / "out", InferConfig(model=str(model))
    analyze([tmp_path / "AM01"], out, cfg)
    with caplog.at_level(logging.WARNING):
        analyze([tmp_path / "AM01"], out, cfg)  # the same layout again: nothing moved, nothing said
        assert "new names" not in caplog.text
        analyze([tmp_path / "AM01", tmp_path / "AM02"], out, cfg)
    assert ("1 recording(s) get per-file outputs under new names" in caplog.text
            and "written as REC001.wav before, now as AM01/REC001.wav" in caplog.text)
    assert (out / "REC001.pulse.selection.table.txt").exists()  # left, as said
    assert (out / "AM01" / "REC001.pulse.selection.table.txt").exists()
    assert (out / "AM02" / "REC001.pulse.selection.table.txt").exists()


CRASH = """
import os, signal, sys
from pulse.analyze import analyze
from pulse.config import InferConfig
from pulse.writers.raven import RavenWriter
from export.atomic import atomic_path
calls = []
def half_then_die(self, table, path):
    calls.append(path)
    if len(calls) == 3:  # die mid-write of the third file, as kill -9 would
        with atomic_path(path) as tmp:
            tmp.write_text("Selection\\tView\\tCha")
            os.kill(os.getpid(), signal.SIGKILL)
    return original(self, table, path)
original, RavenWriter.write = RavenWriter.write, half_then_die
analyze([sys.argv[1]], sys.argv[2], InferConfig(model=sys.argv[3], workers=2, batch_size=2))
"""


def test_another_cards_recording_of_the_same_name_size_and_time_is_analysed(tmp_path, model):
    """AudioMoths deployed together write YYYYMMDD_HHMMSS.WAV of the same size at the same times: card B's
    recording copied (`cp -p`) where card A's was is analysed, not skipped for A's."""
    card = tmp_path / "incoming" / "20260601_200000.WAV"
    card.parent.mkdir()
    sf.write(card, song(6.0), RATE, subtype="PCM_16")
    out, cfg = tmp_path / "out", InferConfig(model=str(model), formats=("raven", "csv"))
    assert analyze([card.parent], out, cfg).files_done == 1
    assert len(pd.read_csv(out / "detections.csv")) > 0  # card A: song
    quiet = tmp_path / "b.WAV"
    sf.write(quiet, np.zeros(6 * RATE, np.float32), RATE, subtype="PCM_16")
    replace_keeping_size_and_time(card, quiet.read_bytes())
    again = analyze([card.parent], out, cfg)
    assert (again.files_done, again.files_skipped) == (1, 0)
    assert len(pd.read_csv(out / "detections.csv")) == 0  # card B: silence
    assert len((out / "20260601_200000.pulse.selection.table.txt").read_text().splitlines()) == 1  # the header


HOLD = """
import sys
from export.folder_lock import exclusive
with exclusive(sys.argv[1], "pulse analyze"):
    print("held", flush=True)
    sys.stdin.read()  # until killed
"""


def test_a_second_run_into_an_out_folder_in_use_stops_before_touching_it(tmp_path, model):
    """A cron job started again while the last run still works on the same --out (or two array jobs given one
    results folder): the second swept the first's temporaries as if left by a killed run and analysed the same
    files again. It now stops at once, naming the run that holds the folder; a killed holder frees it."""
    sf.write(tmp_path / "a.wav", song(4.0), RATE)
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        in_flight = out / ".a.pulse.selection.table.txt.0123456789ab.tmp"
        in_flight.write_text("the first run's table, half written")
        for command in (["analyze", str(tmp_path / "a.wav")], ["embeddings", str(tmp_path / "a.wav")]):
            result = CliRunner().invoke(app, [*command, "--model", str(model), "--out", str(out)])
            assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
            assert f"{out}: pulse analyze (pid {holder.pid} on " in result.output
            assert "is writing into this folder; wait for it to finish, or give this run its own --out" in result.output
        assert in_flight.exists() and sorted(p.name for p in out.iterdir()) == [in_flight.name, ".run.lock"]
    finally:
        holder.kill()
        holder.wait()
    assert analyze([tmp_path / "a.wav"], out, InferConfig(model=str(model))).files_done == 1  # nothing left held
    assert not in_flight.exists()  # now a killed run's, swept


def test_an_out_folder_on_a_file_system_without_locks_is_written_unguarded(tmp_path, model, monkeypatch):
    """Some network mounts refuse advisory locks (ENOLCK, EINVAL): runs there go on as before the lock."""
    import errno

    from export import folder_lock

    def refused(fd, operation):
        raise OSError(errno.EINVAL, "Invalid argument")  # as CIFS mounts answer

    monkeypatch.setattr(folder_lock.fcntl, "flock", refused)
    sf.write(tmp_path / "a.wav", song(4.0), RATE)
    assert analyze([tmp_path / "a.wav"], tmp_path / "out", InferConfig(model=str(model))).files_done == 1


def test_kill_mid_batch_leaves_no_half_file_and_resumes(tmp_path, model):
    (tmp_path / "in").mkdir()
    for i in range(5):
        sf.write(tmp_path / "in" / f"r{i}.wav", song(2.0 + i), RATE)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", CRASH, str(tmp_path / "in"), str(out), str(model)],
                          capture_output=True, cwd=REPO)
    assert proc.returncode == -signal.SIGKILL
    finished = sorted(p.name for p in out.glob("*.selection.table.txt"))
    assert len(finished) == 2 and not (out / "summary.json").exists()
    assert len(list(out.glob(".*.tmp"))) == 1  # the interrupted write never reached its real name
    for p in out.glob("*.selection.table.txt"):
        assert p.read_text().splitlines()[0].count("\t") == 11
    (out / ".my notes.tmp").write_text("a user's own file")  # not ours: the sweep must leave it
    summary = analyze([tmp_path / "in"], out, InferConfig(model=str(model)))
    assert (summary.files_done, summary.files_skipped) == (3, 2)
    assert [p.name for p in out.rglob(".*.tmp")] == [".my notes.tmp"]
    resumed = pd.read_csv(out / "detections.csv")
    fresh = analyze([tmp_path / "in"], tmp_path / "fresh", InferConfig(model=str(model)))
    assert fresh.files_done == 5
    pd.testing.assert_frame_equal(resumed, pd.read_csv(tmp_path / "fresh" / "detections.csv"))


INTERRUPT = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a terminal (a job run with & ignores SIGINT)
from pulse.cli import app
from pulse.writers.raven import RavenWriter
calls = []
def ctrl_c_at_third_file(self, table, path):
    calls.append(path)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGINT)
    return original(self, table, path)
original, RavenWriter.write = RavenWriter.write, ctrl_c_at_third_file
app(["analyze", sys.argv[1], "--out", sys.argv[2], "--model", sys.argv[3], "--workers", "2", "--batch-size", "2"])
"""


def test_ctrl_c_is_one_line_and_the_same_command_goes_on(tmp_path, model):
    """Ctrl-C stops the decoding threads before exit (left running inside soxr or libsndfile they aborted the
    interpreter), says how to go on, and keeps what was finished."""
    (tmp_path / "in").mkdir()
    for i in range(6):
        sf.write(tmp_path / "in" / f"r{i}.wav", song(2.0 + i), RATE)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", INTERRUPT, str(tmp_path / "in"), str(out), str(model)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 130, proc.stderr
    assert f"interrupted: files finished so far are kept in {out}; run the same command again" in proc.stderr
    assert not any(s in proc.stderr for s in ("Traceback", "terminate called", "leaked"))
    assert len(list(out.glob("*.selection.table.txt"))) == 2
    summary = analyze([tmp_path / "in"], out, InferConfig(model=str(model)))
    assert (summary.files_done, summary.files_skipped) == (4, 2)


def test_ctrl_c_keeps_the_errors_so_far_and_the_same_command_completes_them(tmp_path, model, monkeypatch):
    """A run stopped by Ctrl-C wrote no errors.csv: the bad files it had met were said only in the log."""
    from pulse.writers.raven import RavenWriter

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a_empty.wav").write_bytes(b"")  # first in file order
    (tmp_path / "in" / "b_random.wav").write_bytes(bytes(range(256)) * 20)
    for i in range(4):
        sf.write(tmp_path / "in" / f"r{i}.wav", song(2.0 + i), RATE)
    written, write = [], RavenWriter.write

    def ctrl_c_at_the_second_recording(self, table, path):
        if len(written) == 1:
            raise KeyboardInterrupt
        written.append(path)
        write(self, table, path)

    monkeypatch.setattr(RavenWriter, "write", ctrl_c_at_the_second_recording)
    out = tmp_path / "out"
    command = ["analyze", str(tmp_path / "in"), "--out", str(out), "--model", str(model), "--workers", "1"]
    assert CliRunner().invoke(app, command).exit_code == 130
    assert pd.read_csv(out / "errors.csv").path.map(lambda p: Path(p).name).tolist() == ["a_empty.wav", "b_random.wav"]
    monkeypatch.undo()
    again = CliRunner().invoke(app, command)
    assert again.exit_code == 1 and "3 done, 2 failed, 1 skipped" in again.output  # the bad files are tried again
    assert pd.read_csv(out / "errors.csv").path.map(lambda p: Path(p).name).tolist() == ["a_empty.wav", "b_random.wav"]


def test_ctrl_c_while_a_header_is_read_through_python_stops_the_run(tmp_path, model):
    """A WAV whose recorder left out a pad byte has its header read through a Python file object, whose callbacks
    libsndfile calls; a rerun reads it in its main thread, to see whether the file reads as it did. A Ctrl-C that
    came meanwhile was raised in a callback, printed by cffi ("Exception ignored from cffi callback") and lost: the
    run went on to its end (4 of 145 tries, SIGINT at random times into reruns over 600 such files). Here Ctrl-C
    comes in the first callback of the rerun's main thread."""
    import struct

    from pulse.io import _examined

    samples = (song(4.0) * 32767).astype("<i2").tobytes()
    unpadded = b"LIST" + struct.pack("<I", 19) + b"INFOISFT" + struct.pack("<I", 7) + b"Rec1.0\0"
    body = (b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, RATE, 2 * RATE, 2, 16) + unpadded
            + b"data" + struct.pack("<I", len(samples)) + samples)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "night.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    command = ["analyze", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model", str(model)]
    assert CliRunner().invoke(app, command).exit_code == 0
    _examined.cache_clear()  # as in a new process

    def ctrl_c_at_the_first_callback(frame, event, arg):
        if event == "call" and frame.f_code.co_name.startswith("vio_"):  # soundfile's callbacks for file objects
            sys.setprofile(None)
            signal.raise_signal(signal.SIGINT)

    sys.setprofile(ctrl_c_at_the_first_callback)  # this thread's calls only, not the decoding threads'
    try:
        result = CliRunner().invoke(app, [*command, "--min-conf", "0.6"])
    finally:
        sys.setprofile(None)
    assert result.exit_code == 130, result.output


def test_ctrl_c_held_over_a_header_that_fails_to_read_still_stops_the_run():
    """A Ctrl-C held while a damaged header was read was dropped with the read's error, which the batch takes as one
    bad file and goes on from: the run went on to its end."""
    from pulse.pieced import ctrl_c_held

    with pytest.raises(KeyboardInterrupt):
        with ctrl_c_held():
            signal.raise_signal(signal.SIGINT)
            raise RuntimeError("Error opening <pulse.pieced.Pieced>: Format not recognised.")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal")
def test_on_a_terminal_each_bad_file_is_a_line_of_its_own(tmp_path, model):
    """At a terminal every bad file's line was written after the progress bar, on its line: 1 000 junk files among
    30 000 were 1 000 lines each starting with a stale bar ('52/3000 files: 2%|█▏ ... 49.74win/s]s3k/...WAV: not
    readable as audio'). They are now printed above the bar."""
    import fcntl
    import pty
    import struct
    import termios

    (tmp_path / "in").mkdir()
    for i in range(3):
        sf.write(tmp_path / "in" / f"r{i}.wav", song(4.0), RATE)
    (tmp_path / "in" / "r1_junk.wav").write_bytes(b"not a recording")
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "pulse.cli", "analyze", str(tmp_path / "in"), "--out",
                             str(tmp_path / "out"), "--model", str(model)], stdout=follower, stderr=follower, cwd=REPO)
    os.close(follower)
    written = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the process ended (EIO)
            break
        if not chunk:
            break
        written += chunk
    os.close(leader)
    assert proc.wait() == 1
    text = written.decode()
    assert "files:" in text and "win/s" in text  # the bar was drawn
    (line,) = [line for line in text.split("\n") if "r1_junk.wav" in line and "not readable" in line]
    assert line.rstrip("\r").split("\r")[-1].startswith(str(tmp_path / "in" / "r1_junk.wav")), repr(line)


def test_off_a_terminal_progress_is_a_plain_log_line_now_and_then(tmp_path, model, monkeypatch, caplog):
    """Written to a file (a cluster job's `> log.txt`), a run of 30 000 files said nothing but its errors until its
    last line: the bar is off there. Now a plain line every LOG_EVERY_S says how far it is; none in a short run."""
    import re

    import export.progress

    (tmp_path / "in").mkdir()
    for i in range(3):
        sf.write(tmp_path / "in" / f"r{i}.wav", song(4.0), RATE)
    with caplog.at_level(logging.INFO, logger="export.progress"):
        analyze([tmp_path / "in"], tmp_path / "quiet", InferConfig(model=str(model)))
    assert not [r for r in caplog.records if r.name == "export.progress"]
    monkeypatch.setattr(export.progress, "LOG_EVERY_S", 0.0)
    with caplog.at_level(logging.INFO, logger="export.progress"):
        analyze([tmp_path / "in"], tmp_path / "out", InferConfig(model=str(model), batch_size=1))
    lines = [r.getMessage() for r in caplog.records if r.name == "export.progress"]
    assert any(re.fullmatch(r"\d/3 files: \d+% \(\d of \d win\), 00:\d\d elapsed, about 00:\d\d left", line)
               for line in lines), lines
    assert not any(c in line for line in lines for c in "\r|")


def test_off_a_terminal_the_count_of_files_is_not_glued_to_the_share_done(monkeypatch, caplog):
    """One long recording analysed into a log said '0/1 files34% (46 of 134 win)' until it was done, and a rerun
    from saved scores 'saved scores50% (1 of 2 file)': tqdm puts ': ' after a description set later, not after the
    one a bar starts with."""
    import export.progress

    monkeypatch.setattr(export.progress, "LOG_EVERY_S", 0.0)
    with caplog.at_level(logging.INFO, logger="export.progress"):
        with export.progress.progress(["a", "b"], unit="file", desc="saved scores") as files:
            list(files)
        with export.progress.progress(total=134, unit="win", desc="0/1 files") as windows:
            windows.update(46)
    lines = [r.getMessage() for r in caplog.records if r.name == "export.progress"]
    assert "saved scores: 50% (1 of 2 file), 00:00 elapsed, about 00:00 left" in lines
    assert lines and all(line.startswith(("saved scores: ", "0/1 files: ")) for line in lines), lines


def test_a_full_disk_stops_the_run_in_one_line_and_the_same_command_goes_on(tmp_path, model, monkeypatch, caplog):
    """An external drive filling overnight: every recording after it was decoded and scored in vain, each one a
    'write failed: ... No space left on device' line and errors.csv row. The run now stops at the first such
    write with one line naming --out, keeps what it finished, and the same command finishes the batch."""
    import errno

    from pulse.writers import raven

    (tmp_path / "in").mkdir()
    for i in range(6):
        sf.write(tmp_path / "in" / f"r{i}.wav", song(2.0 + i), RATE)
    out, written = tmp_path / "out", []

    def fills_up(path, text):
        if len(written) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(path)
        write_text(path, text)

    write_text = raven.write_text
    monkeypatch.setattr(raven, "write_text", fills_up)
    command = ["analyze", str(tmp_path / "in"), "--out", str(out), "--model", str(model), "--workers", "1"]
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(app, command)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (f"error: {out}: No space left on device; stopped, keeping what was finished: free some space (or copy "
            "the folder to another disk) and run the same command again to go on") in result.output
    assert "write failed" not in caplog.text and pd.read_csv(out / "errors.csv").empty  # no recording blamed
    assert sorted(p.name for p in out.glob("*.txt")) == ["r0.pulse.selection.table.txt", "r1.pulse.selection.table.txt"]
    monkeypatch.undo()
    again = CliRunner().invoke(app, command)
    assert again.exit_code == 0 and "4 done, 0 failed, 2 skipped" in again.output
    analyze([tmp_path / "in"], tmp_path / "fresh", InferConfig(model=str(model)))
    for name in ("detections.csv", "errors.csv", *(f"r{i}.pulse.selection.table.txt" for i in range(6))):
        assert (out / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes(), name


def test_a_read_only_out_is_said_once_naming_it_not_a_temporary(tmp_path, model, monkeypatch):
    """A results folder on a read-only mount: the run stopped at its lock file without the advice to remount it,
    and a refused temporary was named by its passing name ('OUT/.config.json.3fa2c1e0b9d4.tmp')."""
    import errno
    import os

    from export import atomic, folder_lock

    sf.write(tmp_path / "r.wav", song(2.0), RATE)
    out = tmp_path / "out"

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(folder_lock, "_open_lock", read_only)
    result = CliRunner().invoke(app, ["analyze", str(tmp_path / "r.wav"), "--out", str(out), "--model", str(model)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"error: {out}: Read-only file system; stopped, keeping what was finished: remount it read-write" in \
        result.output
    real_open = os.open
    monkeypatch.setattr(atomic.os, "open", lambda path, *a: read_only(path) if str(path).endswith(".tmp")
                        else real_open(path, *a))
    with pytest.raises(OSError) as refused:
        atomic.write_bytes(out / "config.json", b"{}")
    assert refused.value.filename == str(out / "config.json")


def test_a_recording_still_being_written_is_analysed_again_by_the_next_run(tmp_path, model, monkeypatch):
    """A recorder (or a copy) still writing a file while it is analysed: its record took the file's size and time
    after scoring, so the next run skipped it as done and the audio added meanwhile was never analysed."""
    from pulse.writers import raven

    recording, out = tmp_path / "night.wav", tmp_path / "out"
    sf.write(recording, song(6.0), RATE)
    write_text = raven.write_text

    def grows_meanwhile(path, text):
        sf.write(recording, song(12.0), RATE)  # the recorder wrote on while the first 6 s were scored
        write_text(path, text)

    monkeypatch.setattr(raven, "write_text", grows_meanwhile)
    cfg = InferConfig(model=str(model), formats=("raven", "scores"))
    analyze([recording], out, cfg)
    assert pd.read_csv(out / "scores.csv").end_s.max() == 6.0
    monkeypatch.undo()
    again = analyze([recording], out, cfg)
    assert (again.files_done, again.files_skipped) == (1, 0)
    assert pd.read_csv(out / "scores.csv").end_s.max() == 12.0


def test_a_killed_rerun_with_other_settings_leaves_config_json_with_the_tables_it_describes(tmp_path, model):
    (tmp_path / "in").mkdir()
    for i in range(5):
        sf.write(tmp_path / "in" / f"r{i}.wav", song(2.0 + i), RATE)
    out = tmp_path / "out"
    analyze([tmp_path / "in"], out, InferConfig(model=str(model), min_conf=0.9))
    tables = {name: (out / name).read_bytes() for name in ("config.json", "detections.csv")}
    proc = subprocess.run([sys.executable, "-c", CRASH, str(tmp_path / "in"), str(out), str(model)],
                          capture_output=True, cwd=REPO)  # default min_conf 0.25, killed at its third file
    assert proc.returncode == -signal.SIGKILL
    assert {name: (out / name).read_bytes() for name in tables} == tables  # the 0.9 run's set, both
    assert json.loads(tables["config.json"])["config"]["min_conf"] == 0.9
    analyze([tmp_path / "in"], out, InferConfig(model=str(model)))
    assert json.loads((out / "config.json").read_text())["config"]["min_conf"] == 0.25


def test_an_out_folder_missing_under_its_parent_is_exit_1_not_a_bad_option(tmp_path, model, monkeypatch):
    """mkdir failing with ENOENT (as under /proc) once made a FileNotFoundError, which the CLI reads as exit 2."""
    sf.write(tmp_path / "a.wav", song(3.0), RATE)
    mkdir = Path.mkdir

    def no_such_place(self, *args, **kwargs):
        if ".pulse" in self.parts:
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", no_such_place)
    result = CliRunner().invoke(app, ["analyze", str(tmp_path / "a.wav"), "--out", str(tmp_path / "out"),
                                      "--model", str(model)])
    assert result.exit_code == 1
    assert "cannot write the resume journal there (No such file or directory)" in result.output


def test_an_out_folder_that_cannot_take_the_journal_is_one_line_before_any_work(tmp_path, model):
    sf.write(tmp_path / "a.wav", song(3.0), RATE)
    (tmp_path / "out" / ".pulse").mkdir(parents=True)
    (tmp_path / "out" / ".pulse" / "journal").write_text("a file where the journal folder should be")
    result = CliRunner().invoke(app, ["analyze", str(tmp_path / "a.wav"), "--out", str(tmp_path / "out"),
                                      "--model", str(model)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "journal: cannot write the resume journal there" in result.output
    assert not (tmp_path / "out" / "a.pulse.selection.table.txt").exists()
    assert not (tmp_path / "out" / "config.json").exists()  # nothing of an earlier run's is replaced


def test_strict_stops_at_first_bad_file(tmp_path, model):
    (tmp_path / "a_bad.wav").write_text("nope")
    for name in ("b.wav", "c.wav"):  # after the bad one in the batch's order
        sf.write(tmp_path / name, song(3.0), RATE)
    with pytest.raises(AudioReadError, match="a_bad.wav: not readable as audio"):
        analyze([tmp_path], tmp_path / "out", InferConfig(model=str(model), strict=True, workers=1))
    assert not list((tmp_path / "out").glob("*.txt"))  # nothing analysed after it


def test_default_path_does_not_import_torch(tmp_path, model):
    sf.write(tmp_path / "a.wav", song(3.0), RATE)
    code = ("import sys; from pulse.cli import app; "
            f"app(['analyze', {str(tmp_path / 'a.wav')!r}, '--out', {str(tmp_path / 'o')!r}, "
            f"'--model', {str(model)!r}],"
            " standalone_mode=False); assert 'torch' not in sys.modules, 'torch was imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "o" / "a.pulse.selection.table.txt").is_file()


def test_missing_model_or_format_is_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["analyze", str(tmp_path), "--out", str(tmp_path / "o"), "--model", "nope.onnx"])
    assert result.exit_code == 2 and "nope.onnx: model file not found" in result.output
    result = runner.invoke(app, ["analyze", str(tmp_path), "--out", str(tmp_path / "o"), "--format", "raven,pdf"])
    known = "audacity, csv, kaleidoscope, raven, raven_combined, scores"
    assert result.exit_code == 2 and f"unknown output format 'pdf' (known: {known})" in result.output


def test_bad_options_empty_inputs_and_strict_are_one_line(tmp_path, model):
    runner = CliRunner()
    base = ["analyze", str(tmp_path), "--model", str(model)]
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "o"), "--min-conf", "1.5"])
    assert result.exit_code == 2 and "--min-conf is a score between 0 and 1, got 1.5" in result.output
    (tmp_path / "taken").write_text("a file, not a folder")
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "taken")])
    assert result.exit_code == 2 and "taken: --out must be a folder" in result.output
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "no audio files" in result.output and str(tmp_path) in result.output
    (tmp_path / "zero.wav").write_bytes(b"")
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "o"), "--strict"])
    assert result.exit_code == 1 and "zero.wav: empty file (0 bytes)" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    # through the console too, where logging also speaks: said once, not as a warning and again as the error
    proc = subprocess.run([sys.executable, "-c", "from pulse.cli import app; app()", *base, "--out",
                           str(tmp_path / "o"), "--strict"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1 and proc.stderr.count("zero.wav") == 1, proc.stderr


@pytest.mark.skipif(os.name != "posix", reason="a name that is not UTF-8 is a POSIX file system's")
def test_a_folder_name_stdout_cannot_encode_is_printed_escaped_not_a_crash(tmp_path, model):
    """In a Linux UTF-8 locale other than C.UTF-8 (en_US.UTF-8: stdout strict), an --out named in Latin-1 raised
    UnicodeEncodeError at the summary line after every file was done (exit 1, a traceback); so did a Cyrillic --out
    with stdout in a file on Windows (cp1252). Such characters are printed as backslash escapes, as on stderr."""
    sf.write(tmp_path / "a.wav", song(4.0), RATE)
    out = os.fsdecode(os.fsencode(tmp_path) + b"/r\xe9sultats")
    for encoding, shown in (("utf-8", "r\\udce9sultats"), ("cp1252", "r\\udce9sultats")):
        proc = subprocess.run([sys.executable, "-m", "pulse.cli", "analyze", str(tmp_path / "a.wav"), "--model",
                               str(model), "--out", out], capture_output=True, cwd=REPO,
                              env={**os.environ, "PYTHONIOENCODING": encoding, "PYTHONUTF8": "0"})
        assert proc.returncode == 0 and shown.encode() in proc.stdout, proc.stderr.decode(errors="replace")[-500:]


def test_each_bad_option_names_its_flag_and_an_out_below_a_file_is_refused(tmp_path, model):
    runner = CliRunner()
    sf.write(tmp_path / "a.wav", song(4.0), RATE)
    base = ["analyze", str(tmp_path / "a.wav"), "--model", str(model), "--out", str(tmp_path / "o")]
    for flags, message in [(["--batch-size", "0"], "--batch-size is at least 1, got 0"),
                           (["--workers", "-1"], "--workers is 0 (one per 2 cores) or more, got -1"),
                           (["--format", ","], "--format needs at least one of audacity, csv"),
                           (["--channel", "-1"], "--channel is a 0-based channel index, got -1"),
                           (["--merge-consecutive", "-1"],
                            "--merge-consecutive is 0 or more (0 and 1: a row per window)")]:
        result = runner.invoke(app, [*base, *flags])
        assert result.exit_code == 2 and message in result.output, (flags, result.output)
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    (tmp_path / "taken").write_text("a file, not a folder")
    result = runner.invoke(app, [*base[:-1], str(tmp_path / "taken" / "sub")])
    assert result.exit_code == 2 and f"{tmp_path / 'taken'}: --out must be a folder" in result.output
    assert not (tmp_path / "o").exists()


def test_a_bad_config_file_or_model_file_is_one_line(tmp_path, model, caplog):
    runner = CliRunner()
    sf.write(tmp_path / "a.wav", song(4.0), RATE)
    base = ["analyze", str(tmp_path / "a.wav"), "--out", str(tmp_path / "o")]
    (tmp_path / "text.json").write_text("not json")
    (tmp_path / "other.json").write_text('{"epochs": 3}')
    (tmp_path / "fake.onnx").write_text("not a model")
    for flags, message in [(["--config", str(tmp_path / "none.json")], "none.json: cannot read the config"),
                           (["--config", str(tmp_path)], "--config takes a run's config.json, and this is a folder"),
                           (["--config", str(tmp_path / "text.json")], "text.json: not valid JSON"),
                           (["--config", str(tmp_path / "other.json")],
                            "other.json: not a `pulse analyze` config.json"),
                           (["--model", str(tmp_path / "fake.onnx")], "fake.onnx: ONNX Runtime cannot load it"),
                           (["--model", "birdnet", "--species-list", str(tmp_path / "none.txt")],
                            "none.txt: cannot read the species list")]:
        result = runner.invoke(app, [*base, *flags])
        assert result.exit_code == 2 and message in result.output, (flags, result.output)
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    (tmp_path / "typo.json").write_text(json.dumps({"config": {"model": str(model), "min_cnf": 0.9}}))
    result = runner.invoke(app, [*base, "--config", str(tmp_path / "typo.json")])
    assert result.exit_code == 0 and "ignoring settings this version does not know: min_cnf" in caplog.text


def test_pytorch_checkpoint_backend(tmp_path):
    torch = pytest.importorskip("torch")
    from export.artifact import save_weights
    from pulse.models import create_model

    torch.manual_seed(0)
    cfg = ModelConfig(arch="pulse_cnn_xs")
    save_weights(tmp_path / "tiny.safetensors", create_model(cfg).state_dict(), cfg.to_dict())
    sf.write(tmp_path / "a.wav", song(4.0), RATE)
    summary = analyze([tmp_path / "a.wav"], tmp_path / "out",
                      InferConfig(model=str(tmp_path / "tiny.safetensors"), formats=("scores",)))
    scores = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert summary.files_done == 1 and len(scores) == 2
    assert scores.iloc[:, 3:].to_numpy().min() > 0 and scores.iloc[:, 3:].to_numpy().max() < 1


def test_a_flac_damaged_mid_file_is_analysed_around_the_damage_and_listed(tmp_path, model):
    """A FLAC archive with a few rotten bytes a third of the way in: every window before and after is scored, at
    its own time; the damaged stretch (silence) is listed, also on a resumed run."""
    sf.write(tmp_path / "rot.flac", np.tile(song(3.0), 10), RATE)  # 30 s
    rot(tmp_path / "rot.flac", 20000)
    cfg = InferConfig(model=str(model), formats=("scores",))
    summary = analyze([tmp_path], tmp_path / "out", cfg)
    assert (summary.files_done, summary.files_failed) == (1, 0)
    scores = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert scores["start_s"].tolist() == [3.0 * k for k in range(10)] and scores["end_s"].max() == pytest.approx(30.0)
    (row,) = pd.read_csv(tmp_path / "out" / "errors.csv").itertuples()
    assert row.error_type == "PartlyReadable" and row.message.startswith("damaged at ")
    assert row.message.endswith("(silence in their place); the audio around them was analysed")
    damaged = [float(t) for t in row.message.split("damaged at ")[1].split(" s")[0].split("-")]
    loud = scores.iloc[:, 3] > 0.5  # the level meter: every window of song scores high, unless it holds the damage
    clear = [k for k in range(10) if not (3 * k < damaged[1] and damaged[0] < 3 * k + 3)]
    assert len(clear) >= 8 and all(loud[k] for k in clear)
    assert analyze([tmp_path], tmp_path / "out", cfg).files_skipped == 1
    assert pd.read_csv(tmp_path / "out" / "errors.csv").message.tolist() == [row.message]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_flac_without_its_length_is_analysed_whole_and_listed(tmp_path, model, workers):
    """A FLAC from a pipe, or from a recorder that stopped before closing it, has no length in its header: every
    window is scored (the last one used to be lost, and with several decoding threads every block was a seek
    that decodes from the start), the audio counted right, and errors.csv says why the length was counted."""
    sf.write(tmp_path / "pipe.flac", np.tile(song(3.0), 5)[:int(14.5 * RATE)], RATE)
    without_length(tmp_path / "pipe.flac")
    summary = analyze([tmp_path], tmp_path / "out", InferConfig(model=str(model), formats=("scores",), workers=workers))
    assert (summary.files_done, summary.files_failed, summary.audio_s) == (1, 0, pytest.approx(14.5))
    scores = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert scores["start_s"].tolist() == [0.0, 3.0, 6.0, 9.0, 12.0] and scores["end_s"].max() == pytest.approx(14.5)
    (row,) = pd.read_csv(tmp_path / "out" / "errors.csv").itertuples()
    assert row.error_type == "PartlyReadable" and "the 14.50 s that decode were analysed" in row.message


def test_a_wav_whose_header_was_never_finished_is_analysed_and_listed(tmp_path, model):
    """A recorder that stopped before closing the file leaves its header saying 0 data bytes: the hours after it
    are analysed, not failed as a zero-length recording."""
    sf.write(tmp_path / "night.wav", np.tile(song(3.0), 4), RATE, subtype="PCM_16")
    unfinished(tmp_path / "night.wav")
    summary = analyze([tmp_path], tmp_path / "out", InferConfig(model=str(model), formats=("scores",)))
    assert (summary.files_done, summary.files_failed, summary.audio_s) == (1, 0, pytest.approx(12.0))
    scores = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert scores["start_s"].tolist() == [0.0, 3.0, 6.0, 9.0] and (scores.iloc[:, 3] > 0.5).all()  # song, not noise
    (row,) = pd.read_csv(tmp_path / "out" / "errors.csv").itertuples()
    assert row.error_type == "PartlyReadable" and row.message.startswith("the WAV header was never finished")


def test_real_shared_recordings(tmp_path, model, shared_data):
    audio = shared_data / "audio"
    files = [audio / "insectset32" / "Gryllus_campestris" / "Grylluscampestris_dat003-004.M.flac",
             audio / "insectset32" / "Pseudochorthippus_parallelus" / "Pseudochorthippusparallelus_dat023-005.flac",
             audio / "backgrounds" / "OSS_birds_10s_Pennsylvania.flac"]
    summary = analyze(files, tmp_path / "out", InferConfig(model=str(model), formats=("raven", "scores")))
    assert (summary.files_done, summary.files_failed) == (3, 0)
    scores = pd.read_csv(tmp_path / "out" / "scores.csv")
    for f in files:
        info = sf.info(f)
        rows = scores[scores.file == str(f)]
        # 3 s windows; a tail under min_len (1 s) of audio is not analysed unless it is the whole file.
        covering, long_enough = int(np.ceil(info.duration / 3.0)), int((info.duration - 1.0) // 3.0) + 1
        assert len(rows) == max(1, min(covering, long_enough))
        assert -1e-3 < info.duration - rows.end_s.max() < 1.0
    raven = pd.read_csv(tmp_path / "out" / "OSS_birds_10s_Pennsylvania.pulse.selection.table.txt", sep="\t")
    assert (raven["High Freq (Hz)"] <= 16000).all()  # a 32 kHz recording


def test_bundled_examples(tmp_path, model):
    examples = REPO / "pulse" / "assets" / "examples"
    assert sum(p.stat().st_size for p in examples.iterdir()) < 3_000_000
    assert (examples / "ATTRIBUTION.md").is_file()
    summary = analyze([examples], tmp_path / "out", InferConfig(model=str(model)))
    assert (summary.files_done, summary.files_failed) == (6, 0)
    assert summary.audio_s == pytest.approx(7.34 + 6.02 + 8 + 2.56 + 10 + 10, abs=0.05)


def test_config_json_reruns_a_run(tmp_path, model):
    sf.write(tmp_path / "a.wav", song(4.0), RATE)
    runner = CliRunner()
    first = runner.invoke(app, ["analyze", str(tmp_path / "a.wav"), "--out", str(tmp_path / "one"), "--model",
                                str(model), "--overlap", "1.0", "--format", "scores", "--min-conf", "0.9"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["analyze", str(tmp_path / "a.wav"), "--out", str(tmp_path / "two"),
                                "--config", str(tmp_path / "one" / "config.json"), "--min-conf", "0.5"])
    assert again.exit_code == 0, again.output
    cfg = json.loads((tmp_path / "two" / "config.json").read_text())["config"]
    assert (cfg["overlap"], cfg["formats"], cfg["min_conf"], cfg["model"]) == (1.0, ["scores"], 0.5, str(model))
    assert len(pd.read_csv(tmp_path / "two" / "scores.csv")) == 2


def test_bundled_models_state_their_licence(tmp_path):
    """The default is distilled from BirdNET, so its metadata and every run's config.json carry BirdNET's
    CC BY-NC-SA licence (issue 3); the supervised and lowrate models carry InsectSet32's attribution only."""
    import onnx

    from export.onnx import input_contract

    for name, distilled in (("default", True), ("supervised", False), ("lowrate", False)):
        meta = load_predictor(MODEL_ALIASES[name][0]).metadata
        assert "InsectSet32" in meta["attribution"], name
        assert meta["license"].startswith("CC BY-NC-SA 4.0") == distilled, name
        assert ("BirdNET" in meta["attribution"]) == distilled, name
        # the input contract `pulse export` writes, stamped onto the shipped graphs too
        assert onnx.load(str(MODEL_ALIASES[name][0])).doc_string == input_contract(ModelConfig.from_dict(meta)), name
    result = CliRunner().invoke(app, ["analyze", str(REPO / "pulse" / "assets" / "examples"), "--out", str(tmp_path),
                                      "--format", "scores"])
    assert result.exit_code == 0, result.output
    assert "model licence: CC BY-NC-SA 4.0" in result.output
    run = json.loads((tmp_path / "config.json").read_text())
    assert run["model_metadata"]["license"].startswith("CC BY-NC-SA 4.0")


@pytest.mark.parametrize("name", ["default", "supervised", "lowrate"])
def test_shipped_models_name_the_bundled_examples(tmp_path, name):
    """Regression guard for the artefacts in pulse/assets (some examples are validation clips: not an accuracy
    claim)."""
    examples = REPO / "pulse" / "assets" / "examples"
    analyze([examples], tmp_path, InferConfig(model=name, formats=("scores",)))
    scores = pd.read_csv(tmp_path / "scores.csv")
    named = scores.assign(name=scores["file"].map(lambda p: Path(p).stem))
    best = named.groupby("name")[list(scores.columns[3:])].max()
    for example, row in best.iterrows():
        if example.startswith("background"):
            assert row.max() < InferConfig().min_conf, example  # no species in a pure soundscape
        else:
            species = " ".join(example.removeprefix("mix_").split("_")[:2])
            assert row.idxmax() == species and row.max() > 0.5, example


DIE_WRITING_SCORES = """
import os, signal, sys
from pulse.analyze import analyze
from pulse.config import InferConfig
from pulse.writers.scores_csv import ScoresCsvWriter
def die(self, table, path):
    path.write_text("file,start_s,end_s")  # half a table, as kill -9 mid-write leaves it
    os.kill(os.getpid(), signal.SIGKILL)
ScoresCsvWriter.write = die
analyze([sys.argv[1]], sys.argv[2], InferConfig(model=sys.argv[3], formats=("csv", "scores")))
"""


def test_run_tables_change_together_when_a_run_dies_writing_them(tmp_path, model):
    """detections.csv is written before the (much larger) scores.csv: a run killed between them must not
    leave the new detections beside the old scores."""
    (tmp_path / "in").mkdir()
    for i in range(3):
        sf.write(tmp_path / "in" / f"r{i}.wav", song(2.0 + i), RATE)
    out, cfg = tmp_path / "out", InferConfig(model=str(model), formats=("csv", "scores"))
    analyze([tmp_path / "in" / "r0.wav"], out, cfg)
    before = {name: (out / name).read_bytes() for name in ("detections.csv", "scores.csv")}
    proc = subprocess.run([sys.executable, "-c", DIE_WRITING_SCORES, str(tmp_path / "in"), str(out), str(model)],
                          capture_output=True, cwd=REPO)
    assert proc.returncode == -signal.SIGKILL
    assert {name: (out / name).read_bytes() for name in before} == before
    analyze([tmp_path / "in"], out, cfg)
    recordings = ["r0.wav", "r1.wav", "r2.wav"]
    assert sorted(set(pd.read_csv(out / "detections.csv")["File"].map(lambda f: Path(f).name))) == recordings
    assert sorted(set(pd.read_csv(out / "scores.csv")["file"].map(lambda f: Path(f).name))) == recordings
    assert not list(out.rglob(".*.tmp"))


def test_a_recording_growing_during_a_no_resume_run_is_analysed_again_by_the_next(tmp_path, model, monkeypatch):
    """With --no-resume and only run-wide tables nothing reads the journal before decoding, so only the pin takes
    the file as it was: a stat after scoring journalled the grown file as done and the next run skipped its new
    audio."""
    from pulse.journal import Journal

    recording, out = tmp_path / "night.wav", tmp_path / "out"
    sf.write(recording, song(6.0), RATE)
    save = Journal.save

    def grows_meanwhile(journal, path, *args, **kwargs):
        sf.write(recording, song(12.0), RATE)  # the recorder wrote on while the first 6 s were scored
        save(journal, path, *args, **kwargs)

    monkeypatch.setattr(Journal, "save", grows_meanwhile)
    analyze([recording], out, InferConfig(model=str(model), formats=("scores",), resume=False))
    assert pd.read_csv(out / "scores.csv").end_s.max() == 6.0
    monkeypatch.undo()
    again = analyze([recording], out, InferConfig(model=str(model), formats=("scores",)))
    assert (again.files_done, again.files_skipped) == (1, 0)
    assert pd.read_csv(out / "scores.csv").end_s.max() == 12.0
