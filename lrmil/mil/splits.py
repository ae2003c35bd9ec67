"""k-fold splits from a CSV (slide_id, label, fold), and the train/val/test roles of each fold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ("slide_id", "label", "fold")


def read_splits(path: str | Path) -> pd.DataFrame:
    """Read and check a splits CSV; labels are kept as strings so class names survive."""
    table = pd.read_csv(path, dtype={"slide_id": str, "label": str})
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (need {', '.join(COLUMNS)})")
    if table["slide_id"].duplicated().any():
        raise ValueError(f"{path}: duplicate slide_id {table['slide_id'][table['slide_id'].duplicated()].iloc[0]!r}")
    for column in COLUMNS:
        if table[column].isna().any():
            raise ValueError(f"{path}, line {_first_line(table[column].isna())}: no {column}")
    folds = pd.to_numeric(table["fold"], errors="coerce")
    if (bad := folds.isna() | (folds != folds.round())).any():
        raise ValueError(f"{path}, line {_first_line(bad)}: fold '{table['fold'][bad].iloc[0]}' is not a whole number")
    if folds.nunique() < 3:
        raise ValueError(f"{path}: need at least 3 folds (test, validation, train), found {folds.nunique()}")
    return table[list(COLUMNS)].assign(fold=folds.astype(int))


def _first_line(rows: pd.Series) -> int:
    """The file line of the first true row (the header is line 1)."""
    return int(np.flatnonzero(rows.to_numpy())[0]) + 2


def labels_of(table: pd.DataFrame) -> tuple[str, ...]:
    """Class names in a stable order (sorted), the order of every probability column."""
    return tuple(sorted(table["label"].unique()))


def fold_roles(table: pd.DataFrame, test_fold: int) -> dict[str, list[str]]:
    """Test = `test_fold`, validation (early stopping) = the next fold in order, train = the rest."""
    folds = sorted(table["fold"].unique())
    val_fold = folds[(folds.index(test_fold) + 1) % len(folds)]
    role = np.where(table["fold"] == test_fold, "test", np.where(table["fold"] == val_fold, "val", "train"))
    return {r: table["slide_id"][role == r].tolist() for r in ("train", "val", "test")}
