"""How well a detector does on your own site: `pulse assess`, a `pulse analyze` run scored against Raven annotations.

Field ecologists check a detector on a few recordings of their own before trusting it (BirdNET-Analyzer's
`evaluation`, OpenSoundscape's BoxedAnnotations -> clip labels -> scikit-learn metrics). Here the run's per-window
scores (its scores.csv) meet Raven selection tables of the same recordings (Begin Time (s), End Time (s) and a
species column: Species, Annotation, Species Code, Common Name ...): a window is positive for a species when a box
of it overlaps the window by at least `min_overlap_s` seconds, or by half the box where the box is shorter than
twice that (a 0.6 s chirp counts in the window holding most of it, where a fixed 1 s would count it nowhere). A
window overlapping a box by less is a negative, as in OpenSoundscape's clip labels. Only annotated recordings are
assessed: one with a table but no box of a species is a negative for it, one without a table is left out, since
nobody said what is in it.

A table is matched to its recording by name (`site1.Table.1.selections.txt`, `site1.BirdNET.selection.table.txt`,
`site1.txt` -> `site1.wav`), or row by row through a Begin File / Begin Path column where there is one. Where
recordings share a name (AudioMoth names every file by its start time, on every card), the folders tell them apart:
those of a Begin Path, or a table's below the folder given (`annotations/site1/X.Table.1.selections.txt` ->
`cards/site1/X.WAV`), or below the common folder of the tables given one by one (`annotations/*/*.txt`), the
recording whose path ends with most of them being the one. A table made over a sequence of recordings (a card's
files opened in Raven as one, or pulse's `raven_combined`) counts Begin and End Time from the sequence's start: its
File Offset (s), the box's begin in its Begin File, is the time in the recording, and the box lasts End - Begin Time
from there; without a Begin File or Begin Path to say which file, such a table is a line. The sequence's order is
that of its files' starts in it (Begin Time - File Offset); Raven's table does not name its files without boxes: the
run's recordings in the folder of its annotated ones follow the last annotated one before them by name, digits
compared as numbers (rec2, rec10). Those between its first and last annotated file are taken as listened to
(negatives); those before or after are not, as nothing says they were in the sequence. A box running on into a later
file (End File or End Path another) is song up to its file's end and, for the rest of its length, in each file it
runs through from its start (each as long as its last window's end). Annotation values are matched to the model's
species by scientific name, common name or code, case and '_' for ' ' aside; Channel and Low / High Freq (Hz) are not
read, as pulse scores each window across the band, of one channel or the mix.
What cannot be used is one line naming the file (a table without the needed columns, a species the model does not
know, a recording annotated but not analysed), and the rest is assessed.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from export.atomic import atomic_path, write_text
from export.jsonconfig import read_json
from export.tables import nfc, read_spreadsheet_csv, spreadsheet_number
from export.tables import path_key as listed_path
from pulse.config import AssessConfig
from pulse.schema import SCORE_INDEX, LabelSet
from pulse.writers.raven import RavenWriter
from pulse.writers.raven_combined import CombinedRavenWriter

TIME_COLUMNS = ("Begin Time (s)", "End Time (s)")
# Where the species is, first found first: Raven users' own names, then BirdNET-Analyzer's output columns.
SPECIES_COLUMNS = ("Species", "Annotation", "Label", "Class", "Species Code", "Scientific Name", "Common Name")
RECORDING_COLUMNS = ("Begin Path", "Begin File")  # Raven's measurements naming each box's recording
OFFSET_COLUMN = "File Offset (s)"  # Raven's time of a box's begin in its Begin File
END_COLUMNS = ("End Path", "End File")  # the recording a box ends in, in a table over a sequence of files
TABLE_SUFFIX = re.compile(r"(\.table\.\d+)?(\.birdnet|\.pulse)?(\.selections?)?(\.table)?\.(txt|csv)$", re.IGNORECASE)
RESULT_NAMES = ("assessment.csv", "precision_recall.png", "problems.txt")

log = logging.getLogger(__name__)


@dataclass
class Annotations:
    """Boxes of known species (recording, begin_s, end_s, label, and runs_on: the recording a box ends in where that
    is a later one of a sequence, else ''), the recordings annotated, those of each table over a sequence of files
    with their start in it (Begin Time - File Offset; NaN for one only a box's end is in), and what was left out; a
    recording is named by its `path_key`, as far as the table says its folders."""

    boxes: pd.DataFrame
    recordings: set[str]
    problems: list[str]
    sequences: list[dict[str, float]]


def recording_key(name: str) -> str:
    """A recording as tables and scores.csv both name it: its file name without folders or audio suffix (under NFC,
    as `listed_file` compares names: a Mac writes a table's names decomposed)."""
    return Path(listed_path(name)).stem.casefold()


def path_key(name: str) -> str:
    """A recording's path as far as it is known, to tell apart recordings of one name in different folders: its
    components '/'-joined and casefolded, the file's without its suffix (`E:\\Cards\\Site1\\X.WAV` ->
    `e:/cards/site1/x`)."""
    *folders, file = [part for part in listed_path(name).split("/") if part] or [""]
    return "/".join([*folders, recording_key(file)]).casefold()


def table_key(path: Path) -> str:
    """The recording a table is of, from the table's name (Raven's `X.Table.1.selections.txt`, BirdNET's
    `X.BirdNET.selection.table.txt`, pulse's `X.pulse.selection.table.txt`)."""
    return nfc(TABLE_SUFFIX.sub("", path.name)).casefold()


def species_names(labels: LabelSet) -> dict[str, str]:
    """Every way an annotator may write a species (scientific, common, code, BirdNET's 'Scientific_Common') -> label."""
    names = {}
    for label, common, code in zip(labels.labels, labels.common_names, labels.codes):
        for name in (label, common, code, f"{label}_{common}"):
            names[_normal(name)] = label
    return names


def _normal(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).casefold()


def table_files(paths: list[Path]) -> list[tuple[Path, str]]:
    """The tables given, and the .txt files below the folders given (Raven saves selection tables as .txt), each with
    the recording it is of: its folders below the folder given and its `table_key`. Tables given one by one (a
    shell's `ann/*/*.txt`) are below their common folder, as if it were given: two sites' same-named tables stay
    apart."""
    def below(folder: Path, table: Path) -> str:
        return nfc("/".join([*table.relative_to(folder).parent.parts, table_key(table)])).casefold()

    files = [Path(os.path.abspath(path)) for path in paths if not path.is_dir()]
    try:
        common = Path(os.path.commonpath([file.parent for file in files])) if files else None
    except ValueError:  # on two Windows drives: no folder above both
        common = None
    found = []
    for path in paths:
        if path.is_dir():
            found += [(p, below(path, p)) for p in sorted(path.rglob("*.txt")) if p.is_file()]
        else:
            table = Path(os.path.abspath(path))
            found.append((path, below(common or table.parent, table)))
    return found


def read_annotations(paths: list[Path], labels: LabelSet | None) -> Annotations:
    """Boxes of the model's species from Raven selection tables (those given, and those below the folders given); a
    table or row that cannot be used is a problem line, and the rest is read. With `labels` None, species are the
    annotator's own: each name is a species (the first spelling of it, '_' read as ' ' and case aside, is its label)
    and a box without one is a problem line and a box of label '' (it still tells where song is)."""
    names = species_names(labels) if labels is not None else {}
    boxes, recordings, problems, unknown, sequences = [], set(), [], {}, []
    tables = table_files(paths)
    if own := [p for p, _ in tables if p.name.endswith((RavenWriter.suffix, CombinedRavenWriter.suffix))]:
        log.warning("%d of the tables are named as `pulse analyze` writes them (e.g. %s): unless corrected by hand, "
                    "they score the run against its own detections", len(own), own[0])
    for path, table_recording in tables:
        try:
            table = read_spreadsheet_csv(path, (*TIME_COLUMNS, "Species"))
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            problems.append(f"{path}: cannot read the table ({getattr(exc, 'strerror', None) or exc})")
            continue
        species_column = next((c for c in SPECIES_COLUMNS if c in table.columns), None)
        missing = [c for c in TIME_COLUMNS if c not in table.columns] + ([] if species_column else ["a species column"])
        if missing:
            problems.append(f"{path}: not a selection table (no {', '.join(missing)}; a species column is one of "
                            f"{', '.join(SPECIES_COLUMNS)})")
            continue
        recording_column = next((c for c in RECORDING_COLUMNS if c in table.columns), None)
        sequence = OFFSET_COLUMN in table.columns and _sequence(table)
        if recording_column is None and sequence:
            problems.append(f"{path}: a table over a sequence of files (File Offset (s) is not Begin Time (s)) without "
                            "a Begin File or Begin Path column naming each box's file; left out")
            continue
        starts = {}  # of each recording of a sequence table, in the sequence
        if "Selection" in table.columns:  # Raven lists each box once per view (Waveform 1, Spectrogram 1); tables of
            # several recordings put together may number each one's boxes from 1
            table = table.drop_duplicates(["Selection", *([recording_column] if recording_column else [])])
        if recording_column is None or table.empty:  # else its rows say which recordings it annotates
            recordings.add(table_recording)
        for line, row in zip(table.index + 2, table.to_dict("records")):
            try:
                begin, end = spreadsheet_number(row[TIME_COLUMNS[0]]), spreadsheet_number(row[TIME_COLUMNS[1]])
                offset = spreadsheet_number(row[OFFSET_COLUMN]) if row.get(OFFSET_COLUMN) else begin
            except ValueError:
                problems.append(f"{path}, line {line}: a begin or end time or file offset that is not a number")
                continue
            if not end > begin:
                problems.append(f"{path}, line {line}: ends at {end:g} s, not after it begins ({begin:g} s)")
                continue
            start, begin, end = begin - offset, offset, offset + (end - begin)  # in its recording, of a sequence
            recording = path_key(row[recording_column]) if recording_column and row[recording_column] \
                else table_recording
            runs_on = _end_recording(row, recording) if recording_column else ""
            recordings.update({recording, runs_on} - {""})
            value = row[species_column]
            if labels is None and _normal(value):  # free text: every name is known
                names.setdefault(_normal(value), " ".join(value.replace("_", " ").split()))
            label = names.get(_normal(value))
            if label is None:
                unknown.setdefault((path, row[species_column]), []).append(line)
                if labels is not None:
                    continue
            boxes.append((recording, begin, end, label or "", runs_on))
            starts[recording] = start
            if runs_on:
                starts.setdefault(runs_on, np.nan)
        if sequence:
            sequences.append(starts)
    for (path, value), lines in unknown.items():  # one line per table and name, however many boxes
        where = ", ".join(map(str, lines[:5])) + (", ..." if len(lines) > 5 else "")
        what = f"of {value or '(no species)'!r}, a species the model does not know" if labels is not None \
            else "without a species"
        problems.append(f"{path}: {len(lines)} box(es) {what} (line{'s' if len(lines) > 1 else ''} {where}); left out")
    return Annotations(pd.DataFrame(boxes, columns=["recording", "begin_s", "end_s", "label", "runs_on"]), recordings,
                       problems, sequences)


def _end_recording(row: dict, recording: str) -> str:
    """The recording a box ends in where Raven's End Path or End File names another than the one it begins in (an
    End File in the folder of its Begin Path), else ''."""
    end = next((row[c] for c in END_COLUMNS if row.get(c)), "")
    key = path_key(end) if end else ""
    if key and "/" not in key and "/" in recording:
        key = f"{recording.rsplit('/', 1)[0]}/{key}"
    same = key == recording or key.endswith(f"/{recording}") or recording.endswith(f"/{key}")  # one with folders
    return "" if same else key


def natural_key(name: str) -> list:
    """A name's sort key with its digits compared as numbers: `rec2` before `rec10`, as a file manager lists them."""
    return [int(part) if n % 2 else part for n, part in enumerate(re.split(r"(\d+)", name.casefold()))]


def sequence_files(sequences: list[dict[str, float]], matched: dict[str, str], files: list[str]) -> list[list[str]]:
    """The `files` each sequence table took in, folder by folder, in the sequence's order, from its first annotated
    file to its last (a listener goes through the files between; a Raven table names neither the files of its
    sequence without boxes nor those before its first box or after its last). A file a box begins in is at its start
    in the sequence (Begin Time - File Offset); another follows the last such file before it by name, digits compared
    as numbers (`rec2` before `rec10`), as a card's files are in order by name where the table does not say."""
    folders = {}
    for file in files:
        folders.setdefault(listed_path(file).rpartition("/")[0], []).append(file)
    found = []
    for sequence in sequences:
        starts = {matched[key]: start for key, start in sequence.items() if key in matched}
        for folder in {listed_path(file).rpartition("/")[0] for file in starts}:
            placed, after = [], None  # (the start of the last file before it a box begins in, its place by name, file)
            by_name = sorted(folders[folder], key=lambda file: natural_key(listed_path(file).rpartition("/")[2]))
            for place, file in enumerate(by_name):
                if not np.isnan(starts.get(file, np.nan)):
                    after = starts[file]
                if after is not None:
                    placed.append((after, place, file))
            order = [file for *_, file in sorted(placed)]
            annotated = [n for n, file in enumerate(order) if file in starts]
            if annotated:
                found.append(order[annotated[0]:annotated[-1] + 1])
    return found


def carry_over(boxes: pd.DataFrame, matched: dict[str, str], length: Callable[[str], float],
               sequences: list[list[str]]) -> pd.DataFrame:
    """The boxes of the `matched` recordings, with the `file` each is in, and each one's part past its file's end
    (`length(file)`: seconds, inf where unknown) as boxes of the files it runs on through, in its sequence's order
    (`sequence_files`) to the one it ends in (where the order does not lead there, that one alone), each from 0 s for
    the rest of its length: a song boxed across files of a sequence is song in each."""
    boxes = boxes.assign(file=boxes["recording"].map(matched), runs_on=boxes["runs_on"].map(matched))
    boxes = boxes.dropna(subset=["file"])
    later = {file: order[n + 1:] for order in sequences for n, file in enumerate(order)}
    rest = []
    for box in boxes[boxes["runs_on"].notna()].to_dict("records"):
        following = later.get(box["file"], [])
        through = following[:following.index(box["runs_on"]) + 1] if box["runs_on"] in following else [box["runs_on"]]
        left = box["end_s"] - length(box["file"])
        for file in through:
            if left <= 0:
                break
            rest.append({**box, "file": file, "begin_s": 0.0, "end_s": left, "runs_on": np.nan})
            left -= length(file)
    return pd.concat([boxes, pd.DataFrame(rest)], ignore_index=True) if rest else boxes


def _sequence(table: pd.DataFrame) -> bool:
    """Whether a table's File Offset differs from its Begin Time (by more than a millisecond: pulse's tables round
    both): Begin Time then counts from the start of a sequence of files."""
    def number(cell) -> float:  # as the rows are read; a cell that is not a number is said of its row
        try:
            return spreadsheet_number(cell)
        except (TypeError, ValueError):
            return np.nan

    offset, begin = (table[column].map(number) for column in (OFFSET_COLUMN, TIME_COLUMNS[0]))
    return bool(((offset - begin).abs() > 1e-3).any())


def window_labels(starts_s: np.ndarray, ends_s: np.ndarray, boxes: pd.DataFrame, min_overlap_s: float) -> np.ndarray:
    """Whether each window holds each box enough to count: an overlap of `min_overlap_s`, or of half a shorter box
    (module docstring). Returns (windows, boxes) booleans."""
    begin, end = boxes["begin_s"].to_numpy(float), boxes["end_s"].to_numpy(float)
    overlap = np.minimum(ends_s[:, None], end) - np.maximum(starts_s[:, None], begin)
    return overlap >= np.minimum(min_overlap_s, (end - begin) / 2) - 1e-9


def species_metrics(positive: np.ndarray, scores: np.ndarray, min_conf: float) -> dict:
    """Precision, recall and F1 at `min_conf` (a window scoring at least it is a detection, as in `pulse analyze`),
    average precision and ROC AUC; NaN where undefined, with the reason in `note`."""
    detected = scores >= min_conf
    tp, fp, fn = int((detected & positive).sum()), int((detected & ~positive).sum()), int((~detected & positive).sum())
    nan = float("nan")
    row = {"positive_windows": int(positive.sum()), "tp": tp, "fp": fp, "fn": fn,
           "precision": tp / (tp + fp) if tp + fp else nan, "recall": nan, "f1": nan, "average_precision": nan,
           "roc_auc": nan, "note": ""}
    if not positive.any():
        row["note"] = "no window annotated with it: recall, F1, AP and AUC undefined"
        return row
    row["recall"] = tp / (tp + fn)
    row["f1"] = 2 * tp / (2 * tp + fp + fn)
    row["average_precision"] = float(average_precision_score(positive, scores))
    if positive.all():
        row["note"] = "every window annotated with it: ROC AUC undefined"
    else:
        row["roc_auc"] = float(roc_auc_score(positive, scores))
    return row


def read_scores(results: Path) -> tuple[pd.DataFrame, LabelSet]:
    """A run's scores.csv (from its --out folder or the file itself) and the model's species from its config.json."""
    path = results / "scores.csv" if results.is_dir() else results
    try:
        scores = pd.read_csv(path, dtype={"file": str}, keep_default_na=False)
    except FileNotFoundError:
        raise ValueError(f"{path}: no per-window scores; run `pulse analyze` with --format including scores (the "
                         "same command and --out again with it adds scores.csv from the run's saved scores, without "
                         "analysing again)") from None
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the scores ({exc})") from None
    species = [c for c in scores.columns if c not in SCORE_INDEX]
    if not set(SCORE_INDEX) <= set(scores.columns) or not species:
        raise ValueError(f"{path}: not a `pulse analyze` scores.csv (needs {', '.join(SCORE_INDEX)} and a column "
                         "per species)")
    try:  # common names and codes, for annotations that use them
        labels = LabelSet.from_metadata(read_json(path.parent / "config.json")["model_metadata"])
    except (OSError, ValueError, KeyError, TypeError):
        labels = None
    if labels is None or list(labels.labels) != species:  # no config.json of this run beside it: the labels alone
        labels = LabelSet.from_metadata({"labels": species})
    return scores, labels


def match_recordings(annotated: set[str], files: list[str], among: str = "the run's scores.csv (not analysed?)",
                     kind: str = "analysed recordings") -> tuple[dict[str, str], list[str]]:
    """Each annotated recording's file: of the `files` (`kind`, listed in `among`) of its name, the one whose path
    ends with most of the folders the annotation gives; where none or several are that one, a problem line, and it is
    left out."""
    named = {}
    for file in files:
        parts = path_key(file).split("/")
        named.setdefault(parts[-1], []).append((parts, file))
    matched, problems = {}, []
    for key in sorted(annotated):
        parts = key.split("/")
        candidates = named.get(parts[-1], [])
        shared = [sum(1 for _ in takewhile(lambda pair: pair[0] == pair[1], zip(parts[::-1], them[::-1])))
                  for them, _ in candidates]
        best = [file for n, (_, file) in zip(shared, candidates) if n == max(shared, default=0)]
        if not best:
            problems.append(f"{key}: annotated but not in {among}; left out")
        elif len(best) > 1:
            problems.append(f"{key}: annotated, and {len(best)} {kind} share that name "
                            f"({', '.join(best)}); left out")
        else:
            matched[key] = best[0]
    return matched, problems


def assess(scores: pd.DataFrame, labels: LabelSet, annotations: Annotations,
           cfg: AssessConfig) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Per-species metrics (and a macro row) over the windows of the annotated recordings, the window labels they
    were computed from, and the problems found on the way."""
    files = list(scores["file"].unique())
    matched, unmatched = match_recordings(annotations.recordings, files)
    problems = annotations.problems + unmatched
    sequences = sequence_files(annotations.sequences, matched, files)
    assessed = scores[scores["file"].isin(set(matched.values()).union(*sequences))]
    truth = np.zeros((len(assessed), len(labels.labels)), bool)
    ends = scores.groupby("file")["end_s"].max()  # the last window ends at the recording's end
    boxes = carry_over(annotations.boxes, matched, lambda file: ends.get(file, np.inf), sequences)
    counted = annotations.boxes["recording"].isin(matched.keys())  # a box carried over is still one box
    for file, rows in assessed.groupby("file").indices.items():
        here = boxes[boxes["file"] == file]
        hits = window_labels(assessed["start_s"].to_numpy(float)[rows], assessed["end_s"].to_numpy(float)[rows],
                             here, cfg.min_overlap_s)
        for j, label in enumerate(labels.labels):
            truth[rows, j] = hits[:, (here["label"] == label).to_numpy()].any(axis=1)
    table = []
    for j, (label, common, code) in enumerate(zip(labels.labels, labels.common_names, labels.codes)):
        row = species_metrics(truth[:, j], assessed[label].to_numpy(float), cfg.min_conf)
        table.append({"species": label, "common_name": common, "code": code, "windows": len(assessed),
                      "boxes": int((annotations.boxes["label"][counted] == label).sum()), **row})
    table = pd.DataFrame(table)
    present = table[table["positive_windows"] > 0]
    macro = {"species": f"macro ({len(present)} species with annotated windows)", "common_name": "", "code": "",
             "windows": len(assessed), "boxes": int(table["boxes"].sum()),
             **{k: int(present[k].sum()) for k in ("positive_windows", "tp", "fp", "fn")},
             **{k: float(present[k].mean()) for k in ("precision", "recall", "f1", "average_precision", "roc_auc")},
             "note": "mean over those species (NaN precision or AUC left out)"}
    labelled = pd.DataFrame(truth.astype(int), columns=list(labels.labels), index=assessed.index)
    metrics = pd.concat([table, pd.DataFrame([macro])], ignore_index=True)
    return metrics, assessed[list(SCORE_INDEX)].join(labelled), problems


def pr_figure(scores: pd.DataFrame, truth: pd.DataFrame, metrics: pd.DataFrame, min_conf: float):
    """Precision-recall curves of the species with annotated windows, each one's point at `min_conf` marked."""
    from pulse.plots import PlotConfig, new_figure, readable

    figure = new_figure(PlotConfig(width_px=700, height_px=520))
    axes = figure.add_subplot()
    species = metrics.iloc[:-1]  # the macro row last
    for row in species[species["positive_windows"] > 0].itertuples():
        precision, recall, _ = precision_recall_curve(truth[row.species], scores[row.species])
        line, = axes.step(recall, precision, where="post", label=f"{row.code} AP {row.average_precision:.2f}")
        if not np.isnan(row.precision):
            axes.plot(row.recall, row.precision, "o", color=line.get_color())
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02),
             title=f"per-window precision-recall (dots: at --min-conf {min_conf:g})")
    axes.legend(loc="lower left", fontsize="small")
    return readable(figure)


def run_assessment(annotations: list[Path], results: Path, out: Path,
                   cfg: AssessConfig) -> tuple[pd.DataFrame, list[str]]:
    """Read, assess, and write OUT/assessment.csv, precision_recall.png and problems.txt (one line each)."""
    from pulse.plots import save_png

    scores, labels = read_scores(results)
    annotated = read_annotations(annotations, labels)
    metrics, truth, problems = assess(scores, labels, annotated, cfg)
    if not len(truth):
        raise ValueError(f"no annotated recording is in {results}'s scores ({len(problems)} problem(s)"
                         + (f"; first: {problems[0]}" if problems else "; no selection tables found") + ")")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / RESULT_NAMES[0]) as tmp:
        metrics.to_csv(tmp, index=False, float_format="%.4f")
    save_png(pr_figure(scores.loc[truth.index], truth, metrics, cfg.min_conf), out / RESULT_NAMES[1])
    write_text(out / RESULT_NAMES[2], "".join(f"{line}\n" for line in problems))
    return metrics, problems
