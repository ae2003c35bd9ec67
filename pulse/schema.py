"""The two tables everything after the model speaks: scores and detections.

Scores: one row per analysed window, indexed by (file, start_s, end_s), one float column per
label (the model's own order). Detections: one row per (window, species) at or above a
threshold, with the audio channel, frequency band and names writers need. Models produce the first, detect.py
turns it into the second, and writers consume one or the other; nothing else is passed around.
In batch analysis detections travel as `Columns` (the table's columns as arrays) from detect.py to the
writers: building a DataFrame cost a quarter of a 3 s recording's output time, and without pandas
`pulse analyze` starts ~0.3 s sooner (pandas is imported only where a scores table is built).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pulse.species import species_code

if TYPE_CHECKING:
    import pandas as pd

SCORE_INDEX = ("file", "start_s", "end_s")
DETECTION_COLUMNS = ("file", "channel", "start_s", "end_s", "low_hz", "high_hz", "label", "common_name", "code",
                     "score")

Columns = dict[str, np.ndarray]  # column name -> one value per row, in DETECTION_COLUMNS order


class SchemaError(ValueError):
    """A table does not follow the scores or detections contract."""


@dataclass(frozen=True)
class LabelSet:
    """A model's labels with the common names and codes writers print next to them."""

    labels: tuple[str, ...]
    common_names: tuple[str, ...]
    codes: tuple[str, ...]

    @classmethod
    def from_metadata(cls, metadata: dict) -> "LabelSet":
        """Read from a Predictor's metadata; a common name falls back to the label, a code to species_code(label)."""
        labels = tuple(metadata["labels"])
        common = tuple(metadata.get("common_names") or labels)
        codes = tuple(metadata.get("codes") or (species_code(label) for label in labels))
        if not len(labels) == len(common) == len(codes):
            raise SchemaError(f"model metadata lists {len(labels)} labels, {len(common)} common names, "
                              f"{len(codes)} codes")
        return cls(labels, common, codes)


def scores_frame(file: str, starts_s: np.ndarray, ends_s: np.ndarray, scores: np.ndarray,
                 labels: tuple[str, ...]) -> pd.DataFrame:
    """Build a valid scores table for one file."""
    import pandas as pd

    index = pd.MultiIndex.from_arrays([np.full(len(starts_s), file, dtype=object), starts_s, ends_s],
                                      names=list(SCORE_INDEX))
    return pd.DataFrame(np.asarray(scores, np.float32).reshape(len(starts_s), len(labels)),
                        index=index, columns=list(labels))


def validate_scores(table: pd.DataFrame) -> pd.DataFrame:
    if tuple(table.index.names) != SCORE_INDEX:
        raise SchemaError(f"scores index must be {SCORE_INDEX}, got {tuple(table.index.names)}")
    if table.shape[1] == 0 or not all(np.issubdtype(t, np.floating) for t in table.dtypes):
        raise SchemaError("scores need at least one label column, all floating point")
    check_score_values(table.to_numpy())
    return table


def check_score_values(values: np.ndarray) -> None:
    if not np.isfinite(values).all() or (values < 0).any() or (values > 1).any():
        raise SchemaError("scores must be finite and within [0, 1]")


def detection_channel(channel: int | None) -> int:
    """The channel a detection is on, counted from 1 as Raven does, from the 0-based --channel (None: mixed, 1)."""
    return 1 if channel is None else channel + 1


def empty_detections() -> Columns:
    dtypes = {"file": object, "channel": int, "label": object, "common_name": object, "code": object}
    return {c: np.zeros(0, dtypes.get(c, float)) for c in DETECTION_COLUMNS}
