"""Batch analysis: folders of recordings in, score and detection tables out (`pulse analyze`).

One run: find the recordings, skip those an earlier run finished with these settings and read as pulse reads them now
(and rewrite from their journalled scores those whose outputs alone are missing or asked for anew), score the rest
(pulse/scoring.py: decoding threads, one model), and write each file's outputs as its last window is scored. A file is
finished when its outputs are in place and its scores are appended to the journal (pulse/journal.py); run-wide tables
are rebuilt from the journal at the end. A bad file becomes one line on the console and one row in errors.csv; the
batch goes on. A run stopped by Ctrl-C or a full --out keeps the files finished and errors.csv so far.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from export.artifact import sha256
from export.atomic import atomic_path, fails_for_folder, file_in_the_way, stop_if_unwritable, write_json
from export.folder_lock import exclusive
from export.made_with import made_with, said_again
from export.progress import progress
from pulse import __version__
from pulse.config import InferConfig
from pulse.detect import detections_from_arrays
from pulse.discovery import find_audio
from pulse.io import AudioInfo, AudioReadError, audio_info
from pulse.journal import Journal
from pulse.model_names import above_band_note, below_rate_note, model_band, open_checked_model, resolve_model
from pulse.schema import DETECTION_COLUMNS, Columns, LabelSet, detection_channel, empty_detections, scores_frame
from pulse.scoring import score_files
from pulse.teacher.location import check_location
from pulse.windows import WindowSpec, window_times
from pulse.writers import WRITERS, output_path, write_errors

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class Summary:
    files_total: int = 0
    files_done: int = 0
    files_failed: int = 0
    files_skipped: int = 0
    files_rewritten: int = 0  # outputs made again from journalled scores (new thresholds or formats, lost outputs)
    # Files an earlier run finished, done again by this one as the model or settings changed, counted as each is
    # done (one that fails is not): analysed again, or only given new outputs from their saved scores, by reason.
    redone: Counter = field(default_factory=Counter)
    rethresholded: Counter = field(default_factory=Counter)
    audio_s: float = 0.0
    wall_s: float = 0.0
    errors: list[tuple[str, str, str, str]] = field(default_factory=list)
    model_license: str = ""  # from the model's metadata; the default is under BirdNET's licence

    def to_dict(self) -> dict:
        return {"files_total": self.files_total, "files_done": self.files_done, "files_failed": self.files_failed,
                "files_skipped": self.files_skipped, "files_rewritten": self.files_rewritten,
                "files_redone": self.redone.total(), "redone_because": dict(self.redone.most_common()),
                "rewritten_because": dict(self.rethresholded.most_common()),
                "audio_s": round(self.audio_s, 3),
                "audio_hours": round(self.audio_s / 3600, 4),
                "wall_s": round(self.wall_s, 3), "x_realtime": round(self.audio_s / max(self.wall_s, 1e-9), 1)}


@dataclass(eq=False)  # each file is itself: compared by identity
class InFlight:
    """One recording in flight: scores arrive batch by batch, in window order."""

    path: Path
    relative: Path
    info: AudioInfo | None = None
    starts: list = field(default_factory=list)
    scores: list = field(default_factory=list)
    pending: int = 0
    ended: bool = False
    failed: bool = False
    note: str = ""  # it breaks off part way: what was analysed (journalled, so that a resumed run says it again)
    analysed_s: float | None = None  # when it breaks off: the audio before the break (else all of it)
    again: str = ""  # why an earlier run's outputs of it are made again: the model or settings that changed
    run_tables: dict | None = None  # this run's share of the run-wide tables (`_run_share`), kept from finishing

    @property
    def duration_s(self) -> float:
        """The audio analysed: the whole recording, or what precedes the break."""
        return self.info.duration_s if self.analysed_s is None else self.analysed_s

    @property
    def output_name(self) -> str:
        """The name its per-file outputs are written under (and journalled by)."""
        return self.relative.as_posix()


@dataclass(frozen=True)
class Run:
    """What every step of one run needs, resolved once from the config and the model."""

    cfg: InferConfig
    spec: WindowSpec
    labels: LabelSet
    band: tuple[float, float]  # the model's frequency range: selection boxes span it
    journal: Journal
    out_dir: Path
    writers: tuple
    said: set = field(default_factory=set)  # the notes said once per run

    def note_rate(self, path: Path, sample_rate: int) -> None:
        note_rate(self.said, path, sample_rate, self.spec.sample_rate, self.band, self.cfg.model)

    def note_mixed(self, path: Path, channels: int) -> None:
        note_mixed(self.said, path, channels, self.cfg.channel)

    @cached_property  # read for every file
    def tables(self) -> set[str]:
        """The tables ("scores", "detections", "sequence") the writers read: only those are built."""
        return {w.table for w in self.writers}


def check_channel(channel: int | None) -> None:
    """--channel counts from 0: a negative one is a bad option, not a failure of every file."""
    if channel is not None and channel < 0:
        raise ValueError(f"--channel is a 0-based channel index, got {channel}")


def note_rate(said: set, path: Path, sample_rate: int, model_rate: int, band: tuple[float, float], model: str) -> None:
    """Say once per run (`said`: the notes said) that a recording cannot hold the top of the model's `band`, and once
    that one holds ultrasound the model does not hear, analysed or rewritten. `pulse analyze` and `pulse embeddings`
    say it alike."""
    for kind, note in (("low rate", below_rate_note(sample_rate, band[1], model)),
                       ("ultrasound", above_band_note(sample_rate, model_rate, band))):
        if note and kind not in said:
            said.add(kind)
            log.warning("%s: %s (said once per run)", path, note)


def note_mixed(said: set, path: Path, channels: int, channel: int | None) -> None:
    """Say once per run (`said`: the notes said) that a recording's channels are mixed to one (no --channel): a
    song that reaches two microphones apart (a stereo Song Meter's) at different times partly cancels in their
    mix. `pulse analyze` and `pulse embeddings` say it alike."""
    if channels > 1 and channel is None and "mixed" not in said:
        said.add("mixed")
        log.warning("%s: its %d channels are mixed to mono (Raven's Channel 1 is the mix); a song reaching "
                    "microphones apart at different times partly cancels there: --channel N analyses one "
                    "(from 0), into its own --out (said once per run)", path, channels)


def check_settings(cfg: InferConfig) -> None:
    """A bad --batch-size, --workers, --channel, --min-conf, --merge-consecutive or --lat/--lon/--week/--sf-thresh is
    one error before any work."""
    if cfg.batch_size < 1:
        raise ValueError(f"--batch-size is at least 1, got {cfg.batch_size}")
    if cfg.workers < 0:
        raise ValueError(f"--workers is 0 (one per 2 cores) or more, got {cfg.workers}")
    check_channel(cfg.channel)
    if not 0.0 <= cfg.min_conf <= 1.0:
        raise ValueError(f"--min-conf is a score between 0 and 1, got {cfg.min_conf:g}")
    if cfg.merge_consecutive < 0:
        raise ValueError(f"--merge-consecutive is 0 or more (0 and 1: a row per window), got {cfg.merge_consecutive}")
    check_location(cfg.lat, cfg.lon, cfg.week, cfg.sf_thresh)


def analyze(inputs: list[str | Path], out_dir: str | Path, cfg: InferConfig = InferConfig()) -> Summary:
    """Analyse every recording under `inputs`; write outputs, errors.csv, summary.json, config.json."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    writers = tuple(WRITERS.create(name) for name in cfg.formats)
    if not writers:
        raise ValueError(f"--format needs at least one of {', '.join(WRITERS.list())}")
    check_settings(cfg)
    if blocker := file_in_the_way(out_dir):
        raise ValueError(f"{blocker}: --out must be a folder, and this is a file")
    model_path, _ = resolve_model(cfg.model)
    predictor, spec, labels = open_checked_model(cfg)
    try:
        with stop_if_unwritable(out_dir), exclusive(out_dir, "pulse analyze"):  # one run at a time in --out
            return _analyze_with(predictor, spec, labels, model_path, inputs, out_dir, cfg, writers, t0)
    finally:
        predictor.close()


def _analyze_with(predictor, spec: WindowSpec, labels: LabelSet, model_path: Path, inputs: list[str | Path],
                  out_dir: Path, cfg: InferConfig, writers: tuple, t0: float) -> Summary:
    """`analyze` once its settings are checked, its model open and --out held."""
    meta = predictor.metadata
    run = Run(cfg, spec, labels, model_band(meta), run_journal(out_dir / ".pulse" / "journal", cfg, meta, model_path),
              out_dir, writers)
    files = [InFlight(path, rel) for path, rel in find_audio(inputs, undecodable=True, outputs=out_dir)]
    finished = [f for f in files if cfg.resume and _done(f, run)]
    skipped = set(finished)
    todo = [f for f in files if f not in skipped]
    summary = Summary(files_total=len(files), files_skipped=len(files) - len(todo),
                      model_license=str(meta.get("license", "")))
    if summary.files_skipped:
        log.info("resuming: %d of %d files already done", summary.files_skipped, len(files))
        # what was said about a skipped file when it was analysed (it breaks off part way) is said again
        summary.errors += [(str(f.path), "read", "PartlyReadable", note) for f in finished
                           if (note := run.journal.note(f.path))]
    if cfg.resume and (retried := _failed_before(out_dir, todo)):
        log.info("%d file(s) that failed in an earlier run into %s are tried again (a file copied again or "
                 "converted since is analysed; errors.csv lists those that fail again)", retried, out_dir)
    reread = {f for f in todo if read_otherwise(run.journal, f.path)} if cfg.resume else set()
    if reread:
        log.info("%d file(s) an earlier run into %s analysed are analysed again, as they read otherwise now than "
                 "then (this pulse reads some files differently, e.g. GUANO time expansion, or the file changed)",
                 len(reread), out_dir)
    announced = {"are analysed again": Counter(), "get new outputs from their saved scores": Counter()}
    if cfg.resume:  # said before the work: a model or setting changed by mistake is seen before an archive is redone
        for f in todo:
            if f not in reread and (why := run.journal.why_again(f.path)):
                f.again = why
                announced["get new outputs from their saved scores" if run.journal.scores_fit(f.path)
                          else "are analysed again"][why] += 1
    for what, reasons in announced.items():
        if reasons:
            log.info("%s", said_again(reasons, f"file(s) an earlier run into {out_dir} finished {what}"))
    run.journal.pin([f.path for f in todo])  # as they are before decoding: one still being written is redone
    _warn_of_stale_outputs(out_dir, cfg)
    _warn_of_earlier_outputs(todo, run)
    try:
        try:
            if todo:
                run.journal.open()  # a folder that cannot take it stops the run here, before any work
            score_files(_rewrite_from_saved_scores(todo, run, summary) if cfg.resume else todo, predictor, run,
                        summary, _finish_file)
        finally:
            predictor.close()
            run.journal.close()
        _write_run_tables(files, run, _run_config(cfg, meta, model_path, inputs))
        run.journal.drop_superseded_logs()
    finally:  # also when the run stops (Ctrl-C, a full --out): what was said of the files so far is kept
        write_errors(out_dir / "errors.csv", summary.errors, [f.path for f in files])
    summary.wall_s = time.perf_counter() - t0
    write_json(out_dir / "summary.json", {**summary.to_dict(), "model": str(model_path), "config": cfg.to_dict()})
    return summary


def _finish_file(f: InFlight, run: Run) -> None:
    """A file whose last window is scored: its scores become its outputs."""
    _write_outputs(f, scored_part(f, run), run)


def scored_part(f: InFlight, run: Run) -> dict:
    """A file whose last window is scored: its window times and scores, as the journal keeps them."""
    starts_s, ends_s = window_times(f.starts, run.spec, f.duration_s)
    return {"starts_s": starts_s, "ends_s": ends_s, "scores": np.concatenate(f.scores).astype(np.float32),
            "sample_rate": np.int64(f.info.sample_rate)}


def _rewrite_from_saved_scores(todo: list[InFlight], run: Run, summary: Summary) -> list[InFlight]:
    """Recordings an earlier run scored with the same model and windows, whose outputs are not in place (other
    --min-conf, --merge-consecutive or --format; outputs deleted or overwritten), get them rewritten from the
    journalled scores, without decoding or scoring (hours of audio re-thresholded in seconds); the rest are
    returned, to be analysed."""
    left = []
    with progress(todo, unit="file", desc="saved scores", leave=False) as files:
        for f in files:
            try:
                part = run.journal.load(f.path, any_outputs=True)
                if part is None or read_otherwise(run.journal, f.path):
                    left.append(f)
                    continue
                f.info, f.note = audio_info(f.path), run.journal.note(f.path)
                _write_outputs(f, part, run)
                run.note_rate(f.path, int(part["sample_rate"]))
            except Exception as exc:  # analysed instead, where an error that comes again is that file's own
                if fails_for_folder(exc):  # --out is full or read-only: so it would be for every file
                    raise
                log.debug("%s: not rewritten from its saved scores (%s); analysing it", f.path, exc)
                f.note, f.run_tables = "", None
                left.append(f)
                continue
            summary.files_rewritten += 1
            if f.again:
                summary.rethresholded[f.again] += 1
            if f.note:
                summary.errors.append((str(f.path), "read", "PartlyReadable", f.note))
    if summary.files_rewritten:
        log.info("rewrote the outputs of %d file(s) from their saved scores, without decoding or scoring",
                 summary.files_rewritten)
    return left


def _write_outputs(f: InFlight, part: dict, run: Run) -> None:
    """Write the per-file outputs, then journal the scores: only then is the file done."""
    tables = file_tables(str(f.path), part, run)
    for writer in run.writers:
        if writer.per_file:
            writer.write(tables[writer.table], output_path(writer, run.out_dir, f.relative))
    run.journal.save(f.path, f.output_name, f.note, decoding(f.info), **part)
    f.run_tables = _run_share(tables, run, str(f.path), f.info.duration_s)


def file_tables(file: str, part: dict, run: Run) -> dict[str, pd.DataFrame | Columns]:
    """The tables this run's writers read, of one file; boxes never reach above its Nyquist frequency."""
    tables = {}
    if "scores" in run.tables:
        tables["scores"] = scores_frame(file, part["starts_s"], part["ends_s"], part["scores"], run.labels.labels)
    if run.tables & {"detections", "sequence"}:
        high = min(run.band[1], float(part["sample_rate"]) / 2)
        tables["detections"] = tables["sequence"] = detections_from_arrays(
            np.full(len(part["starts_s"]), file, dtype=object), part["starts_s"], part["ends_s"], part["scores"],
            run.labels, run.cfg.min_conf, run.band[0], high, detection_channel(run.cfg.channel),
            run.cfg.merge_consecutive)
    return tables


def _run_share(tables: dict, run: Run, file: str, length_s: float) -> dict:
    """A file's share of the run-wide tables: those with rows, and, for the combined Raven table, the file and its
    length (by which it shifts the recordings after it, detections or not) with its detections, if any."""
    share = {}
    for writer in run.writers:
        table = tables[writer.table]
        if writer.table == "sequence":
            share["sequence"] = (file, length_s, table if _has_rows(table) else None)
        elif not writer.per_file and _has_rows(table):
            share[writer.table] = table
    return share


def _length_s(f: InFlight, run: Run) -> float | None:
    """The length of a recording finished by an earlier run, where the combined Raven table needs it: as pulse read
    it then, kept in the journal (an MP3's or a FLAC's length may have to be counted by decoding it). None: its
    record is gone (another run into the same --out replaced it meanwhile)."""
    if "sequence" not in run.tables:
        return 0.0
    then = run.journal.decoding(f.path)
    return None if then is None else then["frames"] / then["sample_rate"]


def _write_run_tables(files: list[InFlight], run: Run, config: dict) -> None:
    """Run-wide tables (detections.csv, scores.csv, combined.selection.table.txt) cover every finished file, this
    run's or earlier, in file order; config.json, the settings they were made with, moves into place with them (a
    killed rerun with other settings leaves both)."""
    run_writers = [w for w in run.writers if not w.per_file]
    # Only the tables these writers read: the per-window scores of every file (~57 bytes a window, 0.2 GB per
    # terabyte of 48 kHz WAV) stay out of memory unless scores.csv is asked for.
    tables: dict[str, list] = {w.table: [] for w in run_writers}
    missing = []
    for f in files if run_writers else []:
        if f.run_tables is None and not f.failed:  # finished by an earlier run: rebuilt from its journal
            if (part := run.journal.load(f.path)) is None or (length_s := _length_s(f, run)) is None:
                missing.append(f.path)
                continue
            f.run_tables = _run_share(file_tables(str(f.path), part, run), run, str(f.path), length_s)
        for name, table in (f.run_tables or {}).items():  # none for a file that failed
            tables[name].append(table)
    if missing:  # only when another run into the same --out, with other settings, overlapped this one
        log.warning("%d file(s) skipped as finished are missing from the run-wide tables: another run into %s "
                    "replaced their journal records meanwhile (first: %s); run again to include them",
                    len(missing), run.out_dir, missing[0])
    # Each table is written to a staging file first and all are renamed into place one right after another at the
    # end, so a run killed while writing the large scores.csv never leaves detections.csv from a newer run beside it.
    with contextlib.ExitStack() as staging:
        write_json(staging.enter_context(atomic_path(run.out_dir / "config.json")), config)
        for writer in run_writers:
            staged = staging.enter_context(atomic_path(output_path(writer, run.out_dir)))
            writer.write(run_table(writer.table, tables[writer.table], run.labels), staged)


def _has_rows(table: pd.DataFrame | Columns) -> bool:
    """Whether a file's share of a run-wide table has rows: most recordings of a season have no detection, and
    each one's empty table (ten arrays) was held to the end of the run, ~1.5 KB a file."""
    return (len(table["file"]) if isinstance(table, dict) else len(table)) > 0  # Columns, or a scores DataFrame


def run_table(table: str, parts: list, labels: LabelSet) -> pd.DataFrame | Columns:
    """One run-wide table from the files' parts (detections as `Columns`, scores as tables)."""
    if table == "sequence":  # (file, length, detections or None) of each file in order
        offsets = np.cumsum([0.0] + [length for _, length, _ in parts[:-1]])
        shares = [(at, rows) for at, (_, _, rows) in zip(offsets, parts) if rows is not None]
        joined = run_table("detections", [rows for _, rows in shares], labels)
        return {**joined, "offset_s": np.concatenate([np.full(len(rows["file"]), at) for at, rows in shares] or [[]]),
                "recordings": np.array([file for file, _, _ in parts], dtype=object)}
    if table == "detections":
        if not parts:
            return empty_detections()
        return {c: np.concatenate([part[c] for part in parts]) for c in DETECTION_COLUMNS}
    import pandas as pd  # only scores tables need it (scores_frame imported it already)

    parts = [part for part in parts if len(part)]
    empty = scores_frame("", np.zeros(0), np.zeros(0), np.zeros((0, len(labels.labels))), labels.labels)
    return pd.concat(parts) if parts else empty


# The settings a file's scores depend on (besides the model, and a species list, through the model's metadata);
# with min_conf and merge_consecutive (and the formats, which only choose the tables) they make its outputs.
SCORE_SETTINGS = ("overlap", "min_len", "channel", "level_floor")
OUTPUT_SETTINGS = ("min_conf", *SCORE_SETTINGS, "merge_consecutive")
# Bump when windowing or scoring changes what every file's scores are: journalled files are then analysed again.
# A change in how files decode changes only some: those are seen file by file (`decoding`), not by a bump.
SCORES_VERSION = 1


def run_journal(root: Path, cfg: InferConfig, meta: dict, model_path: Path) -> Journal:
    """The journal of a run with these settings and model."""
    model = model_key(model_path)
    return Journal(root, _fingerprint(cfg, meta, model), scores_key(cfg, meta, model),
                   made_with=readable_key(cfg, model, (*OUTPUT_SETTINGS, "formats", "species_list", "location")))


def readable_key(cfg: InferConfig, model: list, settings: tuple[str, ...]) -> dict:
    """The model (`model_key`) and `settings` a key holds, kept readable beside it: a rerun that does a file
    again says which changed (`export.made_with`)."""
    return made_with(model, {k: getattr(cfg, k) for k in settings} | {"scores_version": SCORES_VERSION})


def _fingerprint(cfg: InferConfig, meta: dict, model: list) -> str:
    """Everything that changes a file's outputs; a journal entry only counts when this matches."""
    settings = {k: v for k, v in cfg.to_dict().items() if k in (*OUTPUT_SETTINGS, "formats")}
    settings["merge_consecutive"] = max(settings["merge_consecutive"], 1)  # 0 and 1 are both no merging
    return _settings_key({**settings, "scores_version": SCORES_VERSION}, meta, model)


def scores_key(cfg: InferConfig, meta: dict, model: list) -> str:
    """What a file's scores depend on: journalled scores with this key can make its tables under new thresholds."""
    return _settings_key({"scores_version": SCORES_VERSION, **{k: getattr(cfg, k) for k in SCORE_SETTINGS}}, meta,
                         model)


def _settings_key(settings: dict, meta: dict, model: list) -> str:
    """`model`: `model_key`'s."""
    key = json.dumps([settings, model, meta], sort_keys=True, default=str)
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def model_key(model_path: Path) -> list:
    """The model as keys name it: by its bytes (hashed once a run), not by its place or time, so that a reinstall or
    upgrade of pulse, which writes the bundled model anew, or a model copied elsewhere, does not have an archive
    analysed again to the same scores."""
    try:  # a folder (`pulse export`'s) by every file in it: the backend chooses which it runs
        files = sorted(p for p in model_path.iterdir() if p.is_file()) if model_path.is_dir() else [model_path]
        return ["sha256", *(sha256(p) for p in files)]
    except OSError:
        return [str(model_path)]


def _done(f: InFlight, run: Run) -> bool:
    """Finished by an earlier run with these settings, its per-file outputs still there and its own, and read now
    as that run read it."""
    return run.journal.done(f.path, f.output_name) and all(
        output_path(w, run.out_dir, f.relative).is_file() for w in run.writers if w.per_file) and (
        not read_otherwise(run.journal, f.path))


def decoding(info: AudioInfo) -> dict:
    """How a recording decodes, as far as its scores depend on it: the rate it is read at (its header's times a
    GUANO TE), its channels and its length. Kept with its scores and outputs, so that a rerun whose pulse reads it
    otherwise analyses it again, and only it (a version bump of every file's scores would redo a whole archive)."""
    return {"sample_rate": info.sample_rate, "channels": info.channels, "frames": info.frames}


def read_otherwise(journal: Journal, path: Path) -> bool:
    """Whether the recording's journal record is of another reading of it than pulse makes now (one it cannot
    read now included): its journalled scores and outputs (and their times) are not of the audio read now."""
    if (then := journal.decoding(path)) is None:
        return False  # no record of it
    try:
        info = audio_info(path)  # the header alone, once per run (cached for the decoding that may follow)
    except AudioReadError:
        return True
    return then != decoding(info)


def _warn_of_earlier_outputs(todo: list[InFlight], run: Run) -> None:
    """Per-file outputs an earlier run wrote into the same --out, said once each with a count:
    - replaced: recordings of the same name (two cards' REC001.WAV in two runs); the first's outputs are made
      again (from its saved scores) if it is given again;
    - moved: a recording now written under another name (AM01 alone, then AM01 with AM02, whose names clash); the
      earlier files are left."""
    if not any(w.per_file for w in run.writers):
        return
    replaced = [(f, owner) for f in todo if (owner := run.journal.earlier_owner(f.path, f.output_name))]
    moved = [(f, before) for f in todo if (before := run.journal.earlier_output(f.path, f.output_name))]
    if replaced:
        f, owner = replaced[0]
        log.warning("%d recording(s) replace per-file outputs an earlier run wrote into %s for other recordings of "
                    "the same name (first: %s replaces %s's); give both folders to one command, or use another --out",
                    len(replaced), run.out_dir, f.path, owner)
    if moved:
        f, before = moved[0]
        log.warning("%d recording(s) get per-file outputs under new names in %s, as names clash with other inputs "
                    "given with them or Windows refuses them (first: %s, written as %s before, now as %s); the "
                    "earlier files are left as they were", len(moved), run.out_dir, f.path, before, f.output_name)


def _failed_before(out_dir: Path, todo: list[InFlight]) -> int:
    """How many of `todo` the errors.csv of an earlier run into `out_dir` lists as failed (not analysed up to a
    break): a rerun tries them again, as one half-copied may be whole now, and said nothing of it, so the same
    failures looked like new ones."""
    import csv

    try:
        with open(out_dir / "errors.csv", newline="", encoding="utf-8") as file:
            failed = {row["path"] for row in csv.DictReader(file) if row.get("error_type") != "PartlyReadable"}
    except (OSError, ValueError, KeyError):
        return 0
    return sum(str(f.path) in failed for f in todo)


def _warn_of_stale_outputs(out_dir: Path, cfg: InferConfig) -> None:
    """A rerun into the same folder rewrites only the formats it asks for: say when an earlier run left files of
    other formats there, which may no longer match this run's detections (other settings, or recordings added,
    removed or changed since)."""
    try:
        previous = InferConfig.from_dict(json.loads((out_dir / "config.json").read_text())["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    left = [name for name in previous.formats if name not in cfg.formats]
    changed = [k for k in ("model", "species_list", "location", *OUTPUT_SETTINGS)
               if getattr(previous, k) != getattr(cfg, k)]
    if left:
        log.warning("%s: an earlier run%s wrote %s output there; this run leaves those files as they were, and they "
                    "may not match its recordings%s (use a new --out to keep runs apart, or ask for those formats)",
                    out_dir, f" with another {'/'.join(changed)}" if changed else "", ", ".join(left),
                    " or settings" if changed else "")


def _run_config(cfg: InferConfig, meta: dict, model_path: Path, inputs: list) -> dict:
    return {"config": cfg.to_dict(), "pulse_version": __version__, "inputs": [str(p) for p in inputs],
            "working_dir": os.getcwd(),  # where the tables' relative recording paths start (`pulse segments`)
            "model_path": str(model_path), "model_metadata": meta}

