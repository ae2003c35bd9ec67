"""The record of finished files that makes `pulse analyze` resumable (`OUT/.pulse/journal/`).

A recording counts as done once its outputs are in place and a record of it is appended here:
its path, size, mtime and ctime, the fingerprint of the settings that made its outputs (and of those that
made its scores), how it decoded (its rate, channels and length: a later pulse that reads it otherwise, as GUANO's
time expansion came to be read, makes other scores of it), the name its per-file outputs were written under, any
note about it (a recording that breaks off) and its scores. Only the latest record of a recording counts, and only
if its outputs' name was last written for it: a run with other settings, or another recording with the same output
name, overwrote those files, so the recording's outputs are made again (from its scores, where only the
thresholds or formats differ) rather than wrongly skipped.

Each run appends to a log of its own with one write() per file, so a killed run keeps every
file it finished; a record cut short (a kill, a full disk, a power cut's zero-filled tail) fails
its checks and is ignored with everything after it in that log. One log per run, not one file
per recording: renaming an .npz per recording into place cost ~0.7 ms, a seventh of a 3 s
clip's whole time in `pulse analyze`. The scores are stored as raw bytes with their dtype and
shape in the record's header (an .npz in memory cost 0.1 ms a record and six times the bytes).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.made_with import why_again

log = logging.getLogger(__name__)

RECORD_HEADER = struct.Struct("<II")  # body length, crc32 of the body; body = JSON header, NUL, the arrays' bytes


@dataclass(frozen=True)
class Record:
    """Where one recording's latest record lies, and what it says without reading its scores."""

    fingerprint: str
    scores_key: str  # the settings the scores depend on
    changed_ns: int  # the recording's ctime when it was journalled
    decoding: dict  # how it decoded (`pulse.analyze.decoding`)
    made_with: dict  # the readable parts of its fingerprint (`export.made_with`)
    output: str
    note: str
    log: Path
    offset: int
    length: int


class JournalError(OSError):
    """--out cannot take the journal. Its own class: OSError(2, ...) would become a FileNotFoundError,
    which the CLI reads as a bad option."""


