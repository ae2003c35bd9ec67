"""Output formats, one small registered class per file (`WRITERS.list()` names them).

A writer declares which table it reads (`"detections"`, `"scores"`, or `"sequence"`: the detections with where
each recording begins in the run's recordings taken as one, for the combined Raven table), whether it writes one
file per input recording or one file for the whole run, and its `suffix`: the file name ending
for per-recording outputs, the whole file name otherwise. `write(table, path)` writes atomically;
`pulse analyze` gives detection writers `Columns` (one recording's, or the run's) and the scores writer
a DataFrame; detection writers take a detections DataFrame too (the field app's, from `detect`).
Adding a format means adding one file here; callers never branch on format names.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Iterable, Protocol

import numpy as np

from export.files import name_within_limit
from export.registry import Registry
from pulse.schema import Columns

if TYPE_CHECKING:
    import pandas as pd


class Writer(Protocol):
    suffix: ClassVar[str]
    table: ClassVar[str]  # "detections", "scores" or "sequence"
    per_file: ClassVar[bool]

    def write(self, table: pd.DataFrame | Columns, path: Path) -> None:
        """Write `table` to `path` atomically."""


WRITERS: Registry[Writer] = Registry("output format")


def output_path(writer: Writer, out_dir: Path, relative: Path | None = None) -> Path:
    """Where `writer` puts its file: mirrored input folders for per-file formats (a name too long for the file system
    cut short: `name_within_limit`), else the run folder."""
    if writer.per_file:
        return out_dir / relative.parent / name_within_limit(relative.stem, writer.suffix)
    return out_dir / writer.suffix


def rows(table: pd.DataFrame | Columns, columns: tuple[str, ...]):
    """The table's rows as tuples of `columns`: per-file writers run once per recording, and pandas'
    itertuples (an indexing call per column) cost more than the rest of a 3 s file's output."""
    return zip(*(np.asarray(table[c]) for c in columns))


def csv_text(header: Iterable[str], records: Iterable[tuple]) -> str:
    """CSV as pandas' `to_csv(index=False, float_format="%.4f")` writes it (the same csv module underneath)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([f"{v:.4f}" if isinstance(v, float) else v for v in record] for record in records)
    return text.getvalue()


ERROR_COLUMNS = ("path", "stage", "error_type", "message")


def write_errors(path: Path, errors: Iterable[tuple[str, str, str, str]], order: Iterable[Path] = ()) -> None:
    """`errors.csv`: one row per file (or part of one) a batch could not use and went on without; in the `order` of
    the batch's files where given (whichever thread or pass found an error first), those not in it last."""
    from export.atomic import write_text

    write_text(path, csv_text(ERROR_COLUMNS, in_file_order(errors, order)))


def in_file_order(errors: Iterable[tuple[str, str, str, str]], order: Iterable[Path] = ()) -> list:
    """`errors` in the `order` of the batch's files (whichever thread found an error first), those not in it last."""
    position = {str(file): i for i, file in enumerate(order)}
    return sorted(errors, key=lambda error: position.get(error[0], len(position)))


from pulse.writers import (  # noqa: E402,F401  (they register)
    audacity, detections_csv, kaleidoscope, raven, raven_combined, scores_csv)

__all__ = ["ERROR_COLUMNS", "WRITERS", "Writer", "csv_text", "in_file_order", "output_path", "rows", "write_errors"]
