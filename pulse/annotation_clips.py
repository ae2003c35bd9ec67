"""Training clips from your own annotations: `pulse clips-from-annotations`, Raven boxes -> species folders.

Researchers who boxed songs in their own long recordings with Raven retrain from them as OpenSoundscape users train
from BoxedAnnotations; PULSE trains from weakly labelled clips in species folders (`pulse make-manifest`). Each box of
a selection table is cut from its recording into `OUT/<Species_name>/<recording>_<begin>-<end>s.flac`, at the
recording's own rate and channels (FLAC: 24-bit at most), named by its recording (its folders below --audio joined
by '_') and the box's times. Tables are read and matched to recordings as `pulse assess` reads them
(`pulse.assess`: species columns, Begin Path / Begin File, folders telling same-named recordings apart, File Offset
of a table over a sequence of files); species are the annotator's own names, any text ('_' read as ' ', case aside),
but one naming a species of the bundled model (its common name or code too, as `pulse analyze`'s own tables name
them) is its scientific name, which make-manifest and training take for that species. Clips are cut as `pulse
segments` cuts them (`pulse.segments.ClipCutter`: damaged audio, atomic writes, errors.csv). A box running on past its
recording's end into a sequence's later file (its End File another) is cut up to that end, and its rest from the
start of each file it runs through, in the sequence's order as `pulse assess` takes it.

- A box shorter than the model's window (3 s) is the 3 s around its middle, shifted to stay inside the recording, as
  training crops 3 s windows; a longer one is kept whole, in equal pieces of at most MAX_CLIP_S (60 s) where longer:
  training crops its windows from the whole song.
- Training gives each clip its folder's species and none of the others (it mixes species itself), so a clip that
  also holds another species' box would teach the model to miss that one. Such a box is not cut, and counted (one
  line per recording); "holds" is as `pulse assess` counts a box in a window: an overlap of 1 s, or half a shorter box.
- With `background`, the stretches of each annotated recording that no box covers, at least 3 s long (in pieces of at
  most 60 s), go to `OUT/Background/`: the table is taken to box every song. So do the files of a table over a
  sequence without a box that `pulse assess` takes as listened to (`pulse.assess.sequence_files`), whole. `pulse
  make-manifest OUT` leaves that folder out and says how to train on it as background and negatives
  (`"backgrounds": ["OUT/Background"]`).

A table without the needed columns, a box without a species or beyond its recording's end, a table whose recording is
not under --audio, a recording under --audio without a table (nor between a sequence's annotated files), and one that
cannot be read: one line each (also in OUT/problems.txt; unreadable audio in OUT/errors.csv), and the rest is cut. A
rerun keeps the clips it finds and adds what is missing (after Ctrl-C too, which says how many clips were written); a
clip in OUT that the tables no longer give (a box since moved or relabelled) is named in a warning, as make-manifest
would train on it.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import numpy as np
import pandas as pd
import soundfile as sf

from export.artifact import read_onnx_metadata
from export.atomic import file_in_the_way, stop_if_unwritable, write_json, write_text
from export.console import first_three
from export.files import name_within_limit, portable_characters
from export.folder_lock import exclusive
from export.progress import progress
from pulse.assess import (carry_over, match_recordings, read_annotations, sequence_files, species_names,
                          window_labels)
from pulse.config import MAX_CLIP_S, AssessConfig, ModelConfig
from pulse.discovery import ANNOTATION_CLIPS_RECORD, find_audio
from pulse.io import AudioReadError, audio_info
from pulse.model_names import DEFAULT_MODEL
from pulse.schema import LabelSet
from pulse.segments import ClipCutter, clip_span, folder_name
from pulse.writers import write_errors

WINDOW_S = ModelConfig().window_s
BACKGROUND = "Background"  # a folder `pulse make-manifest` takes for no species (manifest.NON_EVENT_FOLDERS)

log = logging.getLogger(__name__)


@dataclass
class Summary:
    clips: Counter = field(default_factory=Counter)  # clips the tables give, per folder (species or Background)
    clips_written: int = 0
    clips_kept: int = 0  # found from an earlier run
    clips_failed: int = 0  # a part of a recording that could not be read, or a clip not written
    clips_shortened: int = 0  # shorter than asked for (a recording under 3 s, a damaged FLAC): a row of errors.csv
    clips_overlapping: int = 0  # not cut: the clip holds another species' box too
    files_failed: int = 0  # recordings that could not be opened
    problems: list[str] = field(default_factory=list)


def pieces(begin_s: float, end_s: float, longest_s: float = MAX_CLIP_S) -> list[tuple[float, float]]:
    """[begin, end) in equal pieces of at most `longest_s`."""
    n = max(1, math.ceil((end_s - begin_s) / longest_s - 1e-9))
    step = (end_s - begin_s) / n
    return [(begin_s + i * step, begin_s + (i + 1) * step) for i in range(n)]


def unboxed(boxes: pd.DataFrame, duration_s: float, shortest_s: float = WINDOW_S) -> list[tuple[float, float]]:
    """The stretches of [0, duration_s) that no box covers, at least `shortest_s` long."""
    stretches, at = [], 0.0
    for begin, end in sorted(zip(boxes["begin_s"], boxes["end_s"])):
        if min(begin, duration_s) - at >= shortest_s:  # a box beyond the end (another recording's?) ends it
            stretches.append((at, min(begin, duration_s)))
        at = max(at, end)
    if duration_s - at >= shortest_s:
        stretches.append((at, duration_s))
    return stretches


def clip_name(relative: PurePath, begin_s: float, end_s: float) -> str:
    """`site1_20250601_210000_12.5-14.2s.flac` for a box at 12.5-14.2 s of `site1/20250601_210000.WAV`."""
    def seconds(value: float) -> str:
        return f"{value:.3f}".rstrip("0").rstrip(".")

    stem = "_".join(portable_characters(part) for part in relative.with_suffix("").parts)
    return name_within_limit(f"{stem}_{seconds(begin_s)}-{seconds(end_s)}s", ".flac")


def model_species(labels: pd.Series) -> pd.Series:
    """The annotators' names of the bundled model's species (scientific or common name, code) as its scientific
    names: verified `pulse analyze` tables (common name and code, no Species column) retrain that species, not one
    named `CHOBIG`. Any other name is kept as written."""
    names = species_names(LabelSet.from_metadata(read_onnx_metadata(DEFAULT_MODEL)))
    return labels.map(lambda label: names.get(label.casefold(), label))  # labels are read with '_' as ' '


def clips_from_annotations(tables: list[Path], audio_root: Path, out: Path, background: bool = False) -> Summary:
    """Cut every box of the `tables` out of its recording under `audio_root` into `out` (module docstring)."""
    if not audio_root.is_dir():
        raise ValueError(f"{audio_root}: --audio must be the folder of the annotated recordings")
    if blocker := file_in_the_way(out):
        raise ValueError(f"{blocker}: --out must be a folder, and this is a file")
    annotations = read_annotations(tables, None)
    annotations.boxes["label"] = model_species(annotations.boxes["label"])
    if not annotations.recordings:
        raise ValueError(f"no selection table could be used in {', '.join(map(str, tables))}"
                         + (f" ({annotations.problems[0]})" if annotations.problems else ""))
    relative = {str(path): name for path, name in find_audio([audio_root], outputs=out)}
    matched, unmatched = match_recordings(annotations.recordings, list(relative), among=f"{audio_root}",
                                          kind=f"recordings under {audio_root}")
    summary = Summary(problems=annotations.problems + unmatched)
    sequences = sequence_files(annotations.sequences, matched, list(relative))
    all_boxes = carry_over(annotations.boxes, matched, lambda file: _duration(Path(file)), sequences)
    # a sequence table's box-free files between its annotated ones were listened to: all background, as in assess
    listened = set().union(*sequences) - set(matched.values())
    annotated = set(matched.values()) | listened
    summary.problems += [f"{file}: no selection table; no clips cut" for file in relative if file not in annotated]
    todo = set(matched.values()) | set(all_boxes["file"]) | (listened if background else set())
    cutter = ClipCutter(WINDOW_S, None, False, None, None, audio_format="FLAC")
    targets = set()
    with stop_if_unwritable(out), exclusive(out, "pulse clips-from-annotations"), cutter.saying_ctrl_c(out):
        write_json(out / ANNOTATION_CLIPS_RECORD, {"tables": sorted(map(str, tables)), "audio": str(audio_root),
                                                   "window_s": WINDOW_S, "background": background})
        try:
            with contextlib.closing(cutter.recordings), progress(sorted(todo), unit="recording") as recordings:
                for file in recordings:
                    boxes = all_boxes[all_boxes["file"] == file]
                    for d, target in _plan(Path(file), relative[file], boxes, background, out, summary, cutter):
                        targets.add(target)
                        cutter.cut(d, target)
            cutter.tried_all = True
        finally:  # also when the run stops (Ctrl-C, a full --out): what was said so far is kept
            write_errors(out / "errors.csv", cutter.errors)
            write_text(out / "problems.txt", "".join(f"{line}\n" for line in summary.problems))
        if stale := sorted(p for p in out.glob("*/*.flac") if p not in targets):
            log.warning("%d clip(s) in %s are of no box in these tables (an earlier run's, before the tables "
                        "changed?), e.g. %s; pulse make-manifest would train on them: delete them, or cut into a new "
                        "--out", len(stale), out, first_three([str(p) for p in stale]))
    summary.clips_written, summary.clips_kept = cutter.summary.clips_written, cutter.summary.clips_kept
    summary.clips_failed, summary.clips_shortened = cutter.summary.clips_failed, cutter.summary.clips_shortened
    return summary


def _duration(path: Path) -> float:
    """A recording's length, or inf where it cannot be opened (nothing is carried past it; said where its clips are
    cut)."""
    try:
        return audio_info(path).duration_s
    except (AudioReadError, sf.LibsndfileError, RuntimeError):
        return math.inf


def _plan(path: Path, relative: PurePath, boxes: pd.DataFrame, background: bool, out: Path, summary: Summary,
          cutter: ClipCutter) -> list[tuple[dict, Path]]:
    """The clips of one recording's `boxes` (and its unboxed stretches), as (span, target); what cannot be cut is
    a problem line, an unreadable recording also a row of errors.csv."""
    try:
        info = audio_info(path)
    except (AudioReadError, sf.LibsndfileError, RuntimeError) as exc:
        summary.files_failed += 1
        summary.problems.append(str(exc) if isinstance(exc, AudioReadError) else f"{path}: {exc}")
        cutter.errors.append((str(path), "open", type(exc).__name__, getattr(exc, "reason", str(exc))))
        return []
    planned, overlapping = [], []
    for box in boxes[boxes["label"] != ""].itertuples():  # those without a species are a problem line already
        if box.begin_s >= info.duration_s:
            summary.problems.append(f"{path}: a box of {box.label} at {box.begin_s:g}-{box.end_s:g} s begins after "
                                    f"the recording's end ({info.duration_s:.2f} s); left out")
            continue
        others = boxes[(boxes["label"] != box.label) & (boxes["label"] != "")]
        for begin, end in pieces(box.begin_s, min(box.end_s, info.duration_s)):
            d = {"file": str(path), "start_s": begin, "end_s": end}
            first, last = clip_span(info, d, WINDOW_S)
            held = window_labels(np.array([first / info.sample_rate]), np.array([last / info.sample_rate]), others,
                                 AssessConfig().min_overlap_s)[0]
            if held.any():
                overlapping.append(f"{box.label} at {begin:g}-{end:g} s with {others['label'][held].iloc[0]}")
                continue
            planned.append((d, out / folder_name(box.label.replace(" ", "_")) / clip_name(relative, begin, end)))
    if background:
        for stretch in unboxed(boxes, info.duration_s):
            planned += [({"file": str(path), "start_s": begin, "end_s": end},
                         out / BACKGROUND / clip_name(relative, begin, end)) for begin, end in pieces(*stretch)]
    if overlapping:
        summary.clips_overlapping += len(overlapping)
        summary.problems.append(f"{path}: {len(overlapping)} clip(s) of boxes not cut, holding another species' "
                                f"box too (a clip trains one species), e.g. {overlapping[0]}")
    summary.clips.update(target.parent.name for _, target in planned)
    return planned
