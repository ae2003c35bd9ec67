"""The unlabelled pool: random windows streamed from recordings nobody labelled.

Sources are manifests (unlabelled schema, or labelled ones whose labels are ignored): field
soundscapes, training clips with their labels removed, and pseudo-field recordings made by
`make_pseudo_field` (real songs placed into real soundscapes at random times and levels). Only
file headers are held in memory; each window is read by seeking into its file, so the pool can
be hundreds of GB (measured at 300 GB: bench/bench_pool.py).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from export.atomic import atomic_path, error_line
from export.tables import listed_file, windows_path_hint
from pulse.io import AudioInfo, AudioReadError, audio_info, file_version, read_span
from pulse.manifest import UNLABELLED_COLUMNS, read_manifest, require_columns, select_split
from pulse.train.augment import crop, rms

log = logging.getLogger(__name__)


UNREADABLE = (AudioReadError, sf.LibsndfileError, RuntimeError, OSError)  # a file damaged or cut short past its header


def read_span_or_silence(path: str | Path, start_s: float, duration_s: float, sample_rate: int,
                         info: AudioInfo | None = None) -> np.ndarray:
    """`read_span`, or silence where the file cannot be read there (damaged or cut short after the pool was built),
    said once per file: hours of training go on, and the batches stay those of the seed (a resumed run's too)."""
    try:
        return read_span(path, start_s, duration_s, sample_rate, info)
    except UNREADABLE as exc:
        if str(path) not in _SAID_UNREADABLE:
            _SAID_UNREADABLE.add(str(path))
            log.warning("%s; its unreadable windows are silence", unread_line(path, exc))
        return np.zeros(int(round(duration_s * sample_rate)), np.float32)


def unread_line(path: str | Path, exc: Exception) -> str:
    """A failed read as one line, the file then why: an AudioReadError names its file already (read_span's
    "corrupt or truncated in 570.00-580.00 s (flac decoder lost sync)"), an OSError as `error_line` says it."""
    if isinstance(exc, AudioReadError):
        return str(exc)
    return error_line(exc) if isinstance(exc, OSError) and exc.filename else f"{path}: {exc}"


_SAID_UNREADABLE: set[str] = set()  # files whose unreadable windows were reported, once each


@dataclass(frozen=True)
class PoolFile:
    path: Path
    # its header as the pool was built, and the file's version then: `audio_info` keeps the last 4096 files' headers,
    # and a pool of more files would examine one anew for each window (a FLAC without its length decoded whole)
    info: AudioInfo
    version: tuple[int, ...] | None

    @property
    def duration_s(self) -> float:
        return self.info.duration_s

    def header(self) -> AudioInfo | None:
        """Its header as the pool was built, or None where the file has changed since (`read_span` examines it)."""
        try:
            unchanged = self.version is not None and file_version(os.stat(self.path)) == self.version
        except OSError:  # gone: read_span says why, once
            return None
        return self.info if unchanged else None


class UnlabelledPool:
    """Draws random `window_s` windows from files, each file in proportion to its duration."""

    def __init__(self, files: list[Path], sample_rate: int, window_s: float):
        self.files = []
        for path in map(Path, files):
            try:
                version = file_version(os.stat(path))  # before it is examined: a change in between is seen
            except OSError:  # audio_info says why
                version = None
            try:
                self.files.append(PoolFile(path, audio_info(path), version))
            except AudioReadError as exc:  # one warning line, as a labelled recording that cannot be read
                log.warning("%s; left out of the pool", exc)
        if not self.files:
            raise ValueError("the unlabelled pool is empty (no readable recording)")
        self.sample_rate, self.window_s = sample_rate, window_s
        # as rng.choice(p=) draws, without its O(files) work per window: the seed's batches are those drawn before
        weights = np.array([f.duration_s for f in self.files])
        self.cumulative = (weights / weights.sum()).cumsum()
        self.cumulative /= self.cumulative[-1]

    @classmethod
    def from_manifests(cls, manifests: tuple[str, ...], roots: tuple[str, ...], split: str, sample_rate: int,
                       window_s: float) -> "UnlabelledPool":
        """Every file of `split` in each (manifest, root) pair; labels, if any, are ignored."""
        if len(manifests) != len(roots):
            raise ValueError(f"{len(manifests)} unlabelled manifests but {len(roots)} roots")
        files = []
        for manifest, root in zip(manifests, roots):
            frame = read_manifest(manifest)
            require_columns(frame, manifest, ("path", "split"))
            for listed in select_split(frame, split)["path"]:
                if os.path.lexists(path := listed_file(root, listed)):
                    files.append(path)
                else:  # as `pulse manifest` says it: a gryllus\\REC1.FLAC made on Windows names Gryllus/rec1.flac
                    log.warning("%s: no such file or folder%s; left out of the pool", path,
                                windows_path_hint(root, listed))
        return cls(files, sample_rate, window_s)

    def window(self, rng: np.random.Generator) -> np.ndarray:
        item = self.files[int(self.cumulative.searchsorted(rng.random(), side="right"))]
        start = float(rng.uniform(0.0, max(item.duration_s - self.window_s, 0.0)))
        return read_span_or_silence(item.path, start, self.window_s, self.sample_rate, item.header())

    def batch(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return np.stack([self.window(rng) for _ in range(size)])


def make_pseudo_field(songs: list[Path], soundscapes: list[Path], out_dir: str | Path, count: int, duration_s: float,
                      sample_rate: int, songs_per_minute: float, snr_db: tuple[float, float],
                      seed: int) -> pd.DataFrame:
    """Write `count` long recordings of soundscape with songs dropped in; returns their manifest.

    The soundscape bed is a chain of random excerpts of real soundscapes; each song (a real
    clip, at most 10 s of it) lands at a random time at an SNR drawn from `snr_db` relative to
    the bed under it. The manifest (unlabelled schema) is also written as OUT/manifest.csv.
    Only the excerpts used are read (soundscapes may be hours-long field recordings, dozens of
    them); each recording made, `duration_s` of it, is held in memory until written.
    """
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    soundscapes, beds = _readable_audio(soundscapes, "soundscapes")
    drawable = [int(info.frames * sample_rate // info.sample_rate) for info in beds]  # at `sample_rate`, to its end
    songs, song_infos = _readable_audio(songs, "songs")
    total = int(round(duration_s * sample_rate))
    rows = []
    for i in range(count):
        bed = np.empty(total, np.float32)
        for at in range(0, total, 10 * sample_rate):
            excerpt = _readable_bed_excerpt(soundscapes, beds, drawable, min(total, 10 * sample_rate), sample_rate, rng)
            bed[at:at + len(excerpt)] = excerpt[:total - at]
        for _ in range(int(rng.poisson(songs_per_minute * duration_s / 60.0))):
            song = _readable_song(songs, song_infos, sample_rate, rng)
            start = int(rng.integers(0, max(total - len(song), 0) + 1))
            end = min(start + len(song), total)
            song = song[:end - start]
            gain = 10.0 ** (float(rng.uniform(*snr_db)) / 20.0)
            if song.any():  # a silent clip: nothing to place, and no SNR to scale it to
                bed[start:end] += song * (rms(bed[start:end]) / rms(song) * gain)
        bed /= max(1.0, float(np.abs(bed).max()) / 0.99)
        name = f"pseudo_field_{seed}_{i:03d}.flac"
        with atomic_path(out / name) as tmp:
            sf.write(str(tmp), bed, sample_rate, format="FLAC")
        rows.append({"path": name, "split": "train", "license": "those of the songs and soundscapes mixed in",
                     "source": f"pseudo-field: {len(songs)} song clips in {len(soundscapes)} soundscapes",
                     "duration_s": f"{duration_s:.3f}", "sample_rate": sample_rate})
    manifest = pd.DataFrame(rows, columns=list(UNLABELLED_COLUMNS))
    with atomic_path(out / "manifest.csv") as tmp:
        manifest.to_csv(tmp, index=False)
    return manifest


def _readable_audio(paths: list[Path], what: str) -> tuple[list[Path], list[AudioInfo]]:
    """The files of `paths` whose header can be read, and their headers: one that cannot (one of dozens of a user's
    field recordings) is left out with one warning line instead of stopping the run."""
    kept, infos = [], []
    for path in paths:
        try:
            infos.append(audio_info(path))
            kept.append(path)
        except AudioReadError as exc:
            log.warning("%s; left out of the pseudo-field %s", exc, what)
    if not kept:
        raise ValueError(f"none of the {len(paths)} {what} given for the pseudo-field can be read")
    return kept, infos


def _readable_song(songs: list[Path], infos: list[AudioInfo], sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """The first 10 s at most of a song drawn at random. One that cannot be read there (a copy cut short, its header
    intact) is left out of both lists with one warning line and another drawn: the draws stay those of the seed
    while every song reads."""
    while songs:
        k = int(rng.integers(len(songs)))
        try:
            return read_span(songs[k], 0.0, min(infos[k].duration_s, 10.0), sample_rate, infos[k])
        except UNREADABLE as exc:
            log.warning("%s; left out of the pseudo-field songs", unread_line(songs[k], exc))
            del songs[k], infos[k]
    raise ValueError("none of the songs given for the pseudo-field can be read")


def _readable_bed_excerpt(soundscapes: list[Path], beds: list[AudioInfo], drawable: list[int], length: int,
                          sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """`length` samples at `sample_rate` of a soundscape drawn at random, from within its first `drawable` samples
    (a shorter one is read whole and looped, as `crop(..., loop=True)` draws), reading only the excerpt. Where an
    excerpt cannot be read (a copy cut short, a FLAC damaged, its header intact), only the soundscape's part before
    that excerpt is drawn from after it, said in one warning line, and another excerpt drawn; one with nothing
    before it is left out of the lists. A silent stretch would teach nothing, and the draws stay those of the seed
    while every file reads."""
    while beds:
        k = int(rng.integers(len(beds)))
        frames = drawable[k]
        start = int(rng.integers(0, frames - length + 1)) if frames >= length else 0
        try:
            excerpt = read_span(soundscapes[k], start / sample_rate, min(frames, length) / sample_rate, sample_rate,
                                beds[k])
        except UNREADABLE as exc:
            if start:
                log.warning("%s; only its first %.2f s used from here on", unread_line(soundscapes[k], exc),
                            start / sample_rate)
                drawable[k] = start
            else:
                log.warning("%s; left out of the pseudo-field soundscapes", unread_line(soundscapes[k], exc))
                del soundscapes[k], beds[k], drawable[k]
            continue
        return excerpt if frames >= length else crop(excerpt, length, rng, loop=True)
    raise ValueError("none of the soundscapes given for the pseudo-field can be read")
