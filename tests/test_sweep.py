"""bench/sweep.py: per-run settings merge into the base config, and a mistyped setting is refused
(TrainConfig.from_dict ignores unknown keys, so a typo would otherwise train the base recipe)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_sweep():
    spec = importlib.util.spec_from_file_location("sweep", REPO / "bench" / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runs_merge_nested_settings_and_command_line_overrides():
    sweep = load_sweep()
    overrides = sweep.parse_set(["val_split=", "model.n_fft=512", "epochs=3"])
    assert overrides == {"val_split": "", "model": {"n_fft": 512}, "epochs": 3}
    configs = sweep.run_configs({"base": "configs/pulse_v0.1.json", "set": {"ema_decay": 0.99},
                                 "runs": {"xs": {"model": {"arch": "pulse_cnn_xs"}}, "seed1": {"seed": 1}}}, overrides)
    assert configs["xs"].model.arch == "pulse_cnn_xs" and configs["xs"].model.n_fft == 512
    assert configs["xs"].model.n_mels == 64  # the rest of the nested model config is the base's
    assert configs["seed1"].seed == 1 and configs["seed1"].model.arch == "pulse_cnn_s"
    assert all(c.ema_decay == 0.99 and c.epochs == 3 and c.val_split == "" for c in configs.values())


def test_a_mistyped_setting_stops_the_sweep():
    sweep = load_sweep()
    with pytest.raises(SystemExit, match="sweep run a: unknown setting\\(s\\) songspeed, model.nfft"):
        sweep.run_configs({"base": "configs/pulse_v0.1.json",
                           "runs": {"a": {"songspeed": 1, "model": {"nfft": 2}}}}, {})
