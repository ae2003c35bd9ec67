"""Wall time and peak memory of `lrmil patch`, `extract` (20x, 5x), `predict` and the lab app's analysis on one large
slide (bench/README.md, "A 40x resection slide of 100,000 x 80,000 px"; the slide: bench/make_big_slide.py).

Each step runs as its own process; its memory is sampled every 0.2 s from /proc: the peak RSS of the step's own
process (VmHWM) and the peak of the RSS summed over it and its children (`extract`'s DataLoader workers). The lab
app's step calls `apps.lab.predict_upload` in a Python process, as the page's button does, without a server.

    .venv/bin/python bench/bench_big_slide.py /tmp/big.tif --out /tmp/big_out --json bench/results/big_slide.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

LAB = ("import sys; from apps.lab import predict_upload; v = predict_upload(sys.argv[1], None, 'demo', 'student', "
       "sys.argv[2]); print(v.status); sys.exit(v.record is None)")


def children(pid: int) -> list[int]:
    """Every process below `pid`."""
    below = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                below += [int(entry), *children(int(entry))]
    return below


def kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(command: list[str]) -> dict:
    """Run `command`: exit status, wall seconds, peak RSS of its process and of its process tree (MB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    own = tree = 0
    while proc.poll() is None:
        own = max(own, kib(proc.pid, "VmHWM"))
        tree = max(tree, sum(kib(pid, "VmRSS") for pid in [proc.pid, *children(proc.pid)]))
        time.sleep(0.2)
    output = proc.stdout.read()
    return {"rc": proc.returncode, "wall_s": round(time.perf_counter() - start, 1), "peak_rss_mb": own // 1024,
            "peak_tree_rss_mb": max(tree, own) // 1024, "tail": output.strip().splitlines()[-3:]}


def images(folder: Path) -> dict:
    """Size in pixels and on disk of every PNG written below `folder`: each opened, so each is a readable image."""
    found = {}
    for png in sorted(folder.rglob("*.png")):
        with Image.open(png) as image:
            image.load()
            found[str(png.relative_to(folder))] = {"px": list(image.size), "kb": png.stat().st_size // 1024}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slide")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--steps", default="patch,extract20,extract5,predict,lab")
    args = parser.parse_args()
    lrmil = [sys.executable, "-m", "lrmil.cli"]
    extract = [*lrmil, "extract", args.slide, "--out", str(args.out / "extract"), "--resolution"]
    steps = {"patch": [*lrmil, "patch", args.slide, "--out", str(args.out / "patch")],
             "extract20": [*extract, "teacher"], "extract5": [*extract, "student"],
             "predict": [*lrmil, "predict", args.slide, "--out", str(args.out / "predict")],
             "lab": [sys.executable, "-c", LAB, args.slide, str(args.out / "lab")]}
    (args.out / "lab").mkdir(parents=True, exist_ok=True)
    results = {"slide": args.slide, "bytes": os.path.getsize(args.slide)}
    for name in args.steps.split(","):
        results[name] = measure(steps[name])
        print(name, json.dumps(results[name]), flush=True)
    results["images"] = images(args.out)
    print(json.dumps(results["images"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
