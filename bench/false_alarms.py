"""How often does a model report a species in audio that holds none?

`pulse analyze` runs each model over recordings without Orthoptera song, exactly as a user would
(3 s windows, here with 2.5 s overlap so that every half second starts a window), and counts the
windows whose best species score reaches --min-conf: each is a false detection a person would
have to check. The default recordings are the two soundscapes no bundled model trained on (bird
chorus, toad trill); pass any other folders or files of song-free audio after them.

    python bench/false_alarms.py --models default,supervised --json bench/results/false_alarms.json \
        ../shared/data/audio/backgrounds/OSS_1min_ARU_bird_chorus.flac \
        ../shared/data/audio/backgrounds/OSS_great_plains_toad.flac \
        .venv/lib/python3.11/site-packages/gradio/media_assets/audio/{sax,cantina,recording1,audio_sample}.wav

(the six song-free files of bench/README.md's "of 91 windows" figures; the two soundscapes alone give 60 windows)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from export.atomic import write_json
from pulse.analyze import analyze
from pulse.config import InferConfig

HELD_OUT = ("../shared/data/audio/backgrounds/OSS_1min_ARU_bird_chorus.flac",
            "../shared/data/audio/backgrounds/OSS_great_plains_toad.flac")


def false_alarms(model: str, inputs: list[str], min_conf: float, overlap: float) -> dict:
    """Windows at or above `min_conf`, per file and in all, for one model."""
    with tempfile.TemporaryDirectory() as out:
        cfg = InferConfig(model=model, overlap=overlap, min_conf=min_conf, formats=("scores",), resume=False)
        summary = analyze(inputs, Path(out), cfg)
        scores = pd.read_csv(Path(out) / "scores.csv")
    species = list(scores.columns[3:])
    best = scores[species].max(axis=1)
    files = {Path(f).name: {"windows": int(len(g)), "false_alarms": int((best[g.index] >= min_conf).sum()),
                            "max_score": round(float(best[g.index].max()), 3),
                            "max_species": scores.loc[best[g.index].idxmax(), species].astype(float).idxmax()}
             for f, g in scores.groupby("file")}
    return {"windows": int(len(scores)), "false_alarms": int((best >= min_conf).sum()),
            "files_failed": summary.files_failed, "files": files}


def quieter_copies(inputs: list[str], gain_db: float, folder: Path) -> list[str]:
    """16-bit WAV copies of `inputs` (files, or the audio files in folders) `gain_db` quieter: a recorder at lower
    gain."""
    import soundfile as sf

    from pulse.discovery import find_audio

    copies = []
    for path, relative in find_audio(inputs):
        audio, rate = sf.read(str(path), dtype="float32")
        target = folder / relative.with_suffix(".wav")
        target.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(target), audio * 10.0 ** (gain_db / 20.0), rate, subtype="PCM_16")
        copies.append(str(target))
    return copies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="*", default=list(HELD_OUT), help="song-free audio files or folders")
    parser.add_argument("--models", default="default,supervised", help="comma list of model names or paths")
    parser.add_argument("--min-conf", type=float, default=InferConfig().min_conf)
    parser.add_argument("--overlap", type=float, default=2.5, help="seconds shared by consecutive 3 s windows")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--gain-db", type=float, default=0.0,
                        help="score 16-bit copies this many dB quieter (negative), as from a recorder at lower gain")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        inputs = quieter_copies(args.inputs, args.gain_db, Path(folder)) if args.gain_db else args.inputs
        results = {m: false_alarms(m, inputs, args.min_conf, args.overlap) for m in args.models.split(",")}
    for model, r in results.items():
        worst = ", ".join(f"{name} {f['max_score']:.2f} ({f['max_species']})" for name, f in r["files"].items())
        print(f"{model}: {r['false_alarms']} of {r['windows']} windows >= {args.min_conf:g}; highest per file: {worst}")
    if args.json:
        write_json(args.json, {"min_conf": args.min_conf, "overlap_s": args.overlap, "inputs": args.inputs,
                               "gain_db": args.gain_db, "models": results})


if __name__ == "__main__":
    main()
