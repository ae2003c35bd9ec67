"""Run BirdNET once over every recording of a manifest and keep its outputs on disk.

Layout of OUT: `config.json` (settings + model sha256), `index.csv` (path -> content sha256,
size, mtime, ctime, windows), `errors.csv`, and one `<sha[:2]>/<sha>.npz` per distinct file content
holding `starts_s` [W], `logits` [W, 6522] and `embedding` [W, 1024], uncompressed, so that training reads a
batch's rows of them from disk (`open_cache`), and the embedding's float64 `embedding_mean` and `embedding_m2` [1024]
(`Moments`), so that training standardises by them without reading every row. Entries are keyed by the
file's content hash, so an edited file is recomputed and a copied one is not, nor one read as it
was (an entry of another reading, a GUANO TE read since, is: `_cached_windows`); a killed run
resumes where it stopped, since every .npz is written atomically.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import shlex
import struct
import tokenize
import zipfile
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from export.artifact import sha256
from export.atomic import atomic_path, fails_for_folder, from_utf8_text, stop_if_unwritable, write_json
from export.console import first_three
from export.folder_lock import exclusive
from export.progress import progress
from export.tables import listed_file, windows_path_hint
from pulse.config import TeacherCacheConfig
from pulse.io import audio_info, stream_audio
from pulse.teacher import birdnet
from pulse.windows import WindowSpec, frame_windows

log = logging.getLogger(__name__)
INDEX_COLUMNS = ("path", "sha256", "size", "mtime_ns", "ctime_ns", "windows")
BLOCK_S = 60.0  # audio decoded per block: memory stays flat for hours-long files
ENTRIES_AT_ONCE = 1024  # opened or read together by `in_threads`


class CachedTeacher(NamedTuple):
    starts_s: np.ndarray  # [W]
    logits: np.ndarray  # [W, 6522]
    embedding: np.ndarray  # [W, 1024]


class Moments(NamedTuple):
    """Count, mean and sum of squared deviations (M2) per dimension of rows, in float64: those of parts merge into
    those of the whole (Chan et al. 1979), so the mean and std of a pool's embeddings need none of its rows."""
    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of(cls, rows: np.ndarray) -> Moments:
        rows = rows.astype(np.float64)
        mean = rows.mean(axis=0)
        return cls(len(rows), mean, ((rows - mean) ** 2).sum(axis=0))

    def merge(self, other: Moments) -> Moments:
        total = self.count + other.count
        delta = other.mean - self.mean
        return Moments(total, self.mean + delta * other.count / total,
                       self.m2 + (other.m2 + delta ** 2 * self.count * other.count / total))


class EntryUnreadable(OSError):
    """An entry opened before can no longer be read where its rows lay (deleted, cut short or copied over since):
    training stops with one line, its last checkpoint kept."""


