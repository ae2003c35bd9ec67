"""Tables people make by hand (a manifest, slide splits), as they save them from a spreadsheet, and the files
they name."""

from __future__ import annotations

import codecs
import functools
import io
import os
import unicodedata
from pathlib import Path, PureWindowsPath
from typing import Iterable

import pandas as pd


def read_spreadsheet_csv(path: str | Path, columns: Iterable[str]) -> pd.DataFrame:
    """Every cell as a string, an empty one as "" (a class or licence named 'NA' is a name, not "none"). Excel saves
    'CSV' with ';' between columns where the decimal mark is a comma (French, German, Spanish), and in the system's
    code page rather than UTF-8 unless told 'CSV UTF-8': the one is read as it is, the other is one line saying how
    to save it; its 'Unicode Text' (UTF-16, tabs between columns) is read too. Rows of empty cells after the last
    filled one (Excel saves those of a sheet whose cells were once formatted or cleared: ';;;') are dropped.
    `columns` (the ones needed) name what an empty file lacks."""
    try:
        text = windows_text(path)
    except ValueError as exc:
        raise ValueError(f"{exc}; save it as 'CSV UTF-8 (Comma delimited)' (Excel: Save As)") from None
    if not text.strip():
        raise ValueError(f"{path}: empty file (need columns {', '.join(columns)})")
    header = text.partition("\n")[0]
    sep = "\t" if "\t" in header else ";" if ";" in header and "," not in header else ","  # tabs: 'Unicode Text'
    table = pd.read_csv(io.StringIO(text), dtype=str, sep=sep, keep_default_na=False)
    filled = table.apply(lambda column: column.str.strip().ne("")).any(axis=1)
    return table[filled[::-1].cummax()[::-1]]


def windows_text(path: str | Path) -> str:
    """A text file as Windows programs save it: UTF-8, with or without the BOM Notepad and Excel's 'CSV UTF-8' put
    first, or UTF-16 after its BOM (Excel's 'Unicode Text', Notepad's 'Unicode'), which read as 'not UTF-8'. A code
    page (cp1252: Excel's plain 'CSV') is not guessed: ValueError naming the first line that is not UTF-8."""
    data = Path(path).read_bytes()
    encoding = "utf-16" if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[:exc.start].decode(encoding, "replace").count("\n") + 1
        raise ValueError(f"{path}, line {line}: not {'UTF-16' if encoding == 'utf-16' else 'UTF-8'} text") from None


def spreadsheet_number(cell: str) -> float:
    """A number as a spreadsheet saves it: with a decimal comma ('0,87') where that is the locale's decimal mark."""
    return float(cell if "." in cell else cell.replace(",", "."))


def listed_file(root: str | Path, listed: str) -> Path:
    """`root / listed` as the file is named on disk. An accent has two spellings in Unicode: one character (NFC, what
    a keyboard types into a table) or a letter and a combining mark (NFD, what macOS's HFS+ named files, kept when
    they are copied to Linux or an SD card): the two look alike and differ in bytes, so a name typed by hand was not
    found. Each part of `listed` not found as written is looked up under NFC in its folder; where none matches,
    `root / listed` as written, for the caller to say it is missing (with `windows_path_hint`). Nothing is renamed.
    A path written on Windows (`Gryllus\\x.wav`, `.\\Gryllus\\x.wav`) not found as written is looked up with
    each backslash as a folder separator: Linux takes a backslash in a name, but it is the only one that exists."""
    path = Path(root) / listed
    if path.exists():
        return path
    found = Path(root)
    for part in (PureWindowsPath if "\\" in listed else Path)(listed).parts:
        if not (found / part).exists():
            try:
                part = _names_by_nfc(str(found), found.stat().st_mtime_ns).get(nfc(part))
            except OSError:
                part = None
            if part is None:
                return path
        found = found / part
    return found


@functools.lru_cache(maxsize=64)
def _names_by_nfc(folder: str, mtime_ns: int) -> dict[str, str]:
    """The names in `folder` by their NFC spelling; one listing per folder while it stays as it was (`mtime_ns`:
    a file added, removed or renamed lists it again), not one per row of a table."""
    with os.scandir(folder) as entries:
        return {nfc(entry.name): entry.name for entry in entries}


def windows_path_hint(listed: str) -> str:
    """What to do about a listed path written on Windows that `listed_file` did not find, to end its 'missing file'
    line: a drive or share (`D:\\field\\x.wav`) is not here, and where a card's copy is cannot be guessed."""
    if PureWindowsPath(listed).drive or listed.startswith("\\"):
        return ("; a Windows path with a drive or share, which is not here: list it relative to the audio root "
                "(field\\x.wav for D:\\field\\x.wav, the audio root where D:\\ is copied)")
    if "\\" in listed:
        return "; looked for with its \\ as folder separators, as Windows writes them"
    return ""


def path_key(listed: str) -> str:
    """A listed path as two tables' paths are matched (a manifest's and an exclusion list's): under NFC, and with
    Windows' backslashes as /, as `listed_file` finds the file."""
    return nfc(listed.replace("\\", "/"))


def nfc(name: str) -> str:
    """A name as `listed_file` compares it: a slide id typed into a table and one taken from a file's name are the
    same slide when they are the same under NFC."""
    return unicodedata.normalize("NFC", name)
