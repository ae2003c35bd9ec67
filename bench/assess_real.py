"""`pulse assess` on real songs at known times, as a user checks the detector on annotated recordings of a site.

The 21 validation songs of InsectSet32 (data_manifests/insectset32.csv), the first 10 s at most of each, are placed
once each, at seeded random times and without overlap, into four 2-minute soundscapes looped from the two validation
backgrounds (data_manifests/backgrounds.csv: bird chorus, toad trill), each song at an SNR drawn from --snr-db
relative to the bed under it. Each soundscape gets a Raven selection table boxing its songs, as an annotator would.
Then `pulse analyze --format scores` and `pulse assess`, run as a user runs them; the macro and per-species rows of
assessment.csv go to --json, for each of --seeds (placements and SNRs). Only validation audio is used: the bundled
models were not trained on it, though their epoch was chosen on excerpts of these songs.

    python bench/assess_real.py --out /tmp/assess_real --seeds 0 1 2 3 4 --json bench/results/assess_real.json
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
DATA = REPO.parent / "shared" / "data" / "audio"
RATE = 44100


def mono(path: Path, seconds: float = np.inf) -> np.ndarray:
    """The file (its first `seconds` at most), mixed to mono, at 44.1 kHz."""
    with sf.SoundFile(path) as f:
        rate = f.samplerate
        audio = f.read(int(min(f.frames, seconds * rate)), dtype="float32", always_2d=True).mean(axis=1)
    return audio if rate == RATE else soxr.resample(audio, rate, RATE).astype(np.float32)


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)) + 1e-12)


def soundscape(bed: np.ndarray, songs: list[tuple[str, np.ndarray]], seconds: float, snr_db: tuple[float, float],
               rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """`bed` looped to `seconds` with `songs` in it, in the order given, at random gaps; returns it and the boxes."""
    out = np.resize(bed, int(seconds * RATE)).astype(np.float32)
    free = len(out) - sum(len(song) for _, song in songs)
    gaps = np.floor(rng.dirichlet(np.ones(len(songs) + 1)) * free).astype(int)
    boxes, at = [], 0
    for (species, song), gap in zip(songs, gaps):
        at += gap
        gain = rms(out[at:at + len(song)]) / rms(song) * 10 ** (rng.uniform(*snr_db) / 20)
        out[at:at + len(song)] += song * gain
        boxes.append({"Begin Time (s)": round(at / RATE, 3), "End Time (s)": round((at + len(song)) / RATE, 3),
                      "Species": species})
        at += len(song)
    return out / max(1.0, float(np.abs(out).max()) / 0.99), boxes


def raven_table(path: Path, boxes: list[dict]) -> None:
    table = pd.DataFrame(boxes)
    table.insert(0, "Selection", range(1, len(table) + 1))
    table.insert(1, "View", "Spectrogram 1")
    table.insert(2, "Channel", 1)
    table.to_csv(path, sep="\t", index=False)


def run(args: argparse.Namespace, seed: int, out: Path) -> pd.DataFrame:
    """Soundscapes and tables made with `seed` in `out`, analysed and assessed; returns assessment.csv, rounded."""
    rng = np.random.default_rng(seed)
    songs = pd.read_csv(REPO / "data_manifests" / "insectset32.csv").query("split == 'validation'")
    beds = pd.read_csv(REPO / "data_manifests" / "backgrounds.csv").query("split == 'validation'")["path"].tolist()
    clips = [(row.species, mono(args.data / "insectset32" / row.path, 10.0)) for row in songs.itertuples()]
    audio_dir, tables_dir = out / "recordings", out / "annotations"
    audio_dir.mkdir(parents=True, exist_ok=True)
    tables_dir.mkdir(parents=True, exist_ok=True)
    for i, group in enumerate(np.array_split(rng.permutation(len(clips)), args.soundscapes)):
        bed = mono(args.data / "backgrounds" / beds[i % len(beds)])
        audio, boxes = soundscape(bed, [clips[k] for k in group], args.seconds, tuple(args.snr_db), rng)
        sf.write(audio_dir / f"soundscape_{i}.flac", audio, RATE, subtype="PCM_16")
        raven_table(tables_dir / f"soundscape_{i}.Table.1.selections.txt", boxes)
    pulse = [sys.executable, "-m", "pulse.cli"]
    subprocess.run([*pulse, "analyze", str(audio_dir), "--out", str(out / "run"), "--model", args.model,
                    "--format", "scores", "--no-resume"], check=True)
    subprocess.run([*pulse, "assess", str(tables_dir), "--results", str(out / "run"), "--out", str(out / "assessment")],
                   check=True)
    return pd.read_csv(out / "assessment" / "assessment.csv").round(3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="work folder (soundscapes, tables, run, assessment)")
    parser.add_argument("--soundscapes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--snr-db", type=float, nargs=2, default=(0.0, 10.0))
    parser.add_argument("--model", default="default")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--data", type=Path, default=DATA, help="../shared/data/audio")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    result = {"command": " ".join(sys.argv), "model": args.model, "snr_db": list(args.snr_db), "seeds": {}}
    for seed in args.seeds:
        table = run(args, seed, args.out / f"seed{seed}")  # pulse assess prints it
        result["seeds"][seed] = json.loads(table.to_json(orient="records"))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
