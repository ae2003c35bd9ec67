"""Distillation's KnowledgeBank over a teacher cache of hundreds of thousands of windows: memory and a KD batch.

A synthetic cache written as `pulse teacher-cache` writes it (`_save_entry`: one .npz a file, `starts_s`, float32
`logits` [W, 6522] and `embedding` [W, 1024], random, and the embedding's moments), over sparse 48 kHz WAVs
(bench_pool.sparse_wav: a hole after 10 ms of noise) listed in a manifest, is made in --work. A child process then
builds `KnowledgeBank` over it (its peak RSS, against the RSS before building, and the bytes it reads), times the
targets of a KD batch (`bank.targets` for kd_batch windows), the whole KD batch (`BirdNETDistillation.batch`: audio
read and resampled, mixed with noise half the time, plus the targets), each with the cache's pages dropped first
(cold) and again (warm), and a KD step of the default model, and prints sums of the mean and std the bank
standardises with, to compare code versions (--compare-with: another checkout, measured on the same cache). The
folder is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LOGITS = 6522  # BirdNET V2.4's classes, all cached


def make_cache(folder: Path, windows: int, per_file: int, seed: int) -> dict:
    """folder/cache holding `windows` teacher windows (a 1 s hop) in files of `per_file`, folder/audio the WAVs."""
    import pandas as pd
    from bench_pool import RATE, sparse_wav

    from pulse.teacher import birdnet
    from pulse.teacher.cache import CachedTeacher, _save_entry

    rng = np.random.default_rng(seed)
    (folder / "audio").mkdir(parents=True)
    rows, index = [], []
    for i in range(-(-windows // per_file)):
        n = min(per_file, windows - i * per_file)
        name = f"site{i % 20:02d}_{i:06d}.wav"
        sparse_wav(folder / "audio" / name, (rng.standard_normal(RATE // 100) * 3000).astype(np.int16),
                   n - 1 + birdnet.WINDOW_S)
        digest = f"{i:064x}"
        target = folder / "cache" / digest[:2] / f"{digest}.npz"
        target.parent.mkdir(parents=True, exist_ok=True)
        _save_entry(target, CachedTeacher(np.arange(n, dtype=np.float32), rng.standard_normal((n, LOGITS), np.float32),
                                          np.abs(rng.standard_normal((n, birdnet.EMBED_DIM), np.float32))))
        rows.append({"path": name, "split": "train"})
        index.append({"path": name, "sha256": digest, "size": 1, "mtime_ns": 1, "ctime_ns": 1, "windows": n})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    pd.DataFrame(index).to_csv(folder / "cache" / "index.csv", index=False)
    (folder / "cache" / "config.json").write_text(json.dumps(
        {"manifest": str(folder / "manifest.csv"), "audio_root": str(folder / "audio"), "hop_s": 1.0}))
    disk = subprocess.run(["du", "-sm", str(folder / "cache")], capture_output=True, text=True, check=True)
    return {"windows": windows, "files": len(rows), "cache_disk_mib": int(disk.stdout.split()[0])}


class NoiseBackgrounds:
    """What `UnlabelledPool` gives the KD term to mix in: a window of noise."""

    def __init__(self, samples: int):
        self.samples = samples

    def window(self, rng):
        return (0.05 * rng.standard_normal(self.samples)).astype(np.float32)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def evict(folder: Path) -> None:
    """Drop the cache's and the audio's pages from the page cache (these files only), so reads go to the disk."""
    for path in [*folder.rglob("*.npz"), *folder.rglob("*.wav")]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_mib() -> float:
    """What this process has read so far, from the page cache or the disk."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1]) / 2 ** 20
    raise RuntimeError("no rchar in /proc/self/io")


def timed(function, repeats: int) -> float:
    """Milliseconds a call, over `repeats` calls."""
    t0 = time.perf_counter()
    for i in range(repeats):
        function(i)
    return 1000 * (time.perf_counter() - t0) / repeats


