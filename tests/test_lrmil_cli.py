"""`lrmil` batch commands: exit status, one-line errors and console output that stays readable."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lrmil.cli import app
from tests.test_slide import dicom_slide

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _png(path):
    """A pink square on white: tissue for the mask, no resolution tags (needs --mpp)."""
    image = np.full((256, 256, 3), 245, np.uint8)
    image[32:224, 32:224] = (200, 110, 170)
    Image.fromarray(image).save(path)
    return path


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_patch_exits_0_when_all_succeed_1_when_a_slide_fails_or_none_is_found(tmp_path):
    slide = _png(tmp_path / "ok.png")
    good = _invoke("patch", slide, "--out", tmp_path / "good", "--mpp", 0.5)
    assert good.exit_code == 0, good.output

    bad = _invoke("patch", slide, tmp_path / "missing.svs", "--out", tmp_path / "bad", "--mpp", 0.5)
    assert bad.exit_code == 1, bad.output
    assert f"1 slide(s) failed: see {tmp_path / 'bad' / 'errors.csv'}" in bad.stderr

    (tmp_path / "empty").mkdir()
    nothing = _invoke("patch", tmp_path / "empty", "--out", tmp_path / "none")
    assert nothing.exit_code == 1 and "no slide files found" in nothing.stderr


def test_a_slide_whose_output_cannot_be_written_is_one_row_saying_so_shortly(tmp_path):
    """A folder where a slide's mask goes was "[Errno 21] Is a directory: 'OUT/masks/ok.png' -> 'OUT/masks/ok.png'"."""
    import pandas as pd

    slide, mask = _png(tmp_path / "ok.png"), tmp_path / "out" / "masks" / "ok.png"
    mask.mkdir(parents=True)
    result = _invoke("patch", slide, _png(tmp_path / "other.png"), "--out", tmp_path / "out", "--mpp", 0.5)
    assert result.exit_code == 1 and f"{slide} failed at patch: {mask}: Is a directory" in result.stderr
    (row,) = pd.read_csv(tmp_path / "out" / "errors.csv").itertuples()
    assert (row.path, row.error_type, row.message) == (str(slide), "IsADirectoryError", f"{mask}: Is a directory")


def test_predict_finds_slides_in_case_folders_with_recursive(tmp_path, shared_data):
    case = tmp_path / "archive" / "case1"
    case.mkdir(parents=True)
    (case / "CMU-1-Small-Region.svs").symlink_to(shared_data / "slides" / "CMU-1-Small-Region.svs")
    flat = _invoke("predict", tmp_path / "archive", "--out", tmp_path / "flat")
    assert flat.exit_code == 1 and "--recursive" in flat.stderr
    deep = _invoke("predict", tmp_path / "archive", "--recursive", "--out", tmp_path / "deep")
    assert deep.exit_code == 0, deep.output
    assert json.loads((tmp_path / "deep" / "CMU-1-Small-Region.json").read_text())["label"]


def test_predict_fails_a_folder_that_cannot_be_listed_and_a_link_to_nothing_and_goes_on(tmp_path, shared_data,
                                                                                      unlistable):
    """A colleague's cases (mode 700 on a NAS) and a year on a drive not mounted were warned of; exit status 0."""
    for case in ("case1", "locked"):
        (tmp_path / "archive" / case).mkdir(parents=True)
        (tmp_path / "archive" / case / "HE.svs").symlink_to(shared_data / "slides" / "CMU-1-Small-Region.svs")
    (tmp_path / "archive" / "2021").symlink_to(tmp_path / "unmounted" / "2021")
    unlistable("locked")
    result = _invoke("predict", tmp_path / "archive", "--recursive", "--out", tmp_path / "out")
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout.splitlines()[-1])["done"] == 1
    errors = (tmp_path / "out" / "errors.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in errors] == [str(tmp_path / "archive" / n) for n in ("2021", "locked")]
    assert errors[1].endswith("a folder that cannot be searched (Permission denied); nothing in it is analysed")


def test_patch_on_a_dicom_slide_s_folder_cuts_one_slide_named_by_the_folder(tmp_path):
    """A folder that is itself a DICOM series (levels and label, one .dcm each) is one slide, not three."""
    slide = dicom_slide(tmp_path / "case7", size=256)
    result = _invoke("patch", slide, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "out" / "patches").iterdir()] == ["case7.h5"]
    assert [p.name for p in (tmp_path / "out" / "masks").iterdir()] == ["case7.png"]


