"""What if a held-out check keeps the excerpts without song? Window F1 with and without them.

`pulse evaluate` on the validation split leaves out 7 of its 74 excerpts, listed and checked on the
spectrogram as silence between the chirps of sparse singers
(`data_manifests/insectset32_validation_silent_excerpts.csv`).
A check that cuts 3 s excerpts without looking for song keeps them, labelled with the recording's
species. This scores each model and the BirdNET-embedding probe both ways (means and lowest of the four
alignments; detection AUC mean); the models as `pulse analyze` scores them, quiet windows raised to -20 dBFS
(`pulse/levels.py`; the results file of 2026-12-05 morning predates that).

    python bench/silent_excerpts.py --model default=pulse/assets/default/model.onnx \
        --model supervised=pulse/assets/supervised/model.onnx --json bench/results/silent_excerpts.json
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from export.atomic import write_json
from export.predictor import load_predictor
from pulse.config import EvalConfig
from pulse.evaluate import evaluate, prepare
from pulse.levels import for_model

LISTED = "data_manifests/insectset32_validation_silent_excerpts.csv"
PROBE = "BirdNET probe"


def summary(report: dict) -> dict:
    """Per condition: window F1 mean and lowest over the alignments, detection AUC mean."""
    out = {}
    for condition, metrics in report["conditions"].items():
        f1, auc = metrics["alignment"]["window_macro_f1"], metrics["alignment"]["detection_auc"]
        out[condition] = {"f1_mean": round(float(np.mean(f1)), 3), "f1_min": round(float(min(f1)), 3),
                          "auc_mean": round(float(np.mean(auc)), 3)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH of a model artefact")
    parser.add_argument("--caches", default="runs/teacher/insectset32,runs/teacher/backgrounds",
                        help="clip and background teacher caches, for the BirdNET probe ('' leaves it out)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="runs/silent_excerpts.json")
    args = parser.parse_args()

    results = {}
    for label, exclude in (("song excerpts (67)", LISTED), ("all excerpts (74)", "")):
        cfg = replace(EvalConfig(), exclude_excerpts=exclude)
        rows = results[label] = {}
        for name, path in (m.split("=", 1) for m in args.model):
            print(f"== {label}: {name}", flush=True)
            predictor = for_model(load_predictor(path, threads=args.threads), cfg.level_floor)  # as analyze
            names = tuple(predictor.metadata["labels"])
            data = prepare(cfg, names, int(predictor.metadata["sample_rate"]), float(predictor.metadata["window_s"]))
            rows[name] = summary(evaluate(lambda b: predictor.predict(b)["scores"], data, cfg, names))
            predictor.close()
        if args.caches:
            from pulse.teacher.probe import BirdNETProbe, fit_on_caches

            print(f"== {label}: {PROBE}", flush=True)
            probe = BirdNETProbe(fit_on_caches(cfg.manifest, cfg.background_manifest, names,
                                               tuple(args.caches.split(","))), args.threads)
            data = prepare(cfg, names, probe.sample_rate, probe.window_s)
            rows[PROBE] = summary(evaluate(probe, data, cfg, names))
            probe.close()
    write_json(args.json, {"models": dict(m.split("=", 1) for m in args.model), "listed": LISTED, "results": results})


if __name__ == "__main__":
    main()
