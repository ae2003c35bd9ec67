"""Slide-level metrics and the per-slide predictions table shared by train, distill and bench."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, recall_score, roc_auc_score


def auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC (one-vs-rest, macro over the classes present, for more than two classes); NaN when only
    one class is present. A class with no slide in y_true (a small fold) is left out, not an error."""
    y_true = np.asarray(y_true)
    present = np.unique(y_true)
    if len(present) < 2:
        return math.nan
    if probs.shape[1] == 2:
        return float(roc_auc_score(y_true, probs[:, 1]))
    return float(np.mean([roc_auc_score(y_true == c, probs[:, c]) for c in present]))


def slide_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """AUC, accuracy, balanced accuracy and weighted F1 of one set of slide predictions."""
    y_true = np.asarray(y_true)
    y_pred = probs.argmax(axis=1)
    return {
        "auc": auc(y_true, probs),
        "accuracy": float((y_pred == y_true).mean()),
        # mean recall over the classes present (sklearn's balanced accuracy, without its warning when a
        # fold's slides are all one class and some are predicted as another)
        "balanced_accuracy": float(recall_score(y_true, y_pred, labels=np.unique(y_true), average="macro",
                                                zero_division=0)),
        "f1_weighted": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "slides": int(len(y_true)),
    }


def predictions_table(slide_ids: list[str], y_true: np.ndarray, probs: np.ndarray, labels: tuple[str, ...],
                      folds: list[int]) -> pd.DataFrame:
    """One row per slide: id, fold, true and predicted label, one probability column per label."""
    table = pd.DataFrame({"slide_id": slide_ids, "fold": folds,
                          "label": [labels[i] for i in y_true],
                          "predicted": [labels[i] for i in probs.argmax(axis=1)]})
    for i, name in enumerate(labels):
        table[f"p_{name}"] = probs[:, i]
    return table


def metrics_from_table(table: pd.DataFrame, labels: tuple[str, ...]) -> dict[str, float]:
    index = {name: i for i, name in enumerate(labels)}
    y_true = table["label"].map(index).to_numpy()
    probs = table[[f"p_{name}" for name in labels]].to_numpy()
    return slide_metrics(y_true, probs)


def write_predictions(path: str | Path, table: pd.DataFrame) -> None:
    from export.atomic import atomic_path

    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, errors="backslashreplace")  # a slide name that is not UTF-8: see utf8_text


def read_predictions(path: str | Path) -> pd.DataFrame:
    """The table `write_predictions` wrote; ids and class names stay strings (class "0" is not 0)."""
    return pd.read_csv(path, dtype={"slide_id": str, "label": str, "predicted": str})
