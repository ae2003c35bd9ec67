"""Ultrasonic recordings (AudioMoth at 192, 250 or 384 kHz) through `pulse analyze`: time and memory per audio hour
against a 48 kHz file of the same length, and scores against the 44.1 kHz original's.

The audio is real: the InsectSet32 clips (../shared/data, 44.1 kHz) joined end to end and looped to --minutes, written
as the 44.1 kHz original, and resampled to 48 kHz and to each of --rates (soxr HQ, streaming, the clips' joins as in
the original), 16-bit mono WAVs laid out as an AudioMoth writes them (its 488-byte header with the comment and
artist chunks, named YYYYMMDD_HHMMSS.WAV), block by block. Each ultrasonic file is analysed by a separate `pulse
analyze` process, interleaved with the 48 kHz file, --rounds times, then deleted before the next rate's is written
(384 kHz: 2.8 GB an hour). Reported per rate and length: seconds of wall clock per audio hour (whole process, and
inside `pulse analyze` from its summary.json; medians), peak RSS (VmHWM, as `bench_analyze.py`), and, window by
window against the 44.1 kHz original, whether the window times are the same, the largest and 99th-percentile score
difference, and the detections at --min-conf that are in one table only. The 48 kHz file is compared the same way,
and each ultrasonic file against it: a difference from the original that the 48 kHz file shares comes from the
resampling round trip (soxr HQ keeps the original's 0-20.5 kHz, none of it above 21.5), not from the rate.

With --triggered, an AudioMoth triggered file (T.WAV) at the highest rate: every other 30 s of the night left out
as the firmware leaves out quiet buffers (a 512-byte marker each), against the same night written whole with those
stretches silent, the file `pulse.audiomoth` should make of it: their scores must be the same.

    python bench/bench_ultrasonic.py --minutes 10 30 --triggered --json bench/results/ultrasonic.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_analyze import run_analyze  # noqa: E402
from bench_file_length import CLIPS  # noqa: E402
from export.atomic import write_json  # noqa: E402
from pulse.audiomoth import MARKER_SAMPLES  # noqa: E402
from pulse.model_names import DEFAULT_MODEL  # noqa: E402

SOURCE_RATE = 44100
HEADER_BYTES = 488  # the AudioMoth firmware's WAV header
COMMENT = ("Recorded at 21:30:00 01/07/2025 (UTC) by AudioMoth 24F319055FDF2F5B at medium gain while battery was "
           "4.2V and temperature was 15.2C.")
TRIGGER = " Amplitude threshold was 0.1% with 0s minimum trigger duration."
SPAN_S = 30.0  # the triggered night: this long kept, this long left out, in turn


def night(rate: int, seconds: float, block_s: float = 10.0) -> Iterator[np.ndarray]:
    """`seconds` of the clips joined and looped, at `rate`, as 16-bit blocks."""
    import soxr

    total, done = int(seconds * rate), 0
    resampler = None if rate == SOURCE_RATE else soxr.ResampleStream(SOURCE_RATE, rate, 1, quality="HQ")
    while done < total:
        for clip in CLIPS:
            audio = sf.read(clip, dtype="float32", always_2d=True)[0].mean(axis=1)
            audio = audio if resampler is None else resampler.resample_chunk(audio)
            for first in range(0, len(audio), int(block_s * rate)):
                block = audio[first:first + int(block_s * rate)][:total - done]
                done += len(block)
                yield np.clip(np.round(block * 32768), -32768, 32767).astype("<i2")
                if done == total:
                    return


def audiomoth_header(rate: int, data_bytes: int, comment: str) -> bytes:
    """The 488 bytes an AudioMoth writes before its samples: RIFF, fmt, LIST/INFO (ICMT 384, IART 32), data."""
    info = (b"INFO" + b"ICMT" + struct.pack("<I", 384) + comment.encode().ljust(384, b"\0")
            + b"IART" + struct.pack("<I", 32) + b"AudioMoth 24F319055FDF2F5B".ljust(32, b"\0"))
    head = (b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16)
            + b"LIST" + struct.pack("<I", len(info)) + info + b"data" + struct.pack("<I", data_bytes))
    header = b"RIFF" + struct.pack("<I", len(head) + data_bytes) + head
    assert len(header) == HEADER_BYTES
    return header


class AudioMothWav:
    """An AudioMoth WAV written block by block; the header's sizes are filled in on closing."""

    def __init__(self, path: Path, rate: int, comment: str = COMMENT):
        self.path, self.rate, self.comment, self.samples = path, rate, comment, 0
        self.file = open(path, "wb")
        self.file.write(bytes(HEADER_BYTES))

    def write(self, block: np.ndarray) -> None:
        self.file.write(block.astype("<i2").tobytes())
        self.samples += len(block)

    def close(self) -> None:
        self.file.seek(0)
        self.file.write(audiomoth_header(self.rate, 2 * self.samples, self.comment))
        self.file.close()


