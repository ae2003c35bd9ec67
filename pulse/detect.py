"""Scores -> detections table: every (window, species) whose score reaches `min_conf`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pulse.schema import Columns, LabelSet, SchemaError, check_score_values, validate_scores

if TYPE_CHECKING:
    import pandas as pd


def detect(scores: pd.DataFrame, label_set: LabelSet, min_conf: float,
           low_hz: float, high_hz: float, channel: int = 1) -> pd.DataFrame:
    """Detections of a scores table (one file or many), sorted by file, time, then score (highest first).

    `low_hz`/`high_hz` give the band a selection box spans; callers clip `high_hz` to the
    recording's Nyquist frequency so that no box reaches above what the file contains. `channel` is
    the analysed audio channel counted from 1 (`schema.detection_channel`).
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
                           channel: int = 1) -> Columns:
    """`detect` from the arrays a scores table is made of, as columns: batch analysis calls this for
    every file, where building a DataFrame cost a quarter of a 3 s recording's output time."""
    check_score_values(scores)
    if scores.shape[1] != len(label_set.labels):
        raise SchemaError(f"{scores.shape[1]} score columns for {len(label_set.labels)} labels")
    rows, cols = np.nonzero(scores >= min_conf)
    files, starts, ends = files[rows], starts_s[rows].astype(float), ends_s[rows].astype(float)
    if (ends <= starts).any() or high_hz <= low_hz:
        raise SchemaError("every detection needs end_s > start_s and high_hz > low_hz")
    score = scores[rows, cols].astype(float)
    order = np.lexsort((-score, starts, np.unique(files, return_inverse=True)[1]))  # file, time, best first
    cols, n = cols[order], len(order)
    return {
        "file": files[order], "channel": np.full(n, channel), "start_s": starts[order], "end_s": ends[order],
        "low_hz": np.full(n, float(low_hz)), "high_hz": np.full(n, float(high_hz)),
        "label": np.asarray(label_set.labels, dtype=object)[cols],
        "common_name": np.asarray(label_set.common_names, dtype=object)[cols],
        "code": np.asarray(label_set.codes, dtype=object)[cols],
        "score": score[order],
    }
