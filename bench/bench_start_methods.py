"""What `lrmil extract --workers N` pays per slide to start its patch-reading processes, by start method.

Linux forks them up to Python 3.13; Python 3.14 on Linux uses forkserver and macOS spawn, where each worker
imports torch and lrmil afresh: once a run since the workers live for the whole run, once a slide before
(commit 58619e8 and earlier; run this script with PYTHONPATH at such a tree to measure it). Each method runs in a
fresh process (as a CLI run would) that extracts `--slides` copies of one slide (each its own file, as in an
archive) with `run_extract`, then the same copies in the main process (`--workers 0`). Timed: each slide
(`extract_slide`: tissue, grid, patches, encoder, files) and the whole run. The features must be identical under
every method and in the main process.

    python bench/bench_start_methods.py --slides 6 --rounds 3 --out bench/results/start_methods.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from export.atomic import write_json

REPO = Path(__file__).resolve().parents[1]
SLIDE = REPO.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"
METHODS = ("fork", "forkserver", "spawn")


def timed_run(slides: list[Path], cfg, out: Path) -> tuple[list[float], float, list[str]]:
    """Seconds per slide and for the run, and a digest of each slide's features."""
    from lrmil import features
    from lrmil.store import feature_dir, read_features

    seconds, extract_slide = [], features.extract_slide

    def timed(*args, **kwargs):  # run_extract looks extract_slide up in its module at every slide
        start = time.perf_counter()
        result = extract_slide(*args, **kwargs)
        seconds.append(round(time.perf_counter() - start, 2))
        return result

    features.extract_slide = timed
    try:
        start = time.perf_counter()
        summary = features.run_extract(slides, cfg, out)
        run_s = round(time.perf_counter() - start, 2)
    finally:
        features.extract_slide = extract_slide
    if summary["failed"]:
        raise RuntimeError(f"{summary['failed']} slides failed: {summary['errors_csv']}")
    folder = feature_dir(out / "features", "lrmil_vit_tiny", *cfg.patch.level(cfg.resolution))
    digests = [hashlib.sha256(read_features(folder / f"{s.stem}.h5").features.tobytes()).hexdigest()[:16]
               for s in slides]
    return seconds, run_s, digests


def child(method: str, slide: Path, slides: int, workers: int, batch_size: int) -> dict:
    """Seconds per slide and per run under `method` (and in-process), and digests of the features."""
    multiprocessing.set_start_method(method, force=True)
    from lrmil.config import ExtractConfig

    cfg = ExtractConfig(num_workers=workers, batch_size=batch_size, resolution="teacher")
    with tempfile.TemporaryDirectory() as tmp:
        copies = [Path(tmp) / f"slide{i}{slide.suffix}" for i in range(slides)]
        for copy in copies:
            shutil.copyfile(slide, copy)
        per_slide, run_s, digests = timed_run(copies, cfg, Path(tmp) / "workers")
        in_process, in_process_run_s, in_process_digests = timed_run(copies, replace(cfg, num_workers=0),
                                                                     Path(tmp) / "main")
    return {"per_slide_s": per_slide, "run_s": run_s, "in_process_s": in_process, "in_process_run_s": in_process_run_s,
            "features_sha256": sorted(set(digests)), "same_as_in_process": digests == in_process_digests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slide", type=Path, default=SLIDE)
    parser.add_argument("--slides", type=int, default=6, help="Copies of --slide extracted in one run.")
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
    report = {"slide": args.slide.name, "slides": args.slides, "workers": args.workers, "batch_size": args.batch_size,
              "methods": {}}
    for method, results in runs.items():
        report["methods"][method] = {
            "median_s_by_slide": [statistics.median(s) for s in zip(*(r["per_slide_s"] for r in results))],
            "median_run_s": statistics.median(r["run_s"] for r in results),
            "median_in_process_s_by_slide": [statistics.median(s) for s in zip(*(r["in_process_s"] for r in results))],
            "median_in_process_run_s": statistics.median(r["in_process_run_s"] for r in results),
            "features_sha256": sorted({d for r in results for d in r["features_sha256"]}),
            "same_as_in_process": all(r["same_as_in_process"] for r in results), "runs": results}
    digests = {d for m in report["methods"].values() for d in m["features_sha256"]}
    report["identical_features"] = len(digests) == 1 and all(m["same_as_in_process"]
                                                              for m in report["methods"].values())
    print(json.dumps({m: {k: v for k, v in r.items() if k != "runs"} for m, r in report["methods"].items()}, indent=2))
    write_json(args.out, report)


if __name__ == "__main__":
    main()
