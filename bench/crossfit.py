"""Does a model trained on every labelled recording name unseen recordings better? A cross-fit.

Once a recipe is fixed, its final model can be refit on train + validation (more recordings of
species that have only 8-16 of them) and keep its last epoch, as nothing is left to select on.
Its own validation numbers would then be contaminated; this measures the refit honestly. The
validation clips are dealt into two folds (alternately, within each species); one model trains
on train + fold B and is scored on fold A's excerpts, the other the other way round, both keeping
their last epoch. Excerpts, soundscape mixes and metrics are exactly those of `pulse evaluate`,
so the pooled result compares 1:1 with the train-only run's last epoch (its history.json):
    python bench/crossfit.py --config configs/pulse_supervised.json --baseline-run runs/v04 --out runs/crossfit
Resumable: each fold's run continues from its checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from export.atomic import atomic_path, write_json, write_text
from export.predictor import load_predictor
from pulse.config import TrainConfig
from pulse.evaluate import condition_metrics, condition_name, format_table, mix, plot_confusion, prepare, score
from pulse.train.weak_labels import evaluation_config, train

FOLDS = ("fold_a", "fold_b")


def fold_manifest(manifest: str, split: str, out: Path) -> tuple[str, dict[str, str]]:
    """A copy of `manifest` whose `split` rows are renamed fold_a / fold_b; returns it and path -> fold."""
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    rows = frame[frame["split"] == split].sort_values(["species", "path"])
    folds = {path: FOLDS[i % 2] for i, path in enumerate(rows["path"])}
    frame.loc[frame["split"] == split, "split"] = frame["path"].map(folds)
    path = out / "manifest_folds.csv"
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return str(path), folds


def crossfit(cfg: TrainConfig, out: Path, workers: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    manifest, folds = fold_manifest(cfg.manifest, cfg.val_split, out)
    eval_cfg = evaluation_config(cfg)
    names, mc = cfg.model.labels, cfg.model
    data = prepare(eval_cfg, names, mc.sample_rate, mc.window_s)
    frame = pd.read_csv(cfg.manifest, dtype=str, keep_default_na=False)
    clip_paths = frame.loc[frame["split"] == cfg.val_split, "path"].to_numpy()  # clip_ids index these
    excerpt_fold = np.array([folds[p] for p in clip_paths[data.clip_ids]])
    conditions = {condition_name(s): data.windows if s is None else mix(data, s, eval_cfg.seed)
                  for s in (None, *eval_cfg.snr_db)}
    scores = {name: np.zeros((len(data.windows), len(names)), np.float32) for name in conditions}
    negatives = []
    for held_out in FOLDS:
        trained_on = next(f for f in FOLDS if f != held_out)
        run = out / f"train_on_{trained_on}"
        train(dataclasses.replace(cfg, manifest=manifest, extra_train_splits=(trained_on,), val_split=""), run,
              workers=workers)
        predictor = load_predictor(run / "model.safetensors")
        predict = lambda batch: predictor.predict(batch)["scores"]  # noqa: E731
        rows = excerpt_fold == held_out
        for name, windows in conditions.items():
            scores[name][rows] = score(predict, windows[rows], eval_cfg.batch_size)
        negatives.append(score(predict, data.negatives, eval_cfg.batch_size))
        predictor.close()
    negative_scores = np.concatenate(negatives)  # each soundscape window once per fold model
    return {"labels": list(names), "n_windows": int(len(data.windows)), "n_clips": int(len(np.unique(data.clip_ids))),
            "n_excluded_windows": data.n_excluded, "n_negative_windows": int(len(negative_scores)),
            "folds": {f: sorted(p for p, g in folds.items() if g == f) for f in FOLDS},
            "conditions": {name: condition_metrics(s, data.labels, data.clip_ids, negative_scores, names,
                                                   eval_cfg.threshold) for name, s in scores.items()}}


def baseline_row(run: Path) -> dict:
    """The train-only run's last epoch, as its history.json recorded it."""
    history = json.loads((run / "history.json").read_text())
    return {"run": str(run), **history[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/pulse_supervised.json",
                        help="the recipe (train_split + val_split)")
    parser.add_argument("--out", type=Path, default=Path("runs/crossfit"))
    parser.add_argument("--baseline-run", type=Path, help="the same recipe's train-only run, for the comparison row")
    parser.add_argument("--report", type=Path, help="where the report goes (default: OUT/crossfit.json)")
    parser.add_argument("--workers", type=int, default=1, help="threads drawing batches (speed only)")
    args = parser.parse_args()
    cfg = TrainConfig.load(args.config)
    report = {"config": args.config, **crossfit(cfg, args.out, args.workers)}
    if args.baseline_run:
        report["baseline_last_epoch"] = baseline_row(args.baseline_run)
    write_json(args.report or args.out / "crossfit.json", report)
    write_text(args.out / "report.txt", format_table(report) + "\n")
    plot_confusion(report, cfg.model.codes, args.out / "confusion.png")
    print(format_table(report))
    if args.baseline_run:
        print("train-only, last epoch:", report["baseline_last_epoch"])


if __name__ == "__main__":
    main()
