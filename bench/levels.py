"""Does a model hold when its input is louder or quieter than the training recordings?

The validation excerpts keep the recordist's levels (clean peaks: median -8 dBFS, 5 % below -25 dBFS).
A field recorder at low gain is quieter, a check that normalises every excerpt file is louder, and training
saw windows at -20..+6 dB peak (`gain_db`). Here the same excerpts, mixes and negatives are scored as
`pulse evaluate` scores them, each window first rescaled one way: a fixed gain on every window, or every
window set to the same peak or RMS level (as a normalising tool would), then stored as a 16-bit file would
hold it (rounded to 1/32768, clipped at full scale: a quiet recording keeps a floor of quantisation noise,
not the recordist's hiss scaled below anything a file can hold). Reported per condition: window macro-F1 and
detection AUC, means over the four alignments. Each PULSE model is scored twice: as `pulse analyze` scores
since 2026-12-05 (a window peaking under -20 dBFS raised to it, by at most 40 dB: `pulse/levels.py`) and
with that switched off (`--level-floor -200`, every window as recorded, as before).

    python bench/levels.py --model default=pulse/assets/default/model.onnx \
        --model supervised=pulse/assets/supervised/model.onnx --json bench/results/levels.json
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Callable

import numpy as np

from export.atomic import write_json
from export.predictor import load_predictor
from pulse.config import EvalConfig
from pulse.evaluate import evaluate, prepare
from pulse.levels import RaisedQuiet

LISTED = "data_manifests/insectset32_validation_silent_excerpts.csv"


def as_16_bit(windows: np.ndarray) -> np.ndarray:
    return (np.clip(np.round(windows * 32768.0), -32768, 32767) / 32768.0).astype(np.float32)


def gain(db: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda windows: windows * 10.0 ** (db / 20.0)


def to_level(db: float, measure: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda windows: windows * (10.0 ** (db / 20.0) / np.maximum(measure(windows), 1e-9))


def peak(windows: np.ndarray) -> np.ndarray:
    return np.abs(windows).max(axis=1, keepdims=True)


def rms(windows: np.ndarray) -> np.ndarray:
    return np.sqrt((windows.astype(np.float64) ** 2).mean(axis=1, keepdims=True))


SCALINGS = {
    "as recorded": gain(0.0),
    "-20 dB": gain(-20.0),
    "-40 dB": gain(-40.0),
    "peak 0 dBFS": to_level(0.0, peak),
    "peak -30 dBFS": to_level(-30.0, peak),
    "RMS -20 dBFS": to_level(-20.0, rms),
    "RMS -40 dBFS": to_level(-40.0, rms),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH of a model artefact")
    parser.add_argument("--caches", default="",
                        help="clip and background teacher caches (as bench/ablate.py's) to add the BirdNET probe")
    parser.add_argument("--probe-scalings", default="as recorded,-20 dB,-40 dB", help="the probe's (BirdNET is slow)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="runs/levels.json")
    args = parser.parse_args()

    cfg = replace(EvalConfig(), exclude_excerpts=LISTED)
    results = {}

    def run(name: str, score_fn, sample_rate: int, window_s: float, names: tuple[str, ...], scalings) -> None:
        data = prepare(cfg, names, sample_rate, window_s)
        rows = results[name] = {}
        for label in scalings:
            scale = SCALINGS[label]
            report = evaluate(lambda b: score_fn(as_16_bit(scale(b))), data, cfg, names)
            rows[label] = {condition: {"f1_mean": round(m["alignment"]["window_macro_f1_mean"], 3),
                                       "auc_mean": round(m["alignment"]["detection_auc_mean"], 3)}
                           for condition, m in report["conditions"].items()}
            print(name, label, rows[label], flush=True)

    for name, path in (m.split("=", 1) for m in args.model):
        for floor, suffix in ((EvalConfig().level_floor, ""), (-200.0, " (no level floor)")):
            predictor = RaisedQuiet(load_predictor(path, threads=args.threads), floor)
            names = tuple(predictor.metadata["labels"])
            run(name + suffix, lambda b: predictor.predict(b)["scores"], int(predictor.metadata["sample_rate"]),
                float(predictor.metadata["window_s"]), names, SCALINGS)
            predictor.close()
    if args.caches:
        from pulse.teacher.probe import BirdNETProbe, fit_on_caches

        probe = BirdNETProbe(fit_on_caches(cfg.manifest, cfg.background_manifest, names, tuple(args.caches.split(","))),
                             args.threads)
        run("BirdNET probe", probe, probe.sample_rate, probe.window_s, names, args.probe_scalings.split(","))
        probe.close()
    write_json(args.json, {"models": dict(m.split("=", 1) for m in args.model), "listed": LISTED,
                           "training_gain_db": "peak-normalised, then -20..+6 dB (configs/pulse_default.json gain_db)",
                           "level_floor_dbfs": EvalConfig().level_floor, "results": results})


if __name__ == "__main__":
    main()
