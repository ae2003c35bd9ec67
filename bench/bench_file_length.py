"""Student vs BirdNET throughput by file length: the same real audio as 3 s clips, 30 s files or one long file.

The student (the bundled default, or `--student-model`) and BirdNET V2.4 each run `pulse analyze` (a
separate process, as a user runs it) over the same folder, one after the other, with the same
`--threads`. The audio is 10 minutes of InsectSet32 (../shared/data): 200 files of 3 s (consecutive
3 s of each clip, the length of the issue's excerpts), 20 files of 30 s or one file of 600 s (the
44.1 kHz clips concatenated, then cut), as 16-bit FLAC or, with `--audio-format wav`, 16-bit WAV
(decoding then costs next to nothing). One file is decoded by one thread, whatever `--threads` gives
the model: `--lengths 600` is the case to run on a machine with more cores than this project's two.
Reported per length and thread count: every run's x real time (summary.json, in-process), the
student's median over the BirdNET mean, as in bench/results/throughput_file_length_journal.json; and
the same for the whole process (interpreter start and imports, which the in-process figure leaves
out: ~0.2-0.3 s a command for either model on the 2026-12 VM).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
CLIPS = sorted((REPO.parent / "shared" / "data" / "audio" / "insectset32").glob("*/*.flac"))
PULSE = Path(sys.executable).parent / "pulse"  # the CLI installed beside this interpreter


def cut_clips(folder: Path, n: int = 200, seconds: int = 3, suffix: str = ".flac") -> None:
    """`n` files of `seconds`: consecutive pieces of each clip, in clip order."""
    folder.mkdir(parents=True)
    written = 0
    for clip in CLIPS:
        audio, rate = sf.read(clip, dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
        for start in range(0, len(audio) - seconds * rate, seconds * rate):
            if written == n:
                return
            sf.write(folder / f"ex{written:04d}{suffix}", audio[start:start + seconds * rate], rate)
            written += 1


def join_clips(folder: Path, n: int = 20, seconds: int = 30, rate: int = 44100, suffix: str = ".flac") -> None:
    """`n` files of `seconds`: the 44.1 kHz clips concatenated, then cut."""
    folder.mkdir(parents=True)
    audio = np.concatenate([sf.read(c, dtype="float32", always_2d=True)[0].mean(axis=1)
                            for c in CLIPS[:60] if sf.info(c).samplerate == rate])
    for k in range(n):
        sf.write(folder / f"r{k:02d}{suffix}", audio[k * seconds * rate:(k + 1) * seconds * rate], rate)


def x_realtime(folder: Path, out: Path, model: str, threads: int, workers: int = 0) -> tuple[float, float]:
    """x real time inside `pulse analyze` (its summary.json) and of the whole process."""
    start = time.perf_counter()
    subprocess.run([str(PULSE), "analyze", str(folder), "--out", str(out), "--no-resume", "--threads", str(threads),
                    "--workers", str(workers), "--model", model], check=True, capture_output=True)
    process_s = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    return summary["x_realtime"], round(summary["audio_s"] / process_s, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--lengths", type=int, nargs="+", default=[3, 30], choices=(3, 30, 600),
                        help="file lengths in seconds (10 minutes of audio each: 200, 20 or 1 file)")
    parser.add_argument("--student-model", default="default",
                        help="what `pulse analyze --model` runs as the student (an exported model.int8.onnx, say)")
    parser.add_argument("--student-runs", type=int, default=3)
    parser.add_argument("--birdnet-runs", type=int, default=2)
    parser.add_argument("--audio-format", choices=("flac", "wav"), default="flac",
                        help="how the cut audio is written (16-bit WAV needs no decoding to speak of)")
    parser.add_argument("--workers", type=int, default=0,
                        help="`pulse analyze --workers` for both (0: its default, one decoding thread per two cores)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "file_length.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        suffix = f".{args.audio_format}"
        folders = {}
        for seconds in args.lengths:
            folders[f"{seconds}s_files"] = folder = Path(tmp) / f"files{seconds}"
            if seconds == 3:
                cut_clips(folder, suffix=suffix)
            else:
                join_clips(folder, n=600 // seconds, seconds=seconds, suffix=suffix)
        report = {}
        for length, folder in folders.items():
            for threads in args.threads:
                runs = {"student": [], "birdnet": [], "student_process": [], "birdnet_process": []}
                for k in range(max(args.student_runs, args.birdnet_runs)):  # interleaved: the VM's drift hits both
                    for name, model, wanted in (("student", args.student_model, args.student_runs),
                                                ("birdnet", "birdnet", args.birdnet_runs)):
                        if k < wanted:
                            inside, whole = x_realtime(folder, Path(tmp) / f"out_{name}", model, threads, args.workers)
                            runs[name].append(inside)
                            runs[f"{name}_process"].append(whole)
                student, birdnet = statistics.median(runs["student"]), statistics.mean(runs["birdnet"])
                process = statistics.median(runs["student_process"]) / statistics.mean(runs["birdnet_process"])
                report.setdefault(length, {})[f"{threads}_threads"] = {
                    "student_runs": runs["student"], "birdnet_runs": runs["birdnet"], "student_median": student,
                    "birdnet_mean": round(birdnet, 1), "speedup": round(student / birdnet, 1),
                    "student_process_runs": runs["student_process"], "birdnet_process_runs": runs["birdnet_process"],
                    "speedup_process": round(process, 1)}
                print(length, threads, "threads:", report[length][f"{threads}_threads"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