def test_two_dicom_series_in_one_folder_are_one_failed_slide_naming_the_folder(tmp_path):
    """An H&E and an IHC of case7 in one folder: one was cut and the other passed over, exit 0. The batch goes on."""
    case7 = dicom_slide(tmp_path / "case7", size=384, prefix="he_")  # the larger: the folder is named by its level 0
    dicom_slide(case7, size=256, prefix="ihc_")
    result = _invoke("patch", case7, _png(tmp_path / "ok.png"), "--mpp", 0.5, "--out", tmp_path / "out")
    assert result.exit_code == 1, result.output
    assert [p.name for p in (tmp_path / "out" / "patches").iterdir()] == ["ok.h5"]
    (row,) = (tmp_path / "out" / "errors.csv").read_text().splitlines()[1:]
    assert row.startswith(f"{case7 / 'he_level0.dcm'},patch,SlideReadError,\"{case7}: 2 DICOM whole-slide series")


def test_a_folder_name_stdout_cannot_encode_is_printed_escaped_not_a_crash(tmp_path):
    """As `pulse`'s: with stdout in a file on Windows (cp1252), a Cyrillic --out raised UnicodeEncodeError at the last
    line, after the slides were written."""
    out = tmp_path / "срезы"
    proc = subprocess.run([sys.executable, "-m", "lrmil.cli", "synth", "--out", str(out), "--count", "6",
                           "--size", "512", "--folds", "3"],
                          capture_output=True, env={**os.environ, "PYTHONIOENCODING": "cp1252"})
    assert proc.returncode == 0 and b"\\u0441\\u0440\\u0435\\u0437\\u044b" in proc.stdout, proc.stderr[-500:]


def test_override_mpp_without_a_value_is_a_usage_error(tmp_path):
    result = _invoke("predict", _png(tmp_path / "ok.png"), "--out", tmp_path / "out", "--override-mpp")
    assert result.exit_code == 2 and "--override-mpp needs --mpp" in result.stderr


def test_options_every_slide_would_fail_on_are_refused_once_before_the_batch(tmp_path):
    slide = _png(tmp_path / "ok.png")
    (tmp_path / "taken").write_text("a file")
    for command in ("patch", "extract", "predict"):
        for extra, message in [(["--out", tmp_path / "taken"], "taken: --out must be a folder, and this is a file"),
                               (["--out", tmp_path / "taken" / "sub"], "taken: --out must be a folder"),
                               (["--out", tmp_path / "o", "--mpp", -1], "--mpp is level-0 microns per pixel"),
                               (["--out", tmp_path / "o", "--mpp", 20], "got 20 (a magnification?)")]:
            result = _invoke(command, slide, *extra)
            assert result.exit_code == 2 and message in result.stderr, (command, extra, result.output)
            assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()  # refused before anything was written


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_a_corrupt_json_file_in_a_users_folder_is_one_line_naming_it(tmp_path):
    """A model folder's model.json or onnx.json, or synth's synth_config.json, cut short or mis-edited: the error
    was json's own, "Expecting value: line 2 column 1 (char 13)", naming no file."""
    for name in ("model.json", "onnx.json"):
        (tmp_path / name).mkdir()
        (tmp_path / name / name).write_text('{"student": ')
    (tmp_path / "synth").mkdir()
    (tmp_path / "synth" / "synth_config.json").write_text('{"count": 4,')
    for args, broken in [(("predict", _png(tmp_path / "ok.png"), "--model", tmp_path / "model.json", "--out",
                           tmp_path / "o1", "--mpp", 0.5), tmp_path / "model.json" / "model.json"),
                         (("predict", tmp_path / "ok.png", "--model", tmp_path / "onnx.json", "--out", tmp_path / "o2",
                           "--mpp", 0.5), tmp_path / "onnx.json" / "onnx.json"),
                         (("synth", "--out", tmp_path / "synth", "--count", 6),
                          tmp_path / "synth" / "synth_config.json")]:
        result = _invoke(*args)
        assert result.exit_code == 2, result.output
        line, = result.stderr.strip().splitlines()
        assert line.startswith(f"error: {broken}: not valid JSON (Expecting ") and "line 1 column" in line, line


