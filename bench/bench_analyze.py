"""Benchmark `pulse analyze` end to end: x real time on a 10-minute recording, peak RSS on 6 hours.

Both recordings are built from real audio in ../shared/data: a bed of the background
soundscapes (resampled to 44.1 kHz, looped) with InsectSet32 validation songs dropped in every
20 s. They are written (streaming, for the 6-hour file) to a temporary folder and analysed by a
separate `pulse analyze` process, exactly as a user would run it. Reported:
  (a) x real time from summary.json (in-process) and from the whole process's wall clock
      (interpreter start, imports and model load included), median of --repeats runs;
      plus a breakdown: decode+framing alone, and the model alone, on the same audio;
  (b) peak resident memory (VmHWM of the child process) analysing 6 hours.
Model: the bundled default if present, else a freshly initialised one exported to ONNX.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from export.atomic import write_json

REPO = Path(__file__).resolve().parents[1]
SHARED_AUDIO = REPO.parent / "shared" / "data" / "audio"
RATE = 44100


def build_bed(seconds: float) -> np.ndarray:
    """`seconds` of real background audio with a real Orthoptera song every 20 s."""
    import soxr

    backgrounds = []
    for path in sorted((SHARED_AUDIO / "backgrounds").glob("*.flac")):
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
        backgrounds.append(audio if rate == RATE else soxr.resample(audio, rate, RATE).astype(np.float32))
    bed = np.concatenate(backgrounds)
    bed = np.tile(bed, int(np.ceil(seconds * RATE / len(bed))))[: int(seconds * RATE)]
    songs = []
    for line in (SHARED_AUDIO / "insectset32.csv").read_text().splitlines()[1:]:
        rel, _, split = line.split(",")[:3]
        if split == "validation":
            audio, _ = sf.read(SHARED_AUDIO / "insectset32" / rel, dtype="float32", always_2d=True)
            songs.append(audio.mean(axis=1)[: 8 * RATE])
    for k, start in enumerate(range(0, len(bed) - 8 * RATE, 20 * RATE)):
        song = songs[k % len(songs)]
        bed[start:start + len(song)] += 0.5 * song
    return np.clip(bed, -1, 1)


def write_recording(path: Path, bed: np.ndarray, seconds: float) -> None:
    """Write `seconds` of 16-bit WAV by repeating `bed`, one block at a time (never all in memory)."""
    total = int(seconds * RATE)
    with sf.SoundFile(path, "w", RATE, 1, subtype="PCM_16", format="RF64" if 2 * total > 2**32 - 2**20 else "WAV") as f:
        written = 0
        while written < total:
            block = bed[: min(len(bed), total - written)]
            f.write(block)
            written += len(block)


def resolve_model(workdir: Path) -> tuple[Path, str]:
    from pulse.model_names import DEFAULT_MODEL

    if DEFAULT_MODEL.is_file():
        return DEFAULT_MODEL, "bundled default model"
    import torch

    from export.onnx import export_onnx
    from pulse.config import ModelConfig
    from pulse.models import create_model

    torch.manual_seed(0)
    cfg = ModelConfig()
    path = export_onnx(create_model(cfg).eval(), workdir / "fresh.onnx")
    return path, f"freshly initialised {cfg.arch} exported to ONNX (no bundled model yet)"


def run_analyze(wav: Path, out: Path, model: Path, extra: list[str]) -> dict:
    """One `pulse analyze` process; returns its wall time, peak RSS and summary.json.

    Peak RSS is the child's VmHWM, polled: its ru_maxrss (getrusage, wait4) would report at least
    this benchmark's own RSS, which Linux carries over from the fork into the exec'd child.
    """
    cmd = [sys.executable, "-m", "pulse.cli", "analyze", str(wav), "--out", str(out), "--model", str(model),
           "--no-resume", *extra]
    log = out.with_suffix(".log")
    peak_kb = 0
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            peak_kb = max(peak_kb, _vm_hwm_kb(proc.pid))
            time.sleep(0.05)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"pulse analyze failed:\n{log.read_text()[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"process_wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak_kb / 1024, "summary": summary}


def _vm_hwm_kb(pid: int) -> int:
    """The process's resident-memory high-water mark (Linux), 0 once it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)


