"""Audio clips of detections, to listen to and verify: `pulse segments` (BirdNET-Analyzer's `segments`).

Reads a `pulse analyze` run's `detections.csv` and cuts, per species, up to `max_segments` detections at or
above `min_conf` out of their recordings, at the recording's own rate, channels and bit depth. Detections are
drawn at random (seeded) rather than the best first, so that the share of clips a listener confirms estimates
the detector's precision at that threshold, as BirdNET-Analyzer's segments are drawn. A clip shorter than
`seq_length` is widened around its middle (shifted to stay inside the recording); one longer than
MAX_CLIP_S keeps its first MAX_CLIP_S seconds (a run merged by --merge-consecutive can last hours).

Clips are written atomically as `OUT/<Scientific name>/<confidence>_<recording>_<start>s.wav` (with a short hash of
the path where two recordings of the table share a name); with `plots`, each gets a spectrogram beside it (`.png`,
the detection boxed), to check by eye as well as by ear. `OUT/segments.json` records the settings and the table's
hash: a rerun with both the same keeps the clips it finds and adds what is missing; another table or other settings
need another --out, so that one folder never mixes two draws. A recording that cannot be opened is one line and one
row of `OUT/errors.csv`, and its other clips are not tried; so is one the run's journal says changed since it was
analysed (another card's recording copied over it, say) or was read otherwise then (`pulse.analyze.read_otherwise`).
A clip over a FLAC's damage is the part that reads holding most of the detection (`readable_part`), as analyze
scored the audio around it; such a clip, or one a recording shorter than `seq_length` cuts short, is a `Shortened`
row of errors.csv saying which part of the recording it is (also when a rerun keeps it); a clip none of whose
detection can be read, or that cannot be written (a folder where it goes), is its own row; a full or read-only --out
stops the run, keeping the clips cut and errors.csv so far, as Ctrl-C does (saying how many clips were written: the
same command cuts the rest).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from export.atomic import (error_line, fails_for_folder, file_in_the_way, from_utf8_text, stop_if_unwritable,
                           utf8_text, write_bytes, write_json)
from export.files import name_within_limit, portable_characters, portable_name
from export.folder_lock import exclusive
from export.jsonconfig import read_json
from export.progress import progress
from export.tables import read_spreadsheet_csv, spreadsheet_number
from pulse.analyze import read_otherwise
from pulse.config import MAX_CLIP_S, SegmentConfig
from pulse.discovery import CLIPS_RECORD
from pulse.io import (AudioInfo, AudioReadError, audio_info, libsndfile_reason, open_audio, read_frames,
                      readable_parts, sndfile_name)
from pulse.journal import Journal
from pulse.pieced import HeldSoundFile, ctrl_c_held
from pulse.model_names import model_band
from pulse.writers import write_errors
from pulse.writers.detections_csv import CSV_COLUMNS

log = logging.getLogger(__name__)

@dataclass
class Summary:
    clips_written: int = 0  # .wav files written, also one whose plot then failed
    clips_kept: int = 0  # found from an earlier run with the same settings
    clips_failed: int = 0  # a part of a recording that could not be read, or a clip not written
    plots_written: int = 0
    plots_failed: int = 0  # a plot not written: its clip is there, written or kept
    clips_shortened: int = 0  # written or kept shorter than asked for: a row of errors.csv says which part it is
    files_failed: int = 0  # recordings that could not be opened


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
        chosen += [rows[i] for i in sorted(rng.permutation(len(rows))[:cfg.max_segments])]
    return chosen


def folder_name(label: str) -> str:
    """A species label as one folder name (no separators, no '..', none of the characters Windows refuses)."""
    return portable_name(label.replace("/", "_").strip(" .")) or "_"


def clip_names(detections: list[dict], chosen: list[dict]) -> list[Path]:
    """Names that depend on the detection and the table alone (not on what else was drawn), so reruns find them."""
    stems: dict[str, set[str]] = {}  # by the name a clip gets on a FAT card or Windows: in any case, '_' for ':'
    for d in detections:  # characters only: after the score, CON is no device's name
        stems.setdefault(portable_characters(Path(d["file"]).stem).casefold(), set()).add(d["file"])
    names = []
    for d in chosen:
        stem = portable_characters(Path(d["file"]).stem)
        if len(stems[stem.casefold()]) > 1:  # two cards' REC001.WAV; REC001.WAV and rec001.wav
            stem += "_" + hashlib.sha1(d["file"].encode("utf-8", "surrogateescape")).hexdigest()[:6]
        start = f"{d['start_s']:.3f}".rstrip("0").rstrip(".")
        names.append(Path(folder_name(d["label"])) / name_within_limit(f"{d['score']:.3f}_{stem}_{start}s", ".wav"))
    return names


def results_table(results: Path) -> Path:
    """The detections.csv of a `pulse analyze` --out folder, or the table itself."""
    return (results / "detections.csv" if results.is_dir() else results).resolve()


def read_detections(path: Path) -> list[dict]:
    """The rows of a run's detections.csv, with pulse/schema.py's names; as Excel saves it again too (in a French or
    German locale: ';' between columns, '0,87' for 0.87)."""
    names = {column: name for name, column in CSV_COLUMNS.items()}
    try:
        table = read_spreadsheet_csv(path, CSV_COLUMNS.values())
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the detections ({exc.strerror}); give a `pulse analyze` --out "
                         "folder (run with --format including csv) or its detections.csv") from None
    except pd.errors.ParserError:  # rows of other widths: the run's config.json, a log
        table = pd.DataFrame()
    if not set(names) <= set(table.columns):
        raise ValueError(f"{path}: not a `pulse analyze` detections.csv (needs the columns "
                         f"{', '.join(CSV_COLUMNS.values())})")
    detections = []
    for line, row in enumerate(table.to_dict("records"), start=2):
        d = {names[column]: row[column] for column in names}
        if not d["file"] or not d["label"]:
            raise ValueError(f"{path}, line {line}: no recording or species (a row cut short?)")
        d["file"] = from_utf8_text(d["file"])  # the name to open
        try:
            detections.append({**d, "start_s": spreadsheet_number(d["start_s"]),
                               "end_s": spreadsheet_number(d["end_s"]), "score": spreadsheet_number(d["score"])})
        except (TypeError, ValueError):
            raise ValueError(f"{path}, line {line}: a start, end or confidence that is not a number") from None
    return detections


def analysis_record(table: Path) -> dict:
    """The config.json `pulse analyze` wrote beside `table` ({} if none): the folder it ran in, where relative
    recording paths start, and its settings."""
    try:
        record = json.loads((table.parent / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def clip_length(d: dict, seq_length: float) -> float:
    """Seconds the detection's clip lasts where the recording holds it all (module docstring)."""
    return min(max(d["end_s"] - d["start_s"], seq_length), MAX_CLIP_S)


