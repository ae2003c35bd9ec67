"""Does a model hold up when the same audio arrives as another recorder or archive would store it?

The validation excerpts (3 s, the ones with song) and pure-soundscape windows are mixed as
`pulse evaluate` mixes them, then written to disk as WAV at 44.1, 48 and 22.05 kHz, FLAC at
96 kHz, MP3 and Ogg Vorbis; `pulse analyze` scores each folder in a separate process, exactly
as a user would run it, and the metrics are computed from its scores.csv alone: window
macro-F1 (argmax) and detection AUC (best species score, excerpts against soundscape windows).

    python bench/bench_formats.py --out bench_out/formats [--model M] [--json bench/results/formats.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import soxr

REPO = Path(__file__).resolve().parents[1]
RATE = 44100
# name -> (sample rate, libsndfile format, subtype, suffix)
FORMATS = {"wav_44k": (44100, "WAV", "PCM_16", ".wav"), "wav_48k": (48000, "WAV", "PCM_16", ".wav"),
           "wav_22k": (22050, "WAV", "PCM_16", ".wav"), "flac_96k": (96000, "FLAC", "PCM_24", ".flac"),
           "mp3_44k": (44100, "MP3", "MPEG_LAYER_III", ".mp3"), "ogg_48k": (48000, "OGG", "VORBIS", ".ogg")}
CONDITIONS = {"clean": None, "0 dB": 0.0, "-10 dB": -10.0}


def write_folder(folder: Path, excerpts: np.ndarray, negatives: np.ndarray, fmt: str) -> None:
    rate, major, subtype, suffix = FORMATS[fmt]
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, windows in (("pos", excerpts), ("neg", negatives)):
        for i, window in enumerate(windows):
            audio = window if rate == RATE else soxr.resample(window, RATE, rate)
            sf.write(folder / f"{prefix}{i:04d}{suffix}", audio.astype(np.float32), rate, format=major, subtype=subtype)


def score_folder(folder: Path, out: Path, model: str, labels: tuple[str, ...], data, threshold: float) -> dict:
    """Run `pulse analyze` on the folder; `pulse evaluate`'s metrics from its scores.csv alone."""
    from pulse.evaluate import condition_metrics

    subprocess.run([sys.executable, "-m", "pulse.cli", "analyze", str(folder), "--out", str(out), "--model", model,
                    "--format", "scores", "--no-resume"], check=True, capture_output=True)
    table = pd.read_csv(out / "scores.csv")
    best = table.assign(name=table["file"].map(lambda p: Path(p).stem)).groupby("name")[list(labels)].max()
    positives = best.loc[[n for n in best.index if n.startswith("pos")]]
    negatives = best.loc[[n for n in best.index if n.startswith("neg")]]
    index = np.array([int(n[3:]) for n in positives.index])
    metrics = condition_metrics(positives.to_numpy(), data.labels[index], data.clip_ids[index], negatives.to_numpy(),
                                labels, threshold)
    return {"macro_f1": round(metrics["window"]["macro_f1"], 3), "detection_auc": round(metrics["detection_auc"], 3),
            "excerpts": len(positives), "negatives": len(negatives)}


def main(argv: list[str] | None = None) -> None:
    from pulse.model_names import open_model
    from pulse.config import TrainConfig
    from pulse.evaluate import mix, prepare

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_out/formats"))
    parser.add_argument("--model", default="default", help="as `pulse analyze --model` (default: bundled)")
    parser.add_argument("--config", default=str(REPO / "configs/pulse_default.json"), help="its evaluation settings")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    evaluation = TrainConfig.load(args.config).evaluation
    predictor = open_model(args.model)
    labels = tuple(predictor.metadata["labels"])
    predictor.close()
    data = prepare(evaluation, labels, RATE, 3.0)
    results = {}
    for condition, snr in CONDITIONS.items():
        excerpts = data.windows if snr is None else mix(data, snr, evaluation.seed)
        for fmt in FORMATS:
            name = f"{fmt}_{condition.replace(' ', '').replace('-', 'm')}"
            write_folder(args.out / "audio" / name, excerpts, data.negatives, fmt)
            results.setdefault(fmt, {})[condition] = score_folder(
                args.out / "audio" / name, args.out / "runs" / name, args.model, labels, data, evaluation.threshold)
            print(f"{fmt:9s} {condition:7s} {results[fmt][condition]}", flush=True)
    report = {"model": args.model, "conditions": list(CONDITIONS), "formats": FORMATS, "results": results}
    for path in filter(None, (args.out / "results.json", args.json)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1) + "\n")
    print("\n| format | " + " | ".join(f"F1 {c}" for c in CONDITIONS) + " | "
          + " | ".join(f"AUC {c}" for c in CONDITIONS) + " |")
    for fmt, row in results.items():
        print(f"| {fmt} | " + " | ".join(f"{row[c]['macro_f1']:.3f}" for c in CONDITIONS) + " | "
              + " | ".join(f"{row[c]['detection_auc']:.3f}" for c in CONDITIONS) + " |")


if __name__ == "__main__":
    sys.exit(main())