class Journal:
    """Which recordings are done in one output folder under one fingerprint of settings, and their scores.

    `scores_key` names the settings the scores alone depend on (the model, windowing, channel, level floor): a
    recording journalled under other output settings (threshold, merging, formats) but the same scores key
    can have its outputs rewritten from its scores, without decoding or the model (`load(..., any_outputs=True)`).
    """

    def __init__(self, root: Path, fingerprint: str, scores_key: str = "", made_with: dict | None = None):
        """`fingerprint` "": any settings (records are read, none is done). `made_with`: the model and settings the
        fingerprint holds, kept readable beside it in each record, to say why a rerun does a recording again (a
        journal that saves records needs it: a record without it is not one this pulse wrote, and does not count)."""
        self.root, self.fingerprint, self.scores_key, self.made_with = root, fingerprint, scores_key, made_with
        self._records: dict[str, Record] | None = None  # recording (path|size|mtime) -> its latest record
        self._owners: dict[str, str] = {}  # output name -> the recording (path) its files were last written for
        self._paths: set[str] = set()  # the recordings (resolved paths) any record is of
        self._log = None  # this run's log
        self._unreadable: set[Path] = set()  # logs that could not be read: never deleted
        self._started_ns = time.time_ns()
        self._resolved_paths: dict[Path, str] = {}
        self._versions: dict[Path, tuple[str, int] | None] = {}  # each recording as this run first saw it

    def pin(self, paths: list[Path]) -> None:
        """Take the recordings' versions now, before they are decoded (see `_version`)."""
        for path in paths:
            self._version(path)

    def open(self) -> None:
        """Create this run's log; a folder that cannot take it is one clear error before any work is done."""
        if self._log is None:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                self._log = open(self.root / f"{time.time_ns()}-{os.getpid()}.log", "ab")
            except OSError as exc:
                raise JournalError(exc.errno, f"cannot write the resume journal there ({exc.strerror})",
                                   str(self.root)) from exc

    def done(self, path: Path, output: str) -> bool:
        record = self._latest(path)
        return (record is not None and self._same_settings(record) and record.output == output
                and self._owners.get(output) == self._resolved(path))

    def note(self, path: Path) -> str:
        """What was said about the recording when it was analysed ("" if nothing), to say it again on resume."""
        record = self._latest(path)
        return record.note if record is not None else ""

    def replaced(self, path: Path) -> bool:
        """Whether the recording at `path` was journalled only as it was before: it changed (or another was copied
        over it) since it was analysed, so the outputs of those runs are not of the audio there now."""
        self._index()
        return self._resolved(path) in self._paths and self._version(path) is not None and self._latest(path) is None

    def earlier_owner(self, path: Path, output: str) -> str | None:
        """The other recording whose per-file outputs an earlier run wrote under `output`, if any."""
        self._index()
        owner = self._owners.get(output)
        return owner if owner not in (None, self._resolved(path)) else None

    def earlier_output(self, path: Path, output: str) -> str | None:
        """The other name this recording's per-file outputs were last written under, if those files are still
        its own (a second card given with the first moves the first's clashing names under its folder)."""
        record = self._latest(path)
        if record is None or record.output == output or self._owners.get(record.output) != self._resolved(path):
            return None
        return record.output

    def why_again(self, path: Path) -> str:
        """Why the recording, journalled as it is now but under another fingerprint, is done again ("" if it is not
        so): the model or settings that changed (`export.made_with.why_again`)."""
        record = self._latest(path)
        if record is None or self._same_settings(record):
            return ""
        return why_again(record.made_with, self.made_with)

    def scores_fit(self, path: Path) -> bool:
        """Whether the recording's saved scores can make its outputs under these settings (`load(...,
        any_outputs=True)` gives them), told from its record alone: a rerun says which files it rewrites only."""
        return self._usable(self._latest(path), any_outputs=True)

    def decoding(self, path: Path) -> dict | None:
        """How the recording decoded when its latest record was made; None: no record."""
        record = self._latest(path)
        return record.decoding if record is not None else None

    def load(self, path: Path, any_outputs: bool = False) -> dict | None:
        """The scores of a recording done under these settings (`any_outputs`: or under other output settings
        with the same scores key), else None."""
        record = self._latest(path)
        if not self._usable(record, any_outputs):
            return None
        try:
            body = _read_body(record)
        except FileNotFoundError:  # a run into the same folder replaced the record and deleted its log meanwhile
            self._records, self._owners, self._paths = None, {}, set()
            record = self._latest(path)
            if not self._usable(record, any_outputs):
                return None
            body = _read_body(record)
        return _arrays(body)

    def recordings(self) -> dict[str, tuple[Record, dict]]:
        """Each recording's latest record and scores, by its resolved path, under any settings and whether or not the
        recording is still there: what runs into this folder analysed, those without detections too, for tables
        made after the run (`pulse activity`) without the recordings at hand."""
        self._index()
        latest = {}
        for version, record in sorted(self._records.items(), key=lambda item: (item[1].log.name, item[1].offset)):
            latest[version.rsplit("|", 2)[0]] = record  # version: resolved path|size|mtime
        return {path: (record, _arrays(_read_body(record))) for path, record in latest.items()}

    def save(self, path: Path, output: str, note: str, decoding: dict, **arrays) -> None:
        if (now := self._version(path)) is None:
            return
        arrays = {name: np.asarray(value) for name, value in arrays.items()}
        header = {"version": now[0], "changed_ns": now[1], "path": self._resolved(path),
                  "fingerprint": self.fingerprint, "scores_key": self.scores_key, "output": output, "note": note,
                  "decoding": decoding, "made_with": self.made_with,
                  "arrays": {name: [value.dtype.str, list(value.shape)] for name, value in arrays.items()}}
        body = json.dumps(header).encode() + b"\0" + b"".join(value.tobytes() for value in arrays.values())
        self.open()
        start = self._log.tell()
        try:
            self._log.write(RECORD_HEADER.pack(len(body), zlib.crc32(body)) + body)
            self._log.flush()  # in the operating system's hands: a killed process cannot lose it
        except OSError:  # a record cut short (disk full) would hide every later one: go on in a fresh log
            with contextlib.suppress(OSError):
                self.close()
            raise
        if self._records is not None:  # else read with the rest when first needed
            self._add(header, Path(self._log.name), start + RECORD_HEADER.size, len(body))

    def close(self) -> None:
        log_file, self._log = self._log, None
        if log_file is not None:
            log_file.close()

    def drop_superseded_logs(self) -> None:
        """Delete earlier runs' logs whose every record a later one replaced (repeated --no-resume runs would
        otherwise pile up copies that every resume reads)."""
        if self._records is None:
            return
        keep = {record.log for record in self._records.values()} | self._unreadable
        for log_path in sorted(self.root.glob("*.log")):
            with contextlib.suppress(OSError):  # a log written since this run began may be another run's, still open
                if log_path not in keep and log_path.stat().st_mtime_ns < self._started_ns:
                    log_path.unlink()

    def _usable(self, record: Record | None, any_outputs: bool) -> bool:
        return record is not None and (self._same_settings(record) or (
            any_outputs and bool(self.scores_key) and record.scores_key == self.scores_key))

    def _same_settings(self, record: Record) -> bool:
        return bool(self.fingerprint) and record.fingerprint == self.fingerprint

    def _resolved(self, path: Path) -> str:
        """Resolved once per run: on a network share each resolve is a round trip per folder of the path."""
        if path not in self._resolved_paths:
            self._resolved_paths[path] = str(path.resolve())
        return self._resolved_paths[path]

    def _version(self, path: Path) -> tuple[str, int] | None:
        """The recording as this run first saw it, (path|size|mtime, ctime): a changed file is a new version,
        analysed again. The ctime too, which a copy over it changes: recorders deployed together write files of
        the same name, size and time (an AudioMoth's YYYYMMDD_HHMMSS.WAV), and cp -p or rsync -t keeps the time.
        Taken once per run, before decoding: a file that grows while it is analysed (a recorder still writing it)
        is journalled as it was, so the next run analyses it again; a stat at the end had it skipped, its new audio
        never analysed."""
        if path not in self._versions:
            try:
                stat = path.stat()
                self._versions[path] = f"{self._resolved(path)}|{stat.st_size}|{stat.st_mtime_ns}", stat.st_ctime_ns
            except OSError:
                self._versions[path] = None
        return self._versions[path]

    def _latest(self, path: Path) -> Record | None:
        self._index()
        if (now := self._version(path)) is None:
            return None
        record = self._records.get(now[0])
        return record if record is not None and record.changed_ns == now[1] else None

    def _index(self) -> None:
        """Read every log once, oldest first (names start with the run's start time), at first use."""
        if self._records is not None:
            return
        self._records = {}
        for log_path in sorted(self.root.glob("*.log")):
            try:
                self._read(log_path)
            except OSError as exc:
                self._unreadable.add(log_path)
                log.warning("%s: cannot read this journal log (%s); the files it lists are analysed again",
                            log_path, exc.strerror)

    def _read(self, log_path: Path) -> None:
        with open(log_path, "rb") as f:
            while len(head := f.read(RECORD_HEADER.size)) == RECORD_HEADER.size:
                length, crc = RECORD_HEADER.unpack(head)
                offset, body = f.tell(), f.read(length)
                if not length or len(body) != length or zlib.crc32(body) != crc:  # not length: an all-zero tail
                    return  # cut short or damaged: the files it and later records were for are analysed again
                if (header := _header(body)) is not None:  # else not a record (its file is analysed again)
                    self._add(header, log_path, offset, length)

    def _add(self, header: dict, log_path: Path, offset: int, length: int) -> None:
        self._records[header["version"]] = Record(header["fingerprint"], header["scores_key"], header["changed_ns"],
                                                  header["decoding"], header["made_with"], header["output"],
                                                  header["note"], log_path, offset, length)
        self._owners[header["output"]] = header["path"]
        self._paths.add(header["path"])


def _read_body(record: Record) -> bytes:
    with open(record.log, "rb") as f:
        f.seek(record.offset)
        return f.read(record.length)


def _arrays(body: bytes) -> dict:
    """A record's arrays, by name, from its body (the JSON header says their dtypes and shapes)."""
    end = body.index(b"\0")
    arrays, offset = {}, end + 1
    for name, (dtype, shape) in json.loads(body[:end])["arrays"].items():
        count = int(np.prod(shape))
        arrays[name] = np.frombuffer(body, dtype, count, offset).reshape(shape)
        offset += count * np.dtype(dtype).itemsize
    return arrays


def _header(body: bytes) -> dict | None:
    """A record's JSON header, or None when the body is not a record this pulse wrote: one lacking a field
    `Journal.save` writes does not count, and its recording is analysed again."""
    end = body.find(b"\0")
    if end <= 0:
        return None
    try:
        header = json.loads(body[:end])
    except ValueError:
        return None
    types = {"version": str, "path": str, "fingerprint": str, "scores_key": str, "output": str, "note": str,
             "changed_ns": int, "decoding": dict, "made_with": dict, "arrays": dict}
    if not isinstance(header, dict) or not all(isinstance(header.get(k), t) for k, t in types.items()):
        return None
    return header
