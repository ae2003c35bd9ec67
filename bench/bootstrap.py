"""How sure are numbers from 21 recordings? A recording-level bootstrap, student against the BirdNET probe.

Issue 3 is judged on recordings never seen here; the proxy is the 67 validation excerpts with song, cut
from 21 recordings. Each model is scored as `pulse evaluate` scores it (clean and at +10 / 0 / -10 dB,
window macro-F1 averaged over the four alignments), next to the BirdNET-embedding probe fitted as
`bench/ablate.py` fits it. Then the recordings are resampled (`pulse.evaluate.recording_bootstrap`,
each species keeping its count), the same resamples for every model, and for each condition the script
reports the 95 % interval, the share of resamples at or above issue 3's bar, the share in which
the model is at least the probe on that same resample, and which excerpts each gets wrong at some
alignment (for a model: also those the probe gets right at every alignment).

    python bench/bootstrap.py --model default=pulse/assets/default/model.onnx \
        --model supervised=pulse/assets/supervised/model.onnx --model lowrate=pulse/assets/lowrate/model.onnx \
        --json bench/results/bootstrap.json

Needs the teacher caches of `bench/ablate.py` (its docstring has the two `pulse teacher-cache` commands).
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
from sklearn.metrics import f1_score

from export.atomic import write_json
from export.predictor import load_predictor
from pulse.config import EvalConfig
from pulse.evaluate import alignment_shifts, condition_name, delay, mix, prepare, recording_bootstrap, score

EXCLUDED = "data_manifests/insectset32_validation_silent_excerpts.csv"
BARS = {"clean": 0.97, "snr_+0dB": 0.90, "snr_-10dB": 0.85}  # issue 3's window macro-F1 targets
PROBE = "BirdNET probe"


def predictions(score_fn, data, cfg: EvalConfig) -> dict[str, np.ndarray]:
    """Per condition, the predicted species [alignments, excerpts]."""
    shifts = alignment_shifts(cfg, data.sample_rate)
    result = {}
    for snr in (None, *cfg.snr_db):
        windows = data.windows if snr is None else mix(data, snr, cfg.seed)
        result[condition_name(snr)] = np.stack([score(score_fn, delay(windows, k), cfg.batch_size).argmax(axis=1)
                                                for k in shifts])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH (.onnx or .safetensors)")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--caches", default="runs/teacher/insectset32,runs/teacher/backgrounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="runs/bootstrap.json")
    args = parser.parse_args()

    from pulse.teacher.probe import BirdNETProbe, fit_on_caches

    cfg = replace(EvalConfig(), exclude_excerpts=EXCLUDED)
    predicted, data = {}, None
    for name, path in (m.split("=", 1) for m in args.model):
        predictor = load_predictor(path, threads=args.threads)
        meta = predictor.metadata
        names = tuple(meta["labels"])
        data = prepare(cfg, names, int(meta["sample_rate"]), float(meta["window_s"]))
        predicted[name] = predictions(lambda b: predictor.predict(b)["scores"], data, cfg)
    probe = BirdNETProbe(fit_on_caches(cfg.manifest, cfg.background_manifest, names, tuple(args.caches.split(","))),
                         args.threads)
    probe_data = prepare(cfg, names, probe.sample_rate, probe.window_s)
    if not (np.array_equal(probe_data.labels, data.labels) and np.array_equal(probe_data.clip_ids, data.clip_ids)):
        raise RuntimeError("the probe's excerpts do not line up with the models' "
                           "(different sample rates cut differently)")
    predicted[PROBE] = predictions(probe, probe_data, cfg)
    probe.close()

    results = {"models": dict(m.split("=", 1) for m in args.model), "resamples": args.resamples,
               "n_excerpts": int(len(data.labels)), "n_recordings": int(len(np.unique(data.clip_ids))),
               "config": cfg.to_dict(), "conditions": {}}
    present = np.unique(data.labels)
    for condition in predicted[PROBE]:
        draws = {name: recording_bootstrap(p[condition], data.labels, data.clip_ids, args.resamples, seed=0)
                 for name, p in predicted.items()}  # seed 0 for all: the same resamples, so pairs compare
        rows = {}
        for name, d in draws.items():
            point = np.mean([f1_score(data.labels, p, labels=present, average="macro", zero_division=0)
                             for p in predicted[name][condition]])  # all recordings once: pulse evaluate's figure
            row = {"f1": round(float(point), 4), "ci95": [round(float(np.quantile(d, q)), 4) for q in (0.025, 0.975)]}
            if condition in BARS:
                row["share_at_bar"] = round(float(np.mean(d >= BARS[condition] - 1e-9)), 3)
            wrong = (predicted[name][condition] != data.labels).any(axis=0)  # at some alignment
            row["wrong_excerpts"] = np.flatnonzero(wrong).tolist()
            if name != PROBE:
                row["share_at_least_probe"] = round(float(np.mean(d >= draws[PROBE] - 1e-9)), 3)
                probe_right = (predicted[PROBE][condition] == data.labels).all(axis=0)
                row["wrong_where_probe_right"] = np.flatnonzero(wrong & probe_right).tolist()
            rows[name] = row
            print(f"{condition:10s} {name:14s} F1 {row['f1']:.3f} [{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}]"
                  + (f"  >= bar {row['share_at_bar']:.2f}" if "share_at_bar" in row else "")
                  + (f"  >= probe {row['share_at_least_probe']:.2f}" if "share_at_least_probe" in row else "")
                  + f"  wrong: {row['wrong_excerpts']}"
                  + (f" (probe right: {row['wrong_where_probe_right']})" if "wrong_where_probe_right" in row else ""))
        results["conditions"][condition] = rows
    write_json(args.json, results)


if __name__ == "__main__":
    main()
