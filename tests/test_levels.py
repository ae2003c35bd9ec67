"""Quiet windows raised to the training floor before scoring (pulse/levels.py), and where that applies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import soundfile as sf
from test_analyze import RATE, level_meter_onnx, song

from pulse.analyze import analyze
from pulse.model_names import open_checked_model
from pulse.config import InferConfig
from pulse.levels import MAX_RAISE_DB, RaisedQuiet, raise_quiet


def peak_dbfs(windows: np.ndarray) -> np.ndarray:
    return 20 * np.log10(np.abs(windows).max(axis=1))


def test_only_windows_under_the_floor_are_raised_and_by_at_most_the_cap():
    tone = np.sin(np.linspace(0, 200 * np.pi, 4410)).astype(np.float32)
    levels_db = np.array([-6.0, -30.0, -50.0, -90.0])
    windows = np.stack([tone * 10 ** (db / 20) for db in levels_db] + [np.zeros_like(tone)]).astype(np.float32)
    raised = raise_quiet(windows, -20.0)
    np.testing.assert_array_equal(raised[0], windows[0])  # above the floor: untouched, sample for sample
    np.testing.assert_allclose(peak_dbfs(raised[1:3]), [-20.0, -20.0], atol=0.01)
    assert abs(peak_dbfs(raised[3:4])[0] - (-90.0 + MAX_RAISE_DB)) < 0.01  # near-silence: raised by the cap only
    assert not raised[4].any()  # digital silence stays silent
    loud = windows[:1]
    assert raise_quiet(loud, -20.0) is loud  # nothing to raise: the batch itself, no copy



def test_a_window_is_measured_by_its_larger_swing_either_side_of_zero():
    """A click going down to -0.5 with only small positive swings peaks at -6 dBFS: it is above a -20 dB floor and
    left as it is. Measured by its positive side alone (-60 dBFS) it was raised 40 dB and clipped."""
    window = np.full((1, 1000), 0.001, np.float32)
    window[0, 500] = -0.5
    np.testing.assert_array_equal(raise_quiet(window, -20.0), window)
    quiet = -window * 0.01  # the same shape upside down, at -46 dBFS: raised to the floor by its negative swing
    assert abs(peak_dbfs(raise_quiet(quiet, -20.0))[0] - (-20.0)) < 0.01


def test_analyze_raises_a_quiet_recording_unless_switched_off_and_never_for_birdnet(tmp_path):
    model = level_meter_onnx(tmp_path / "meter.onnx")  # scores rise with the window's level
    sf.write(tmp_path / "quiet.wav", song(3.0, loud=0.003), RATE, subtype="PCM_16")  # peaks near -50 dBFS

    def top_score(floor: float) -> float:
        out = tmp_path / f"out{floor}"
        analyze([tmp_path / "quiet.wav"], out, InferConfig(model=str(model), formats=("scores",), level_floor=floor))
        return float(pd.read_csv(out / "scores.csv").iloc[0, 3])

    assert top_score(-20.0) > 0.9 > 0.5 > top_score(-200.0)
    from pulse.teacher.birdnet import model_path

    for birdnet in ("birdnet", str(model_path())):  # the alias or its .tflite file
        predictor, _, _ = open_checked_model(InferConfig(model=birdnet))
        assert not isinstance(predictor, RaisedQuiet), birdnet  # scored as BirdNET-Analyzer scores it
        predictor.close()


def test_a_new_level_floor_has_a_resumed_run_score_the_recording_again(tmp_path):
    """The floor changes what the model hears, so scores journalled under one floor are not another's: resuming
    into the same --out with a new --level-floor must score the file again, not reuse or skip it."""
    model = level_meter_onnx(tmp_path / "meter.onnx")
    sf.write(tmp_path / "quiet.wav", song(3.0, loud=0.003), RATE, subtype="PCM_16")
    out = tmp_path / "out"

    def run(floor: float):
        summary = analyze([tmp_path / "quiet.wav"], out, InferConfig(model=str(model), formats=("scores",),
                                                                     level_floor=floor))
        return summary, float(pd.read_csv(out / "scores.csv").iloc[0, 3])

    _, raised = run(-20.0)
    summary, as_recorded = run(-200.0)
    assert (summary.files_done, summary.files_skipped, summary.files_rewritten) == (1, 0, 0)
    assert raised > 0.9 > 0.5 > as_recorded


def test_a_floor_above_full_scale_or_not_a_number_is_refused(tmp_path):
    from typer.testing import CliRunner

    from pulse.cli import app

    model = level_meter_onnx(tmp_path / "meter.onnx")
    sf.write(tmp_path / "a.wav", song(3.0), RATE)
    for bad in ("10", "nan", "inf"):
        result = CliRunner().invoke(app, ["analyze", str(tmp_path / "a.wav"), "--out", str(tmp_path / "out"),
                                          "--model", str(model), "--level-floor", bad])
        assert result.exit_code == 2 and "--level-floor is a level in dBFS, at most 0" in result.output, bad
    result = CliRunner().invoke(app, ["analyze", str(tmp_path / "a.wav"), "--out", str(tmp_path / "out"),
                                      "--model", str(model), "--level-floor", "0"])
    assert result.exit_code == 0, result.output  # "at most 0": full scale itself is a floor


def test_a_config_without_a_setting_takes_its_default(tmp_path):
    """A config.json written by hand or trimmed to the settings that matter gets the defaults for the rest, the
    level floor too."""
    import json

    from pulse.cli import _read_run_config

    (tmp_path / "config.json").write_text(json.dumps({"config": {"model": "default", "min_conf": 0.5}}))
    cfg = _read_run_config(tmp_path / "config.json")
    assert (cfg.min_conf, cfg.level_floor) == (0.5, InferConfig().level_floor)
    (tmp_path / "config.json").write_text(json.dumps({"config": {"model": "default", "level_floor": -30.0}}))
    assert _read_run_config(tmp_path / "config.json").level_floor == -30.0
