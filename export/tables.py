"""Tables people make by hand (a manifest, slide splits), as they save them from a spreadsheet."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable

import pandas as pd


def read_spreadsheet_csv(path: str | Path, columns: Iterable[str]) -> pd.DataFrame:
    """Every cell as a string, an empty one as "" (a class or licence named 'NA' is a name, not "none"). Excel saves
    'CSV' with ';' between columns where the decimal mark is a comma (French, German, Spanish), and in the system's
    code page rather than UTF-8 unless told 'CSV UTF-8': the one is read as it is, the other is one line saying how
    to save it. `columns` (the ones needed) name what an empty file lacks."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not UTF-8 text; save it as 'CSV UTF-8 (Comma delimited)' "
                         "(Excel: Save As)") from None
    if not text.strip():
        raise ValueError(f"{path}: empty file (need columns {', '.join(columns)})")
    header = text.partition("\n")[0]
    return pd.read_csv(io.StringIO(text), dtype=str, sep=";" if ";" in header and "," not in header else ",",
                       keep_default_na=False)
