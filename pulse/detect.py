"""Scores table -> detections table: every (window, species) whose score reaches `min_conf`."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pulse.schema import DETECTION_COLUMNS, LabelSet, SchemaError, empty_detections, validate_detections, validate_scores


def detect(scores: pd.DataFrame, label_set: LabelSet, min_conf: float,
           low_hz: float, high_hz: float, channel: int = 1) -> pd.DataFrame:
    """Detections sorted by file, time, then score (highest first).

    `low_hz`/`high_hz` give the band a selection box spans; callers clip `high_hz` to the
    recording's Nyquist frequency so that no box reaches above what the file contains. `channel` is
    the analysed audio channel counted from 1 (`schema.detection_channel`).
    """
    validate_scores(scores)
    if tuple(scores.columns) != label_set.labels:
        raise SchemaError("score columns do not match the model's labels")
    values = scores.to_numpy()
    rows, cols = np.nonzero(values >= min_conf)
    if not len(rows):
        return empty_detections()
    # Ordered with numpy before the one DataFrame is built: this runs for every file of a batch,
    # and pandas' multi-key sort cost more than the model on a 3 s recording.
    files = scores.index.get_level_values("file").to_numpy(object)[rows]
    starts = scores.index.get_level_values("start_s").to_numpy(float)[rows]
    ends = scores.index.get_level_values("end_s").to_numpy(float)[rows]
    score = values[rows, cols].astype(float)
    order = np.lexsort((-score, starts, pd.factorize(files, sort=True)[0]))  # file, then time, then best first
    cols = cols[order]
    table = pd.DataFrame({
        "file": files[order], "channel": channel, "start_s": starts[order], "end_s": ends[order],
        "low_hz": float(low_hz), "high_hz": float(high_hz),
        "label": np.asarray(scores.columns, dtype=object)[cols],
        "common_name": np.asarray(label_set.common_names, dtype=object)[cols],
        "code": np.asarray(label_set.codes, dtype=object)[cols],
        "score": score[order],
    }, columns=list(DETECTION_COLUMNS))
    return validate_detections(table)
