"""bench/ablate.py end to end on real recordings at the smallest budget: the README's commands (`pulse teacher-cache`
twice, then the ablation) must still run, since nobody reruns the 40-minute ablation after each change."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pulse.cli import app
from pulse.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SPECIES = ("Gryllus campestris", "Tettigonia viridissima")
REGIMES = ("low-label", "full-label")
DEFAULT_VARIANTS = ("supervised", "byol", "kd", "byol_kd")

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def load_ablate():
    spec = importlib.util.spec_from_file_location("ablate", REPO / "bench" / "ablate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_recipe(shared_data: Path, root: Path) -> Path:
    """The bundled recipe on two species' shortest recordings (two training, one validation each), one training
    and one validation soundscape, and a 1 s model: every part of the recipe, at the least cost."""
    frame = pd.read_csv(REPO / "data_manifests/insectset32.csv", dtype=str, keep_default_na=False)
    frame = frame[frame["species"].isin(SPECIES)].sort_values("duration_s").groupby(["species", "split"]).head(2)
    frame = frame[(frame["split"] == "train") | ~frame.duplicated(["species", "split"])]
    frame.to_csv(root / "songs.csv", index=False)
    backgrounds = pd.read_csv(REPO / "data_manifests/backgrounds.csv", dtype=str, keep_default_na=False)
    backgrounds.sort_values("duration_s").groupby("split").head(1).to_csv(root / "backgrounds.csv", index=False)
    audio, soundscapes = str(shared_data / "audio/insectset32"), str(shared_data / "audio/backgrounds")
    recipe = TrainConfig.load(REPO / "configs/pulse_default.json")
    data = dict(manifest=str(root / "songs.csv"), audio_root=audio, background_manifest=str(root / "backgrounds.csv"),
                background_root=soundscapes)
    cfg = dataclasses.replace(
        recipe, **data,
        model=dataclasses.replace(recipe.model, labels=SPECIES, common_names=SPECIES, codes=("GRYCAM", "TETVIR"),
                                  window_s=1.0, n_mels=32, embed_dim=32),
        semi=dataclasses.replace(recipe.semi, unlabelled_manifests=(data["background_manifest"], data["manifest"]),
                                 unlabelled_roots=(soundscapes, audio), byol_hidden=32, byol_dim=16),
        evaluation=dataclasses.replace(recipe.evaluation, **data, exclude_excerpts=""))
    (root / "recipe.json").write_text(json.dumps(cfg.to_dict()))
    return root / "recipe.json"


def test_the_readme_ablation_runs_every_variant_and_resumes(shared_data, pulse_bundle, tmp_path, monkeypatch):
    recipe = tiny_recipe(shared_data, tmp_path)
    caches = [tmp_path / "teacher/insectset32", tmp_path / "teacher/backgrounds"]
    for cache, manifest, root in zip(caches, ("songs.csv", "backgrounds.csv"), ("insectset32", "backgrounds")):
        result = CliRunner().invoke(app, ["teacher-cache", "--manifest", str(tmp_path / manifest), "--audio-root",
                                          str(shared_data / "audio" / root), "--out", str(cache), "--threads", "1"])
        assert result.exit_code == 0, result.output
    out = tmp_path / "ablate"
    # The README's command (bench/README.md, run 4), at one step and on the tiny recipe; the student timed against
    # BirdNET is the suite's exported one (exporting takes longer than the rest of the throughput run).
    argv = ["ablate.py", "--out", str(out), "--steps", "1", "--batch-size", "2", "--windows-per-clip", "2",
            "--arch", "pulse_cnn_xs", "--byol-batch", "2", "--kd-batch", "2", "--threads", "1",
            "--config", str(recipe), "--per-species", "1", "--caches", ",".join(map(str, caches)),
            "--throughput-s", "6", "--throughput-model", str(pulse_bundle)]
    monkeypatch.setattr(sys, "argv", argv)
    load_ablate().main()

    results = json.loads((out / "results.json").read_text())
    assert list(results) == list(REGIMES)
    conditions = ["clean", "snr_+10dB", "snr_+0dB", "snr_-10dB"]
    for regime in REGIMES:
        assert list(results[regime]) == ["BirdNET probe", *DEFAULT_VARIANTS]
        for method, report in results[regime].items():
            assert list(report["conditions"]) == conditions, (regime, method)
            for condition in report["conditions"].values():
                for value in (condition["window"]["macro_f1"], condition["window"]["mAP"], condition["detection_auc"]):
                    assert 0.0 <= value <= 1.0, (regime, method, value)
    low = pd.read_csv(out / "manifest_1_per_species.csv")
    assert (low["split"] == "train").sum() == len(SPECIES)  # the low-label regime kept one recording per species
    table = (out / "results.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith(("| low-label", "| full-label"))]
    assert [tuple(re.match(r"\| (\S+) \| ([^|]+) \|", row).groups()) for row in rows] == [
        (regime, method) for regime in REGIMES for method in ("BirdNET probe", *DEFAULT_VARIANTS)]
    assert all(len(re.findall(r"\d\.\d{3}", row)) == 12 for row in rows)  # 3 metrics x 4 conditions
    assert re.search(r"student [\d.]+x real time, BirdNET [\d.]+x real time", table)

    # A rerun into the same folder resumes: no run retrains, the probe and the throughput are not measured again.
    runs = [out / regime / variant / "model.safetensors" for regime in ("low", "full") for variant in DEFAULT_VARIANTS]
    trained = {path: path.stat().st_mtime_ns for path in runs}
    rerun = load_ablate()
    monkeypatch.setattr(rerun, "probe_report", lambda *args: pytest.fail("the probe was fitted again"))
    monkeypatch.setattr(rerun, "throughput", lambda *args: pytest.fail("the throughput was measured again"))
    rerun.main()
    assert {path: path.stat().st_mtime_ns for path in trained} == trained
    assert json.loads((out / "results.json").read_text()) == results
    assert (out / "results.md").read_text() == table