def clip_span(info: AudioInfo, d: dict, seq_length: float) -> tuple[int, int]:
    """The frames [first, last) of the detection's clip in the recording `info` describes (module docstring)."""
    if d["start_s"] >= info.duration_s:
        raise ValueError(f"starts at {d['start_s']:g} s, after the recording's end ({info.duration_s:.2f} s): "
                         "it changed since it was analysed")
    span, length = d["end_s"] - d["start_s"], clip_length(d, seq_length)
    start = d["start_s"] if span >= seq_length else max(
        0.0, min((d["start_s"] + d["end_s"]) / 2 - length / 2, info.duration_s - length))
    return int(round(start * info.sample_rate)), min(int(round((start + length) * info.sample_rate)), info.frames)


def readable_part(path: Path, info: AudioInfo, first: int, last: int, d: dict) -> tuple[int, np.ndarray] | None:
    """Of a clip [first, last) that did not read whole, the part that reads holding most of detection `d` (its
    first frame and frames): `pulse analyze` scored the audio around the damage. None if none holds any of it."""
    start, end = d["start_s"] * info.sample_rate, d["end_s"] * info.sample_rate
    held = [(min(end, at + len(audio)) - max(start, at), at, audio)
            for at, audio in readable_parts(path, info, first, last)]
    best = max(held, key=lambda part: part[0], default=None)
    return best[1:] if best is not None and best[0] > 0 else None


class _Recordings:
    """The recording clips are being cut from, kept open from one clip to the next: in a FLAC whose header does
    not give its length, a seek in a newly opened file decodes from the start, while one in an open file decodes
    from where it is, so clips taken in order decode such a file about once."""

    def __init__(self):
        self.path, self.info, self.file = None, None, None

    def open(self, path: Path) -> AudioInfo:
        if path != self.path or self.file is None:
            self.close()
            info = audio_info(path)
            self.file, self.info, self.path = open_audio(path, 0, info), info, path
        return self.info

    def read(self, first: int, last: int) -> np.ndarray:
        """Frames [first, last) of the open recording. After a read that failed or reached the end the file is
        closed, to be opened anew: libsndfile cannot seek after reaching the end of a FLAC without its length."""
        try:
            audio = read_frames(self.file, self.info, first, last - first)
        except Exception:
            self.close()
            raise
        if last >= self.info.frames:
            self.close()
        return audio

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        self.path, self.info, self.file = None, None, None


