"""Files and folders given on the command line -> the recordings to analyse, each once, each its own output name.

Folders are searched recursively, into folders linked to as well (not a link back up to a folder above; dot names
skipped: macOS ._ twins, .Trashes; so are Windows' recycle bins and the other SYSTEM_FOLDERS, the run's own output
folder and any folder of clips `pulse segments` cut, which are copies of recordings).
Two AudioMoth cards given as two folders often hold the same timestamped file names; one recording's outputs must
never overwrite another's.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from pathlib import Path, PurePath

from pulse.io import AUDIO_SUFFIXES, UNDECODABLE_SUFFIXES

log = logging.getLogger(__name__)
CLIPS_RECORD = "segments.json"  # what `pulse segments` writes at the top of its --out
# Windows' own folders on a drive, as dot names are macOS's: its recycle bins hold deleted recordings ($R....WAV)
# beside a few bytes of metadata each with the same suffix ($I....WAV), which were analysed and failed. And the
# folder at the top of every Linux (ext4) volume where fsck leaves nameless pieces, which only root may list.
SYSTEM_FOLDERS = {"$recycle.bin", "recycler", "recycled", "system volume information", "lost+found"}


def find_audio(inputs: list[str | Path], undecodable: bool = False,
               outputs: str | Path | None = None) -> list[tuple[Path, Path]]:
    """Expand files and folders (recursively) into sorted (path, output name) pairs, each file once.

    The output name is the path relative to its input (writers replace the suffix), made unique:
    two AudioMoth cards given as two folders often hold the same timestamped file names, and one
    recording's Raven table must never overwrite another's. `undecodable` also lists the recordings of
    UNDECODABLE_SUFFIXES in folders, so that a batch can name them, except one already converted beside itself
    (phone.m4a next to phone.flac). Nothing below `outputs` (the run's --out, if inside a folder given) or below a
    folder of `pulse segments` clips is listed: the clips would be analysed again as recordings of their own.
    """
    suffixes = (*AUDIO_SUFFIXES, *UNDECODABLE_SUFFIXES) if undecodable else AUDIO_SUFFIXES
    found: list[tuple[Path, Path, Path, bool]] = []  # (path, relative, its input folder, in a linked folder)
    for item in map(Path, inputs):
        if item.is_dir():
            listed = [(p, linked) for p, linked in _files_below(item, outputs) if p.suffix.lower() in suffixes]
            converted = {p.with_suffix("") for p, _ in listed if p.suffix.lower() in AUDIO_SUFFIXES}
            root = item.resolve()
            found += [(p, p.relative_to(item), root, linked) for p, linked in listed
                      if p.suffix.lower() in AUDIO_SUFFIXES or p.with_suffix("") not in converted]
        else:
            found.append((item, Path(item.name), item.resolve().parent, False))
    # A recording reached several ways (a folder and a file inside it, a link, a hard link) is analysed once, under
    # a name that reaches it without a link where there is one: site3 given beside site1, which links to it, stays
    # site3's.
    chosen: dict[object, int] = {}  # each recording's entry in `found`
    for i, (path, _, _, linked) in enumerate(found):
        earlier = chosen.get(key := _same_file(path))
        if earlier is None or (_through_link(found[earlier][0], found[earlier][3]) and not _through_link(path, linked)):
            chosen[key] = i
    unique = [found[i][:3] for i in sorted(chosen.values())]
    relatives = _distinct_output_names([(relative, root) for _, relative, root in unique])
    return [(path, relative) for (path, _, _), relative in zip(unique, relatives)]


def _same_file(path: Path) -> object:
    """What a file is, however reached: its resolved path, or for a file with several hard links (a card copied with
    `cp -l`, an rsync --link-dest backup) its device and inode, which a file system that counts no links never
    shares between two files."""
    try:
        stat = path.stat()
    except OSError:  # it fails later, with its reason
        return path.resolve()
    return (stat.st_dev, stat.st_ino) if stat.st_nlink > 1 and stat.st_ino else path.resolve()


def _files_below(folder: Path, outputs: str | Path | None) -> list[tuple[Path, bool]]:
    """Files below `folder`, sorted, each with whether it lies in a folder reached through a link (each real folder
    once, so a link loop ends), without dot names, SYSTEM_FOLDERS, or the `outputs` folder or a folder of `pulse
    segments` clips below it (either given as `folder` itself is searched). Folders reached through links are
    walked after every folder reachable without one, so a folder reached both ways keeps its own name (a link in
    site1 to site2 does not make site2's recordings site1's); a link to a folder above it (`loop -> ..`) is not
    followed: it holds nothing but the given folder and its neighbours, which were not asked for."""
    skip = os.path.realpath(outputs) if outputs is not None else None
    root = os.path.realpath(folder)
    files, seen, to_walk = [], set(), [(str(folder), False)]
    while to_walk:
        start, linked = to_walk.pop(0)
        for top, folders, names in os.walk(start, onerror=_unsearchable):  # not into links: those wait in to_walk
            real = os.path.realpath(top)
            if real in seen:
                folders[:] = []
                continue
            seen.add(real)  # before the checks below: a clips folder reached again through a link is not said again
            if real != root and (real == skip or _holds_clips(top, names)):
                folders[:] = []
                continue
            folders[:] = sorted(name for name in folders
                                if not name.startswith(".") and name.lower() not in SYSTEM_FOLDERS)
            to_walk += [(link, True) for name in folders if os.path.islink(link := os.path.join(top, name))
                        and not _above(os.path.realpath(link), real)]
            files += [(path, linked) for name in names
                      if not name.startswith(".") and ((path := Path(top) / name).is_file() or _dead_link(path))]
    return sorted(files)


def _unsearchable(exc: OSError) -> None:
    """A folder that cannot be listed (a colleague's cards, mode 700 on a shared NAS) was passed over in silence."""
    log.warning("%s: cannot be searched (%s); recordings in it are not analysed", exc.filename, exc.strerror)


def _dead_link(path: Path) -> bool:
    """A link to nothing (a drive behind it not mounted): listed if it has a recording's suffix, to fail with that
    reason, else said here, as it may stand for a folder of them (until 2026-12-06 both were passed over in
    silence, and a run missing a season behind a link ended with exit status 0)."""
    if not path.is_symlink() or path.exists():
        return False
    if path.suffix.lower() in (*AUDIO_SUFFIXES, *UNDECODABLE_SUFFIXES):
        return True
    log.warning("%s: a link to %s, which is not there (a drive not mounted?); not searched", path, os.readlink(path))
    return False


def _through_link(path: Path, in_linked_folder: bool) -> bool:
    """Whether a file was reached through a link (asked only of a file reached more than one way: a stat each)."""
    return in_linked_folder or path.is_symlink()


def _above(folder: str, real: str) -> bool:
    """Whether `folder` is the real folder `real` or one above it."""
    return real == folder or real.startswith(folder.rstrip(os.sep) + os.sep)


def _holds_clips(top: str, names: list[str]) -> bool:
    """Whether `top` is the --out of `pulse segments` (said once for each such folder)."""
    if CLIPS_RECORD not in names:
        return False
    try:
        record = json.loads(Path(top, CLIPS_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not (isinstance(record, dict) and "results_sha1" in record):  # another tool's file of that name
        return False
    log.warning("%s: clips cut by `pulse segments`, not searched for recordings (give that folder itself to "
                "analyse its clips)", top)
    return True


def _distinct_output_names(entries: list[tuple[Path, PurePath]]) -> list[Path]:
    """Rename only clashing output names: under their input folders' names when they come from different
    inputs, then with the suffix kept in the stem (g.ogg, g.aiff), then numbered."""
    names = [relative for relative, _ in entries]
    for group in _clashes(names):
        if len(folders := {entries[i][1] for i in group}) > 1:
            labels = _distinct_tails(folders)
            for i in group:
                names[i] = labels[entries[i][1]] / names[i]
    for group in _clashes(names):
        for i in group:
            names[i] = names[i].with_name(f"{names[i].stem}_{names[i].suffix.lstrip('.')}{names[i].suffix}")
    for group in _clashes(names):
        for n, i in enumerate(group):
            names[i] = names[i].with_name(f"{names[i].stem}_{n + 1}{names[i].suffix}")
    return names


def _distinct_tails(folders: set[PurePath]) -> dict[PurePath, Path]:
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


def _clashes(names: list[Path]) -> list[list[int]]:
    """Indices of names whose outputs would share a file (case-insensitively, as file systems can)."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(name.with_suffix("").as_posix().lower(), []).append(i)
    return [group for group in groups.values() if len(group) > 1]
