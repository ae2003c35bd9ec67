"""Slide-level metrics and the per-slide predictions table shared by train, distill and bench."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score


def auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC (one-vs-rest macro for more than two classes); NaN when only one class is present."""
    y_true = np.asarray(y_true)
    num_classes = probs.shape[1]
    if len(np.unique(y_true)) < 2:
        return math.nan
    if num_classes == 2:
        return float(roc_auc_score(y_true, probs[:, 1]))
    return float(roc_auc_score(y_true, probs, multi_class="ovr", average="macro", labels=list(range(num_classes))))


def slide_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """AUC, accuracy, balanced accuracy and weighted F1 of one set of slide predictions."""
    y_true = np.asarray(y_true)
    y_pred = probs.argmax(axis=1)
    return {
        "auc": auc(y_true, probs),
        "accuracy": float((y_pred == y_true).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
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
        table.to_csv(tmp, index=False)


def read_predictions(path: str | Path) -> pd.DataFrame:
    """The table `write_predictions` wrote; ids and class names stay strings (class "0" is not 0)."""
    return pd.read_csv(path, dtype={"slide_id": str, "label": str, "predicted": str})