def clip_subtype(source: str, audio_format: str = "WAV") -> str:
    """The subtype that keeps what the recording holds: in a WAV 24-bit stays 24-bit, float stays float; a FLAC
    holds at most 24 bits, so deeper or float recordings become 24-bit."""
    wav = {"PCM_24": "PCM_24", "PCM_32": "PCM_32", "FLOAT": "FLOAT", "DOUBLE": "FLOAT"}.get(source, "PCM_16")
    return wav if audio_format == "WAV" else "PCM_16" if wav == "PCM_16" else "PCM_24"


def analysed_band(analysis: dict) -> tuple[float, float] | None:
    """The band (Hz) the analysing model heard, from the run's config.json (None without one): its Raven tables' Low
    and High Freq."""
    metadata = analysis.get("model_metadata")
    if not isinstance(metadata, dict):
        return None
    try:
        return model_band(metadata)
    except (KeyError, TypeError, ValueError):  # another tool's config.json
        return None


def clip_plot(audio: np.ndarray, rate: int, clip_start_s: float, d: dict, path: Path,
              band: tuple[float, float] | None) -> None:
    """The clip's spectrogram with its detection boxed over the model's `band` up to the clip's Nyquist frequency, as
    the run's Raven table boxes it (detections.csv holds no frequencies; without a band, the whole clip's): a box up
    to 192 kHz on a 384 kHz AudioMoth clip suggested the model used the ultrasound it never hears."""
    from pulse.plots import save_png, spectrogram_figure

    low_hz, high_hz = band or (0.0, rate / 2)
    box = pd.DataFrame([{"file": d["file"], "channel": "", "start_s": d["start_s"] - clip_start_s,
                         "end_s": d["end_s"] - clip_start_s, "low_hz": low_hz, "high_hz": min(high_hz, rate / 2),
                         "label": d["label"],
                         "common_name": d["common_name"], "code": d["common_name"] or d["label"], "score": d["score"]}])
    title = f"{d['label']} {d['score']:.3f}: {utf8_text(Path(d['file']).name)} from {clip_start_s:.2f} s"
    save_png(spectrogram_figure(audio.mean(axis=1), rate, box, title), path)


def extract_segments(results: str | Path, out: str | Path, cfg: SegmentConfig = SegmentConfig(),
                     audio_root: str | Path | None = None, plots: bool = False) -> Summary:
    """Write the chosen detections' clips under `out` (and, with `plots`, their spectrograms, also for clips an
    earlier run wrote); see the module docstring."""
    for bad, message in ((cfg.max_segments < 1, f"--max-segments is at least 1, got {cfg.max_segments}"),
                         (cfg.seq_length <= 0, f"--seq-length is above 0 s, got {cfg.seq_length:g}"),
                         (not 0.0 <= cfg.min_conf <= 1.0, f"--min-conf is between 0 and 1, got {cfg.min_conf:g}")):
        if bad:
            raise ValueError(message)
    out, table = Path(out), results_table(Path(results))
    if blocker := file_in_the_way(out):
        raise ValueError(f"{blocker}: --out must be a folder, and this is a file")
    detections, analysis = read_detections(table), analysis_record(table)
    working_dir, settings = analysis.get("working_dir"), analysis.get("config")
    root = Path(audio_root) if audio_root is not None else Path(working_dir) if isinstance(working_dir, str) else None
    kept_at = settings.get("min_conf") if isinstance(settings, dict) else None
    # The default --min-conf below the analysis's own is no request to be told about (a user who analysed at 0.5
    # and cut clips without the option was warned of an option never given).
    if isinstance(kept_at, (int, float)) and cfg.min_conf < kept_at and cfg.min_conf != SegmentConfig().min_conf:
        log.warning("%s: --min-conf %g is below the %g the analysis kept detections at, so no clip scores under %g "
                    "(analyse again with a lower --min-conf for them)", table, cfg.min_conf, kept_at, kept_at)
    with stop_if_unwritable(out), exclusive(out, "pulse segments"):  # one run at a time in --out
        return _cut_clips(detections, table, out, cfg, root, plots, analysed_band(analysis))


