"""Write files so that a killed process never leaves half a file behind.

Everything is written to a temporary sibling and moved into place with `os.replace`,
which is atomic on POSIX and Windows when both paths are on the same filesystem.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Iterable, Iterator

from export.files import name_within_limit


_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")
_ESCAPED_BYTE = re.compile(r"\\udc([89a-f][0-9a-f])")  # a name's byte that is not UTF-8, as `utf8_text` writes it
# A write failing with one of these fails for the whole folder (its disk or the user's quota is full, the mount is
# read-only), so every write after it would fail alike: a run stops, rather than blame each of its inputs in turn.
FOLDER_ERRNOS = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some of your quota",
                 errno.EROFS: "remount it read-write"}


# A file over 4 GiB on FAT32 (SD cards up to 32 GB, most USB sticks) fails with EFBIG, "File too large".
FAT32_HINT = " (a FAT32 card or drive holds files up to 4 GiB: write to an exFAT or NTFS one)"


class OutputUnwritable(OSError):
    """The output folder stopped taking writes: one line naming it ends the run, whose finished work stays."""


def error_line(exc: OSError) -> str:
    """An OSError as the commands say it in one line: the file it names, then why (no '[Errno N]')."""
    line = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
    return line + (FAT32_HINT if exc.errno == errno.EFBIG else "")


def fails_for_folder(exc: BaseException) -> bool:
    """Whether `exc` is a write failing for the whole folder (FOLDER_ERRNOS), not for one file."""
    return isinstance(exc, OSError) and exc.errno in FOLDER_ERRNOS


@contextlib.contextmanager
def stop_if_unwritable(folder: str | os.PathLike) -> Iterator[None]:
    """Within the block, a write failing for the whole `folder` becomes OutputUnwritable naming it and saying how
    to go on: a full disk once read "[Errno 28] No space left on device", without saying where."""
    try:
        yield
    except OSError as exc:
        if not fails_for_folder(exc) or isinstance(exc, OutputUnwritable) or not _within(exc.filename, folder):
            raise
        raise OutputUnwritable(exc.errno, f"{os.strerror(exc.errno)}; stopped, keeping what was finished: "
                                          f"{FOLDER_ERRNOS[exc.errno]} (or copy the folder to another disk) and run "
                                          "the same command again to go on", str(folder)) from exc


def _within(name, folder: str | os.PathLike) -> bool:
    """Whether a failed write's file is in `folder`; one that names none (h5py's) is taken to be. A full /tmp or
    model cache is said as itself, not as a full --out."""
    if name is None:
        return True
    try:
        return Path(os.fsdecode(name)).resolve().is_relative_to(Path(folder).resolve())
    except (OSError, TypeError, ValueError):
        return True


def is_temporary(name: str) -> bool:
    """A name `atomic_path` gives its temporaries: only those may be swept after a killed run."""
    return _TEMPORARY.fullmatch(name) is not None


def sweep_temporaries(folder: str | os.PathLike, idle_s: float = 0.0, others: str | None = None) -> list[Path]:
    """Remove the temporaries a killed run left under `folder` (only names `atomic_path` gives, not a user's
    own .x.tmp) and return them; with `idle_s`, only those unchanged for that long (others may be another
    run's, in flight). A folder below `folder` that holds a file named `others` (another run's --out, by its
    lock file) is left to the runs into it."""
    folder = Path(folder)
    before_ns = time.time_ns() - int(idle_s * 1e9)
    swept = []
    for top, folders, names in os.walk(folder):  # links to folders not followed, as rglob does not
        if others is not None and others in names and top != str(folder):
            folders[:] = []
            continue
        candidates = (Path(top, name) for name in names if is_temporary(name))
        swept += [p for p in candidates if not idle_s or _changed_ns(p) < before_ns]
    for tmp in swept:
        tmp.unlink(missing_ok=True)
    return swept


def _changed_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:  # gone meanwhile: nothing to sweep
        return time.time_ns()


def _create_temporary(path: Path) -> tuple[Path, int]:
    """A new file beside `path` (`.NAME.XXXX.tmp`), open for writing, made with its folder if need be; removed if a
    Ctrl-C comes as it is made (Python raises it as os.open returns, and the caller would never get its name)."""
    # Not mkstemp: it creates files 0600, and outputs must get the user's usual permissions (umask).
    tmp = path.parent / name_within_limit(f".{path.name}", f".{secrets.token_hex(6)}.tmp")  # a name near the limit too
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileNotFoundError:  # the folder does not exist yet
            path.parent.mkdir(parents=True, exist_ok=True)
            return tmp, os.open(tmp, flags, 0o666)
    except OSError as exc:  # said of the file being written, not of its temporary's passing name
        if exc.filename == str(tmp):
            exc.filename = str(path)
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path`."""
    path = Path(path)
    tmp, fd = _create_temporary(path)
    try:
        os.close(fd)  # in the try: a Ctrl-C raised as it returns
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        _name_the_file(exc, path, tmp)
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """`atomic_path` in the fewest system calls (one create, one write, one rename): per-file outputs of
    `pulse analyze` are written once per recording, where reopening the temporary cost ~0.1 ms."""
    path = Path(path)
    tmp, fd = _create_temporary(path)
    try:
        with open(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            _name_the_file(exc, path, tmp)
        raise


def _name_the_file(exc: OSError, path: Path, tmp: Path) -> None:
    """A failed write as said of the file being written: one names no file (pandas' to_csv into a temporary said
    "error: [Errno 27] File too large"), or the temporary's passing name (one written into another's temporary)."""
    if exc.filename in (None, str(tmp)):
        exc.filename = str(path)


def utf8_text(text: str) -> str:
    """`text` with what UTF-8 cannot hold written as backslash escapes: a file name that is not UTF-8 (a Latin-1
    name from an old Windows archive; Python holds its bytes as surrogates) becomes `\\udcXX`, so that one such
    name leaves a table or an HDF5 attribute readable and the rest of a run's bookkeeping written."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def from_utf8_text(text: str) -> str:
    """A name as `utf8_text` wrote it, back to the name to open: each `\\udcXX` to the byte's surrogate."""
    return _ESCAPED_BYTE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), text)


def write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8, escaped as `utf8_text` escapes it."""
    write_bytes(path, utf8_text(text).encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def remove_stale(folder: str | os.PathLike, names: Iterable[str]) -> None:
    """Remove the files `names` from `folder`: what an earlier export published there and a new one does not
    replace (an INT8 graph of the old weights would run under the new folder's name). A record could name
    anything: only plain names are removed, never a folder, and one that cannot be removed stays."""
    for name in names:
        if not isinstance(name, str) or name != Path(name).name or name in ("", ".", ".."):
            continue
        stale = Path(folder) / name
        if stale.is_file() or stale.is_symlink():
            with contextlib.suppress(OSError):
                stale.unlink()


def file_in_the_way(folder: str | os.PathLike) -> Path | None:
    """The file at `folder` or at one of its parents, if any: an output folder could never be made there."""
    folder = Path(folder)
    return next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
