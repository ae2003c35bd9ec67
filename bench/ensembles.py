"""Do models fail on the same excerpts? Score-averaged ensembles on the `pulse evaluate` proxy.

Each model, then every named ensemble (the mean of its members' sigmoid scores), is scored by
`pulse.evaluate.evaluate` with the settings of `pulse evaluate` (four alignments, the listed
song-free excerpts left out). If an ensemble is no better than its members, their errors are
shared: more seeds of the same data will not fix them. Also lists, per model, the clean excerpts
it gets wrong at any alignment and how far the true species' score swings over the alignments, and
draws the excerpts every model gets wrong (`--figure`).

    python bench/ensembles.py --model default=pulse/assets/default/model.onnx \
        --model supervised=pulse/assets/supervised/model.onnx --ensemble default+supervised \
        --json bench/results/ensembles.json --figure bench/results/shared_errors.png
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import replace

import numpy as np

from export.atomic import write_json
from export.predictor import load_predictor
from pulse.config import EvalConfig
from pulse.evaluate import alignment_shifts, delay, evaluate, prepare

EXCLUDED = "data_manifests/insectset32_validation_silent_excerpts.csv"


def summary(report: dict) -> dict:
    """Window F1 as cut, its mean and lowest over the alignments, and detection AUC, per condition."""
    rows = {}
    for name, m in report["conditions"].items():
        aligned = m["alignment"]
        rows[name] = {"f1": round(m["window"]["macro_f1"], 4), "f1_mean": round(aligned["window_macro_f1_mean"], 4),
                      "f1_min": round(aligned["window_macro_f1_min"], 4),
                      "det_auc_mean": round(aligned["detection_auc_mean"], 4),
                      "det_auc_min": round(aligned["detection_auc_min"], 4)}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH (.onnx or .safetensors)")
    parser.add_argument("--ensemble", action="append", default=[], help="NAME+NAME[+...]: mean of their scores")
    parser.add_argument("--json", default="runs/ensembles.json")
    parser.add_argument("--figure", default="", help="PNG: spectrograms of the clean excerpts every model gets wrong")
    parser.add_argument("--delays-ms", default=",".join(f"{d:g}" for d in EvalConfig().delays_ms),
                        help="comma list: the alignments besides 0 (those of pulse evaluate by default)")
    args = parser.parse_args()

    predictors = {name: load_predictor(path) for name, path in (m.split("=", 1) for m in args.model)}
    if unknown := {m for e in args.ensemble for m in e.split("+")} - set(predictors):
        parser.error(f"--ensemble names models not given with --model: {', '.join(sorted(unknown))}")
    meta = next(iter(predictors.values())).metadata
    names = tuple(meta["labels"])
    cfg = replace(EvalConfig(), exclude_excerpts=EXCLUDED,
                  delays_ms=tuple(float(d) for d in args.delays_ms.split(",") if d.strip()))
    data = prepare(cfg, names, int(meta["sample_rate"]), float(meta["window_s"]))
    cache: dict[tuple[str, str], np.ndarray] = {}  # every model scores each batch once, whatever the ensembles

    def scores(members: list[str]):
        def score_fn(batch: np.ndarray) -> np.ndarray:
            key = hashlib.sha1(batch.tobytes()).hexdigest()
            for m in members:
                if (m, key) not in cache:
                    cache[(m, key)] = predictors[m].predict(batch)["scores"]
            return np.mean([cache[(m, key)] for m in members], axis=0)
        return score_fn

    results = {"models": dict(m.split("=", 1) for m in args.model), "config": cfg.to_dict(), "scores": {}, "wrong": {},
               "true_score_swing": {}}
    for group in [[name] for name in predictors] + [e.split("+") for e in args.ensemble]:
        label = "+".join(group)
        results["scores"][label] = summary(evaluate(scores(group), data, cfg, names))
        row = results["scores"][label]
        print(f"{label} " + "  ".join(f"{c} {r['f1']:.3f}/{r['f1_mean']:.3f} ({r['f1_min']:.3f})"
                                         for c, r in row.items()) + f"  AUC 0 dB {row['snr_+0dB']['det_auc_mean']:.3f}")
    shifts = alignment_shifts(cfg, data.sample_rate)
    rows = np.arange(len(data.labels))
    for name in predictors:  # clean excerpts wrong at any alignment: (excerpt, clip, true, predicted)
        aligned = [scores([name])(delay(data.windows, k)) for k in shifts]
        wrong = {(int(i), int(data.clip_ids[i]), names[data.labels[i]], names[s[i].argmax()])
                 for s in aligned for i in np.flatnonzero(s.argmax(axis=1) != data.labels)}
        results["wrong"][name] = [list(w) for w in sorted(wrong)]
        true = np.stack([s[rows, data.labels] for s in aligned])
        swing = true.max(axis=0) - true.min(axis=0)
        results["true_score_swing"][name] = {"median": round(float(np.median(swing)), 3),
                                             "p90": round(float(np.quantile(swing, 0.9)), 3),
                                             "max": round(float(swing.max()), 3)}
        print(f"{name}: clean excerpts wrong at some alignment: {sorted({w[0] for w in wrong})}; true species' "
              f"score swing over the alignments: {results['true_score_swing'][name]}")
    write_json(args.json, results)
    if args.figure:
        shared = sorted(set.intersection(*({w[0] for w in wrong} for wrong in results["wrong"].values())))
        draw_shared_errors(data, shared, scores(list(predictors)), names, args.figure)


def draw_shared_errors(data, excerpts: list[int], score_fn, names: tuple[str, ...], path: str) -> None:
    """One spectrogram per excerpt, titled with its species and the two best mean scores (as cut)."""
    from pulse.plots import PlotConfig, new_figure, save_png, spectrogram

    if not excerpts:
        return
    cfg = PlotConfig(width_px=400 * len(excerpts), height_px=300)
    figure = new_figure(cfg)
    mean_scores = score_fn(data.windows[excerpts])
    for k, (i, row) in enumerate(zip(excerpts, mean_scores)):
        ax = figure.add_subplot(1, len(excerpts), k + 1)
        power, hop_s = spectrogram(data.windows[i], data.sample_rate, cfg)
        ax.imshow(power, origin="lower", aspect="auto", cmap="magma", vmin=power.max() - cfg.dynamic_range_db,
                  extent=(0, power.shape[1] * hop_s, 0, data.sample_rate / 2000))
        best = np.argsort(row)[::-1][:2]
        ax.set_title(f"excerpt {i}: {names[data.labels[i]]}\n" + ", ".join(f"{names[b]} {row[b]:.2f}" for b in best),
                     fontsize=7)
        ax.set_xlabel("s")
        ax.set_ylabel("kHz" if k == 0 else "")
    save_png(figure, path)


if __name__ == "__main__":
    main()