def test_cuda_without_a_gpu_is_one_line(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a machine with a GPU
    result = _invoke("predict", _png(tmp_path / "ok.png"), "--out", tmp_path / "o", "--mpp", 0.5, "--device", "cuda")
    assert result.exit_code == 2 and "--device cuda: torch finds no CUDA GPU here" in result.stderr


def test_a_device_torch_knows_but_lrmil_does_not_run_on_is_one_line_before_the_batch(tmp_path):
    """--device mps (a Mac's GPU) or meta is a device torch names: it was taken, and every slide failed on it."""
    for device in ("mps", "meta"):
        result = _invoke("predict", _png(tmp_path / "ok.png"), "--out", tmp_path / "o", "--mpp", 0.5,
                         "--device", device)
        assert result.exit_code == 2 and f"--device {device}: expected cpu, cuda or cuda:N" in result.stderr
    assert not (tmp_path / "o").exists()


def test_bench_on_cuda_without_a_gpu_is_one_line_before_making_slides(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = _invoke("bench", "--out", tmp_path / "b", "--count", 6, "--size", 512, "--device", "cuda")
    assert result.exit_code == 2 and "--device cuda: torch finds no CUDA GPU here" in result.stderr
    assert not (tmp_path / "b").exists()


def test_extract_setup_errors_are_one_line_without_quotes_or_traceback(tmp_path):
    slide = _png(tmp_path / "ok.png")
    not_weights = tmp_path / "hostname"
    not_weights.write_text("myhost\n")
    result = _invoke("extract", slide, "--out", tmp_path / "out", "--weights", not_weights)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line
    assert result.stderr.startswith(f"error: {not_weights}: ") and "Traceback" not in result.output

    unknown = _invoke("extract", slide, "--out", tmp_path / "out", "--encoder", "nosuch")
    assert unknown.exit_code == 2
    assert unknown.stderr.startswith("error: unknown patch encoder 'nosuch' (known: ") and '"' not in unknown.stderr


def test_error_log_lines_start_on_their_own_line_not_on_the_progress_bar(tmp_path):
    """Run as a user does (logging configured by the CLI, bars on stderr): every ERROR line starts clean."""
    missing = [tmp_path / f"missing{i}.svs" for i in range(3)]
    run = subprocess.run([sys.executable, "-m", "lrmil.cli", "patch", *map(str, missing), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    error_lines = [line for line in run.stderr.split("\n") if "ERROR" in line]
    assert len(error_lines) == 3
    # a bar redraws its line after a carriage return; a log line printed onto it would follow the bar's text
    assert all(line.rsplit("\r", 1)[-1].startswith("ERROR ") for line in error_lines), error_lines


def test_in_a_log_file_a_slide_batch_says_how_far_it_is_in_plain_lines(tmp_path, monkeypatch, capsys, caplog):
    """Run overnight into a log file (`> log.txt 2>&1`), a batch wrote its progress bar there anyway: carriage-return
    redraws, each error line after one. Now a plain line every LOG_EVERY_S (a minute) says how far it is."""
    import logging
    import re

    import export.progress
    from lrmil.features import run_patching
    from lrmil.config import PatchConfig, TissueConfig

    slides = [_png(tmp_path / f"s{i}.png") for i in range(3)]
    monkeypatch.setattr(export.progress, "LOG_EVERY_S", 0.0)
    with caplog.at_level(logging.INFO, logger="export.progress"):
        run_patching([*slides, tmp_path / "gone.svs"], TissueConfig(), PatchConfig(), 0.5, tmp_path / "out")
    assert "\r" not in capsys.readouterr().err
    lines = [r.getMessage() for r in caplog.records if r.name == "export.progress"]
    assert any(re.fullmatch(r"tissue \+ grid: \d+% \(\d of 4 slides\), 00:\d\d elapsed, about 00:\d\d left", line)
               for line in lines), lines


def test_a_progress_line_drawn_during_a_long_slide_has_the_count_so_far(caplog):
    """A 100-slide batch into a log file said '46% (46 of 100 slides), 02:10 elapsed' when 90 were done: tqdm's
    monitor thread draws a line when none came for a minute (a long slide), and an iterating bar's count was the
    one of its last line. (Nor did the loop draw one a minute: tqdm's dynamic miniters, set by 46 quick slides, held
    the next line back for another 45 slides, however long they took.)"""
    import logging

    import export.progress

    with caplog.at_level(logging.INFO, logger="export.progress"):
        with export.progress.progress(range(5), unit="slides", desc="predict") as bar:
            for i in bar:
                if i == 3:
                    bar.refresh()  # what the monitor thread does a minute after the last line
    lines = [r.getMessage() for r in caplog.records if r.name == "export.progress"]
    assert lines and lines[0].startswith("predict: 60% (3 of 5 slides), "), lines


def test_a_progress_line_comes_every_minute_after_many_quick_slides(monkeypatch, caplog):
    """60 quick slides and then slow ones (30 s each): tqdm's dynamic miniters, set by the quick ones, held every
    later line back for another 60 slides, a quarter of an hour of silence here; now a line a minute still comes."""
    import logging

    import tqdm.std

    import export.progress

    clock = [0.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: clock[0])  # what a bar reads as the time
    seconds = [1.0] * 70 + [30.0] * 30
    with caplog.at_level(logging.INFO, logger="export.progress"):
        with export.progress.progress(range(len(seconds)), unit="slides", desc="predict") as bar:
            for i in bar:
                clock[0] += seconds[i]
    lines = [r.getMessage() for r in caplog.records if r.name == "export.progress"]
    assert [line.split(", ")[1] for line in lines[:4]] == ["01:00 elapsed", "02:10 elapsed", "03:10 elapsed",
                                                            "04:10 elapsed"], lines


def test_a_full_or_read_only_out_is_one_line_and_stops_the_batch(tmp_path, monkeypatch):
    """A full disk was a per-slide error ('failed at patch: [Errno 28] No space left on device'), and every later
    slide was read (and, in extract and predict, encoded) only to fail alike; an --out on a read-only mount was a
    traceback. Both are now one line naming --out, exit status 1, with what was finished kept."""
    import lrmil.features

    slides = [_png(tmp_path / f"s{i}.png") for i in range(3)]
    saved, out = [], tmp_path / "out"

    def fills_up(path, *args):
        saved.append(path)
        if len(saved) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        save_mask_png(path, *args)

    save_mask_png = lrmil.features.save_mask_png
    monkeypatch.setattr(lrmil.features, "save_mask_png", fills_up)
    full = _invoke("patch", *slides, "--out", out, "--mpp", 0.5)
    assert full.exit_code == 1 and len(saved) == 2, full.output  # the third slide is not read
    assert full.stderr.splitlines()[-1] == (f"error: {out}: No space left on device; stopped, keeping what was "
                                            "finished: free some space (or copy the folder to another disk) and run "
                                            "the same command again to go on")  # after the progress bar
    assert "failed at" not in full.stderr
    assert (out / "masks" / "s0.png").is_file() and not (out / "errors.csv").exists()  # no slide blamed

    def read_only(path, record):
        raise OSError(errno.EROFS, "Read-only file system", str(path.parent))

    monkeypatch.setattr(lrmil.features, "write_json", read_only)
    result = _invoke("patch", *slides, "--out", tmp_path / "ro", "--mpp", 0.5)
    assert result.exit_code == 1 and result.stderr == f"error: {tmp_path / 'ro'}: Read-only file system\n"


def test_a_full_disk_elsewhere_is_named_as_itself_not_as_out(tmp_path, monkeypatch):
    """A full model cache or /tmp (ENOSPC on a file outside --out) was said as 'error: OUT: No space left on
    device; ... free some space', sending the user to clean the wrong disk."""
    import lrmil.features

    slides = [_png(tmp_path / f"s{i}.png") for i in range(2)]
    elsewhere = tmp_path / "cache" / "weights.bin"

    def cache_full(path, *args):
        raise OSError(errno.ENOSPC, "No space left on device", str(elsewhere))

    monkeypatch.setattr(lrmil.features, "save_mask_png", cache_full)
    result = _invoke("patch", *slides, "--out", tmp_path / "out", "--mpp", 0.5)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == f"error: {elsewhere}: No space left on device"


def test_a_read_only_out_mid_batch_stops_saying_how_to_go_on(tmp_path, monkeypatch):
    """--out remounted read-only under a running batch: each later slide was read only to fail alike."""
    import lrmil.features

    slides = [_png(tmp_path / f"s{i}.png") for i in range(3)]
    tried = []

    def read_only(path, *args):
        tried.append(path)
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(lrmil.features, "save_mask_png", read_only)
    result = _invoke("patch", *slides, "--out", tmp_path / "out", "--mpp", 0.5)
    assert result.exit_code == 1 and len(tried) == 1
    assert result.stderr.splitlines()[-1].startswith(f"error: {tmp_path / 'out'}: Read-only file system; stopped, "
                                                     "keeping what was finished: remount it read-write")



def _read_only(monkeypatch, folder, code=errno.EROFS):
    """Nothing can be made in `folder`, as on a read-only mount (chmod does not stop a root user running tests); with
    ENOENT, as in /proc."""
    import pathlib

    mkdir = pathlib.Path.mkdir

    def refusing(self, *args, **kwargs):
        if self == folder or folder in self.parents:
            raise OSError(code, os.strerror(code), str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", refusing)


def _said_unwritable(result, folder, code=errno.EROFS) -> bool:
    """One line naming a path in `folder` and the problem, exit status 1, as `patch`, `extract` and `predict` say it."""
    line = result.stderr.strip()
    return (result.exit_code == 1 and line.splitlines() == [line] and line.startswith(f"error: {folder}")
            and line.endswith(f": {os.strerror(code)}") and "Traceback" not in result.output)


def test_every_command_refuses_an_out_a_file_is_in_the_way_of_before_any_work(tmp_path):
    """synth, bundle, train and distill did not check --out as patch, extract and predict do: synth went on to a
    traceback (NotADirectoryError), the others to a traceback or a line of their own once their work was done."""
    taken, missing = tmp_path / "taken", tmp_path / "missing"
    taken.write_text("a file")
    for args in [("synth", "--count", 6, "--size", 512),
                 ("bundle", "--student-encoder", missing, "--student-mil", missing, "--teacher-encoder", missing,
                  "--teacher-mil", missing),
                 ("train", "--features", missing, "--splits", missing),
                 ("distill", "--features", missing, "--teacher-features", missing, "--teacher", missing,
                  "--splits", missing),
                 ("export",), ("bench", "--count", 6, "--size", 512)]:
        result = _invoke(*args, "--out", taken / "sub")
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr == f"error: {taken}: --out must be a folder, and this is a file\n", (args, result.output)


def test_an_out_that_cannot_be_written_is_one_line_and_exit_1_from_every_command(tmp_path, monkeypatch):
    """synth, pretrain-encoder, distill-patches, export and bench ended in a traceback; pretrain-encoder and
    distill-patches only once they had trained (minutes), as they write nothing before their weights."""
    import lrmil.distill_patch
    import lrmil.pretrain

    ro = tmp_path / "ro"
    _read_only(monkeypatch, ro)
    trained = []
    monkeypatch.setattr(lrmil.pretrain, "pretrain", lambda *args: trained.append("pretrain"))
    monkeypatch.setattr(lrmil.distill_patch, "distill_patch", lambda *args: trained.append("distill-patches"))
    for args in [("synth", "--out", ro / "synth", "--count", 6, "--size", 512),
                 ("pretrain-encoder", "--out", ro / "teacher.safetensors"),
                 ("distill-patches", _png(tmp_path / "a.png"), "--out", ro / "student.safetensors", "--mpp", 0.5),
                 ("export", "--out", ro / "onnx"),
                 ("bench", "--out", ro / "bench", "--count", 6, "--size", 512)]:
        result = _invoke(*args)
        assert _said_unwritable(result, ro), (args, result.output)
    assert trained == []


def test_an_out_whose_folder_cannot_be_made_is_one_line_and_exit_1_from_every_command(tmp_path, monkeypatch):
    """--out /proc/nope ("No such file or directory" making it) was taken by extract, predict and bundle for a missing
    input: "error: [Errno 2] No such file or directory: '/proc/nope'", exit 2; patch said it in one line, exit 1."""
    from lrmil.predict import demo_model_dir

    nowhere, slide, demo = tmp_path / "nowhere", _png(tmp_path / "a.png"), demo_model_dir()
    _read_only(monkeypatch, nowhere, errno.ENOENT)
    weights = [arg for name in ("student-encoder", "student-mil", "teacher-encoder", "teacher-mil")
               for arg in (f"--{name}", demo / f"{name.replace('-', '_')}.safetensors")]
    for args in [("patch", slide, "--mpp", 0.5), ("extract", slide, "--mpp", 0.5), ("predict", slide, "--mpp", 0.5),
                 ("bundle", *weights)]:
        result = _invoke(*args, "--out", nowhere)
        assert _said_unwritable(result, nowhere, errno.ENOENT), (args, result.output)


def test_a_weights_out_with_a_file_in_its_way_or_a_folder_at_it_is_refused_before_training(tmp_path, monkeypatch):
    """`pretrain-encoder --out somefile/w.safetensors` said "somefile: File exists" (exit 1): true, but not what to
    do; it is a usage error before any work, as a file in the way of a folder --out is. A folder at --out was
    "w.safetensors: Is a directory" once trained."""
    import lrmil.distill_patch
    import lrmil.pretrain

    trained = []
    monkeypatch.setattr(lrmil.pretrain, "pretrain", lambda *args: trained.append("pretrain"))
    monkeypatch.setattr(lrmil.distill_patch, "distill_patch", lambda *args: trained.append("distill-patches"))
    taken = tmp_path / "taken"
    taken.write_text("a file")
    for args in [("pretrain-encoder",), ("distill-patches", _png(tmp_path / "a.png"), "--mpp", 0.5)]:
        result = _invoke(*args, "--out", taken / "w.safetensors")
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr == f"error: {taken}: a file, where --out's folder goes\n", (args, result.output)
        result = _invoke(*args, "--out", tmp_path)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr == f"error: {tmp_path}: a folder, where --out's weights file goes\n", (args, result.output)
    assert trained == []


def test_a_missing_splits_csv_is_one_plain_line_naming_it(tmp_path):
    """It was Python's "error: [Errno 2] No such file or directory: 'missing.csv'"."""
    missing, features = tmp_path / "missing.csv", tmp_path / "features"
    features.mkdir()
    for args in [("train", "--features", features), ("distill", "--features", features, "--teacher-features",
                                                      features, "--teacher", tmp_path / "teacher"),
                 ("distill-patches", _png(tmp_path / "a.png"), "--mpp", 0.5)]:
        result = _invoke(*args, "--splits", missing, "--out", tmp_path / "out")
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.splitlines()[-1] == (f"error: {missing}: cannot read the splits CSV "
                                                  "(No such file or directory)"), (args, result.output)


def test_a_features_folder_that_is_missing_or_a_file_is_one_line_before_any_slide(tmp_path, monkeypatch):
    """`train --features nofeats` said 'no feature file nofeats/s0.h5' for every slide of the splits CSV, then 'the
    folder holds no .h5 files', of a folder that is not there."""
    import lrmil.distill_patch
    from lrmil.predict import demo_model_dir

    features, splits, taken = tmp_path / "features", tmp_path / "splits.csv", tmp_path / "taken"
    features.mkdir()
    splits.write_text("slide_id,label,fold\n" + "".join(f"s{i},{['a', 'b'][i % 2]},{i % 3}\n" for i in range(6)))
    taken.write_text("a file")
    trained = []
    monkeypatch.setattr(lrmil.distill_patch, "distill_patch", lambda *args: trained.append(args))
    for bad, problem in [(tmp_path / "nofeats", "folder not found"), (taken, "must be a folder, and this is a file")]:
        for option, args in [("--features", ("train", "--features", bad, "--splits", splits)),
                             ("--features", ("distill", "--features", bad, "--teacher-features", features)),
                             ("--teacher-features", ("distill", "--features", features, "--teacher-features", bad)),
                             ("--teacher-features", ("distill-patches", _png(tmp_path / "a.png"), "--mpp", 0.5,
                                                     "--teacher-mil", demo_model_dir() / "teacher_mil.safetensors",
                                                     "--teacher-features", bad))]:
            if args[0] == "distill":
                args = (*args, "--teacher", tmp_path / "teacher", "--splits", splits)
            result = _invoke(*args, "--out", tmp_path / "out" / "w.safetensors")
            assert result.exit_code == 2, (args, result.output)
            assert result.stderr == f"error: {bad}: {option} {problem}\n", (args, result.output)
    assert trained == [] and not (tmp_path / "out").exists()


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_trained_weights_follow_the_umask_and_bundle_makes_a_folder_predict_reads(tmp_path, umask_022,
                                                                                   monkeypatch):
    import dataclasses

    import pandas as pd

    from lrmil.encoders import create_encoder, save_encoder
    from lrmil.store import FeatureFile, write_features

    encoder = create_encoder("lrmil_vit_tiny", weights="random")
    encoder_file = tmp_path / "encoder.safetensors"  # what `lrmil distill-patches` and `pretrain-encoder` save
    save_encoder(encoder_file, encoder, dataclasses.replace(encoder.cfg, patch_px=64))
    rng = np.random.default_rng(0)
    rows = []
    for i in range(9):
        features = rng.normal(i % 2, 1.0, (4, encoder.cfg.embed_dim)).astype(np.float32)
        for magnification, size in ((5.0, 1024), (20.0, 256)):
            write_features(tmp_path / f"features{magnification:g}x" / f"s{i}.h5", FeatureFile(
                np.zeros((4, 2), np.int64), features, np.zeros((4, 0), np.int64), size, 256, magnification, 0.5,
                slide_id=f"s{i}"))
        rows.append((f"s{i}", ["benign", "tumour"][i % 2], i % 3))
    pd.DataFrame(rows, columns=["slide_id", "label", "fold"]).to_csv(tmp_path / "splits.csv", index=False)

    mil_files = []
    for magnification in ("5x", "20x"):
        trained = _invoke("train", "--features", tmp_path / f"features{magnification}",
                          "--splits", tmp_path / "splits.csv", "--out", tmp_path / f"run{magnification}",
                          "--folds", "0", "--epochs", 1)
        assert trained.exit_code == 0, trained.output
        mil_files.append(tmp_path / f"run{magnification}" / "fold0" / "model.safetensors")
    assert [f.stat().st_mode & 0o777 for f in (encoder_file, *mil_files)] == [0o644] * 3  # not mkstemp's 0600

    bundled = _invoke("bundle", "--out", tmp_path / "model", "--student-encoder", encoder_file, "--student-mil",
                      mil_files[0], "--teacher-encoder", encoder_file, "--teacher-mil", mil_files[1],
                      "--notice", "test model")
    assert bundled.exit_code == 0, bundled.output
    predicted = _invoke("predict", _png(tmp_path / "ok.png"), "--model", tmp_path / "model", "--out", tmp_path / "pred",
                        "--mpp", 0.5)
    assert predicted.exit_code == 0, predicted.output
    assert (tmp_path / "pred" / "ok.json").is_file() and "NOTE: test model" in predicted.stderr

    wrong = _invoke("bundle", "--out", tmp_path / "bad", "--student-encoder", encoder_file, "--student-mil",
                    tmp_path / "missing.safetensors", "--teacher-encoder", encoder_file, "--teacher-mil", mil_files[1])
    assert wrong.exit_code == 2 and "missing.safetensors" in wrong.stderr

    _read_only(monkeypatch, tmp_path / "ro")  # a traceback from train and bundle once
    trained = _invoke("train", "--features", tmp_path / "features5x", "--splits", tmp_path / "splits.csv", "--out",
                      tmp_path / "ro" / "run", "--folds", "0", "--epochs", 1)
    assert _said_unwritable(trained, tmp_path / "ro"), trained.output
    bundled = _invoke("bundle", "--out", tmp_path / "ro" / "model", "--student-encoder", encoder_file, "--student-mil",
                      mil_files[0], "--teacher-encoder", encoder_file, "--teacher-mil", mil_files[1])
    assert _said_unwritable(bundled, tmp_path / "ro"), bundled.output


def test_an_unknown_resolution_is_refused_before_any_slide_is_read(tmp_path):
    result = _invoke("extract", _png(tmp_path / "ok.png"), "--out", tmp_path / "out", "--mpp", 0.5,
                     "--resolution", "foo")
    assert result.exit_code == 2 and "--resolution must be 'teacher' or 'student', got 'foo'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_adding_mpp_for_other_slides_does_not_re_encode_a_slide_whose_metadata_decides(tmp_path, shared_data):
    """docs/lrmil.md's fix for a cohort with some slides lacking MPP is to rerun with --mpp: only the slides
    that use it may be encoded again."""
    slide = shared_data / "slides" / "CMU-1-Small-Region.svs"  # MPP 0.499 in its metadata
    features = tmp_path / "out" / "features" / "lrmil_vit_tiny_20x_256px" / "CMU-1-Small-Region.h5"

    def extract(*extra):
        assert _invoke("extract", slide, "--out", tmp_path / "out", "--resolution", "teacher", *extra).exit_code == 0
        return features.stat().st_mtime_ns

    first = extract()
    assert extract("--mpp", 0.25) == first  # the metadata still decides: the file is current
    assert extract("--mpp", 0.25, "--override-mpp") != first  # now the scale changed: encoded again


def test_sizes_below_one_are_usage_errors_not_slide_errors(tmp_path):
    """--heatmap-px 0 once failed every slide as 'cannot read thumbnail: division by zero'."""
    slide = _png(tmp_path / "ok.png")
    for flag in ("--batch-size", "--heatmap-px"):
        result = _invoke("predict", slide, "--out", tmp_path / "o", "--mpp", 0.5, flag, 0)
        assert result.exit_code == 2 and f"Invalid value for '{flag}': 0 is not in the range x>=1" in result.output
    assert not (tmp_path / "o").exists()


def test_distill_patches_cuts_the_grid_the_teacher_features_were_extracted_with(tmp_path, monkeypatch):
    """Its 20x feature files must match the grid it cuts, so it takes the same tissue and patch flags as extract."""
    import lrmil.distill_patch

    given = {}

    def distill_patch(cfg, *args):
        given["cfg"] = cfg
        return {"left_out": []}

    monkeypatch.setattr(lrmil.distill_patch, "distill_patch", distill_patch)
    result = _invoke("distill-patches", _png(tmp_path / "a.png"), "--out", tmp_path / "s.safetensors", "--mpp", 0.5,
                     "--min-tissue", 0.5, "--teacher-px", 128, "--mask-mpp", 4.0, "--min-saturation", 0.1, "--keep-ink")
    assert result.exit_code == 0, result.output
    cfg = given["cfg"]
    assert (cfg.patch.min_tissue, cfg.patch.teacher_px, cfg.tissue.mask_mpp, cfg.tissue.min_saturation,
            cfg.tissue.exclude_ink) == (0.5, 128, 4.0, 0.1, False)


def test_a_blank_slide_is_one_line_naming_it_from_patch_and_extract_and_the_batch_goes_on(tmp_path, caplog):
    """Blank glass (a slide scanned without its section) gave `patch` and `extract` an empty grid and feature file
    without a word, found out only at `lrmil train`."""
    import tifffile

    glass = np.full((1024, 1024, 3), 243, np.uint8) + np.random.default_rng(0).integers(0, 4, (1024, 1024, 3),
                                                                                           dtype=np.uint8)
    blank = tmp_path / "blank.tif"
    tifffile.imwrite(blank, glass, tile=(256, 256), photometric="rgb", resolution=(2e4, 2e4),
                     resolutionunit="CENTIMETER")  # 0.5 um/px
    tissue = _png(tmp_path / "tissue.png")
    for command in ("patch", "extract"):
        caplog.clear()
        result = _invoke(command, blank, tissue, "--out", tmp_path / command, "--mpp", 0.5,
                         *(("--resolution", "student") if command == "extract" else ()))
        assert result.exit_code == 0, result.output
        lines = [r.getMessage() for r in caplog.records if "no tissue found" in r.getMessage()]
        assert len(lines) == 1 and lines[0].startswith(f"{blank}: no tissue found"), lines
        assert (tmp_path / command / "masks" / "tissue.png").is_file()  # the next slide was done


def test_train_records_the_slides_it_left_out_and_exits_1(tmp_path):
    """12 slides listed, 2 without a feature file and 1 not HDF5: training went on with 9 and exited 0, and neither
    metrics.json nor any file of the run said which 3 were left out. A rerun that reads them all clears the list."""
    import pandas as pd

    from lrmil.store import FeatureFile, write_features

    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        if i not in (3, 7):
            write_features(tmp_path / "f" / f"s{i}.h5", FeatureFile(
                np.zeros((4, 2), np.int64), rng.normal(i % 2, 1, (4, 8)).astype(np.float32), np.zeros((4, 0), np.int64),
                256, 256, 20.0, 0.5))
        rows.append((f"s{i}", ["benign", "tumour"][i % 2], i % 3))
    (tmp_path / "f" / "s5.h5").write_bytes(b"not hdf5")
    pd.DataFrame(rows, columns=["slide_id", "label", "fold"]).to_csv(tmp_path / "splits.csv", index=False)
    args = ("train", "--features", tmp_path / "f", "--splits", tmp_path / "splits.csv", "--out", tmp_path / "run",
            "--epochs", 1)

    result = _invoke(*args)
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["slides"] == 9 and summary["failed"] == 3
    assert summary["errors_csv"] == str(tmp_path / "run" / "errors.csv")
    assert f"3 slide(s) failed: see {tmp_path / 'run' / 'errors.csv'}" in result.stderr
    left_out = json.loads((tmp_path / "run" / "metrics.json").read_text())["left_out"]
    assert [(s["slide_id"], s["path"]) for s in left_out] == [(f"s{i}", str(tmp_path / "f" / f"s{i}.h5"))
                                                               for i in (3, 5, 7)]
    assert left_out[0]["reason"] == f"no feature file {tmp_path / 'f' / 's3.h5'}"
    assert left_out[1]["reason"].startswith("cannot read features (")
    errors = pd.read_csv(tmp_path / "run" / "errors.csv")
    assert list(errors["path"]) == [s["path"] for s in left_out] and set(errors["stage"]) == {"train"}
    assert errors["message"][0] == f"s3: no feature file {tmp_path / 'f' / 's3.h5'}"

    pd.DataFrame([r for r in rows if r[0] not in ("s3", "s5", "s7")],
                 columns=["slide_id", "label", "fold"]).to_csv(tmp_path / "splits.csv", index=False)
    again = _invoke(*args)
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["left_out"] == []
    assert not (tmp_path / "run" / "errors.csv").exists()


def test_distill_patches_exits_1_naming_its_errors_file_when_it_left_out_a_slide(tmp_path, monkeypatch):
    """A slide stage 1 could not read was one log line, and the run exited 0."""
    import lrmil.distill_patch

    left_out = [{"slide_id": "a", "path": "a.svs", "error_type": "SlideReadError", "reason": "corrupt"}]
    monkeypatch.setattr(lrmil.distill_patch, "distill_patch", lambda *args: {"slides": 1, "left_out": left_out})
    result = _invoke("distill-patches", _png(tmp_path / "a.png"), "--out", tmp_path / "s.safetensors", "--mpp", 0.5)
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout.splitlines()[-1])["failed"] == 1
    assert f"1 slide(s) failed: see {tmp_path / 's.errors.csv'}" in result.stderr
