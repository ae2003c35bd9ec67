"""Per-window embeddings of recordings: `pulse embeddings` (BirdNET-Analyzer's `embeddings`).

For search, clustering or a classifier of one's own: every window of every recording, cut as `pulse analyze` cuts it,
goes through the model once, and its embedding (the student's penultimate layer; with `--model birdnet`, BirdNET's
1024-d global pool) is stored with the window times in one HDF5 file per recording, `OUT/<relative
path>.embeddings.h5`: datasets `starts_s`, `ends_s` [windows] and `embedding` [windows, dim], attributes naming the
recording, the model and the settings. A rerun skips recordings whose file is there and was made from the same
recording (absolute path, size, modification and change time), read the same way (rate, channels, length:
`pulse.analyze.decoding`), with the same model and window settings; a recording that changed or is read otherwise now,
or other settings, are embedded again (the last said in one line first, with which model or settings changed). Files
are written atomically. A bad recording is one line and one row of `OUT/errors.csv`, and the batch goes on, as it does
past one whose file cannot be written (a folder where it goes; a full or read-only --out stops the run); one that
breaks off part way is embedded up to the break and listed as `PartlyReadable`, as `pulse analyze` does. After
Ctrl-C, the files done and errors.csv so far are kept.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from export.atomic import atomic_path, error_line, fails_for_folder, file_in_the_way, stop_if_unwritable, utf8_text
from export.files import name_within_limit
from export.folder_lock import exclusive
from export.made_with import said_again, why_again
from export.progress import progress
from pulse.analyze import (SCORE_SETTINGS, check_channel, decoding, model_key, note_mixed, note_rate, readable_key,
                           scores_key)
from pulse.config import InferConfig
from pulse.discovery import find_audio
from pulse.io import AudioInfo, AudioReadError, audio_info
from pulse.model_names import model_band, open_checked_model, resolve_model
from pulse.recording import window_outputs
from pulse.writers import write_errors

log = logging.getLogger(__name__)


@dataclass
class Summary:
    files_done: int = 0
    files_skipped: int = 0  # embedded by an earlier run with the same model and settings
    files_failed: int = 0
    # embedded before, embedded again as the model or settings changed (counted as each is done: one that fails is
    # not), by reason
    redone: Counter = field(default_factory=Counter)


def embeddings_path(out: Path, relative: Path) -> Path:
    return out / relative.parent / name_within_limit(relative.name, ".embeddings.h5")


def _source(path: Path, info: AudioInfo) -> dict:
    """What identifies the recording an embeddings file was made from: its ctime too, which a copy over it with the
    same name, size and time (`cp -p`; recorders deployed together name their files alike) changes; and how it
    decoded (`pulse.analyze.decoding`), which a later pulse may do otherwise (a GUANO TE read since)."""
    stat = path.stat()
    return {"source": utf8_text(str(path.resolve())), "source_size": stat.st_size, "source_mtime_ns": stat.st_mtime_ns,
            "source_ctime_ns": stat.st_ctime_ns, **{f"source_{k}": v for k, v in decoding(info).items()}}


def _earlier(target: Path, key: dict, readable: dict) -> tuple[str | None, str]:
    """The warning stored with an embeddings file made from `key` ("" if none), or None: not made from it; and,
    when it was made from this recording but with another model or settings, why it is made again (else ""). Its
    model is known by `settings_key` (by content), not by where it was (`model`, kept to read): a model reinstalled
    or moved does not embed an archive again. `readable`: the model and settings `settings_key` holds
    (`pulse.analyze.readable_key`), stored beside it as `made_with`."""
    import h5py

    def same(names) -> bool:
        return all(f.attrs.get(k) == v for k, v in key.items() if k in names)

    try:
        with h5py.File(target, "r") as f:
            source = {k for k in key if k.startswith("source")}
            if not same(source):
                return None, ""  # of another recording, or of another reading of it
            if same(key.keys() - source - {"model"}):
                return str(f.attrs.get("warning", "")), ""
            return None, why_again(json.loads(f.attrs.get("made_with", "null")), readable)
    except (OSError, ValueError):  # not ours, or not HDF5 at all: made again
        return None, ""


def embed(inputs: list[str | Path], out: str | Path, cfg: InferConfig = InferConfig()) -> Summary:
    """Write one embeddings file per recording under `out` (see the module docstring), and `out/errors.csv`."""
    out = Path(out)
    if blocker := file_in_the_way(out):
        raise ValueError(f"{blocker}: --out must be a folder, and this is a file")
    check_channel(cfg.channel)
    predictor, spec, _ = open_checked_model(cfg)
    summary, errors = Summary(), []
    try:
        if "embedding" not in predictor.output_names:
            raise ValueError(f"{cfg.model}: the model has no 'embedding' output (export it with `pulse export`)")
        meta, model_path = predictor.metadata, resolve_model(cfg.model)[0]
        # Readable beside the key: the level floor, in particular, changes the embeddings of quiet recordings.
        model = model_key(model_path)
        settings = {"model": str(model_path), "settings_key": scores_key(cfg, meta, model),
                    "sample_rate": spec.sample_rate, "window_s": float(meta["window_s"]), "overlap_s": cfg.overlap,
                    "min_len_s": cfg.min_len, "channel": -1 if cfg.channel is None else cfg.channel,
                    "level_floor_dbfs": cfg.level_floor}
        readable = readable_key(cfg, model, SCORE_SETTINGS)
        files = find_audio(inputs, undecodable=True, outputs=out)
        with stop_if_unwritable(out), exclusive(out, "pulse embeddings"):  # one run at a time in --out
            try:
                todo = _not_embedded(files, out, settings, readable, summary, errors)
                # said before the work: a model or setting changed by mistake is seen in time
                if again := Counter(why for *_, why in todo if why):
                    log.info("%s", said_again(again, f"file(s) embedded before into {out} are embedded again"))
                _embed_each(todo, predictor, spec, cfg, readable, summary, errors)
            finally:  # also on Ctrl-C: what was said about the files done so far is kept
                write_errors(out / "errors.csv", errors, [path for path, _ in files])
    finally:
        predictor.close()
    return summary


def _not_embedded(files: list, out: Path, settings: dict, readable: dict, summary: Summary,
                  errors: list) -> list[tuple]:
    """(path, target, info, key, why) of each recording not embedded before with these `settings` (`readable`: see
    `_earlier`; `why`: why its earlier file is made again, or ""), all found before any is embedded, so that why some
    are embedded again is said first."""
    todo = []
    with progress(files, unit="file", desc="earlier files", leave=False) as bar:
        for path, relative in bar:
            target = embeddings_path(out, relative)
            try:
                info = audio_info(path)
                key = {**_source(path, info), **settings}
                said, why = _earlier(target, key, readable) if target.is_file() else (None, "")
            except (AudioReadError, OSError, ValueError, RuntimeError) as exc:
                _failed(path, exc, summary, errors)
                continue
            if said is None:
                todo.append((path, target, info, key, why))
                continue
            summary.files_skipped += 1
            if said:  # it breaks off part way: said again, as by `pulse analyze`
                errors.append((str(path), "read", "PartlyReadable", said))
    return todo


def _failed(path: Path, exc: Exception, summary: Summary, errors: list, stage: str = "embed") -> None:
    """A bad recording, or one whose file cannot be written (`stage` "write"): one line and one row of errors.csv."""
    if isinstance(exc, AudioReadError):
        errors.append((str(path), "read", type(exc).__name__, exc.reason))
        log.warning("%s", exc)
    else:  # the model or the file system: this file, not all
        message = error_line(exc) if stage == "write" and isinstance(exc, OSError) else str(exc)
        errors.append((str(path), stage, type(exc).__name__, message))
        log.warning("%s: %s%s", path, "" if stage == "embed" else f"{stage} failed: ", message)
    summary.files_failed += 1


def _embed_each(todo: list[tuple], predictor, spec, cfg: InferConfig, readable: dict, summary: Summary,
                errors: list) -> None:
    """Embed each recording of `todo` (`_not_embedded`); a bad one is one line and one error."""
    import h5py

    notes_said = set()  # the notes said once per run
    with progress(todo, unit="file") as bar:
        for path, target, info, key, why in bar:
            if (embedded := window_embeddings(path, predictor, spec, cfg, notes_said, summary, errors, info)) is None:
                continue
            starts_s, ends_s, embedding, warning = embedded
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(target) as tmp, h5py.File(tmp, "w") as f:
                    f.create_dataset("starts_s", data=starts_s.astype(np.float64))
                    f.create_dataset("ends_s", data=ends_s.astype(np.float64))
                    f.create_dataset("embedding", data=embedding)
                    f.attrs.update({**key, "made_with": json.dumps(readable), "warning": warning})
            except OSError as exc:
                if fails_for_folder(exc):  # --out is full or read-only: so it would be for every file
                    raise
                _failed(path, exc, summary, errors, "write")
                continue
            summary.files_done += 1
            if why:
                summary.redone[why] += 1


def window_embeddings(path: Path, predictor, spec, cfg: InferConfig, said: set, summary: Summary, errors: list,
                      info: AudioInfo | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, str] | None:
    """A recording's window starts and ends (s), embeddings [windows, dim] and the note said if it breaks off part
    way (""); None for a bad recording, which is one line and one error. `said`: the notes said once per run."""
    try:
        info = info or audio_info(path)
        note_rate(said, path, info.sample_rate, spec.sample_rate, model_band(predictor.metadata), cfg.model)
        note_mixed(said, path, info.channels, cfg.channel)
        starts_s, ends_s, outputs, warning = window_outputs(path, info, predictor, spec, cfg)
    except (AudioReadError, OSError, ValueError, RuntimeError) as exc:
        _failed(path, exc, summary, errors)
        return None
    if warning := warning or info.warning:
        errors.append((str(path), "read", "PartlyReadable", warning))
        log.warning("%s: %s", path, warning)
    return starts_s, ends_s, outputs["embedding"].astype(np.float32), warning
