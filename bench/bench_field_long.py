"""The field app on hours-long AudioMoth-style recordings: time and peak memory of its spectrogram and of the request.

Each recording is a 48 kHz 16-bit mono WAV named as an AudioMoth names its files (20250701_213000.WAV), written a
minute at a time: real soundscapes (../shared/data/audio/backgrounds, resampled) with real InsectSet32 songs dropped
in, ~6 a minute at -10 to +10 dB against the bed. Each measurement runs in a fresh process, as a server's first
request would: `display_spectrogram` alone (what the page's picture decodes) and the whole field callback
(`apps.field.analyze_upload`, bundled default model), its wall and CPU time (the faster of --repeats runs) and the
process's peak RSS (VmHWM, imports included; the imports alone are reported beside them). --formats also converts
the WAV to FLAC or MP3 and measures those.

    python bench/bench_field_long.py --hours 1 2 --formats WAV FLAC --json bench/results/field_long.json
    python bench/bench_field_long.py --hours 1 --formats MP3 --json bench/results/field_long_mp3.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "audio"
RATE = 48000


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (Linux's VmHWM), in MB."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def mono_at(path: Path, rate: int = RATE) -> np.ndarray:
    import soxr

    audio, own = sf.read(path, dtype="float32", always_2d=True)
    return soxr.resample(audio.mean(axis=1), own, rate).astype(np.float32)


def field_wav(target: Path, seconds: float, data: Path = DATA, seed: int = 0) -> Path:
    """`seconds` of soundscape with songs in it, written a minute at a time (never held whole)."""
    rng = np.random.default_rng(seed)
    beds = [mono_at(p) for p in sorted((data / "backgrounds").glob("*.flac"))]
    songs = [mono_at(p)[:20 * RATE] for p in sorted((data / "insectset32").glob("*/*.flac"))[::3]]
    total, minute = int(round(seconds * RATE)), 60 * RATE
    with sf.SoundFile(target, "w", RATE, 1, subtype="PCM_16", format="WAV") as out:
        for at in range(0, total, minute):
            bed = beds[rng.integers(len(beds))]
            piece = np.resize(np.roll(bed, -int(rng.integers(len(bed)))), min(minute, total - at)) * 0.5
            for _ in range(int(rng.poisson(6))):
                song = songs[rng.integers(len(songs))][:len(piece)]
                start = int(rng.integers(0, len(piece) - len(song) + 1))
                level = np.sqrt(np.mean(piece[start:start + len(song)] ** 2) / max(np.mean(song ** 2), 1e-12))
                piece[start:start + len(song)] += song * level * 10 ** (rng.uniform(-10, 10) / 20)
            out.write(np.clip(piece, -1, 1))
    return target


def converted(wav: Path, fmt: str) -> Path:
    """`wav` as a FLAC or MP3 beside it (a recorder or a user's export), a minute at a time."""
    target = wav.with_suffix(f".{fmt.lower()}")
    with sf.SoundFile(wav) as source, sf.SoundFile(target, "w", RATE, 1, format=fmt) as out:
        for block in source.blocks(60 * RATE, dtype="float32"):
            out.write(block)
    return target


def measure(what: str, path: Path) -> dict:
    """In this process: import, then run `what` once on `path`."""
    from apps import field
    from pulse.recording import display_spectrogram

    result = {"imports_rss_mb": round(peak_rss_mb())}
    t0, cpu0 = time.perf_counter(), time.process_time()
    if what == "spectrogram":
        view = display_spectrogram(path, field.WIDE)
        result["frames"], result["shown_s"] = view.db.shape[1], view.duration_s
    else:
        with tempfile.TemporaryDirectory() as work:
            assert "Could not" not in field.analyze_upload(str(path), "default", 0.25, work).status
    result["seconds"], result["cpu_seconds"] = round(time.perf_counter() - t0, 2), round(time.process_time() - cpu0, 2)
    result["peak_rss_mb"] = round(peak_rss_mb())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--formats", nargs="+", default=["WAV"], choices=["WAV", "FLAC", "MP3"],
                        help="the recording as written, and/or converted (MP3: ~3 minutes to encode an hour)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each measurement; the faster is reported")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared audio folder (default: %(default)s)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--measure", nargs=2, metavar=("WHAT", "PATH"), help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]))))
        return

    results, env = {"command": " ".join(["python"] + sys.argv), "runs": {}}, dict(os.environ, PYTHONPATH=str(REPO))
    with tempfile.TemporaryDirectory() as work:
        for hours in args.hours:
            folder = Path(work) / f"{hours:g}h"
            folder.mkdir()
            wav = field_wav(folder / "20250701_213000.WAV", hours * 3600, args.data)
            for fmt in args.formats:
                path = wav if fmt == "WAV" else converted(wav, fmt)
                for what in ("spectrogram", "callback"):
                    runs = [json.loads(subprocess.run([sys.executable, __file__, "--measure", what, str(path)],
                                                      check=True, capture_output=True, text=True,
                                                      env=env).stdout.splitlines()[-1])
                            for _ in range(args.repeats)]
                    key = f"{hours:g}h {fmt} {what}"
                    results["runs"][key] = min(runs, key=lambda r: r["seconds"])
                    print(f"{key}: {results['runs'][key]}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
