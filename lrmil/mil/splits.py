"""k-fold splits from a CSV (slide_id, label, fold), and the train/val/test roles of each fold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from export.tables import read_spreadsheet_csv
from lrmil.slide import IMAGE_SUFFIXES, SLIDE_SUFFIXES

COLUMNS = ("slide_id", "label", "fold")


def read_splits(path: str | Path, min_folds: int = 3) -> pd.DataFrame:
    """Read and check a splits CSV; labels are kept as strings so class names survive. Other columns are
    ignored, but for `case_id` (CLAM's): one case's slides must share a fold. Stage 1 needs only the fold it
    leaves out (`min_folds` 1), k-fold training a test, a validation and a training fold."""
    try:
        table = _named(path, _trimmed(read_spreadsheet_csv(path, COLUMNS)))
    except OSError as exc:  # it was Python's "[Errno 2] No such file or directory: 'splits.csv'"
        raise FileNotFoundError(f"{path}: cannot read the splits CSV ({exc.strerror})") from None
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (need {', '.join(COLUMNS)})")
    if table.empty:  # it was 'need at least 3 fold(s) (test, validation, train), found 0'
        raise ValueError(f"{path}: no slides listed, only the header")
    for column in COLUMNS:
        if table[column].isna().any():
            raise ValueError(f"{path}, line {_first_line(table[column].isna())}: no {column}")
    table["slide_id"] = table["slide_id"].map(without_slide_suffix)
    _check_duplicates(path, table)
    folds = pd.to_numeric(table["fold"], errors="coerce")
    if (bad := folds.isna() | (folds != folds.round())).any():
        raise ValueError(f"{path}, line {_first_line(bad)}: fold '{table['fold'][bad].iloc[0]}' is not a whole number")
    if folds.nunique() < min_folds:
        why = " (test, validation, train)" if min_folds == 3 else ""
        raise ValueError(f"{path}: need at least {min_folds} fold(s){why}, found {folds.nunique()}")
    table = table.assign(fold=folds.astype(int))
    _check_labels(path, table)
    _check_cases(path, table)
    return table[list(COLUMNS)]


def _trimmed(table: pd.DataFrame) -> pd.DataFrame:
    """Names and cells without the spaces around them (', ' separators, padded Excel cells): 'tumor ' would be a
    class of its own; a cell of spaces is empty."""
    table.columns = table.columns.str.strip()
    return table.map(lambda v: v.strip() or None if isinstance(v, str) else v)


def _named(path: str | Path, table: pd.DataFrame) -> pd.DataFrame:
    """A header typed in a spreadsheet ('Slide_ID', 'Label', 'Fold') names the columns CLAM writes in lower case:
    it was 'missing column(s) slide_id, label, fold'."""
    names = [name.lower() if name.lower() in (*COLUMNS, "case_id") else name for name in table.columns]
    if twice := sorted({name for name in names if names.count(name) > 1}):
        raise ValueError(f"{path}: two columns named {twice[0]} (column names ignore case)")
    return table.set_axis(names, axis=1)


def without_slide_suffix(slide_id: str) -> str:
    """A slide_id as a file name ('a.svs': CLAM's process lists, TRIDENT's wsi column) names the slide 'a', as
    its feature files do; other dots stay (TCGA ids hold one)."""
    suffix = Path(slide_id).suffix
    return slide_id[: -len(suffix)] if suffix.lower() in SLIDE_SUFFIXES + IMAGE_SUFFIXES else slide_id


def _check_duplicates(path: str | Path, table: pd.DataFrame) -> None:
    """A slide listed twice (a row pasted twice, or relabelled below the old row): the error named only the second
    line, so the first, and which label was meant, had to be searched for. Ids that differ only in case ('A', 'a')
    are one slide, as everywhere in LRMIL (a NAS share holds one file for A.h5 and a.h5)."""
    ids = table["slide_id"].str.casefold()
    if not (twice := ids.duplicated()).any():
        return
    again = table[twice].iloc[0]
    same = ids == ids[twice].iloc[0]
    first = table[same].iloc[0]
    lines = f"lines {_first_line(same)} and {_first_line(twice)}"
    labels = (f"with labels {first['label']!r} and {again['label']!r}" if first["label"] != again["label"]
              else f"both labelled {first['label']!r}")
    listed = (f"slide_id {again['slide_id']!r} listed twice" if first["slide_id"] == again["slide_id"] else
              f"slide_ids {first['slide_id']!r} and {again['slide_id']!r} name one slide (ids ignore case)")
    raise ValueError(f"{path}, {lines}: {listed}, {labels}; keep one row per slide")


def _check_labels(path: str | Path, table: pd.DataFrame) -> None:
    """'Tumor' beside 'tumor' trained a third class without a word."""
    spellings = table.drop_duplicates("label")["label"]
    if (clash := spellings.str.casefold().duplicated()).any():
        other = spellings[clash].iloc[0]
        first = spellings[spellings.str.casefold() == other.casefold()]
        raise ValueError(f"{path}, line {spellings[clash].index[0] + 2}: label {other!r} differs from "
                         f"{first.iloc[0]!r} (line {first.index[0] + 2}) only in case; spell each class one way")


def _check_cases(path: str | Path, table: pd.DataFrame) -> None:
    """Two slides of one patient in two folds: each fold's model trains on a case it is tested on."""
    if "case_id" not in table.columns:
        return
    folds = table.dropna(subset=["case_id"]).groupby("case_id")["fold"].unique()
    if len(split := folds[folds.map(len) > 1]):
        raise ValueError(f"{path}: case_id {split.index[0]!r} has slides in folds "
                         f"{', '.join(map(str, sorted(split.iloc[0])))}; give each case's slides one fold")


def _first_line(rows: pd.Series) -> int:
    """The file line of the first true row (the header is line 1)."""
    return int(np.flatnonzero(rows.to_numpy())[0]) + 2


def labels_of(table: pd.DataFrame, path: str | Path) -> tuple[str, ...]:
    """Class names in a stable order (sorted), the order of every probability column. One label alone trained
    models that answer it whatever the slide (AUC null, accuracy 1.0); stage 1 reads no labels, so it is refused
    here, where a model gets its classes."""
    labels = tuple(sorted(table["label"].unique()))
    if len(labels) < 2:
        raise ValueError(f"{path}: every slide is labelled {labels[0]!r}; a classifier needs slides of at least two "
                         "labels")
    return labels


def fold_roles(table: pd.DataFrame, test_fold: int) -> dict[str, list[str]]:
    """Test = `test_fold`, validation (early stopping) = the next fold in order, train = the rest."""
    folds = sorted(table["fold"].unique())
    val_fold = folds[(folds.index(test_fold) + 1) % len(folds)]
    role = np.where(table["fold"] == test_fold, "test", np.where(table["fold"] == val_fold, "val", "train"))
    return {r: table["slide_id"][role == r].tolist() for r in ("train", "val", "test")}
