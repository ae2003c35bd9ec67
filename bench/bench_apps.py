"""Time and memory of the Gradio apps on long inputs, in-process and through their server, beside the CLIs.

Field: 48 kHz 16-bit mono WAVs of --hours, every song and soundscape of ../shared/data/audio end to end and looped,
named as an AudioMoth names them (the app's scores strip then runs on the recorder's clock). Each recording goes
to `apps.field.analyze_upload` in a fresh process (seconds in the callback; the process's peak RSS, imports
included) and to `pulse analyze` (wall seconds, peak RSS). Then `python -m apps field` serves on 127.0.0.1 and
gradio_client sends each recording (seconds per request, upload included), then the longest twice at once: the
server's RSS idle and its peak over all that, and the disk its upload cache holds. Lab: the same for
CMU-1-Small-Region.svs with `apps.lab.predict_upload`, `lrmil predict` and `python -m apps lab`.
Peak RSS is each process's VmHWM, polled (wait4's ru_maxrss would include this script's own, carried over the fork);
CPU seconds beside wall seconds, since other work on the machine stretches the latter.

    python bench/bench_apps.py --work /tmp/bench_apps --json bench/results/apps.json
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
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RATE = 48000


def vm_kb(pid: int, field: str) -> int:
    """A /proc/PID/status memory field (VmHWM: peak, VmRSS: now) in kB; 0 once the process has gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in lines if line.startswith(field + ":")), 0)


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(cmd: list[str], log: Path) -> dict:
    """Run `cmd` to its end; its wall and CPU seconds, peak RSS (MB) and last output line."""
    peak, t0 = 0, time.perf_counter()
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
        while (ended := os.wait4(proc.pid, os.WNOHANG))[0] == 0:
            peak = max(peak, vm_kb(proc.pid, "VmHWM"))
            time.sleep(0.05)
    _, status, usage = ended
    if status != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{log.read_text()[-2000:]}")
    return {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mb": round(peak / 1024), "last_line": log.read_text().strip().splitlines()[-1]}


def recordings(data: Path, folder: Path, hours: list[float]) -> list[Path]:
    """48 kHz 16-bit mono WAVs of `hours`, the real audio looped, written block by block."""
    import soxr

    parts = []
    for path in sorted((data / "audio").glob("*/**/*.flac")):
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        parts.append(soxr.resample(audio.mean(axis=1), rate, RATE).astype(np.float32))
    bed = np.concatenate(parts)
    made = []
    for i, length in enumerate(hours):
        path = folder / f"2025070{i + 1}_210000.WAV"
        if not path.exists():
            with sf.SoundFile(path, "w", RATE, 1, subtype="PCM_16") as out:
                left = int(length * 3600 * RATE)
                while left > 0:
                    out.write(bed[:left])
                    left -= len(bed)
        made.append(path)
    return made


def child(app: str, path: str, work: str) -> None:
    """One callback in this process, imports done before the clock starts; its seconds on the last line."""
    if app == "field":  # only this app's imports: the lab's torch would weigh on the field's memory
        from apps.field import analyze_upload

        def call():
            return analyze_upload(path, "default", 0.25, work)
    else:
        from apps.lab import predict_upload

        def call():
            return predict_upload(path, None, "demo", "student", work)
    t0, cpu0 = time.perf_counter(), time.process_time()
    view = call()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if "Could not" in view.status:
        sys.exit(view.status)
    print(json.dumps({"callback_s": round(seconds, 1), "callback_cpu_s": round(cpu, 1)}))


def served(app: str, inputs: list[tuple], work: Path, port: int) -> dict:
    """`python -m apps APP` on 127.0.0.1: seconds per request of `inputs`, then the last sent twice at once."""
    from gradio_client import Client, handle_file

    env = {**os.environ, "GRADIO_TEMP_DIR": str(work / "uploads")}
    server = subprocess.Popen([sys.executable, "-m", "apps", app, "--port", str(port), "--work-dir",
                               str(work / "served")], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(240):
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:  # not listening yet
                time.sleep(0.5)
        else:
            raise RuntimeError(f"python -m apps {app} did not answer on port {port} within 2 minutes")
        time.sleep(2)
        result = {"idle_rss_mb": round(vm_kb(server.pid, "VmRSS") / 1024), "request_s": [], "request_cpu_s": []}
        for path, *rest in inputs:
            t0, cpu0 = time.perf_counter(), cpu_s(server.pid)
            client.predict(handle_file(str(path)), *rest, api_name="/run")
            result["request_s"].append(round(time.perf_counter() - t0, 1))
            result["request_cpu_s"].append(round(cpu_s(server.pid) - cpu0, 1))  # the server's
        path, *rest = inputs[-1]
        t0 = time.perf_counter()
        jobs = [client.submit(handle_file(str(path)), *rest, api_name="/run") for _ in range(2)]
        for job in jobs:
            job.result()
        result["two_at_once_s"] = round(time.perf_counter() - t0, 1)
        result["peak_rss_mb"] = round(vm_kb(server.pid, "VmHWM") / 1024)
        uploads = subprocess.run(["du", "-sm", str(work / "uploads")], capture_output=True, text=True, check=True)
        result["upload_cache_mb"] = int(uploads.stdout.split()[0])
        return result
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="recordings (kept for reruns) and outputs")
    parser.add_argument("--hours", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--data", type=Path, default=DATA, help="../shared/data (its audio/ and slides/)")
    parser.add_argument("--port", type=int, default=7861)
    parser.add_argument("--child", nargs=2, metavar=("APP", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.child:
        child(*args.child, str(args.work))
        return

    args.work.mkdir(parents=True, exist_ok=True)
    out = args.work / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    wavs, slide = recordings(args.data, args.work, args.hours), args.data / "slides" / "CMU-1-Small-Region.svs"
    me = [sys.executable, __file__, "--work", str(out), "--child"]
    result = {"command": " ".join(sys.argv), "load_average_1min_at_start": os.getloadavg()[0], "field": {}, "lab": {}}
    for hours, wav in zip(args.hours, wavs):
        app = measured([*me, "field", str(wav)], out / f"field_{hours:g}h.log")
        cli = measured([sys.executable, "-m", "pulse.cli", "analyze", str(wav), "--out", str(out / f"cli_{hours:g}h"),
                        "--no-resume"], out / f"cli_{hours:g}h.log")
        result["field"][f"{hours:g} h"] = {**json.loads(app["last_line"]),
                                          "callback_process_peak_rss_mb": app["peak_rss_mb"],
                                          "pulse_analyze_wall_s": cli["wall_s"], "pulse_analyze_cpu_s": cli["cpu_s"],
                                          "pulse_analyze_peak_rss_mb": cli["peak_rss_mb"]}
    result["field"]["server"] = served("field", [(wav, "default", 0.25, 1) for wav in wavs], out / "field_server",
                                       args.port)
    app = measured([*me, "lab", str(slide)], out / "lab.log")
    cli = measured([sys.executable, "-m", "lrmil.cli", "predict", str(slide), "--out", str(out / "lrmil"),
                    "--no-resume"], out / "lrmil.log")
    result["lab"] = {"slide": slide.name, **json.loads(app["last_line"]),
                     "callback_process_peak_rss_mb": app["peak_rss_mb"], "lrmil_predict_wall_s": cli["wall_s"],
                     "lrmil_predict_cpu_s": cli["cpu_s"], "lrmil_predict_peak_rss_mb": cli["peak_rss_mb"],
                     "server": served("lab", [(slide, None, "demo", "student")], out / "lab_server", args.port)}
    result["load_average_1min_at_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
