"""Scores -> detections table: every (window, species) whose score reaches `min_conf`, optionally with a
species' consecutive windows merged into one row, as BirdNET-Analyzer's --merge_consecutive merges them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pulse.schema import DETECTION_COLUMNS, Columns, LabelSet, SchemaError, check_score_values, validate_scores

if TYPE_CHECKING:
    import pandas as pd


def detect(scores: pd.DataFrame, label_set: LabelSet, min_conf: float,
           low_hz: float, high_hz: float, channel: int = 1) -> pd.DataFrame:
    """Detections of a scores table (one file or many), sorted by file, time, then score (highest first).

    `low_hz`/`high_hz` give the band a selection box spans; callers clip `high_hz` to the
    recording's Nyquist frequency so that no box reaches above what the file contains. `channel` is
    the analysed audio channel counted from 1 (`schema.detection_channel`). One row per (window, species):
    `merge_consecutive_table` joins a species' consecutive windows.
    """
    import pandas as pd

    validate_scores(scores)
    if tuple(scores.columns) != label_set.labels:
        raise SchemaError("score columns do not match the model's labels")
    level = scores.index.get_level_values
    return pd.DataFrame(detections_from_arrays(level("file").to_numpy(object), level("start_s").to_numpy(float),
                                               level("end_s").to_numpy(float), scores.to_numpy(), label_set,
                                               min_conf, low_hz, high_hz, channel))


def detections_from_arrays(files: np.ndarray, starts_s: np.ndarray, ends_s: np.ndarray, scores: np.ndarray,
                           label_set: LabelSet, min_conf: float, low_hz: float, high_hz: float,
                           channel: int = 1, max_windows: int = 1) -> Columns:
    """`detect` from the arrays a scores table is made of, as columns: batch analysis calls this for
    every file, where building a DataFrame cost a quarter of a 3 s recording's output time. `max_windows` > 1
    merges up to that many consecutive windows of a species into a row (`merge_consecutive`); 0 and 1 do not,
    as in BirdNET-Analyzer."""
    check_score_values(scores)
    if scores.shape[1] != len(label_set.labels):
        raise SchemaError(f"{scores.shape[1]} score columns for {len(label_set.labels)} labels")
    rows, cols = np.nonzero(scores >= min_conf)
    files, starts, ends = files[rows], starts_s[rows].astype(float), ends_s[rows].astype(float)
    if (ends <= starts).any() or high_hz <= low_hz:
        raise SchemaError("every detection needs end_s > start_s and high_hz > low_hz")
    score = scores[rows, cols].astype(float)
    n = len(rows)
    found = {
        "file": files, "channel": np.full(n, channel), "start_s": starts, "end_s": ends,
        "low_hz": np.full(n, float(low_hz)), "high_hz": np.full(n, float(high_hz)),
        "label": np.asarray(label_set.labels, dtype=object)[cols],
        "common_name": np.asarray(label_set.common_names, dtype=object)[cols],
        "code": np.asarray(label_set.codes, dtype=object)[cols],
        "score": score,
    }
    return merge_consecutive(found, max_windows) if max_windows > 1 else _in_table_order(found)


def merge_consecutive(detections: Columns, max_windows: int | None = None) -> Columns:
    """A species' detections in touching or overlapping windows of one file merged into one row (first start,
    last end), `max_windows` windows a row at most (None: the whole run).

    A cricket singing through the night is then a few rows, not one per 3 s window. The row's score is the mean
    of its three best window scores, as BirdNET-Analyzer's --merge_consecutive scores a merged detection: one
    loud window does not carry a run, and the score stays at or above the `min_conf` every window reached.
    """
    if max_windows is not None and max_windows < 1:
        raise ValueError(f"max_windows is at least 1 (1: a row per window), got {max_windows}")
    file_ids = np.unique(detections["file"], return_inverse=True)[1]
    label_ids = np.unique(detections["label"], return_inverse=True)[1]
    starts, ends, channels = detections["start_s"], detections["end_s"], detections["channel"]
    runs: list[list[int]] = []
    run_end = -np.inf
    for i in np.lexsort((starts, label_ids, channels, file_ids)):  # a species' windows in time order
        run = runs[-1] if runs else []
        if (run and (file_ids[i], channels[i], label_ids[i]) == (file_ids[run[0]], channels[run[0]], label_ids[run[0]])
                and starts[i] <= run_end + 1e-6 and (max_windows is None or len(run) < max_windows)):
            run.append(i)
            run_end = max(run_end, ends[i])
        else:
            runs.append([int(i)])
            run_end = ends[i]
    first = np.array([run[0] for run in runs], dtype=int)
    merged = {c: detections[c][first] for c in DETECTION_COLUMNS}
    merged["end_s"] = np.array([ends[run].max() for run in runs], dtype=float)
    merged["score"] = np.array([np.sort(detections["score"][run])[-3:].mean() for run in runs], dtype=float)
    return _in_table_order(merged)


def merge_consecutive_table(detections: pd.DataFrame, max_windows: int | None = None) -> pd.DataFrame:
    """`merge_consecutive` of a detections table (a DataFrame, where `merge_consecutive` takes `Columns`)."""
    import pandas as pd

    return pd.DataFrame(merge_consecutive({c: detections[c].to_numpy() for c in DETECTION_COLUMNS}, max_windows))


def _in_table_order(detections: Columns) -> Columns:
    """Rows by file name, then start time, best score first: the order every writer expects."""
    file_ids = np.unique(detections["file"], return_inverse=True)[1]
    order = np.lexsort((-detections["score"], detections["start_s"], file_ids))
    return {c: detections[c][order] for c in DETECTION_COLUMNS}
