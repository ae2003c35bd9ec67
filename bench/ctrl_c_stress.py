"""Ctrl-C at random moments into `pulse segments`: does an interrupted run keep its word?

One `pulse analyze` over a subset of InsectSet32 (../shared/data): half the recordings as their FLACs, half as WAVs
whose recorder left out a pad byte (read through Python callbacks, `pulse.pieced`). One uninterrupted `pulse segments
--max-segments 3` gives the clips expected. Then, per try, the same command into a fresh folder gets SIGINT at a
random time up to 1.2 times that run's cutting after its OUT/segments.json appears (clips are cut from then on), and
the try fails unless:
- it exits 130 having said "interrupted: N clip(s) written"; or said it finished (exit status 0, or killed by the
  SIGINT if it came after that); or exits 130 without a word, with no clip or every clip on disk (the SIGINT came
  before the first was cut or after the last: counted apart as "silent"); no traceback, no "Exception ignored"
  (before the last line of one that finished: Python may say one as it shuts down);
- N is the number of clips on disk, and no temporaries are left;
- every clip on disk is byte for byte the uninterrupted run's (so whole, readable, of the expected length);
- the same command again exits 0 saying it kept the clips there and wrote the rest, leaving the uninterrupted run's
  files.
`--load` processes burn a core each meanwhile (the failures seen under load). Prints a line per problem of a failed
try and a count of each outcome; exit status 1 if any try failed. About 5 s a try under load on 2 cores.

    python bench/ctrl_c_stress.py --tries 200 --load 1
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "audio"
sys.path.insert(0, str(REPO))

from export.atomic import is_temporary  # noqa: E402

INTERRUPTED = re.compile(r"^interrupted: (\d+) clip\(s\) written, (\d+) kept", re.M)
FINISHED = re.compile(r"^(\d+) clip\(s\) written, (\d+) kept", re.M)
# interrupted: said so, with the count; finished: the Ctrl-C came once the work was done; silent: exit status 130
# without a word, before the first clip was cut or after the last (nothing lost); failed: anything else
OUTCOMES = ("interrupted", "finished", "silent", "failed")


def unpadded_wav(flac: Path, wav: Path) -> None:
    """`flac`'s audio as a 16-bit WAV with an odd-length LIST chunk not followed by its pad byte."""
    audio, rate = sf.read(flac, dtype="int16")
    samples = audio.astype("<i2").tobytes()
    info = b"LIST" + struct.pack("<I", 19) + b"INFOISFT" + struct.pack("<I", 7) + b"Rec1.0\0"
    body = (b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16) + info
            + b"data" + struct.pack("<I", len(samples)) + samples)
    wav.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def recordings(folder: Path, per_species: int) -> None:
    """Training recordings of 5-60 s, `per_species` of each species, every other one as an unpadded WAV."""
    table = pd.read_csv(DATA / "insectset32.csv")
    table = table[(table.split == "train") & table.duration_s.between(5, 60)].sort_values("path")
    folder.mkdir(parents=True)
    for k, path in enumerate(table.groupby("species").head(per_species).path):
        flac = DATA / "insectset32" / path
        if k % 2:
            unpadded_wav(flac, folder / f"{flac.stem}_unpadded.wav")
        else:
            shutil.copy(flac, folder / flac.name)


def pulse(*args: object) -> list[str]:
    return [sys.executable, "-m", "pulse.cli", *map(str, args)]