def _cut_clips(detections: list[dict], table: Path, out: Path, cfg: SegmentConfig, root: Path | None,
               plots: bool, band: tuple[float, float] | None) -> Summary:
    """`extract_segments` once its table is read and --out held; `band`: the analysing model's (`analysed_band`)."""
    record = {"results": str(table), "results_sha1": hashlib.sha1(table.read_bytes()).hexdigest(),
              "settings": cfg.to_dict()}
    with_settings = out / CLIPS_RECORD
    if with_settings.is_file() and read_json(with_settings) != record:
        raise ValueError(f"{out}: holds clips cut from other results or with other settings ({with_settings}); "
                         "use another --out, so that one folder holds one draw")
    journal = Journal(table.parent / ".pulse" / "journal", "")  # the run's record of what it analysed, if beside it
    chosen = choose(detections, cfg)
    # In recording order (see _Recordings); the names, and so what a rerun finds, do not depend on it.
    todo = sorted(zip(chosen, clip_names(detections, chosen)), key=lambda pair: (pair[0]["file"], pair[0]["start_s"]))
    cutter = ClipCutter(cfg.seq_length, root, plots, band, journal)
    with cutter.saying_ctrl_c(out):  # from segments.json on: before the first clip or after the last too
        write_json(with_settings, record)
        try:
            with contextlib.closing(cutter.recordings), progress(todo, unit="clip") as clips:
                for d, name in clips:
                    cutter.cut(d, out / name)
            cutter.tried_all = True
        finally:  # also when the run stops (Ctrl-C, a full --out): what was said of the clips so far is kept
            write_errors(out / "errors.csv", cutter.errors)
        cutter.summary.files_failed = len(cutter.unopened)
        if any(not Path(f).is_absolute() for f in cutter.unopened):
            log.warning("detections.csv names recordings relative to where `pulse analyze` ran (%s); if they moved, "
                        "give --audio-root", root or "not recorded")
    return cutter.summary


