"""Two singers at once, for distillation: training songs laid over training songs and soundscapes.

BirdNET's embedding names excerpts the student misses, among them a song over another insect's band
(`bench/bootstrap.py`). Distillation so far showed the student BirdNET's view of one song in noise. These
recordings (`pulse.unlabelled.make_pseudo_field` with training songs as the bed as well as the songs)
hold two or more singers most of the time, so a teacher cache of them shows the student BirdNET's view
of overlapping singers. Only training-split audio is used.

    python bench/make_mixtures.py --out runs/mixtures
    pulse teacher-cache --manifest runs/mixtures/manifest.csv --audio-root runs/mixtures --out runs/teacher/mixtures
    pulse train --config configs/pulse_kd_mixtures.json --out runs/kd_mixtures
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from pulse.config import TrainConfig
from pulse.unlabelled import make_pseudo_field


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/mixtures")
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--songs-per-minute", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    cfg = TrainConfig()
    songs_table, soundscapes = pd.read_csv(cfg.manifest), pd.read_csv(cfg.background_manifest)
    songs = [Path(cfg.audio_root) / p for p in songs_table.loc[songs_table["split"] == cfg.train_split, "path"]]
    beds = songs + [Path(cfg.background_root) / p
                    for p in soundscapes.loc[soundscapes["split"] == cfg.train_split, "path"]]
    manifest = make_pseudo_field(songs, beds, args.out, args.count, args.duration_s, cfg.model.sample_rate,
                                 args.songs_per_minute, (-10.0, 10.0), args.seed)
    print(f"{len(manifest)} recordings of {args.duration_s:g} s in {args.out} (manifest.csv)")


if __name__ == "__main__":
    main()
