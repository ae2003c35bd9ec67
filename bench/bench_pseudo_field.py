"""Memory and time of `make_pseudo_field` over hours-long soundscapes, as a user's own field recordings would be.

The soundscapes are real: the backgrounds of ../shared/data/audio/backgrounds, each looped to one of --minutes (FLAC,
at its own rate) in a temporary folder. The songs are InsectSet32 training recordings. One process makes --count
recordings of --duration-s at 44.1 kHz with seed 7 and reports the seconds inside `make_pseudo_field` and the peak
RSS of the whole process (VmHWM, imports included: measured alone with --imports-only).

    python bench/bench_pseudo_field.py --minutes 30 40 45 60 --json bench/results/pseudo_field.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "audio"


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (Linux's VmHWM), in MB."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def looped_soundscapes(folder: Path, minutes: list[float]) -> list[Path]:
    """Each background looped to one of `minutes`, written block by block (never held whole)."""
    backgrounds = sorted((DATA / "backgrounds").glob("*.flac"))
    made = []
    for i, length in enumerate(minutes):
        source, target = backgrounds[i % len(backgrounds)], folder / f"soundscape_{i}.flac"
        audio, rate = sf.read(source, dtype="float32", always_2d=True)
        with sf.SoundFile(target, "w", rate, 1, format="FLAC") as out:
            for _ in range(int(np.ceil(length * 60 * rate / len(audio)))):
                out.write(audio.mean(axis=1))
        made.append(target)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[30, 40, 45, 60])
    parser.add_argument("--count", type=int, default=2)
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--imports-only", action="store_true", help="only import what the run imports")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from pulse.manifest import read_manifest, select_split
    from pulse.unlabelled import make_pseudo_field

    result = {"command": " ".join(sys.argv), "minutes": args.minutes}
    if not args.imports_only:
        manifest = select_split(read_manifest(DATA / "insectset32.csv"), "train")
        songs = [DATA / "insectset32" / p for p in manifest["path"]]
        with tempfile.TemporaryDirectory() as work:
            soundscapes = looped_soundscapes(Path(work), args.minutes)
            t0 = time.perf_counter()
            make_pseudo_field(songs, soundscapes, Path(work) / "out", args.count, args.duration_s, 44100,
                              songs_per_minute=12.0, snr_db=(-10.0, 10.0), seed=7)
            result["seconds_in_make_pseudo_field"] = round(time.perf_counter() - t0, 2)
    result["peak_rss_mb"] = round(peak_rss_mb())
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
