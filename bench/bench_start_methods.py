"""What `lrmil extract --workers N` pays per slide to start its patch-reading processes, by start method.

Linux forks them up to Python 3.13; Python 3.14 on Linux uses forkserver and macOS spawn, where each worker
imports torch and lrmil afresh. The DataLoader's workers live for one slide, so that cost comes back with every
slide. Each method runs in a fresh process (as a CLI run would) that encodes the same slide `--slides` times
in a row, the way a batch goes; the first slide also pays forkserver's server start. Also timed: the same
slide read in the main process (`--workers 0`). The features must be identical under every method.

    python bench/bench_start_methods.py --slides 3 --rounds 3 --out bench/results/start_methods.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from export.atomic import write_json

REPO = Path(__file__).resolve().parents[1]
SLIDE = REPO.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"
METHODS = ("fork", "forkserver", "spawn")


def child(method: str, slide: Path, slides: int, workers: int, batch_size: int) -> dict:
    """Seconds per slide under `method` (and in-process), and a digest of the features."""
    multiprocessing.set_start_method(method, force=True)
    from lrmil.config import ExtractConfig
    from lrmil.encoders import create_encoder
    from lrmil.features import encode_level, segment_and_patch

    cfg = ExtractConfig(num_workers=workers, batch_size=batch_size)
    encoder = create_encoder(cfg.encoder, weights=cfg.weights)
    grid = segment_and_patch(slide, cfg.tissue, cfg.patch).grid
    seconds, digests = [], set()
    for n_workers in [workers] * slides + [0]:
        start = time.perf_counter()
        feats = encode_level(slide, grid.mpp, grid.teacher, encoder, replace(cfg, num_workers=n_workers))
        seconds.append(round(time.perf_counter() - start, 2))
        digests.add(hashlib.sha256(feats.tobytes()).hexdigest()[:16])
    return {"per_slide_s": seconds[:-1], "in_process_s": seconds[-1], "patches": len(grid.teacher),
            "features_sha256": sorted(digests)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slide", type=Path, default=SLIDE)
    parser.add_argument("--slides", type=int, default=3, help="Slides encoded in a row (the same one).")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "start_methods.json")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.slide, args.slides, args.workers, args.batch_size)))
        return
    runs: dict[str, list[dict]] = {m: [] for m in args.methods}
    for _ in range(args.rounds):  # methods interleaved, so that load on a shared machine hits each alike
        for method in args.methods:
            command = [sys.executable, __file__, "--child", method, "--slide", str(args.slide), "--slides",
                       str(args.slides), "--workers", str(args.workers), "--batch-size", str(args.batch_size)]
            out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO).stdout
            runs[method].append(json.loads(out.splitlines()[-1]))
    report = {"slide": args.slide.name, "workers": args.workers, "batch_size": args.batch_size, "methods": {}}
    for method, results in runs.items():
        per_slide = list(zip(*(r["per_slide_s"] for r in results)))
        report["methods"][method] = {
            "median_s_by_slide": [statistics.median(s) for s in per_slide],
            "median_in_process_s": statistics.median(r["in_process_s"] for r in results),
            "features_sha256": sorted({d for r in results for d in r["features_sha256"]}), "runs": results}
    digests = {d for m in report["methods"].values() for d in m["features_sha256"]}
    report["identical_features"] = len(digests) == 1
    print(json.dumps({m: {k: v for k, v in r.items() if k != "runs"} for m, r in report["methods"].items()}, indent=2))
    write_json(args.out, report)


if __name__ == "__main__":
    main()
