"""Manifests: CSV tables that list the audio a run uses, with paths relative to an audio root.

Two schemas (documented in data_manifests/README.md):
- labelled recordings: path, species (weak, clip-level), split, license, recordist, duration_s, sample_rate;
- unlabelled recordings (backgrounds, negatives, the unlabelled pool): path, split, license, source,
  duration_s, sample_rate.
Validation collects every problem (one line each) so a user fixes a manifest in one pass.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import pandas as pd

from export.atomic import atomic_path, from_utf8_text
from export.console import first_three
from export.tables import listed_file, path_key, read_spreadsheet_csv, windows_path_hint

if TYPE_CHECKING:
    from pulse.io import AudioInfo

LABELLED_COLUMNS = ("path", "species", "split", "license", "recordist", "duration_s", "sample_rate")
UNLABELLED_COLUMNS = ("path", "split", "license", "source", "duration_s", "sample_rate")
# What a run reads; the other columns document provenance and may be left out.
REQUIRED_LABELLED, REQUIRED_UNLABELLED = ("path", "species", "split"), ("path", "split")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message lists every problem, one per line."""


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest CSV as strings (numbers are parsed where used); a path that is not UTF-8, which
    `write_manifest` wrote with its odd bytes as \\udcXX, as the name to open."""
    path = Path(path)
    if path.is_dir():  # a folder of recordings given where its manifest goes
        raise ManifestError(f"{path}: a folder, not a manifest (a CSV file: pulse make-manifest writes one, with "
                            f"--unlabelled for recordings without labels)")
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        frame = read_spreadsheet_csv(path, REQUIRED_UNLABELLED)  # edited in Excel, as make-manifest asks
    except ValueError as exc:
        raise ManifestError(str(exc)) from None
    if "path" in frame.columns:
        frame["path"] = frame["path"].map(from_utf8_text)
    return frame


def write_manifest(path: str | Path, frame: pd.DataFrame) -> None:
    """Write a manifest atomically, UTF-8 even where a recording's name is not (a Latin-1 name from an old Windows
    archive: its bytes as \\udcXX, as `export.atomic.utf8_text` writes them; it stopped make-manifest with
    UnicodeEncodeError, nothing written)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, errors="backslashreplace")


def require_columns(frame: pd.DataFrame, path: str | Path, columns: Iterable[str]) -> None:
    """A ManifestError naming the file and the `columns` its table lacks."""
    if missing := [column for column in columns if column not in frame.columns]:
        raise ManifestError(f"{path}: no {' or '.join(missing)} column")


def is_labelled(frame: pd.DataFrame) -> bool:
    return "species" in frame.columns


def validate_manifest(frame: pd.DataFrame, audio_root: str | Path, labels: Iterable[str] | None = None,
                      splits: Iterable[str] = ("train", "validation"), name: str = "manifest") -> list[str]:
    """Every problem of a manifest as one readable line each; an empty list means it is usable.

    Checks: required columns, empty paths, duplicate paths, missing files under `audio_root`,
    species outside `labels` (labelled manifests), and each required split being non-empty.
    """
    required = REQUIRED_LABELLED if is_labelled(frame) else REQUIRED_UNLABELLED
    missing_cols = [c for c in required if c not in frame.columns]
    if missing_cols:
        documented = LABELLED_COLUMNS if is_labelled(frame) else UNLABELLED_COLUMNS
        return [f"{name}: missing column(s) {', '.join(missing_cols)} (needed: {', '.join(required)}; "
                f"documented: {', '.join(documented)})"]
    problems = []
    root = Path(audio_root)
    rows_by_path: dict[str, list[int]] = {}  # `path_key`: a name typed and one copied from a Mac are one
    for row, path in enumerate(frame["path"], start=2):  # row 1 is the header
        if not path.strip():
            problems.append(f"{name}:{row}: empty path")
            continue
        rows_by_path.setdefault(path_key(path), []).append(row)
        if not listed_file(root, path).is_file():
            problems.append(f"{name}:{row}: missing file {root / path}{windows_path_hint(root, path)}")
    for path, rows in rows_by_path.items():
        if len(rows) > 1:
            spellings = {frame["path"].iat[row - 2] for row in rows}
            problems.append(f"{name}: duplicate path {path} ({len(rows)} rows: {', '.join(map(str, rows))}"
                            + (", the same name in two spellings)" if len(spellings) > 1 else ")"))
    if labels is not None and is_labelled(frame):
        labels = tuple(labels)
        known, unknown = set(labels), {}
        for row, species in enumerate(frame["species"], start=2):
            if species not in known:
                unknown.setdefault(species, []).append(row)
        for species, rows in unknown.items():  # one line per name, at its first row
            problems.append(f"{name}:{rows[0]}: unknown species {species!r}"
                            + (f" ({len(rows)} rows)" if len(rows) > 1 else "") + longer_label_hint(species, labels))
    for split in splits:
        if not (frame["split"] == split).any():
            problems.append(f"{name}: split {split!r} is empty")
    return problems