class ClipCutter:
    """Clips cut one after another, and what was said of them: the counts, the rows of errors.csv, and the
    recordings that could not be opened (their other clips are not tried). Without a `journal` (clips of
    annotations, not of a run) recordings are taken as they are; `audio_format` WAV or FLAC (`clip_subtype`)."""

    def __init__(self, seq_length: float, root: Path | None, plots: bool, band: tuple[float, float] | None,
                 journal: Journal | None, audio_format: str = "WAV"):
        self.seq_length, self.root, self.plots, self.band = seq_length, root, plots, band
        self.journal, self.audio_format, self.recordings = journal, audio_format, _Recordings()
        self.summary, self.errors, self.unopened = Summary(), [], set()
        self.tried_all = False  # every clip cut, kept or failed: only what is said of them is left to write

    def cut(self, d: dict, target: Path) -> None:
        """Detection `d`'s clip at `target` (and its plot): kept from an earlier run, written, or a row of
        errors.csv; a full or read-only --out raises."""
        plot = target.with_suffix(".png") if self.plots else None
        if target.is_file() and (plot is None or plot.is_file()) and not self._kept_short(target, d):
            self.summary.clips_kept += 1
            return
        if d["file"] in self.unopened:
            return
        path = Path(d["file"])
        if self.root is not None and not path.is_absolute():
            path = self.root / path
        try:
            info, subtype = self._open(path)
        except (AudioReadError, sf.LibsndfileError, RuntimeError) as exc:
            self.unopened.add(d["file"])
            self.errors.append((str(path), "open", type(exc).__name__, getattr(exc, "reason", str(exc))))
            log.warning("%s", exc if isinstance(exc, AudioReadError) else f"{path}: {exc}")
            return
        try:
            first, last = clip_span(info, d, self.seq_length)
            audio = self.recordings.read(first, last)
            why, part = f"the recording ends at {info.duration_s:.2f} s", "before it"  # said where it is shorter
        except ValueError as exc:
            self._clip_failed(path, d, "clip", exc, str(exc))
            return
        except (sf.LibsndfileError, RuntimeError) as exc:  # this clip's part of the recording, as analyze says it
            reason = f"damaged or cut short here ({libsndfile_reason(exc)})"
            if (readable := readable_part(path, info, first, last, d)) is None:
                self._clip_failed(path, d, "clip", exc, f"{reason}: no clip")
                return
            first, audio = readable
            why, part = reason, "that read"
        if len(audio) < round(clip_length(d, self.seq_length) * info.sample_rate) - 1:
            said = (f"{why}: the clip is the {first / info.sample_rate:.2f}-"
                    f"{(first + len(audio)) / info.sample_rate:.2f} s {part}")
            self.summary.clips_shortened += 1
            self.errors.append((str(path), "clip", "Shortened", f"{d['start_s']:g}-{d['end_s']:g} s: {said}"))
            log.warning("%s: %g-%g s: %s", path, d["start_s"], d["end_s"], said)
        try:
            self._save_clip(audio, info.sample_rate, subtype, target)
        except OSError as exc:
            self._write_failed(path, d, exc, plot=False)
            return
        if plot is not None and not plot.is_file():
            try:
                with ctrl_c_held():  # written and counted, or neither, as a clip is
                    clip_plot(audio, info.sample_rate, first / info.sample_rate, d, plot, self.band)
                    self.summary.plots_written += 1
            except OSError as exc:
                self._write_failed(path, d, exc, plot=True)

    @contextlib.contextmanager
    def saying_ctrl_c(self, out: Path) -> Iterator[None]:
        """Ctrl-C in the block: one line of what is done, as `pulse analyze` says it; finished clips are kept, and
        only whole ones are there (written atomically), so the same command cuts the rest."""
        try:
            yield
        except KeyboardInterrupt:
            plots = f"{self.summary.plots_written} plot(s) written, " if self.plots else ""
            rest = ("every clip was tried: run the same command again for the summary" if self.tried_all else
                    "run the same command again to cut the rest")
            log.warning("interrupted: %d clip(s) written, %d kept from an earlier run, %sin %s; %s",
                        self.summary.clips_written, self.summary.clips_kept, plots, out, rest)
            raise

    def _kept_short(self, clip: Path, d: dict) -> bool:
        """Whether an earlier run's clip is shorter than asked for: cut again (and kept), to say which part it is."""
        try:
            with HeldSoundFile(sndfile_name(clip)) as f:
                frames, rate = f.frames, f.samplerate
        except (sf.LibsndfileError, RuntimeError):  # kept, as before: not this run's to judge
            return False
        return frames < round(clip_length(d, self.seq_length) * rate) - 1

    def _open(self, path: Path) -> tuple[AudioInfo, str]:
        """The recording's info and sample format, unless the run's journal says its detections are not of the
        audio there now."""
        if self.journal is not None and self.journal.replaced(path):
            raise AudioReadError(path, "changed since it was analysed (its size or times are not those the run's "
                                       "journal holds): its clips would be of other audio; run `pulse analyze` on it "
                                       "again first")
        info = self.recordings.open(path)
        if self.journal is not None and read_otherwise(self.journal, path):
            raise AudioReadError(path, "read otherwise by this version of pulse than by the run that analysed it (its "
                                       "rate or length: a GUANO time expansion read since, say): its detections' "
                                       "times are of that reading; run `pulse analyze` on it again first")
        return info, self.recordings.file.subtype  # before reading: a read to the end closes the file

    def _save_clip(self, audio: np.ndarray, rate: int, subtype: str, target: Path) -> None:
        """The clip's audio file, unless an earlier run wrote it (its plot is then added)."""
        if target.is_file():
            self.summary.clips_kept += 1
            return
        buffer = io.BytesIO()
        with ctrl_c_held():
            sf.write(buffer, audio, rate, format=self.audio_format, subtype=clip_subtype(subtype, self.audio_format))
        with ctrl_c_held():  # written and counted, or neither: one raised as the clip was moved in left it uncounted
            write_bytes(target, buffer.getvalue())
            self.summary.clips_written += 1

    def _write_failed(self, path: Path, d: dict, exc: OSError, plot: bool) -> None:
        """A clip or its plot not written, said as `_clip_failed` says it (not os.replace's "[Errno 21] ...: 'X' ->
        'X'"); a full or read-only --out raises, as it would fail for every clip."""
        if fails_for_folder(exc):
            raise exc
        self._clip_failed(path, d, "write", exc, error_line(exc), plot)

    def _clip_failed(self, path: Path, d: dict, stage: str, exc: Exception, said: str, plot: bool = False) -> None:
        """A clip (or only its `plot`) not read or not written: counted, a row of errors.csv and a warning line;
        the run goes on."""
        if plot:
            self.summary.plots_failed += 1
        else:
            self.summary.clips_failed += 1
        self.errors.append((str(path), stage, type(exc).__name__, f"{d['start_s']:g}-{d['end_s']:g} s: {said}"))
        told = f"write failed: {said}" if stage == "write" else said
        log.warning("%s: %g-%g s: %s", path, d["start_s"], d["end_s"], told)