def breakdown(wav: Path, model: Path, batch_size: int) -> dict:
    """Decode+framing alone and the model alone, on the same recording (seconds)."""
    from pulse.model_names import open_model
    from pulse.io import stream_audio
    from pulse.windows import WindowSpec, frame_windows

    predictor = open_model(str(model))
    spec = WindowSpec.from_seconds(predictor.metadata["window_s"], 0.0, predictor.metadata["sample_rate"])
    t0 = time.perf_counter()
    chunks = [w for _, w in frame_windows(stream_audio(wav, spec.sample_rate, 300.0), spec, batch_size)]
    decode_s = time.perf_counter() - t0
    windows = np.concatenate(chunks)
    t0 = time.perf_counter()
    for i in range(0, len(windows), batch_size):
        predictor.predict(windows[i:i + batch_size])
    model_s = time.perf_counter() - t0
    return {"windows": len(windows), "decode_and_frame_s": round(decode_s, 3), "model_s": round(model_s, 3),
            "model_ms_per_window": round(1000 * model_s / len(windows), 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the throughput recording")
    parser.add_argument("--hours", type=float, default=6.0, help="length of the memory recording (0 skips it)")
    parser.add_argument("--repeats", type=int, default=3, help="throughput runs (the median is reported)")
    parser.add_argument("--model", type=Path, default=None, help="artefact to time (default: bundled, else fresh)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the recordings (default: temp)")
    parser.add_argument("--json", type=Path, default=None, help="also write both reports to this file")
    args, extra = parser.parse_known_args(argv)  # anything else goes to `pulse analyze` (e.g. --batch-size 64)
    if not SHARED_AUDIO.is_dir():
        sys.exit(f"{SHARED_AUDIO} is missing: the benchmark builds its recordings from that real audio")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        model, model_note = (args.model, str(args.model)) if args.model else resolve_model(tmp)
        bed = build_bed(min(args.minutes * 60, 600.0))
        wav = tmp / "ten_minutes.wav"
        write_recording(wav, bed, args.minutes * 60)
        runs = [run_analyze(wav, tmp / f"out{i}", model, extra) for i in range(args.repeats)]
        audio_s = runs[0]["summary"]["audio_s"]
        report = {
            "model": model_note, "cpu_count": os.cpu_count(), "recording_s": round(audio_s, 1),
            "analyze_args": extra,
            "in_process_x_realtime": statistics.median(r["summary"]["x_realtime"] for r in runs),
            "whole_process_x_realtime": round(audio_s / statistics.median(r["process_wall_s"] for r in runs), 1),
            "whole_process_wall_s": [round(r["process_wall_s"], 2) for r in runs],
            "in_process_wall_s": [r["summary"]["wall_s"] for r in runs],
            # Wall clock depends on what else the machine runs; CPU seconds much less so.
            "process_cpu_s": [round(r["cpu_s"], 2) for r in runs],
            "x_realtime_per_cpu_s": round(audio_s / statistics.median(r["cpu_s"] for r in runs), 1),
            "load_average_1min": os.getloadavg()[0],
            "breakdown": breakdown(wav, model, 32),
        }
        print(json.dumps(report, indent=2), flush=True)
        reports = {"throughput": report}
        if args.hours > 0:
            long_wav = tmp / "six_hours.wav"
            write_recording(long_wav, bed, args.hours * 3600)
            wav.unlink()
            run = run_analyze(long_wav, tmp / "out_long", model, extra)
            reports["long"] = {"long_recording_h": args.hours, "peak_rss_mb": round(run["peak_rss_mb"], 1),
                               "wall_s": round(run["process_wall_s"], 1), "cpu_s": round(run["cpu_s"], 1),
                               "load_average_1min": os.getloadavg()[0],
                               "in_process_x_realtime": run["summary"]["x_realtime"]}
            print(json.dumps(reports["long"], indent=2))
        if args.json:
            write_json(args.json, {"command": " ".join(sys.argv), **reports})


if __name__ == "__main__":
    main()
