"""Audio clips of detections, to listen to and verify: `pulse segments` (BirdNET-Analyzer's `segments`).

Reads a `pulse analyze` run's `detections.csv` and cuts, per species, up to `max_segments` detections at or
above `min_conf` out of their recordings, at the recording's own rate and channels (a bush-cricket's
ultrasound stays in a 384 kHz clip). Detections are drawn at random (seeded) rather than the best first, so
that the share of clips a listener confirms estimates the detector's precision at that threshold, as
BirdNET-Analyzer's segments are drawn. A clip shorter than `seq_length` is widened around its middle.

Clips are written atomically as `OUT/<Scientific name>/<confidence>_<recording>_<start>s.wav`; one that exists is
kept, so a rerun adds what is missing. A recording that cannot be read is one line and one row of
`OUT/errors.csv`; the others are cut.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from export.atomic import write_bytes, write_text
from pulse.config import SegmentConfig
from pulse.io import AudioReadError, audio_info
from pulse.writers.detections_csv import CSV_COLUMNS

log = logging.getLogger(__name__)


@dataclass
class SegmentSummary:
    clips_written: int = 0
    clips_kept: int = 0  # written by an earlier run
    files_failed: int = 0


def choose(detections: list[dict], cfg: SegmentConfig) -> list[dict]:
    """Per species, up to `max_segments` detections at or above `min_conf`, drawn at random with `seed`."""
    rng = np.random.default_rng(cfg.seed)
    by_species: dict[str, list[dict]] = {}
    for d in detections:
        if d["score"] >= cfg.min_conf:
            by_species.setdefault(d["label"], []).append(d)
    chosen = []
    for label in sorted(by_species):
        rows = by_species[label]
        picks = rng.permutation(len(rows))[:cfg.max_segments]
        chosen += [rows[i] for i in sorted(picks)]
    return chosen


def clip_names(chosen: list[dict]) -> list[Path]:
    """`<Scientific name>/<confidence>_<recording>_<start>s.wav`, numbered where two recordings share a name
    (two cards' REC001.WAV); the same detections and seed always give the same names, so reruns find them."""
    names, seen = [], {}
    for d in chosen:
        name = Path(d["label"]) / f"{d['score']:.3f}_{Path(d['file']).stem}_{d['start_s']:g}s"
        seen[name] = seen.get(name, 0) + 1
        names.append(name.with_name(f"{name.name}_{seen[name]}.wav" if seen[name] > 1 else f"{name.name}.wav"))
    return names


def read_detections(results: Path) -> list[dict]:
    """The rows of a run's detections.csv, with the names of pulse/schema.py."""
    path = results / "detections.csv" if results.is_dir() else results
    names = {column: name for name, column in CSV_COLUMNS.items()}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the detections ({exc.strerror}); give a `pulse analyze` --out "
                         "folder or its detections.csv") from None
    if rows and set(names) - set(rows[0]):
        raise ValueError(f"{path}: not a `pulse analyze` detections.csv (columns {', '.join(CSV_COLUMNS.values())})")
    detections = []
    for row in rows:
        d = {names[column]: value for column, value in row.items() if column in names}
        detections.append({**d, "start_s": float(d["start_s"]), "end_s": float(d["end_s"]), "score": float(d["score"])})
    return detections


def cut(d: dict, audio_root: Path | None, seq_length: float) -> tuple[np.ndarray, int]:
    """The detection's audio, widened to `seq_length` around its middle where shorter, within the recording."""
    path = Path(d["file"])
    if audio_root is not None and not path.is_absolute():
        path = audio_root / path
    info = audio_info(path)
    middle, length = (d["start_s"] + d["end_s"]) / 2, max(d["end_s"] - d["start_s"], seq_length)
    start = max(0.0, min(middle - length / 2, info.duration_s - length))
    first, last = int(round(start * info.sample_rate)), int(round((start + length) * info.sample_rate))
    try:
        audio, rate = sf.read(str(path), start=first, stop=min(last, info.frames), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioReadError(path, f"cannot read {start:.2f}-{start + length:.2f} s ({exc})") from exc
    return audio, rate


def extract_segments(results: str | Path, out: str | Path, cfg: SegmentConfig = SegmentConfig(),
                     audio_root: str | Path | None = None) -> SegmentSummary:
    """Write the chosen detections' clips under `out`; see the module docstring."""
    from tqdm import tqdm

    if cfg.max_segments < 1 or cfg.seq_length <= 0 or not 0.0 <= cfg.min_conf <= 1.0:
        raise ValueError("--max-segments is at least 1, --seq-length above 0 and --min-conf between 0 and 1")
    out, root = Path(out), Path(audio_root) if audio_root is not None else None
    summary, errors, failed = SegmentSummary(), [], set()
    chosen = choose(read_detections(Path(results)), cfg)
    for d, name in tqdm(list(zip(chosen, clip_names(chosen))), unit="clip", disable=None):
        target = out / name
        if target.is_file():
            summary.clips_kept += 1
            continue
        if d["file"] in failed:
            continue
        try:
            audio, rate = cut(d, root, cfg.seq_length)
        except AudioReadError as exc:
            failed.add(d["file"])
            errors.append((d["file"], exc.reason))
            log.warning("%s", exc)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        sf.write(buffer, np.clip(audio, -1.0, 1.0), rate, format="WAV", subtype="PCM_16")
        write_bytes(target, buffer.getvalue())
        summary.clips_written += 1
    summary.files_failed = len(failed)
    out.mkdir(parents=True, exist_ok=True)
    table = io.StringIO()
    csv.writer(table, lineterminator="\n").writerows([("path", "message"), *errors])
    write_text(out / "errors.csv", table.getvalue())
    return summary