class StoredArray(NamedTuple):
    """One array of an entry where it lies in its .npz: its rows are read when asked, so a cache of hundreds of GB
    is not held in memory. It holds no open file, so it reads alike in threads and in worker processes."""
    path: Path
    offset: int  # of the first row, in bytes
    dtype: np.dtype
    shape: tuple[int, ...]

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the array."""
        out = np.empty((stop - start, *self.shape[1:]), self.dtype)
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset + start * out[:1].nbytes)
                complete = f.readinto(out) == out.nbytes
        except OSError as error:  # deleted, or a network disk gone
            raise EntryUnreadable(f"{self.path}: {error.strerror}, readable when it was opened; "
                                  f"{rerun_command(self.path.parents[1])} makes it anew") from None
        if not complete:
            raise EntryUnreadable(f"{self.path}: ends before row {stop} of {self.shape[0]}, changed since it was "
                                  f"opened; {rerun_command(self.path.parents[1])} makes it anew")
        return out

    def read(self) -> np.ndarray:
        return self.rows(0, self.shape[0])


class StoredEntry(NamedTuple):
    starts_s: np.ndarray  # [W], in memory
    logits: StoredArray  # [W, 6522], on disk
    embedding: StoredArray  # [W, 1024], on disk
    embedding_mean: StoredArray  # [1024] float64, on disk
    embedding_m2: StoredArray  # [1024] float64, as embedding_mean

    def embedding_moments(self) -> Moments:
        """The stored `Moments` of the embedding."""
        return Moments(len(self.starts_s), self.embedding_mean.read(), self.embedding_m2.read())


def entry_path(out: Path, digest: str) -> Path:
    return out / digest[:2] / f"{digest}.npz"


def compute_entry(teacher, path: Path, cfg: TeacherCacheConfig) -> CachedTeacher:
    """Teacher outputs for every 3 s window of one file, every `cfg.hop_s`, streamed and framed by the code
    `pulse analyze` uses (at BirdNET's 48 kHz)."""
    spec = _window_spec(cfg)
    starts, logits, embeddings = [], [], []
    for first, windows in frame_windows(stream_audio(path, birdnet.SAMPLE_RATE, BLOCK_S), spec, cfg.batch_size):
        out = teacher.predict(windows)
        starts.append(first / birdnet.SAMPLE_RATE)
        logits.append(out.logits)
        embeddings.append(out.embedding)
    return CachedTeacher(np.concatenate(starts).astype(np.float32), np.concatenate(logits), np.concatenate(embeddings))


def _window_spec(cfg: TeacherCacheConfig) -> WindowSpec:
    return WindowSpec(birdnet.WINDOW_SAMPLES, int(round(cfg.hop_s * birdnet.SAMPLE_RATE)), birdnet.SAMPLE_RATE)


def _cached_windows(target: Path, path: Path, cfg: TeacherCacheConfig) -> int | None:
    """The windows of the entry computed before for this content (for this path or a copy), or None: there is none,
    it cannot be read (cut short by a full disk or a partial copy: made again rather than failing the file on every
    rerun), or it is of another reading of the file than pulse makes now, its last window more than a hop from where
    it would start now (a GUANO TE WAV read without its TE: 60 s of windows for a 6 s song)."""
    if not target.is_file():
        return None
    try:
        starts = _entry_arrays(target)["starts_s"].read()
    except (ValueError, OSError) as error:
        log.warning("%s; making it again", error)
        return None
    spec = _window_spec(cfg)
    last = (spec.count(int(round(audio_info(path).duration_s * spec.sample_rate))) - 1) * spec.hop / spec.sample_rate
    return len(starts) if len(starts) and abs(float(starts[-1]) - last) <= cfg.hop_s else None


def _save_entry(target: Path, entry: CachedTeacher) -> None:
    moments = Moments.of(entry.embedding)
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        np.savez(f, **entry._asdict(), embedding_mean=moments.mean, embedding_m2=moments.m2)


def _read_index(out: Path) -> dict[str, dict]:
    """OUT's index by manifest path; a ValueError naming index.csv where it is damaged (cut short by a partial copy:
    the index is written whole, ending in a newline) or lacks a column `_write_index` writes."""
    index = out / "index.csv"
    if not index.is_file():
        return {}
    try:
        frame = pd.read_csv(index, dtype={"path": str, "sha256": str})
    except pd.errors.EmptyDataError:
        raise ValueError(f"{index}: empty") from None
    except pd.errors.ParserError as error:
        raise ValueError(f"{index}: not a table pulse teacher-cache wrote ({error})") from None
    with open(index, "rb") as f:
        f.seek(-1, 2)
        if f.read(1) != b"\n" or not set(INDEX_COLUMNS) <= set(frame.columns):
            raise ValueError(f"{index}: cut short or not a table pulse teacher-cache wrote")
    frame["path"] = frame["path"].map(from_utf8_text)  # as read_manifest reads it
    return {row["path"]: row for row in frame.to_dict("records")}


def _write_index(out: Path, rows: dict[str, dict]) -> None:
    frame = pd.DataFrame(list(rows.values()), columns=list(INDEX_COLUMNS))
    with atomic_path(out / "index.csv") as tmp:
        frame.to_csv(tmp, index=False, errors="backslashreplace")  # a name that is not UTF-8: as write_manifest


def _check_same_numbers(out: Path, record: dict) -> None:
    """Entries are kept by file content alone, so a folder holds outputs of one hop and one BirdNET model: a run
    asking for others would reuse the old ones under its own settings."""
    try:
        earlier = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if changed := [f"{key} {earlier.get(key)!r} -> {record[key]!r}" for key in ("hop_s", "teacher_sha256")
                   if key in earlier and earlier[key] != record[key]]:
        raise ValueError(f"{out}: holds teacher outputs made with other settings ({'; '.join(changed)}); "
                         "give another --out")


def build_cache(cfg: TeacherCacheConfig, teacher: birdnet.BirdNET | None = None) -> pd.DataFrame:
    """Fill OUT with teacher outputs for every manifest row; returns the index as a DataFrame."""
    from pulse.manifest import read_manifest, require_columns

    out, root = Path(cfg.out), Path(cfg.audio_root)
    record = {**cfg.to_dict(), "teacher": birdnet.MODEL_FILE, "license": birdnet.LICENSE,
              "teacher_sha256": sha256(birdnet.model_dir() / birdnet.MODEL_FILE)}
    _check_same_numbers(out, record)
    manifest = read_manifest(cfg.manifest)
    require_columns(manifest, cfg.manifest, ("path",))
    with stop_if_unwritable(out), exclusive(out, "pulse teacher-cache"):  # one run at a time in --out
        write_json(out / "config.json", record)
        return _fill(out, root, list(dict.fromkeys(manifest["path"])), cfg,
                     teacher or birdnet.BirdNET(threads=cfg.threads))


def _fill(out: Path, root: Path, paths: list[str], cfg: TeacherCacheConfig, teacher) -> pd.DataFrame:
    """`build_cache` once OUT is held: an entry for each of `paths` not cached yet, then the index."""
    rows, errors = {}, []
    try:
        previous = _read_index(out)
    except ValueError as error:  # only spares hashing: every file is hashed again, its entry kept
        log.warning("%s; hashing every file again to write it anew", error)
        previous = {}
    # at a terminal its log lines print above the bar, not glued to its end
    with progress(paths, unit="file", desc="teacher cache") as bar:
        for i, rel in enumerate(bar):
            path = listed_file(root, rel)
            try:
                if not path.exists():  # as `pulse manifest` says it, with what to do about a Windows path
                    raise FileNotFoundError(f"missing file{windows_path_hint(root, rel)}")
                stat = path.stat()
                old = previous.get(rel)
                # its ctime too: a file copied over it with the same size and time (cp -p) is hashed again
                fresh = old is not None and (old["size"], old["mtime_ns"], old["ctime_ns"]) == (
                    stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
                digest = old["sha256"] if fresh else sha256(path)
                target = entry_path(out, digest)
                if (windows := _cached_windows(target, path, cfg)) is None:
                    entry = compute_entry(teacher, path, cfg)
                    _save_entry(target, entry)
                    windows = len(entry.starts_s)
                rows[rel] = {"path": rel, "sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                             "ctime_ns": stat.st_ctime_ns, "windows": int(windows)}
            except Exception as error:  # one bad file never stops the batch; a full or read-only --out does
                if fails_for_folder(error):
                    raise
                log.error("%s: %s: %s", path, type(error).__name__, error)
                errors.append({"path": rel, "stage": "teacher-cache", "error_type": type(error).__name__,
                               "message": str(error)})
            if i % 50 == 49:
                _write_index(out, rows)
    _write_index(out, rows)
    with atomic_path(out / "errors.csv") as tmp:
        pd.DataFrame(errors, columns=["path", "stage", "error_type", "message"]).to_csv(tmp, index=False,
                                                                                       errors="backslashreplace")
    return pd.DataFrame(list(rows.values()), columns=list(INDEX_COLUMNS))


def _stored_arrays(path: Path) -> dict[str, StoredArray]:
    """Where each array of an .npz lies in it, from its members' zip and .npy headers (np.savez stores them
    whole, uncompressed). The file is opened once, unbuffered: its headers are a few bytes each, where a buffered
    file read 8 KB for each."""
    arrays = {}
    try:
        f = open(path, "rb", buffering=0)
    except FileNotFoundError:
        raise ValueError(f"{path}: missing") from None
    with f:
        try:
            archive = zipfile.ZipFile(f)
        except zipfile.BadZipFile as error:  # cut short: its table of contents comes last
            raise ValueError(f"{path}: not a whole .npz ({error})") from None
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{path}: {info.filename} is compressed; pulse teacher-cache writes entries "
                                 "uncompressed, to be read a few rows at a time")
            f.seek(info.header_offset + 26)  # the local header's name and extra field lengths; the member follows
            name_length, extra_length = struct.unpack("<HH", f.read(4))
            member = info.header_offset + 30 + name_length + extra_length
            f.seek(member)
            try:  # numpy says a damaged header in several ways (ValueError, SyntaxError, tokenize's TokenError)
                version = np.lib.format.read_magic(f)
                length = f.read(2 if version == (1, 0) else 4)
                shape, fortran_order, dtype = _npy_header(version, length + f.read(int.from_bytes(length, "little")))
            except (ValueError, SyntaxError, tokenize.TokenError) as error:
                raise ValueError(f"{path}: {info.filename} has a damaged header ({error})") from None
            if fortran_order and len(shape) > 1:
                raise ValueError(f"{path}: {info.filename} is stored column by column; not an entry pulse wrote")
            # read raw into an array of this dtype and shape: Python objects would be bytes taken for pointers (a
            # crash, or worse, from a cache someone shared), and a shape past the member a read of terabytes
            if dtype.hasobject:
                raise ValueError(f"{path}: {info.filename} holds Python objects; not an entry pulse wrote")
            if dtype.itemsize * math.prod(shape) > info.file_size - (f.tell() - member):
                raise ValueError(f"{path}: {info.filename} claims shape {shape}, more than its "
                                 f"{info.file_size} bytes hold; not an entry pulse wrote")
            arrays[info.filename.removesuffix(".npy")] = StoredArray(path, f.tell(), dtype, shape)
    return arrays


@functools.lru_cache(maxsize=4096)
def _npy_header(version: tuple[int, int], header: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, order and dtype of an .npy header (its length and text), parsed by numpy once per distinct header:
    parsing is most of an entry's opening, and entries of one length share theirs."""
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read_header(io.BytesIO(header))


def rerun_command(out: Path) -> str:
    """The `pulse teacher-cache` command that made OUT, from its config.json: run again, it makes what is missing or
    broken there anew and keeps the rest."""
    try:
        record = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    words = ["pulse", "teacher-cache"]
    for flag, key in (("--manifest", "manifest"), ("--audio-root", "audio_root")):
        words += [flag, str(record[key])] if key in record else []
    words += ["--out", str(out)]
    if record.get("hop_s", TeacherCacheConfig.hop_s) != TeacherCacheConfig.hop_s:
        words += ["--hop-s", str(record["hop_s"])]
    return shlex.join(words)


def in_threads(function: Callable, items: list) -> Iterator:
    """function(item) for each of `items`, in order, 8 at a time: opening or reading a cache's entries mostly waits on
    the disk (an entry's few headers, scattered), and threads overlap the waits (16 were no faster, bench/README.md).
    ENTRIES_AT_ONCE items at a time, so that few results wait in memory (a pending one holds 1.6 KB, moments 16 KB)."""
    with ThreadPoolExecutor(8) as pool:
        for first in range(0, len(items), ENTRIES_AT_ONCE):
            yield from pool.map(function, items[first:first + ENTRIES_AT_ONCE])


def _entry_arrays(path: Path) -> dict[str, StoredArray]:
    """`_stored_arrays` of an entry, or a ValueError naming the arrays it lacks (an .npz pulse did not write)."""
    arrays = _stored_arrays(path)
    if missing := [name for name in StoredEntry._fields if name not in arrays]:
        raise ValueError(f"{path}: no {', '.join(missing)}; not an entry this pulse wrote")
    return arrays


def _open_entry(path: Path) -> StoredEntry | ValueError:
    """The entry at `path`, or why it cannot be read: returned, not raised, so that every other entry is still opened
    and all the broken ones named."""
    try:
        arrays = _entry_arrays(path)
    except ValueError as error:
        return error
    return StoredEntry(arrays["starts_s"].read(), *(arrays[name] for name in StoredEntry._fields[1:]))


def open_cache(out: str | Path, paths: set[str] | None = None) -> dict[str, StoredEntry]:
    """Manifest path -> cached teacher outputs left on disk, for every file in OUT's index (those of `paths`, when
    given). Every entry is opened here, so that training refuses a damaged cache at its start, counting the broken
    entries and naming the first three, not hours in at the first one it draws."""
    out = Path(out)
    try:
        index = _read_index(out)
    except ValueError as error:
        raise ValueError(f"{error}; run {rerun_command(out)} to write it anew") from None
    wanted = {rel: entry_path(out, str(row["sha256"])) for rel, row in index.items() if paths is None or rel in paths}
    cache, broken = {}, []
    for rel, entry in zip(wanted, in_threads(_open_entry, list(wanted.values()))):
        if isinstance(entry, ValueError):
            broken.append(str(entry))
        else:
            cache[rel] = entry
    if broken:
        raise ValueError(f"{out}: {len(broken)} of {len(cache) + len(broken)} entries cannot be read "
                         f"({first_three(broken, '; ')}); "
                         f"run {rerun_command(out)}: it makes them anew")
    return cache


def load_cache(out: str | Path) -> dict[str, CachedTeacher]:
    """Manifest path -> cached teacher outputs in memory, for every file in OUT's index."""
    return {rel: CachedTeacher(entry.starts_s, entry.logits.read(), entry.embedding.read())
            for rel, entry in open_cache(out).items()}
