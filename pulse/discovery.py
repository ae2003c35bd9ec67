"""Files and folders given on the command line -> the recordings to analyse, each once, each its own output name.

Folders are searched recursively as `export.files.files_below` does (into folders linked to, each recording once;
dot names, Windows' recycle bins and the other SYSTEM_FOLDERS skipped), not into the run's own output folder or any
folder of clips `pulse segments` or `pulse clips-from-annotations` cut, which are copies of recordings.
Two AudioMoth cards given as two folders often hold the same timestamped file names; one recording's outputs must
never overwrite another's.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path, PurePath

from export.files import distinct_tails, files_below, first_of_each_file, portable_name
from pulse.io import AUDIO_SUFFIXES, UNDECODABLE_SUFFIXES

log = logging.getLogger(__name__)
CLIPS_RECORD = "segments.json"  # what `pulse segments` writes at the top of its --out
ANNOTATION_CLIPS_RECORD = "clips_from_annotations.json"  # and `pulse clips-from-annotations`
# each record's file, and a key of it that tells it from another tool's file of that name
_RECORD_KEYS = {CLIPS_RECORD: "results_sha1", ANNOTATION_CLIPS_RECORD: "tables"}


def find_audio(inputs: list[str | Path], undecodable: bool = False,
               outputs: str | Path | None = None) -> list[tuple[Path, Path]]:
    """Expand files and folders (recursively) into sorted (path, output name) pairs, each file once.

    The output name is the path relative to its input (writers replace the suffix), made unique:
    two AudioMoth cards given as two folders often hold the same timestamped file names, and one
    recording's Raven table must never overwrite another's. `undecodable` also lists the recordings of
    UNDECODABLE_SUFFIXES in folders, so that a batch can name them, except one already converted beside itself
    (phone.m4a next to phone.flac). A folder that cannot be listed and a link to nothing are listed, to fail with their
    reason (`export.files.unread_reason`) as a bad recording does. Nothing below `outputs` (the run's --out, if inside a
    folder given) or below a folder of `pulse segments` clips is listed: the clips would be analysed again as recordings
    of their own.
    """
    suffixes = (*AUDIO_SUFFIXES, *UNDECODABLE_SUFFIXES) if undecodable else AUDIO_SUFFIXES
    found: list[tuple[Path, Path, Path, bool]] = []  # (path, relative, its input folder, in a linked folder)
    for item in map(Path, inputs):
        if item.is_dir():
            below, unread = _recordings_below(item, outputs)
            listed = [(p, linked) for p, linked in below if p.suffix.lower() in suffixes]
            converted = {p.with_suffix("") for p, _ in listed if p.suffix.lower() in AUDIO_SUFFIXES}
            root = item.resolve()
            found += [(p, p.relative_to(item), root, linked) for p, linked in listed
                      if p.suffix.lower() in AUDIO_SUFFIXES or p.with_suffix("") not in converted]
            found += [(p, p.relative_to(item) if p != item else Path(item.name), root, linked) for p, linked in unread]
        else:
            found.append((item, Path(item.name), item.resolve().parent, False))
    unique = [found[i][:3] for i in first_of_each_file([(path, linked) for path, _, _, linked in found])]
    relatives = _distinct_output_names([(relative, root) for _, relative, root in unique])
    return [(path, relative) for (path, _, _), relative in zip(unique, relatives)]


def _recordings_below(folder: Path, outputs: str | Path | None
                      ) -> tuple[list[tuple[Path, bool]], list[tuple[Path, bool]]]:
    """`export.files.files_below` without the `outputs` folder or a folder of `pulse segments` clips below it
    (either given as `folder` itself is searched)."""
    skip = os.path.realpath(outputs) if outputs is not None else None
    return files_below(folder, (*AUDIO_SUFFIXES, *UNDECODABLE_SUFFIXES),
                       skip=lambda top, real, names: real == skip or _holds_clips(top, names))


def _holds_clips(top: str, names: list[str]) -> bool:
    """Whether `top` is the --out of `pulse segments` or `clips-from-annotations` (said once for each such folder)."""
    for name, key in _RECORD_KEYS.items():
        if name not in names:
            continue
        try:
            record = json.loads(Path(top, name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and key in record:  # not another tool's file of that name
            log.warning("%s: clips cut by `pulse %s`, not searched for recordings (give that folder itself to "
                        "analyse its clips)", top, "segments" if name == CLIPS_RECORD else "clips-from-annotations")
            return True
    return False


def _distinct_output_names(entries: list[tuple[Path, PurePath]]) -> list[Path]:
    """Output names that FAT, exFAT and NTFS take (`_portable`), renamed only where they clash: under their input
    folders' names when they come from different inputs, then with the suffix kept in the stem (g.ogg, g.aiff), then
    numbered."""
    names = [_portable(relative) for relative, _ in entries]
    for group in _clashes(names):
        if len(folders := {entries[i][1] for i in group}) > 1:
            labels = distinct_tails(folders)
            for i in group:
                names[i] = _portable(labels[entries[i][1]]) / names[i]
    for group in _clashes(names):
        for i in group:
            names[i] = names[i].with_name(f"{names[i].stem}_{names[i].suffix.lstrip('.')}{names[i].suffix}")
    for group in _clashes(names):
        for n, i in enumerate(group):
            names[i] = names[i].with_name(f"{names[i].stem}_{n + 1}{names[i].suffix}")
    return names


def _portable(relative: PurePath) -> Path:
    """`relative` with each of its names as `export.files.portable_name` makes it."""
    return Path(*map(portable_name, relative.parts))


def _clashes(names: list[Path]) -> list[list[int]]:
    """Indices of names whose outputs would share a file (case-insensitively, as file systems can)."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(name.with_suffix("").as_posix().lower(), []).append(i)
    return [group for group in groups.values() if len(group) > 1]