def files(folder: Path) -> dict[str, bytes]:
    """What a run leaves in `folder` but its lock file (which names the process), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".run.lock"}


def one_try(run: Path, out: Path, delay_s: float, max_segments: int,
            expected: dict[str, bytes]) -> tuple[str, list[str]]:
    """SIGINT `delay_s` after OUT/segments.json appears: how the run ended (`OUTCOMES`) and what went wrong."""
    command = pulse("segments", run, "--out", out, "--max-segments", max_segments)
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while not (out / "segments.json").exists() and child.poll() is None:
        time.sleep(0.0005)
    time.sleep(delay_s)
    if child.poll() is None:
        child.send_signal(signal.SIGINT)
    said, _ = child.communicate()
    problems, outcome = [], "failed"
    finished = FINISHED.search(said)
    working = said[:finished.start()] if finished else said  # Python may print one as it shuts down after the line
    if "Traceback" in working or "Exception ignored" in working:
        problems.append("traceback: " + working.strip().splitlines()[-1])
    clips = sorted(p for p in out.rglob("*.wav"))
    total = sum(name.endswith(".wav") for name in expected)
    if said_count := INTERRUPTED.search(said):
        outcome = "interrupted"
        if child.returncode != 130:
            problems.append(f"said interrupted but exit status {child.returncode}")
        if int(said_count[1]) != len(clips):
            problems.append(f"said {said_count[1]} clip(s) written, {len(clips)} on disk")
    elif child.returncode in (0, -signal.SIGINT) and finished:
        outcome = "finished"
    elif child.returncode == 130 and not said.strip() and len(clips) in (0, total):
        outcome = "silent"
    else:
        problems.append(f"exit status {child.returncode} without saying what was done ({len(clips)} clip(s) on disk)")
    if left := [str(p) for p in out.rglob("*") if is_temporary(p.name)]:
        problems.append(f"temporaries left: {left}")
    for clip in clips:
        if clip.read_bytes() != expected.get(name := str(clip.relative_to(out))):
            problems.append(f"{name}: not the uninterrupted run's clip")
    again = subprocess.run(command, capture_output=True, text=True)
    done = FINISHED.search(again.stdout)
    if again.returncode != 0 or not done or int(done[2]) != len(clips):
        problems.append(f"rerun: exit status {again.returncode}, {again.stdout.strip()!r} "
                        f"({len(clips)} clip(s) were there)")
    if (after := files(out)) != expected:
        problems.append(f"after the rerun: {sorted(set(after) ^ set(expected)) or 'files differ'}")
    if problems:
        problems.append(f"(exit status {child.returncode}, it said {said.strip()[-300:]!r})")
    return ("failed" if problems else outcome), problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=200)
    parser.add_argument("--load", type=int, default=1, help="Processes burning a core each meanwhile.")
    parser.add_argument("--per-species", type=int, default=3, help="Recordings of each species analysed.")
    parser.add_argument("--max-segments", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="Keep the folders of failed tries (printed).")
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # children get Ctrl-C's default even if we ignore it
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="ctrl_c_stress_"))
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    outcomes = dict.fromkeys(OUTCOMES, 0)
    try:
        recordings(work / "audio", args.per_species)
        subprocess.run(pulse("analyze", work / "audio", "--out", work / "run"), check=True, capture_output=True)
        start = time.perf_counter()
        subprocess.run(pulse("segments", work / "run", "--out", work / "whole", "--max-segments", args.max_segments),
                       check=True, capture_output=True)
        whole = work / "whole"
        expected = files(whole)
        cutting_s = max(p.stat().st_mtime for p in whole.rglob("*.wav")) - (whole / "segments.json").stat().st_mtime
        print(f"{sum(n.endswith('.wav') for n in expected)} clips; cutting took about {cutting_s:.2f} s of "
              f"{time.perf_counter() - start:.2f} s", flush=True)
        for k in range(args.tries):
            out = work / f"try{k:04d}"
            outcome, problems = one_try(work / "run", out, rng.uniform(0, 1.2 * cutting_s), args.max_segments,
                                        expected)
            outcomes[outcome] += 1
            for problem in problems:
                print(f"try {k}: {problem}", flush=True)
            if not (problems and args.keep):
                shutil.rmtree(out)
    finally:
        for burner in burners:
            burner.kill()
        if not (outcomes["failed"] and args.keep):
            shutil.rmtree(work)
    print(f"{args.tries} tries (--load {args.load}): " + ", ".join(f"{n} {what}" for what, n in outcomes.items())
          + (f"; kept in {work}" if outcomes["failed"] and args.keep else ""))
    sys.exit(1 if outcomes["failed"] else 0)


if __name__ == "__main__":
    main()
