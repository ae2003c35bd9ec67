"""Songs from archive recordings: band-limited song, full-band soundscape behind it.

A held-out check may take its songs from archives (xeno-canto holds many MP3s, cut at ~16 kHz) and mix
them into soundscapes recorded at full band. The song then lacks its top octave while the noise keeps
it: neither the validation proxy (full-band songs) nor bench/bench_formats.py (the whole mix encoded)
shows that case. Here the 67 validation excerpts are band-limited *before* `pulse evaluate` mixes them:
cut at 16 or 12 kHz (a 32 or 24 kHz round trip, as the training augmentation does) and, independently
of any training code, encoded as MP3 by libsndfile and decoded again. Every condition at the four
alignments of `pulse evaluate`; the BirdNET-embedding probe the same way when --caches is given.

    python bench/band_limited_songs.py --model default=pulse/assets/default/model.onnx \
        --caches runs/teacher/insectset32,runs/teacher/backgrounds --json bench/results/band_limited_songs.json
"""

from __future__ import annotations

import argparse
import io
from dataclasses import replace
from typing import Callable

import numpy as np
import soundfile as sf

from export.atomic import write_json
from export.predictor import load_predictor
from pulse.config import EvalConfig
from pulse.evaluate import EvalData, evaluate, prepare
from pulse.train.augment import band_limit

EXCLUDED = "data_manifests/insectset32_validation_silent_excerpts.csv"
PROBE = "BirdNET probe"


def mp3_round_trip(windows: np.ndarray, sample_rate: int) -> np.ndarray:
    """Each window encoded as MP3 and decoded again, cut or padded back to its length."""
    out = []
    for window in windows:
        buffer = io.BytesIO()
        sf.write(buffer, window, sample_rate, format="MP3", subtype="MPEG_LAYER_III")
        buffer.seek(0)
        decoded = sf.read(buffer, dtype="float32")[0][:len(window)]
        out.append(np.pad(decoded, (0, len(window) - len(decoded))))
    return np.stack(out)


SONGS: dict[str, Callable[[np.ndarray, int], np.ndarray] | None] = {
    "full band": None,
    "cut at 16 kHz": lambda w, rate: np.stack([band_limit(x, 32000, rate) for x in w]),
    "cut at 12 kHz": lambda w, rate: np.stack([band_limit(x, 24000, rate) for x in w]),
    "MP3": mp3_round_trip,
}


def table(score_fn: Callable[[np.ndarray], np.ndarray], data: EvalData, cfg: EvalConfig,
          names: tuple[str, ...]) -> dict:
    """Per song treatment and condition: window macro-F1 mean and lowest over the alignments, mean detection AUC."""
    rows = {}
    for song, treat in SONGS.items():
        songs = data if treat is None else replace(data, windows=treat(data.windows, data.sample_rate))
        report = evaluate(score_fn, songs, cfg, names)
        rows[song] = {condition: {"f1_mean": round(m["alignment"]["window_macro_f1_mean"], 3),
                                  "f1_min": round(m["alignment"]["window_macro_f1_min"], 3),
                                  "auc_mean": round(m["alignment"]["detection_auc_mean"], 3)}
                      for condition, m in report["conditions"].items()}
        print(song, {c: tuple(v.values()) for c, v in rows[song].items()}, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="name=path (.onnx or .safetensors)")
    parser.add_argument("--caches", default="", help="clip and background teacher caches: adds the BirdNET probe")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()

    cfg = replace(EvalConfig(), exclude_excerpts=EXCLUDED, snr_db=(0.0, -10.0))
    results, names = {}, ()
    for name, path in (m.split("=", 1) for m in args.model):
        print(f"== {name}", flush=True)
        predictor = load_predictor(path, threads=args.threads)
        names = tuple(predictor.metadata["labels"])
        data = prepare(cfg, names, int(predictor.metadata["sample_rate"]), float(predictor.metadata["window_s"]))
        results[name] = table(lambda b: predictor.predict(b)["scores"], data, cfg, names)
        predictor.close()
    if args.caches:
        from pulse.teacher.probe import BirdNETProbe, fit_on_caches

        print(f"== {PROBE}", flush=True)
        probe = BirdNETProbe(fit_on_caches(cfg.manifest, cfg.background_manifest, names, tuple(args.caches.split(","))),
                             args.threads)
        data = prepare(cfg, names, probe.sample_rate, probe.window_s)
        results[PROBE] = table(probe, data, cfg, names)
        probe.close()
    write_json(args.json, {"models": dict(m.split("=", 1) for m in args.model), "excluded": EXCLUDED,
                           "alignments_ms": [0.0, *cfg.delays_ms], "results": results})


if __name__ == "__main__":
    main()
