"""Which files in a folder given as input are inputs: shared by PULSE (recordings) and LRMIL (slides).

Folders are searched into folders linked to as well (an archive drive's year linked in; not a link back up to a
folder above); dot names (macOS ._ twins, .Trashes) and Windows' own folders (SYSTEM_FOLDERS, and OLD_RECYCLE_BINS
that hold a recycle bin) are skipped. A folder that cannot be listed and a link to nothing are listed apart from the
files, to fail with their reason as a bad file does (a row in errors.csv, exit status 1): a run missing a season or a
year behind either ended with exit status 0, and one that only warned still did, so a cron job never learnt that
part of a card was not analysed.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from pathlib import Path, PurePath
from typing import Callable

# Windows' own folders on a drive, as dot names are macOS's: its recycle bins hold deleted files ($R....WAV,
# $R....svs) beside a few bytes of metadata each with the same suffix ($I....), which were read and failed. And the
# folder at the top of every Linux (ext4) volume where fsck leaves nameless pieces, which only root may list.
SYSTEM_FOLDERS = {"$recycle.bin", "system volume information", "lost+found"}
# Windows 95-XP's recycle bins, RECYCLED (FAT) and RECYCLER (NTFS, a folder per user's SID), have names a user gives
# their own folder (a site called Recycled, a project on recycled habitats), whose recordings were skipped in
# silence: they are skipped only when they hold a bin's index (INFO2, INFO) or a user's bin (S-1-5-21-...).
OLD_RECYCLE_BINS = {"recycled", "recycler"}
_RECYCLE_BIN_ENTRY = re.compile(r"info2?|s-1-5-[0-9-]+", re.IGNORECASE)
# The longest file name, in bytes, that ext4, XFS, APFS and exFAT/NTFS (255 characters, at least 255 bytes of
# UTF-8) all take.
NAME_MAX = 255
# What FAT, exFAT and NTFS (and Windows on any drive) refuse in a name and Linux takes: a character of these, and dots
# and spaces at a name's end (Windows drops them; Linux's FAT driver too, making 'Site.' and 'Site' one folder).
_NOT_PORTABLE = re.compile(r'[\x00-\x1f\\:*?"<>|]|[. ]+$')
# Names Windows keeps for its devices, in any case and whatever follows a first dot (CON.wav, nul.tar.gz, 'aux .txt'
# are the console, the null device and AUX): it can neither create nor copy a file so named, on any drive. COM0, LPT0
# and the superscripts as Microsoft's "Naming Files, Paths, and Namespaces" lists them; CONIN$ and CONOUT$ as Python's
# ntpath.isreserved adds them.
WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", *(port + n for port in ("COM", "LPT")
                                                                       for n in "0123456789\u00b9\u00b2\u00b3")}


def hidden(relative: Path) -> bool:
    """A dot name anywhere below the folder searched (macOS's ._ twins, .Trashes on SD cards and drives, an
    analysis's own .pulse): never an input."""
    return any(part.startswith(".") for part in relative.parts)


def files_below(folder: Path, suffixes: tuple[str, ...], recursive: bool = True,
                skip: Callable[[str, str, list[str]], bool] | None = None
                ) -> tuple[list[tuple[Path, bool]], list[tuple[Path, bool]]]:
    """Files below `folder` (directly inside it unless `recursive`), sorted, each with whether it lies in a folder
    reached through a link (each real folder once, so a link loop ends), without dot names or Windows' own folders; and
    apart, what could not be read, to fail as inputs with `unread_reason`: links to nothing that may have led to inputs
    (`_may_lead_to_inputs`) and folders that cannot be listed (`folder` itself too). `skip(top, real, names)` leaves out
    a folder below `folder` and all under it (a run's own outputs). Folders reached through links are walked after every
    folder reachable without one, so a folder reached both ways keeps its own name (a link in site1 to site2 does not
    make site2's recordings site1's); a link to a folder above it (`loop -> ..`) is not followed: it holds nothing but
    the given folder and its neighbours, which were not asked for."""
    root = os.path.realpath(folder)
    files, unread, seen, to_walk = [], [], set(), [(str(folder), False)]
    while to_walk:
        start, linked = to_walk.pop(0)
        for top, folders, names in os.walk(start, onerror=lambda exc: unread.append((Path(exc.filename), linked))):
            real = os.path.realpath(top)  # os.walk goes not into links: those wait in to_walk
            if real in seen:
                folders[:] = []
                continue
            seen.add(real)  # before `skip`: a folder it leaves out, reached again through a link, is not said again
            if real != root and skip is not None and skip(top, real, names):
                folders[:] = []
                continue
            folders[:] = sorted(name for name in folders if recursive and not name.startswith(".")
                                and not _system_folder(top, name))
            to_walk += [(link, True) for name in folders if os.path.islink(link := os.path.join(top, name))
                        and not _above(os.path.realpath(link), real)]
            for path in (Path(top) / name for name in names if not name.startswith(".")):
                if path.is_file():
                    files.append((path, linked))
                elif path.is_symlink() and _may_lead_to_inputs(path, suffixes, recursive):
                    unread.append((path, linked))  # a link to nothing: os.walk lists a link to a folder among folders
    return sorted(files), sorted(unread)


def name_within_limit(stem: str, suffix: str) -> str:
    """`stem + suffix`, or where that is over NAME_MAX bytes (an input named near the limit, with an output suffix
    added), the stem cut short and followed by `~` and a hash of the whole stem: the file can be written (it failed
    with "File name too long"), and inputs whose long names begin alike still get outputs of their own."""
    if len(os.fsencode(stem + suffix)) <= NAME_MAX:
        return stem + suffix
    tag = f"~{hashlib.sha1(os.fsencode(stem)).hexdigest()[:8]}{suffix}"
    room = NAME_MAX - len(os.fsencode(tag))
    while len(os.fsencode(stem)) > room:  # whole characters off the end, never half of one
        stem = stem[:-1]
    return stem + tag


def portable_name(name: str) -> str:
    """`name` as an output's name that an SD card, a USB drive or Windows takes (`portable_characters`), and a device's
    name (`WINDOWS_DEVICES`) followed by `_`: CON.wav's Raven table was CON.pulse.selection.table.txt, which Windows
    cannot create or copy; it is CON_.pulse.selection.table.txt (clashing with CON_.wav's as other clashes do)."""
    name = portable_characters(name)
    head, dot, tail = name.partition(".")
    return f"{head}_{dot}{tail}" if head.rstrip(" ").upper() in WINDOWS_DEVICES else name


def portable_characters(name: str) -> str:
    """`name` with each character `_NOT_PORTABLE` names as `_`: for a whole name (`portable_name`) or a part of one. A
    recording named 2025-07-01T21:30:00.wav got a Raven table of that stem, which a FAT or exFAT --out refused
    ("Invalid argument", every recording failed) and Windows could not copy."""
    return _NOT_PORTABLE.sub(lambda match: "_" * len(match.group()), name)


def first_of_each_file(found: list[tuple[Path, bool]]) -> list[int]:
    """Indices into `found` ((path, in a linked folder) pairs) of each file once, in order: a file reached several
    ways (a folder and a file inside it, a link, a hard link) under a name that reaches it without a link where
    there is one (site3 given beside site1, which links to it, stays site3's)."""
    chosen: dict[object, int] = {}
    for i, (path, linked) in enumerate(found):
        earlier = chosen.get(key := _same_file(path))
        if earlier is None or (_through_link(*found[earlier]) and not _through_link(path, linked)):
            chosen[key] = i
    return sorted(chosen.values())


def unread_reason(path: str | os.PathLike) -> str:
    """Why an input listed or named is not a file to read: a link to nothing says where it pointed, a folder that
    cannot be listed why (a colleague's cards, mode 700 on a shared NAS)."""
    if os.path.islink(path) and not os.path.exists(path):
        return f"a link to {os.readlink(path)}, which is not there (a drive not mounted?)"
    if os.path.isdir(path):
        try:
            os.scandir(path).close()
        except OSError as exc:
            return f"a folder that cannot be searched ({exc.strerror}); nothing in it is analysed"
        return "a folder, not a file"
    return "no such file or folder"


def distinct_tails(folders: set[PurePath]) -> dict[PurePath, Path]:
    """Each folder's last names, as few as tell it from the others: AM01 and AM02; north/site1/Data, south/site1/Data
    and site2/Data (a site's cards given as `site*/deploy*` were numbered 20250708_213000_WAV_1 ... _15, which site
    each was lost); a drive's letter for a drive (D:\\ and E:\\, two cards in two readers on Windows), its server
    and share for a network share (\\\\nas\\card1). Names that differ only in case (north/Card, south/card) do not
    tell folders apart: a Mac's or Windows' file system takes them for one."""
    chains = {folder: (*re.findall(r"[^\\/:?]+", folder.drive), *folder.relative_to(folder.anchor).parts)
              for folder in folders}
    tails: dict[PurePath, tuple[str, ...]] = {}
    for length in range(1, max(map(len, chains.values())) + 1):
        counts = Counter(_folded(chain[-length:]) for chain in chains.values())
        tails |= {folder: chain[-length:] for folder, chain in chains.items()
                  if folder not in tails and (counts[_folded(chain[-length:])] == 1 or length >= len(chain))}
    return {folder: Path(*tail) for folder, tail in tails.items()}


def _folded(names: tuple[str, ...]) -> tuple[str, ...]:
    """Folder names as a case-insensitive file system compares them (as `_clashes` compares outputs)."""
    return tuple(name.lower() for name in names)


def _same_file(path: Path) -> object:
    """What a file is, however reached: its resolved path, or for a file with several hard links (a card copied with
    `cp -l`, an rsync --link-dest backup) its device and inode, which a file system that counts no links never
    shares between two files."""
    try:
        stat = path.stat()
    except OSError:  # it fails later, with its reason
        return path.resolve()
    return (stat.st_dev, stat.st_ino) if stat.st_nlink > 1 and stat.st_ino else path.resolve()


def _may_lead_to_inputs(link: Path, suffixes: tuple[str, ...], recursive: bool) -> bool:
    """Whether a link to nothing may have led to inputs: it or what it names has one of `suffixes`, or, in a search
    of folders below, what it names has no suffix, as a folder has (an archive's 2024 on a drive not mounted). A
    dead link to notes.txt is passed over as notes.txt is, not failed as a recording."""
    names = (link.suffix, PurePath(os.readlink(link)).suffix)
    return any(suffix.lower() in suffixes for suffix in names) or (recursive and not names[1])


def _system_folder(top: str, name: str) -> bool:
    """Whether folder `name` in `top` is one of Windows' own: SYSTEM_FOLDERS, or an OLD_RECYCLE_BINS name holding
    what a recycle bin holds (one that cannot be listed is searched, to fail with its reason)."""
    if name.lower() in SYSTEM_FOLDERS:
        return True
    if name.lower() not in OLD_RECYCLE_BINS:
        return False
    try:
        with os.scandir(os.path.join(top, name)) as entries:
            return any(_RECYCLE_BIN_ENTRY.fullmatch(entry.name) for entry in entries)
    except OSError:
        return False


def _through_link(path: Path, in_linked_folder: bool) -> bool:
    """Whether a file was reached through a link (asked only of a file reached more than one way: a stat each)."""
    return in_linked_folder or path.is_symlink()


def _above(folder: str, real: str) -> bool:
    """Whether `folder` is the real folder `real` or one above it."""
    return real == folder or real.startswith(folder.rstrip(os.sep) + os.sep)
