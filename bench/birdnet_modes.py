"""Time the three ways of reading BirdNET's embedding with LiteRT (see pulse/teacher/birdnet.py).

Each mode runs in its own process, so peak RSS is per mode. Usage:
    python bench/birdnet_modes.py [--batch 8] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def time_mode(mode: str, batch: int, repeats: int, threads: int) -> dict:
    from pulse.teacher.birdnet import WINDOW_SAMPLES, BirdNET

    x = np.random.default_rng(0).standard_normal((batch, WINDOW_SAMPLES)).astype(np.float32) * 0.1
    teacher = BirdNET(threads=threads, mode=mode)
    start = time.perf_counter()
    first = teacher.predict(x)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(repeats):
        teacher.predict(x)
    per_window = (time.perf_counter() - start) / (repeats * batch)
    return {"mode": mode, "batch": batch, "first_call_s": round(first_s, 3),
            "ms_per_window": round(1e3 * per_window, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "embedding_checksum": float(first.embedding.sum()), "logits_checksum": float(first.logits.sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mode", help="time one mode in this process (used internally)")
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(time_mode(args.mode, args.batch, args.repeats, args.threads)))
        return
    from pulse.teacher.birdnet import MODES

    for mode in MODES:
        cmd = [sys.executable, __file__, "--mode", mode, "--batch", str(args.batch), "--repeats", str(args.repeats),
               "--threads", str(args.threads)]
        print(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
