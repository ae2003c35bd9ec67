"""HDF5 feature store: the only module that touches h5py.

One file per slide and resolution, laid out as CLAM/TRIDENT expect: datasets `coords` [N, 2]
(level-0 x, y) and `features` [N, D], with `patch_size_level0`, `patch_size`,
`level0_magnification` and `target_magnification` on `coords`. LRMIL adds `children` [N, 16]
to 5x files (indices into the 20x file of the same slide, -1 for background) and, on the file,
the encoder name, its weights sha256, the level-0 mpp and where it came from, the slide file it
was cut from (path, size, mtime) and the job's config as JSON plus its hash: a file whose hash
and slide file match the current ones is up to date and skipped on re-run.
Files are written under a temporary name and moved into place, so a killed job leaves none.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from export.atomic import atomic_path, from_utf8_text, utf8_text
from export.files import name_within_limit
from export.tables import listed_file, nfc
from lrmil.config import magnification_for_mpp, mpp_for_magnification
from lrmil.patching import GridLevel, PatchGrid
from lrmil.slide import slide_file_name

COORDS, FEATURES, CHILDREN = "coords", "features", "children"
CUT_SHORT = re.compile(r"truncated file: eof = (\d+),.*stored_eof = (\d+)")  # HDF5's words for a file cut short
GRID_GROUPS = ("teacher", "student")


@dataclass(frozen=True)
class FeatureFile:
    """One slide at one resolution. `children` is [N, 0] in 20x files (they have none)."""

    coords: np.ndarray  # [N, 2] int64 level-0 (x, y)
    features: np.ndarray  # [N, D] float32
    children: np.ndarray  # [N, ratio*ratio] int64 in 5x files
    patch_size_level0: int
    patch_px: int
    magnification: float
    mpp: float
    mpp_source: str = ""  # "metadata" or "--mpp"
    encoder: str = ""
    weights_sha256: str = ""
    slide_id: str = ""
    source: dict = field(default_factory=dict)  # lrmil.slide.slide_source of the slide file
    config: dict = field(default_factory=dict)
    config_hash: str = ""


def feature_dir(root: str | Path, encoder: str, magnification: float, patch_px: int) -> Path:
    """Output folders encode their parameters: ROOT/<encoder>_<mag>x_<px>px/."""
    return Path(root) / f"{encoder}_{magnification:g}x_{patch_px}px"


def feature_file(folder: str | Path, sid: str) -> Path:
    """Slide `sid`'s feature file in `folder`: named by `slide_file_name`, or by the id as it is (`scan 12:00.h5`,
    `CON.h5`), as CLAM names it, so that a CLAM store of such slides trains. A file under the first name that records
    another slide's id (CON_.h5 of slide CON_, beside CLAM's CON.h5) is not taken for it. Where neither is there,
    the first name: to write, or to say is missing."""
    new = listed_file(folder, slide_file_name(sid, ".h5"))
    old = listed_file(folder, name_within_limit(sid, ".h5"))
    if new == old or (new.is_file() and nfc(_stored_slide_id(new)).casefold() == nfc(sid).casefold()):
        return new
    return old if old.is_file() or new.is_file() else new


def missing_feature_file(folder: str | Path, sid: str) -> tuple[Path, str]:
    """What to name where `feature_file` finds no file of slide `sid`: the file `lrmil extract` writes for it, and
    where another slide's file holds that name (CON_.h5, slide CON_'s, where CON has none), a note saying so."""
    new = listed_file(folder, slide_file_name(sid, ".h5"))
    return new, f" (that file holds slide {_stored_slide_id(new) or new.stem}'s)" if new.is_file() else ""


def _stored_slide_id(path: Path) -> str:
    """The slide id a feature file of `write_features` records ("" for none, as in CLAM's, or unreadable)."""
    try:
        with h5py.File(path, "r") as f:
            return from_utf8_text(str(f.attrs.get("slide_id", "")))
    except (OSError, KeyError, ValueError):
        return ""


def write_features(path: str | Path, ff: FeatureFile) -> None:
    """Write `ff` atomically (features as float32, chunked so readers can stream rows)."""
    n = len(ff.coords)
    if ff.features.shape[0] != n or ff.children.shape[0] != n:
        raise ValueError(f"{path}: coords ({n}), features ({ff.features.shape[0]}) and children "
                         f"({ff.children.shape[0]}) must have the same number of rows")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        coords = f.create_dataset(COORDS, data=np.asarray(ff.coords, np.int64))
        coords.attrs.update({
            "patch_size_level0": int(ff.patch_size_level0), "patch_size": int(ff.patch_px),
            "level0_magnification": magnification_for_mpp(ff.mpp),
            "target_magnification": float(ff.magnification), "overlap": 0, "name": utf8_text(ff.slide_id),
        })
        chunks = (max(1, min(n, 256)), ff.features.shape[1]) if n and ff.features.shape[1] else None
        f.create_dataset(FEATURES, data=np.asarray(ff.features, np.float32), chunks=chunks)
        if ff.children.shape[1]:
            f.create_dataset(CHILDREN, data=np.asarray(ff.children, np.int64))
        f.attrs.update({
            "slide_id": utf8_text(ff.slide_id), "encoder": ff.encoder, "weights_sha256": ff.weights_sha256,
            "mpp": float(ff.mpp), "mpp_source": ff.mpp_source, "magnification": float(ff.magnification),
            "patch_px": int(ff.patch_px), "source": json.dumps(ff.source, sort_keys=True),
            "config": json.dumps(ff.config, sort_keys=True, default=str), "config_hash": ff.config_hash,
        })


def read_features(path: str | Path) -> FeatureFile:
    """Read a feature file written by `write_features`, or one from CLAM or TRIDENT: CLAM's hold only `coords` and
    `features`, so `patch_size_level0` is 0 (unknown) there; `lrmil train` needs none of the attributes."""
    with _open(path) as f:
        coords = _whole(f, COORDS)
        ca, fa = f[COORDS].attrs, f.attrs
        children = _whole(f, CHILDREN) if CHILDREN in f else np.zeros((len(coords), 0), np.int64)
        level0_mag = float(ca.get("level0_magnification", 20.0))
        return FeatureFile(
            coords=coords, features=_whole(f, FEATURES).astype(np.float32), children=children,
            patch_size_level0=int(ca.get("patch_size_level0", 0)),
            patch_px=int(fa.get("patch_px", ca.get("patch_size", 0))),
            magnification=float(ca.get("target_magnification", fa.get("magnification", 0.0))),
            mpp=float(fa.get("mpp", mpp_for_magnification(level0_mag))), mpp_source=str(fa.get("mpp_source", "")),
            encoder=str(fa.get("encoder", "")), weights_sha256=str(fa.get("weights_sha256", "")),
            slide_id=str(fa.get("slide_id", ca.get("name", Path(path).stem))),
            source=json.loads(fa.get("source", "{}")),
            config=json.loads(fa.get("config", "{}")), config_hash=str(fa.get("config_hash", "")),
        )


def _open(path: str | Path) -> h5py.File:
    """`path` opened for reading. A file cut short (a copy stopped midway) said so in HDF5's words, "Unable to
    synchronously open file (truncated file: eof = 6464, sblock->base_addr = 0, stored_eof = 12928)"."""
    try:
        return h5py.File(path, "r")
    except OSError as err:
        if cut := CUT_SHORT.search(str(err)):
            raise OSError(f"cut short: {cut[1]} of its {cut[2]} bytes (a copy stopped midway, or its writing); copy or "
                          "extract the slide again") from None
        raise


def _whole(f: h5py.File, name: str) -> np.ndarray:
    """Dataset `name`, once the file is seen to hold all of it: a damaged or crafted header (features of 10**12 rows
    in a 2 kB file) was a MemoryError traceback that ended `lrmil train`, and rows a writer never wrote (CLAM's, killed
    between growing the dataset and filling it) read as zeros. The callers name the file."""
    ds = f[name]
    if ds.chunks:  # a chunk never written has no storage at all, however many rows the header claims
        held, unit = ds.id.get_num_chunks(), "chunks"
        needed = math.prod(-(-n // c) for n, c in zip(ds.shape, ds.chunks))
    else:
        held, needed, unit = ds.id.get_storage_size(), ds.nbytes, "bytes"
    if held < needed:
        raise ValueError(f"'{name}' declares {' x '.join(map(str, ds.shape))} values but the file holds {held} of its "
                         f"{needed} {unit}: damaged, or its writing was cut short; extract the slide again")
    return ds[:]


def stored_key(path: str | Path) -> tuple[str, dict]:
    """(config hash, slide file) of an existing store file; ("", {}) when absent or unreadable (then it is redone)."""
    try:
        with h5py.File(path, "r") as f:
            return str(f.attrs.get("config_hash", "")), json.loads(f.attrs.get("source", "{}"))
    except (OSError, KeyError, ValueError):
        return "", {}


def is_current(path: str | Path, config_hash: str, source: dict) -> bool:
    """True when `path` was made by this config from this slide file (`lrmil.slide.slide_source`)."""
    return Path(path).is_file() and stored_key(path) == (config_hash, source)


def write_grid(path: str | Path, grid: PatchGrid, config: dict, config_hash: str, slide_id: str = "") -> None:
    """The patch grid of one slide (both resolutions and the parent->children links)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name in GRID_GROUPS:
            level: GridLevel = getattr(grid, name)
            group = f.create_group(name)
            group.create_dataset(COORDS, data=level.coords)
            group.attrs.update({"patch_size_level0": level.size_level0, "patch_size": level.patch_px,
                                "target_magnification": level.magnification, "read_level": level.read_level})
        f["student"].create_dataset(CHILDREN, data=grid.children)
        f.attrs.update({"mpp": grid.mpp, "dimensions": grid.dimensions, "slide_id": utf8_text(slide_id),
                        "level0_magnification": magnification_for_mpp(grid.mpp),
                        "config": json.dumps(config, sort_keys=True, default=str), "config_hash": config_hash})


def read_grid(path: str | Path) -> PatchGrid:
    with h5py.File(path, "r") as f:
        levels = {}
        for name in GRID_GROUPS:
            g = f[name]
            levels[name] = GridLevel(g[COORDS][:], int(g.attrs["patch_size_level0"]), int(g.attrs["patch_size"]),
                                     float(g.attrs["target_magnification"]), int(g.attrs["read_level"]))
        return PatchGrid(levels["teacher"], levels["student"], f["student"][CHILDREN][:],
                         float(f.attrs["mpp"]), tuple(int(v) for v in f.attrs["dimensions"]))