def load_manifest(path: str | Path, audio_root: str | Path, labels: Iterable[str] | None = None,
                  splits: Iterable[str] = ("train", "validation")) -> pd.DataFrame:
    """Read and validate; raise ManifestError listing all problems if there are any."""
    frame = read_manifest(path)
    problems = validate_manifest(frame, audio_root, labels, splits, name=str(path))
    if problems:
        raise ManifestError("\n".join(problems))
    return frame


def longer_label_hint(species: str, labels: Iterable[str]) -> str:
    """Where a label is the species with more after it (BirdNET-Analyzer's `Gryllus campestris_Field Cricket`
    copied into model.labels), what to change: the labels hold only the names the manifest's species column does."""
    # after a space only a capitalised common name: 'Gryllus' beside the label 'Gryllus campestris' is a genus
    longer = next((label for label in labels if label.startswith(f"{species}_")
                   or label.startswith(f"{species} ") and label[len(species) + 1:][:1].isupper()), None)
    if longer is None:
        return ""
    return (f"; the labels have {longer!r}: a label is the scientific name alone, the common name goes in "
            f"model.common_names")


def select_split(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    return frame[frame["split"] == split].reset_index(drop=True)


# BirdNET-Analyzer's training folders that hold no class: sounds to learn as "none of them"
NON_EVENT_FOLDERS = ("noise", "other", "background", "silence")


def folder_species(name: str) -> tuple[str, str]:
    """(scientific name, common name) of a species folder: `Gryllus_campestris` and `Gryllus campestris` name
    the species alone, BirdNET-Analyzer's `Gryllus campestris_Field Cricket` the two, split at the first '_'."""
    scientific, underscore, common = name.partition("_")
    if underscore and " " in scientific.strip():
        return scientific.strip(), common.strip()
    scientific, underscore, common = name.rpartition("_")
    if underscore and " " in common.strip() and scientific.strip() and " " not in scientific.strip():
        return scientific.replace("_", " ").strip(), common.strip()  # Gryllus_campestris_Field cricket
    return name.replace("_", " ").strip(), ""


def not_a_species_folder(folder: Path) -> str | None:
    """Why a folder laid out for BirdNET-Analyzer's training is no species folder here (None: it is one)."""
    name = folder.name.strip()  # as folder_species reads it: ' Noise' is the Noise folder
    if name.lower() in NON_EVENT_FOLDERS:
        return (f"{folder}: BirdNET-Analyzer's folder of sounds that are no class, not a species; to train on it as "
                f"background and negatives, add \"backgrounds\": [{json.dumps(str(folder))}] to the training config "
                f"(to validate on it too, and for teacher-cache: pulse make-manifest {shlex.quote(str(folder))} "
                "--unlabelled --out noise.csv)")  # both as pasted: a JSON string, a shell word
    if name.startswith("-"):
        return (f"{folder}: BirdNET-Analyzer's negatives of one species, which PULSE has no place for; add it to the "
                'training config\'s "backgrounds" only if none of the model\'s species sings in it')
    if "," in name:
        return f"{folder}: several species in one folder name; copy its recordings into each species' own folder"
    return None


def manifest_from_folders(root: str | Path, val_fraction: float = 0.2, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """A labelled manifest from one folder per species (`Gryllus_campestris/`, `Gryllus campestris/`, or as
    BirdNET-Analyzer trains from them, `Gryllus campestris_Field Cricket/`: then a `common_name` column too), and
    one line per file that could not be read or folder that names no species (left out).

    In each species `val_fraction` of the recordings (at least one, when there are two or more) go to
    `validation`, whole recordings: those whose content hash, salted with `seed`, ranks first. So a file's split
    depends on its own species' files: one added there can push a validation recording into train, or, where it
    raises the species' validation count, draw one more into validation; other species' files move nothing. A
    recording copied into two species folders (two singers in it) is in one split, validation if either copy is
    drawn for it (so such a species can have a validation recording more than its share).
    """
    check_val_fraction(val_fraction)
    root = Path(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    if not folders:
        raise ManifestError(f"{root}: no species folders (expected one folder of recordings per species; for a "
                            f"folder of recordings without labels, such as BirdNET-Analyzer's Noise, --unlabelled)")
    found, problems, common_names = [], [], {}  # found: (species, path, content hash, info)
    for folder in folders:
        if reason := not_a_species_folder(folder):
            problems.append(reason)
            continue
        species, common = folder_species(folder.name)
        common_names[species] = common or common_names.get(species, "")  # 'X' beside 'X_Common name': one species
        found += [(species, *recording) for recording in read_recordings(folder, problems)]
    validation = set()
    for species in dict.fromkeys(item[0] for item in found):
        validation |= drawn_for_validation({item[2] for item in found if item[0] == species}, val_fraction, seed)
    rows = [(path.relative_to(root).as_posix(), species, "validation" if content in validation else "train",
             "", "", f"{info.duration_s:.3f}", str(info.sample_rate)) for species, path, content, info in found]
    frame = pd.DataFrame(rows, columns=list(LABELLED_COLUMNS)).sort_values("path", ignore_index=True)
    if any(common_names.values()):
        frame["common_name"] = frame["species"].map(common_names)
    return frame, problems


def unlabelled_manifest_from_folder(root: str | Path, val_fraction: float = 0.2,
                                    seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """An unlabelled manifest of every recording under `root` (backgrounds: BirdNET-Analyzer's Noise folder), and
    one line per file that could not be read. Training mixes songs into its `train` split and validates on its
    `validation` split (drawn as one species' recordings are), and `pulse teacher-cache` reads a manifest: a
    folder alone serves neither."""
    check_val_fraction(val_fraction)
    root, problems = Path(root), []
    noise, species = species_folders_beside_noise(root)
    if species:  # every song of theirs would be mixed into training as background and scored as no song
        raise ManifestError(f"{root}: BirdNET-Analyzer's training folders (species {first_three(species)} beside "
                            f"{noise.name}), whose songs --unlabelled would make backgrounds; give the folder of no "
                            f"class itself (pulse make-manifest {shlex.quote(str(noise))} --unlabelled), and {root} "
                            "without --unlabelled for the species")
    found = read_recordings(root, problems) if root.is_dir() else []
    if not found and not problems:
        raise ManifestError(f"{root}: no recordings found")
    validation = drawn_for_validation({content for _, content, _ in found}, val_fraction, seed)
    rows = [(path.relative_to(root).as_posix(), "validation" if content in validation else "train", "", "",
             f"{info.duration_s:.3f}", str(info.sample_rate)) for path, content, info in found]
    return pd.DataFrame(rows, columns=list(UNLABELLED_COLUMNS)).sort_values("path", ignore_index=True), problems


def species_folders_beside_noise(root: Path) -> tuple[Path | None, list[str]]:
    """A BirdNET-Analyzer training root's folder of no class (Noise, Other, Background, Silence) and its species
    folders by name: those with a common name (`Gryllus campestris_Field Cricket`) or a binomial name."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    noise = next((p for p in folders if p.name.strip().lower() in NON_EVENT_FOLDERS), None)
    if noise is None:
        return None, []
    return noise, [p.name for p in folders if not not_a_species_folder(p) and (
        folder_species(p.name)[1] or re.fullmatch(r"[A-Z][a-z]+ [a-z]+(-[a-z]+)?", folder_species(p.name)[0]))]


def check_val_fraction(val_fraction: float) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in [0, 1), got {val_fraction:g}")


def read_recordings(folder: Path, problems: list[str]) -> list[tuple[Path, str, AudioInfo]]:
    """(path, content hash, header) of every recording under `folder`; one that cannot be read is a line added to
    `problems` instead."""
    from export.artifact import sha256
    from pulse.discovery import find_audio
    from pulse.io import AudioReadError, audio_info

    found = []
    for path, _ in find_audio([folder], undecodable=True):
        try:
            info = audio_info(path)
            found.append((path, sha256(path), info))
        except AudioReadError as exc:
            problems.append(str(exc))
        except OSError as exc:  # readable as audio a moment ago: gone, or not ours to read
            problems.append(f"{path}: cannot read it ({exc.strerror or exc})")
    return found


def drawn_for_validation(contents: set[str], val_fraction: float, seed: int) -> set[str]:
    """`val_fraction` of the contents (at least one of two or more): those whose hash, salted with `seed`, ranks
    first, so that a recording's split depends on its own folder's recordings alone."""
    ranked = sorted(contents, key=lambda content: hashlib.sha256(f"{seed}:{content}".encode()).hexdigest())
    n_val = max(1, round(len(ranked) * val_fraction)) if len(ranked) >= 2 and val_fraction > 0 else 0
    return set(ranked[:n_val])
