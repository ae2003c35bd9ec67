"""The LRMIL benchmark end to end at toy size: every variant is held out per fold, stage 1 included."""

from __future__ import annotations

import json

from lrmil.mil.benchmark import VARIANTS, results_table, run_bench
from lrmil.mil.config import BenchConfig
from lrmil.mil.metrics import read_predictions
from lrmil.mil.splits import read_splits


def test_stage1_never_sees_its_test_fold_and_every_slide_is_predicted_once(tmp_path):
    cfg = BenchConfig(out=str(tmp_path), count=6, size=1536, folds=3, large_size=0, timing_slides=1,
                      pretrain_steps=3, stage1_epochs=1, mil_epochs=2)
    results = run_bench(cfg)

    splits = read_splits(tmp_path / "data" / "labels.csv")
    fold_of = dict(zip(splits["slide_id"], splits["fold"]))
    assert sorted(results["stage1"]) == [0, 1, 2]
    for fold, metrics in results["stage1"].items():
        trained_on = set(metrics["slide_ids"])
        assert trained_on == {s for s, f in fold_of.items() if f != fold}
        assert (tmp_path / "encoders" / f"student_5x_fold{fold}.safetensors").is_file()

    pooled = read_predictions(tmp_path / "runs" / "student_5x_both_predictions.csv")
    assert sorted(pooled["slide_id"]) == sorted(fold_of)
    assert all(fold_of[s] == f for s, f in zip(pooled["slide_id"], pooled["fold"]))
    assert set(results["metrics"]) == set(VARIANTS)
    assert results["metrics"]["student_5x_both"]["slides"] == len(fold_of)
    assert (tmp_path / "model" / "model.json").is_file()
    assert "student, stage 1 + 2" in results_table(results)

    stage1 = {p: p.stat().st_mtime_ns for p in (tmp_path / "encoders").glob("*.safetensors")}
    again = run_bench(cfg)  # every step resumes from disk: same numbers, stage 1 not retrained
    assert json.dumps(again["metrics"], sort_keys=True) == json.dumps(results["metrics"], sort_keys=True)
    assert stage1 and all(p.stat().st_mtime_ns == stamp for p, stamp in stage1.items())
