"""`lrmil extract` over features extracted before with other tissue flags: kept where the grid is the same.

--copies copies of CMU-1-Small-Region.svs (no ink: the ink rule leaves its grid as it was) are extracted with
--keep-ink, then again with the default --exclude-ink and once more with --keep-ink (each "kept": grid unchanged,
config rewritten), then with the same flags (skipped), then with --no-resume (every slide encoded again, as every
change of a tissue flag did until 2026-12-07). Each is one `lrmil extract` process (default encoder, teacher path):
its wall and CPU seconds (other work on the machine stretches the former) and its summary line's counts; the
skipped run is the floor, start-up and checking the slides.

    python bench/bench_extract_kept.py --work /tmp/extract_kept --json bench/results/extract_kept.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = {"first, --keep-ink": ["--keep-ink"], "--exclude-ink over it": [], "--keep-ink over that": ["--keep-ink"],
        "--keep-ink again (unchanged)": ["--keep-ink"], "--keep-ink --no-resume": ["--keep-ink", "--no-resume"]}


def timed(args: list[str]) -> tuple[dict, str]:
    """Wall and CPU seconds of one `lrmil` process, and its last stdout line (extract's summary)."""
    t0, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-m", "lrmil.cli", *args], cwd=REPO, capture_output=True, text=True,
                          check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(cpu, 1)}, done.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--copies", type=int, default=5)
    parser.add_argument("--slide", type=Path, default=REPO.parent / "shared" / "data" / "slides" /
                        "CMU-1-Small-Region.svs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    shutil.rmtree(args.work, ignore_errors=True)
    (args.work / "slides").mkdir(parents=True)
    for i in range(args.copies):
        shutil.copy2(args.slide, args.work / "slides" / f"cmu1_{i}.svs")
    result = {"command": " ".join(sys.argv), "load_average_1min_at_start": os.getloadavg()[0], "runs": {}}
    for name, flags in RUNS.items():
        times, summary = timed(["extract", str(args.work / "slides"), "--out", str(args.work / "out"), *flags])
        counts = {k: v for k, v in json.loads(summary).items() if k in ("done", "kept", "skipped", "failed")}
        result["runs"][name] = {**times, **counts}
        print(name, result["runs"][name], flush=True)
    result["load_average_1min_at_end"] = os.getloadavg()[0]
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
