"""Augmented training windows for distillation, so the teacher sees what the student sees.

Distillation reads BirdNET's outputs from a cache of the clean training audio, while the student is
shown those windows in noise: every target is one of ~850 fixed points. The student learns them
(cosine to BirdNET's embedding 0.96 on training windows) but not BirdNET's view of new recordings
(0.83 on the validation excerpts, where the training-set mean embedding already gets 0.73). Beyer et
al. (2022, "Knowledge distillation: A good teacher is patient and consistent") found distillation
generalises when teacher and student see the same augmented views. These files hold such views:
windows drawn by the supervised loop's own sampler (speeds, song crops, mixup of two species,
backgrounds and coloured noise, gain, low-pass) from training audio only, 20 views of 3 s to a
file, for `pulse teacher-cache --hop-s 3`, which then scores exactly the audio the student reads.

    python bench/make_transfer_views.py --out runs/views
    pulse teacher-cache --manifest runs/views/manifest.csv --audio-root runs/views --hop-s 3 --out runs/teacher/views
    pulse train --config configs/pulse_kd_views.json --out runs/kd_views
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from pulse.config import TrainConfig
from pulse.train.data import BatchSampler, load_backgrounds, load_clips, speed_variants

VIEWS_PER_FILE = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/pulse_default.json", help="whose sampler draws the views")
    parser.add_argument("--out", default="runs/views")
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--seed", type=int, default=11, help="not the recipe's seed: other draws than training's")
    args = parser.parse_args()

    cfg = replace(TrainConfig.load(args.config), seed=args.seed)
    rate = cfg.model.sample_rate
    clips = load_clips(cfg.manifest, cfg.audio_root, cfg.train_split, cfg.model.labels, rate)
    backgrounds = speed_variants(load_backgrounds(cfg.background_manifest, cfg.background_root, cfg.train_split, rate),
                                 cfg.background_speeds, rate)
    sampler = BatchSampler(clips, backgrounds, cfg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, pending = [], []
    steps = -(-args.files * VIEWS_PER_FILE // (cfg.batch_size * cfg.windows_per_clip))  # batches that fill the files
    for step in tqdm(range(steps), desc="views"):
        windows, _ = sampler.batch(step)
        pending.extend(windows.reshape(-1, windows.shape[-1]))
        while len(pending) >= VIEWS_PER_FILE and len(rows) < args.files:
            views, pending = pending[:VIEWS_PER_FILE], pending[VIEWS_PER_FILE:]
            views = [v / max(1.0, float(np.abs(v).max()) / 0.99) for v in views]  # FLAC holds [-1, 1]
            name = f"views_{args.seed}_{len(rows):04d}.flac"
            sf.write(out / name, np.concatenate(views), rate, subtype="PCM_16")
            rows.append({"path": name, "split": cfg.train_split,
                         "license": "CC-BY-4.0 (songs) + source soundscape licences",
                         "source": "augmented training windows (BatchSampler), 3 s each",
                         "duration_s": f"{VIEWS_PER_FILE * cfg.model.window_s:.3f}", "sample_rate": rate})
    pd.DataFrame(rows).to_csv(out / "manifest.csv", index=False)
    print(f"{len(rows)} files of {VIEWS_PER_FILE} views in {out} (manifest.csv)")


if __name__ == "__main__":
    main()
