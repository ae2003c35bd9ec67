"""Tables people make by hand (a manifest, slide splits), as they save them from a spreadsheet, and the files
they name."""

from __future__ import annotations

import codecs
import functools
import io
import os
import unicodedata
from pathlib import Path, PureWindowsPath
from typing import Callable, Iterable

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
    for part in _parts(listed):
        if not (found / part).exists():
            part = next(iter(_names_by(found, nfc).get(nfc(part), ())), None)
            if part is None:
                return path
        found = found / part
    return found


def in_other_case(root: str | Path, listed: str) -> list[Path]:
    """The files below `root` named as `listed` but for case (in `listed_file`'s spelling: under NFC, a Windows
    path's backslashes as separators). A table made on Windows or a Mac, whose file systems ignore case, finds
    Gryllus/rec1.wav as gryllus\\Rec1.WAV; Linux does not, and a 'missing file' did not say what was there."""
    found = [Path(root)]
    for part in _parts(listed):
        found = [folder / name for folder in found for name in _names_by(folder, _folded).get(_folded(part), ())]
    return sorted(path for path in found if path.is_file())


def _parts(listed: str) -> tuple[str, ...]:
    """The names in a listed path, a path written on Windows split at its backslashes too."""
    return (PureWindowsPath if "\\" in listed else Path)(listed).parts


def _folded(name: str) -> str:
    """A name as a case-insensitive file system compares it."""
    return nfc(name).casefold()


def _names_by(folder: Path, key: Callable[[str], str]) -> dict[str, list[str]]:
    """The names in `folder` by `key` of each; none where it cannot be listed."""
    try:
        return _listing(str(folder), folder.stat().st_mtime_ns, key)
    except OSError:
        return {}


@functools.lru_cache(maxsize=64)
def _listing(folder: str, mtime_ns: int, key: Callable[[str], str]) -> dict[str, list[str]]:
    """`_names_by`'s: one listing per folder while it stays as it was (`mtime_ns`: a file added, removed or renamed
    lists it again), not one per row of a table."""
    names: dict[str, list[str]] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            names.setdefault(key(entry.name), []).append(entry.name)
    return names


def windows_path_hint(root: str | Path, listed: str) -> str:
    """What to do about a listed path written on Windows or a Mac that `listed_file` did not find, to end its
    'missing file' line: a drive or share (`D:\\field\\x.wav`) is not here, and where a card's copy is cannot be
    guessed; a file named so but for case (`in_other_case`) is named, not taken for it, since a path that finds the
    file on Windows alone would find another where two names differ only in case."""
    if PureWindowsPath(listed).drive or listed.startswith("\\"):
        return ("; a Windows path with a drive or share, which is not here: list it relative to the audio root "
                "(field\\x.wav for D:\\field\\x.wav, the audio root where D:\\ is copied)")
    hint = "; looked for with its \\ as folder separators, as Windows writes them" if "\\" in listed else ""
    if others := in_other_case(root, listed):
        named = " and ".join(path.relative_to(root).as_posix() for path in others)
        hint += (f"; {named} {'is' if len(others) == 1 else 'are'} named so but for case (Windows and macOS ignore "
                 "case, Linux does not): list it as it is named")
    return hint


def path_key(listed: str) -> str:
    """A listed path as two tables' paths are matched (a manifest's and an exclusion list's): under NFC, and with
    Windows' backslashes as /, as `listed_file` finds the file."""
    return nfc(listed.replace("\\", "/"))


def nfc(name: str) -> str:
    """A name as `listed_file` compares it: a slide id typed into a table and one taken from a file's name are the
    same slide when they are the same under NFC."""
    return unicodedata.normalize("NFC", name)