def measure(folder: Path, batches: int) -> dict:
    """In this process: build the bank from the disk, then draw `batches` KD batches of the recipe's size with the
    cache's pages evicted first (cold) and again (warm), and time a few KD steps (forward and backward)."""
    import resource

    import torch

    from pulse.config import ModelConfig, SemiConfig
    from pulse.models import create_model
    from pulse.train.distill_birdnet import BirdNETDistillation, KnowledgeBank
    from pulse.train.losses import StepOutputs

    torch.set_num_threads(1)
    model_cfg, semi = ModelConfig(), SemiConfig()
    evict(folder)
    before, read_before = rss_mib(), read_mib()
    t0 = time.perf_counter()
    bank = KnowledgeBank((str(folder / "cache"),), "train", model_cfg.window_s)
    result = {"kd_batch": semi.kd_batch, "build_s": time.perf_counter() - t0,
              "build_read_mib": read_mib() - read_before, "rss_before_build_mib": before,
              "peak_rss_after_build_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "held_by_bank_mib": rss_mib() - before}
    model = create_model(model_cfg).train()
    term = BirdNETDistillation(1.0, model, semi, bank, NoiseBackgrounds(model_cfg.window_samples),
                               model_cfg.sample_rate, seed=0)
    draws = np.random.default_rng(1).integers(len(bank.windows), size=(batches, semi.kd_batch))

    def targets(i: int) -> None:
        for k in draws[i]:
            bank.targets(bank.windows[int(k)])

    def step(i: int) -> None:
        term(model, StepOutputs(i, *([None] * 6))).backward()

    evict(folder)
    result["targets_cold_ms"] = timed(targets, batches)
    result["targets_warm_ms"] = timed(targets, batches)
    evict(folder)
    result["kd_batch_cold_ms"] = timed(term.batch, batches)
    result["kd_batch_warm_ms"] = timed(term.batch, batches)
    result["kd_step_warm_ms"] = timed(step, 3)
    return result | {"embedding_mean_sum": float(np.sum(bank.embedding_mean, dtype=np.float64)),
                     "embedding_std_sum": float(np.sum(bank.embedding_std, dtype=np.float64)),
                     "batch_0_embedding_sum": float(np.sum(term.batch(0)[1], dtype=np.float64))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", default="20000,200000", help="comma list of cache sizes, in teacher windows")
    parser.add_argument("--per-file", type=int, default=1000, help="windows a file (1000: 16.7 min at a 1 s hop)")
    parser.add_argument("--batches", type=int, default=50, help="KD batches timed")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_kd_bank"), help="scratch folder (deleted)")
    parser.add_argument("--compare-with", type=Path, nargs="*", default=[],
                        help="other checkouts of the repo (another version) measured on the same caches")
    parser.add_argument("--repeats", type=int, default=1, help="measurements of each checkout on each cache")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process of one cache
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.batches)))
        return
    if args.work.exists():
        raise SystemExit(f"{args.work} exists: give a new --work (it is deleted at the end)")
    results = []
    try:
        for windows in (int(w) for w in args.windows.split(",") if w):
            folder = args.work / str(windows)
            t0 = time.perf_counter()
            made = make_cache(folder, windows, args.per_file, args.seed) | {"made_s": time.perf_counter() - t0}
            for repeat in range(args.repeats):
                for code in (ROOT, *args.compare_with):  # alternated, as the machine's load drifts
                    out = subprocess.run([sys.executable, __file__, "--measure", str(folder), "--batches",
                                          str(args.batches)], cwd=code, capture_output=True, text=True, check=True,
                                         env=dict(os.environ, PYTHONPATH=str(code)))
                    result = made | {"code": str(code), "repeat": repeat} | json.loads(out.stdout.splitlines()[-1])
                    print(json.dumps(result), flush=True)
                    results.append(result)
            shutil.rmtree(folder)
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
