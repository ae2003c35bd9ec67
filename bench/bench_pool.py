"""The unlabelled pool at hundreds of GB: pool building, windows drawn, and BYOL training steps, small pool vs big.

A big pool is made without using the disk: sparse WAVs whose header says minutes to hours of 48 kHz 16-bit mono
(files over 4 GiB as RF64), each starting with 0.5 s of a real recording and silent after it, plus every real
recording of `../shared/data/audio` (InsectSet32 and the backgrounds, linked, not copied), listed in an unlabelled
manifest. Each measurement runs in its own process, so its peak RSS is its own: building the pool
(`UnlabelledPool.from_manifests`: manifest and headers), drawing windows from it (`pool.batch`), and `pulse train`
with BYOL on (configs/pulse_v0.3_byol.json, one epoch, no validation, 2 threads) at two step counts, whose
difference gives the time of a step and whose shorter run the start-up. Everything made is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RATE = 48_000  # an AudioMoth's usual rate: every window is resampled to the model's 44.1 kHz, as in the field
HEAD_S = 0.5  # real audio at the start of each sparse file; the rest reads as silence
GIB = 1 << 30


def sparse_wav(path: Path, head: np.ndarray, seconds: float) -> int:
    """A mono PCM_16 WAV (RF64 past 4 GiB) of `seconds` at RATE: `head` written, the rest a hole. Returns its size."""
    import soundfile as sf

    from pulse.pieced import riff_chunks

    frames = int(seconds * RATE)
    rf64 = 44 + 2 * frames >= 1 << 32
    sf.write(str(path), head, RATE, format="RF64" if rf64 else "WAV", subtype="PCM_16")
    with open(path, "r+b") as f:
        data = next(start for name, start, _ in riff_chunks(f) if name == b"data")
        size = data + 2 * frames
        if rf64:  # ds64: RIFF size, data size, sample count (the RIFF and data headers hold 0xFFFFFFFF)
            f.seek(20)
            f.write(np.array([size - 8, 2 * frames, frames], "<u8").tobytes())
        else:
            f.seek(4)
            f.write(np.array([size - 8], "<u4").tobytes())
            f.seek(data - 4)
            f.write(np.array([2 * frames], "<u4").tobytes())
        f.truncate(size)
    return size


def make_pool(folder: Path, data: Path, files: int, gib: float, big_files: int, seed: int) -> dict:
    """`files` sparse WAVs holding `gib` GiB in all (`big_files` of them over 4 GiB), the real recordings linked,
    and folder/manifest.csv listing them all."""
    import pandas as pd

    from pulse.io import read_audio

    rng = np.random.default_rng(seed)
    reals = sorted(data.glob("backgrounds/*.flac")) + sorted(data.glob("insectset32/*/*.flac"))
    if not reals:
        raise SystemExit(f"{data}: no real recordings (backgrounds/*.flac, insectset32/*/*.flac); give --data")
    heads = [(read_audio(p, RATE)[:int(HEAD_S * RATE)] * 32767).astype(np.int16) for p in reals[:7]]
    (folder / "sparse").mkdir(parents=True)
    (folder / "real").mkdir()
    big = min(big_files, files)
    big_bytes = big * 6 * GIB
    small_mean = (gib * GIB - big_bytes) / max(files - big, 1)
    if files and small_mean <= 0:
        raise ValueError(f"{gib} GiB cannot hold {big} files of 6 GiB")
    rows, apparent = [], 0
    for i in range(files):
        size = 6 * GIB if i < big else min(small_mean * rng.uniform(0.5, 1.5), 4 * GIB - 1024)
        name = f"sparse/site{i % 50:02d}_{i:06d}.wav"
        apparent += sparse_wav(folder / name, heads[i % len(heads)], size / 2 / RATE)
        rows.append({"path": name, "split": "train", "license": "CC-BY-4.0 / MIT / BSD-3-Clause (first 0.5 s)",
                     "source": "bench_pool.py: sparse, silent after 0.5 s of real audio"})
    for p in reals:
        name = f"real/{p.parent.name}_{p.name}"
        os.symlink(p, folder / name)
        apparent += p.stat().st_size
        rows.append({"path": name, "split": "train", "license": "see ../shared/data/README.md", "source": str(p)})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return {"files": len(rows), "sparse_files": files, "files_over_4gib": big, "apparent_gib": apparent / GIB,
            "disk_mib": int(subprocess.run(["du", "-sm", str(folder)], capture_output=True, text=True,
                                           check=True).stdout.split()[0])}


def measure_pool(manifest: Path, windows: int, seed: int) -> dict:
    """In this process: build the pool from its manifest, then draw `windows` windows in batches of 8."""
    import resource

    from pulse.io import _examined
    from pulse.unlabelled import UnlabelledPool

    t0, c0 = time.perf_counter(), time.process_time()
    pool = UnlabelledPool.from_manifests((str(manifest),), (str(manifest.parent),), "train", 44_100, 3.0)
    built, built_cpu = time.perf_counter() - t0, time.process_time() - c0
    rss_built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rng = np.random.default_rng(seed)
    examined = _examined.cache_info().misses  # headers opened and checked (audio_info keeps the last 4096)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(windows // 8):
        pool.batch(rng, 8)
    drawn, drawn_cpu = time.perf_counter() - t0, time.process_time() - c0
    examined = _examined.cache_info().misses - examined
    return {"build_s": built, "build_cpu_s": built_cpu, "pool_files": len(pool.files),
            "peak_rss_after_build_mib": rss_built, "windows_per_s": (windows // 8 * 8) / drawn,
            "window_cpu_ms": 1000 * drawn_cpu / (windows // 8 * 8), "headers_examined_per_window": examined / windows,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child(args: list[str]) -> tuple[float, float, float, str]:
    """Run a process; its wall time, CPU time (user + system), its own peak RSS (MiB) and its output tail: CPU
    time is what a pool costs on a machine others share (wall time is not)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{output[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, output[-400:]


def measure_train(manifest: Path, data: Path, work: Path, steps: tuple[int, int]) -> dict:
    """`pulse train` with BYOL drawing from the pool, at two step counts."""
    text = (ROOT / "configs" / "pulse_v0.3_byol.json").read_text()
    cfg = json.loads(text.replace('"../shared/data/audio', json.dumps(str(data))[:-1]))
    cfg.update(epochs=1, ema_decay=0.0, val_split="", threads=2)
    cfg["semi"].update(unlabelled_manifests=[str(manifest)], unlabelled_roots=[str(manifest.parent)])
    result = {}
    for n in steps:
        cfg["steps_per_epoch"] = n
        path = work / f"train_{n}.json"
        path.write_text(json.dumps(cfg))
        wall, cpu, rss, _ = child([sys.executable, "-m", "pulse.cli", "train", "--config", str(path),
                                   "--out", str(work / f"run_{n}"), "--no-resume"])
        result |= {f"train_{n}_steps_s": wall, f"train_{n}_steps_cpu_s": cpu, f"train_{n}_steps_peak_rss_mib": rss}
    a, b = steps
    for unit in ("s", "cpu_s"):
        result[f"step_{unit}"] = (result[f"train_{b}_steps_{unit}"] - result[f"train_{a}_steps_{unit}"]) / (b - a)
        result[f"start_up_{unit}"] = result[f"train_{a}_steps_{unit}"] - a * result[f"step_{unit}"]
    return result


def measure_teacher_cache(data: Path, work: Path) -> dict:
    """`pulse teacher-cache` over InsectSet32's real recordings (every file hashed, then BirdNET on every window at
    the default 1 s hop, 2 threads), what it writes per hour of audio, and the hashing alone: a pool's cost is
    extrapolated from these."""
    from export.artifact import sha256
    from pulse.io import audio_info

    files = sorted((data / "insectset32").glob("*/*.flac"))
    size = sum(p.stat().st_size for p in files)
    hours = sum(audio_info(p).duration_s for p in files) / 3600
    command = [sys.executable, "-m", "pulse.cli", "teacher-cache", "--manifest", str(data / "insectset32.csv"),
               "--audio-root", str(data / "insectset32"), "--out", str(work / "teacher"), "--threads", "2"]
    wall, _, rss, _ = child(command)
    again, _, _, _ = child(command)  # every file cached already and unchanged: start-up, model load and the index
    written = sum(p.stat().st_size for p in (work / "teacher").rglob("*.npz"))
    t0 = time.perf_counter()
    for p in files:  # from the page cache (the files were just read): the CPU's part; a disk may be slower
        sha256(p)
    hashed = time.perf_counter() - t0
    result = {"teacher_files": len(files), "teacher_gib": size / GIB, "teacher_audio_h": hours,
              "teacher_cache_s": wall, "teacher_cache_again_s": again, "teacher_cache_peak_rss_mib": rss,
              "teacher_cache_s_per_audio_h": (wall - again) / hours,
              "teacher_cache_written_mib_per_audio_h": written / (1 << 20) / hours,
              "sha256_cached_mib_per_s": size / (1 << 20) / hashed}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", default="0:0,2000:300,20000:300",
                        help="comma list of SPARSE_FILES:GIB pools (each plus the real recordings); 0:0 is the "
                             "real recordings alone; '' for none")
    parser.add_argument("--big-files", type=int, default=8, help="sparse files of 6 GiB (RF64) in each pool")
    parser.add_argument("--windows", type=int, default=2000, help="windows drawn from each pool")
    parser.add_argument("--teacher-cache", action="store_true",
                        help="also time `pulse teacher-cache` and sha256 on InsectSet32's real recordings")
    parser.add_argument("--steps", default="4,24", help="the two step counts of `pulse train` ('' : no training)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "audio",
                        help="the real recordings (backgrounds/, insectset32/)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_pool"), help="scratch folder (deleted)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--measure-pool", type=Path, help=argparse.SUPPRESS)  # the child process of one pool
    args = parser.parse_args()
    if args.measure_pool:
        print(json.dumps(measure_pool(args.measure_pool, args.windows, args.seed)))
        return
    if args.work.exists():
        raise SystemExit(f"{args.work} exists: give a new --work (it is deleted at the end)")
    results = []
    try:
        for spec in filter(None, args.pools.split(",")):
            files, gib = int(spec.split(":")[0]), float(spec.split(":")[1])
            folder = args.work / f"pool_{files}_{gib:g}"
            t0 = time.perf_counter()
            row = {"pool": spec, **make_pool(folder, args.data, files, gib, args.big_files if files else 0, args.seed)}
            row["make_s"] = time.perf_counter() - t0
            subprocess.run(["sync"], check=True)
            time.sleep(2.5)  # a file changed in the last 2 s has its header examined at every read (pulse.io)
            wall, _, _, out = child([sys.executable, __file__, "--measure-pool", str(folder / "manifest.csv"),
                                    "--windows", str(args.windows), "--seed", str(args.seed)])
            row |= json.loads(out.strip().splitlines()[-1]) | {"pool_process_s": wall}
            if args.steps:
                row |= measure_train(folder / "manifest.csv", args.data, folder, tuple(map(int, args.steps.split(","))))
            print(json.dumps(row), flush=True)
            results.append(row)
            shutil.rmtree(folder)
        if args.teacher_cache:
            row = measure_teacher_cache(args.data, args.work)
            print(json.dumps(row), flush=True)
            results.append(row)
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    if args.json:
        from export.atomic import atomic_path

        with atomic_path(args.json) as tmp:
            Path(tmp).write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=1))


if __name__ == "__main__":
    main()