def write_recording(path: Path, rate: int, seconds: float) -> Path:
    wav = AudioMothWav(path, rate)
    for block in night(rate, seconds):
        wav.write(block)
    wav.close()
    return path


def marker(units: int) -> np.ndarray:
    """The firmware's 512-byte marker for `units` x 256 samples left out: the count in +-1, LSB first, then 0s."""
    return np.array([1 if units >> i & 1 else -1 for i in range(32)] + [0] * 224, "<i2")


def left_out_spans(rate: int, seconds: float) -> list[tuple[int, int]]:
    """Night samples [first, end) the triggered file leaves out: every other SPAN_S, in whole 256-sample units, each
    marker at a 512-byte boundary of the file (the header takes the first unit's first 244 samples)."""
    span = int(SPAN_S * rate) // MARKER_SAMPLES * MARKER_SAMPLES
    first = span - HEADER_BYTES // 2
    spans = []
    while first + span < seconds * rate:
        spans.append((first, first + span))
        first += 2 * span
    return spans


def write_triggered(triggered: Path, whole: Path, rate: int, seconds: float) -> int:
    """The night as a triggered T.WAV (a marker for each left-out span) and whole (those spans silent); the count of
    markers."""
    spans = left_out_spans(rate, seconds)
    out_t, out_w = AudioMothWav(triggered, rate, COMMENT + TRIGGER), AudioMothWav(whole, rate)
    position = 0
    for block in night(rate, seconds):
        end = position + len(block)
        cuts = sorted({0, len(block)} | {edge - position for span in spans for edge in span if position < edge < end})
        for a, b in zip(cuts, cuts[1:]):
            span = next(((first, last) for first, last in spans if first <= position + a < last), None)
            if span is None:
                out_t.write(block[a:b])
                out_w.write(block[a:b])
                continue
            out_w.write(np.zeros(b - a, "<i2"))
            if position + a == span[0]:
                out_t.write(marker((span[1] - span[0]) // MARKER_SAMPLES))
        position = end
    out_t.close()
    out_w.close()
    return len(spans)


def analyse(path: Path, out: Path, extra: list[str]) -> dict:
    """One `pulse analyze` process: wall seconds per audio hour (whole process, in-process) and peak RSS."""
    run = run_analyze(path, out, DEFAULT_MODEL, ["--format", "csv,scores", *extra])
    hours = run["summary"]["audio_s"] / 3600
    return {"process_s_per_audio_h": run["process_wall_s"] / hours, "in_process_s_per_audio_h":
            run["summary"]["wall_s"] / hours, "peak_rss_mb": run["peak_rss_mb"], "out": out}


def compared(out: Path, reference: Path, min_conf: float) -> dict:
    """Window-by-window scores of `out` against `reference` (two `pulse analyze` --out folders of one recording)."""
    ours, theirs = pd.read_csv(out / "scores.csv"), pd.read_csv(reference / "scores.csv")
    same_times = len(ours) == len(theirs) and bool(
        np.allclose(ours[["start_s", "end_s"]], theirs[["start_s", "end_s"]], atol=1e-3))
    if not same_times:
        return {"windows": [len(ours), len(theirs)], "same_window_times": False}
    species = ours.columns[3:]
    difference = np.abs(ours[species].to_numpy() - theirs[species].to_numpy())
    found = [set(zip(*np.nonzero(t[species].to_numpy() >= min_conf))) for t in (ours, theirs)]
    return {"windows": len(ours), "same_window_times": True,
            "max_abs_score_difference": round(float(difference.max()), 4),
            "p99_abs_score_difference": round(float(np.quantile(difference, 0.99)), 4),
            "detections": len(found[1]), "detections_in_one_table_only": len(found[0] ^ found[1])}


def medians(runs: list[dict]) -> dict:
    """The medians of one file's runs (`analyse`)."""
    return {key: round(statistics.median(run[key] for run in runs), 1)
            for key in ("process_s_per_audio_h", "in_process_s_per_audio_h", "peak_rss_mb")}


def one_length(tmp: Path, seconds: float, args: argparse.Namespace, extra: list[str]) -> dict:
    """Every rate's report on recordings `seconds` long, written in `tmp` one rate at a time."""
    def recording(rate: int, name: str = "20250701_213000.WAV") -> Path:
        (tmp / str(rate)).mkdir(exist_ok=True)
        return tmp / str(rate) / name

    original = analyse(write_recording(recording(SOURCE_RATE), SOURCE_RATE, seconds), tmp / "o44100", extra)["out"]
    audio = write_recording(recording(48000), 48000, seconds)
    report = {"minutes": seconds / 60, "rates": {}}
    for rate in args.rates:
        fast = write_recording(recording(rate), rate, seconds)
        runs = {48000: [], rate: []}
        for k in range(args.rounds):  # interleaved: the machine's load moves both alike
            runs[48000].append(analyse(audio, tmp / f"o48000_{rate}_{k}", extra))
            runs[rate].append(analyse(fast, tmp / f"o{rate}_{k}", extra))
        fast.unlink()
        slow, fast_out = runs[48000][0]["out"], runs[rate][0]["out"]
        report["rates"][str(rate)] = {
            "48000": {**medians(runs[48000]), "against_44100": compared(slow, original, args.min_conf)},
            str(rate): {**medians(runs[rate]), "against_44100": compared(fast_out, original, args.min_conf),
                        "against_48000": compared(fast_out, slow, args.min_conf)}}
        print(json.dumps({f"{seconds / 60:g} min": report["rates"][str(rate)]}, indent=1), flush=True)
    if args.triggered:
        rate = max(args.rates)
        triggered, whole = recording(rate, "20250701_213000T.WAV"), recording(rate)
        markers = write_triggered(triggered, whole, rate, seconds)
        reference = analyse(whole, tmp / "o_whole", extra)["out"]
        whole.unlink()
        run = analyse(triggered, tmp / "o_triggered", extra)
        report["triggered"] = {"rate": rate, "markers": markers, "file_mb": round(triggered.stat().st_size / 2**20),
                               **{key: round(run[key], 1) for key in ("process_s_per_audio_h", "peak_rss_mb")},
                               "against_whole_night": compared(run["out"], reference, args.min_conf)}
        print(json.dumps(report["triggered"], indent=1), flush=True)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[192000, 250000, 384000])
    parser.add_argument("--minutes", type=float, nargs="+", default=[30.0], help="recording lengths")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each file, interleaved with the 48 kHz one")
    parser.add_argument("--min-conf", type=float, default=0.25, help="the detections compared")
    parser.add_argument("--triggered", action="store_true", help="also a triggered T.WAV at the highest rate")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the recordings (default: temp)")
    parser.add_argument("--json", type=Path, default=None)
    args, extra = parser.parse_known_args(argv)  # anything else goes to `pulse analyze`
    report = {"command": " ".join(sys.argv), "cpu_count": os.cpu_count(), "lengths": []}
    for minutes in args.minutes:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            report["lengths"].append(one_length(Path(tmp), 60 * minutes, args, extra))
    report["load_average_1min"] = os.getloadavg()[0]
    if args.json:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
