"""How fast one long recording becomes model windows, on 1, 2, ... decoding threads (no model).

This is the ceiling `pulse analyze` cannot pass on one long recording however many cores the model gets:
libFLAC decodes a stream on one thread, so `pulse analyze --workers N` (N > 1; the default gives one per two
cores) shares out a long FLAC's 10 s blocks among N threads (`pulse.io._decode_ahead`). Timed here is exactly
the decoding threads' work: `stream_audio` (decode, mono, resample) and `frame_windows`, in one process,
interleaved over the thread counts. The audio is `bench_file_length.py`'s 600 s file (the 44.1 kHz
InsectSet32 clips concatenated, 16-bit FLAC, or with `--audio-format wav` 16-bit WAV, an AudioMoth's format,
which is decoded on one thread whatever `--threads`).

    python bench/bench_decoding.py --threads 1 2 4 8 --rounds 5 --out runs/decoding.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_file_length import REPO, join_clips
from pulse.model_names import open_checked_model
from pulse.config import InferConfig
from pulse.io import stream_audio
from pulse.windows import frame_windows


def x_realtime(path: Path, seconds: float, threads: int, spec, block_s: float, batch: int) -> float:
    """Decoded and framed audio over wall time, with `threads` decoding threads sharing the file's blocks."""
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    start = time.perf_counter()
    for _ in frame_windows(stream_audio(path, spec.sample_rate, block_s, pool=pool, ahead=threads), spec, batch):
        pass
    elapsed = time.perf_counter() - start
    if pool is not None:
        pool.shutdown()
    return round(seconds / elapsed, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--audio-format", choices=("flac", "wav"), default="flac")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "decoding.json")
    args = parser.parse_args()
    cfg = InferConfig()
    _, spec, _ = open_checked_model(cfg)  # the bundled default's windows: 3 s at 44.1 kHz
    runs: dict[int, list[float]] = {t: [] for t in args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        join_clips(Path(tmp) / "long", n=1, seconds=600, suffix=f".{args.audio_format}")
        path = Path(tmp) / "long" / f"r00.{args.audio_format}"
        for _ in range(args.rounds):
            for threads in args.threads:
                runs[threads].append(x_realtime(path, 600.0, threads, spec, cfg.block_s, cfg.batch_size))
    report = {f"{t}_threads": {"runs": r, "median": statistics.median(r)} for t, r in runs.items()}
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
