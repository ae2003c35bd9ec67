"""Peak memory and wall time of `lrmil predict`'s heatmap stage alone at several --heatmap-px (bench/README.md,
"A 40x resection slide of 100,000 x 80,000 px"): thumbnail, score map, overlay, colour bar, PNG, as predict.py
runs them, over a grid of 2048-px patches covering the slide with random attention (no model: the heatmap's
cost does not depend on it). Each size runs in a process of its own, on the lrmil of the checkout this script is
in; its VmHWM is the peak, less the same process's VmHWM after the imports and the slide's opening.

    .venv/bin/python bench/bench_heatmap_memory.py /tmp/quarter.tif --px 1024 4096 8192
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

STAGE = """
import sys, time
from pathlib import Path
import numpy as np
from lrmil.heatmap import overlay, percentiles, save_png, score_map, with_colour_bar
from lrmil.slide import open_slide

def hwm():
    return next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM"))

path, px, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open_slide(path) as reader:
    before, start = hwm(), time.perf_counter()
    view = reader.thumbnail(px)
    w, h = reader.dimensions
    coords = np.array([(x, y) for y in range(0, h - 2048, 2048) for x in range(0, w - 2048, 2048)])
    attention = np.random.default_rng(0).random(len(coords))
    heat = score_map(coords, 2048, percentiles(attention), reader.dimensions, view.shape[:2])
    save_png(out, with_colour_bar(overlay(view, heat)))
    print(view.shape[1], view.shape[0], round(time.perf_counter() - start, 2), before // 1024, hwm() // 1024)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("slide")
    parser.add_argument("--px", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for px in args.px:
            out = Path(tmp) / f"heatmap_{px}.png"
            done = subprocess.run([sys.executable, "-c", STAGE, args.slide, str(px), str(out)], check=True,
                                  capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
            w, h, seconds, before, peak = done.stdout.split()
            rows.append({"heatmap_px": px, "view": f"{w} x {h}", "seconds": float(seconds),
                         "stage_peak_mb": int(peak) - int(before), "process_peak_mb": int(peak),
                         "png_mb": round(out.stat().st_size / 1e6, 1)})
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
