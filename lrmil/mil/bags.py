"""Slides as bags: the features of one slide, its label and fold, loaded from the feature store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from export.tables import in_other_case


@dataclass(frozen=True)
class Bag:
    slide_id: str
    label: int  # index into the run's labels
    fold: int
    features: torch.Tensor  # [N, D] float32
    children: torch.Tensor  # [N, 16] int64 rows of the 20x bag in 5x bags, [N, 0] in 20x bags
    magnification: float = 0.0
    encoder: str = ""
    coords: np.ndarray | None = None  # [N, 2] level-0 (x, y) of each patch, from the feature file
    patch_size_level0: int = 0
    weights_sha256: str = ""  # of the encoder weights file the features came from; "" = unknown (CLAM, TRIDENT)


def feature_path(features_dir: str | Path, slide_id: str) -> Path:
    """The slide's feature file as named (`lrmil.store.feature_file`: as lrmil or CLAM names it), else the one file
    named so in another case: slide ids ignore case (as `SlideIds` and a Windows share do), and `case7` typed into a
    splits CSV was 'no feature file' beside Case7.h5."""
    from lrmil.store import feature_file

    path = feature_file(features_dir, slide_id)
    if not path.is_file() and len(others := in_other_case(path.parent, path.name)) == 1:
        return others[0]
    return path


def load_bags(features_dir: str | Path, splits: pd.DataFrame, labels: tuple[str, ...],
              left_out: list[dict] | None = None) -> dict[str, Bag]:
    """Every slide of `splits` that has a non-empty feature file; a missing or unreadable one is logged, skipped and
    appended to `left_out` (slide_id, path, error_type, reason), so the run can record it."""
    from lrmil.errors import leave_out
    from lrmil.store import missing_feature_file, read_features

    index = {name: i for i, name in enumerate(labels)}
    bags = {}
    makers: dict[tuple, list[str]] = {}  # (encoder, weights, magnification, width) -> its slides
    for row in splits.itertuples():
        path = feature_path(features_dir, row.slide_id)
        if not path.is_file():  # one line, not h5py's errno paragraph
            missing, held = missing_feature_file(features_dir, row.slide_id)
            leave_out(left_out, row.slide_id, missing, "FileNotFoundError",
                      f"no feature file {missing}{held}{_named_in_other_cases(path)}",
                      where=f"{row.slide_id} (line {row.Index + 2} of the splits CSV)")
            continue
        try:
            ff = read_features(path)
        except (OSError, KeyError, ValueError) as err:
            leave_out(left_out, row.slide_id, path, type(err).__name__, f"cannot read features ({err})")
            continue
        if len(ff.features) == 0:
            leave_out(left_out, row.slide_id, path, "ValueError", "no tissue patches")
            continue
        bags[row.slide_id] = Bag(row.slide_id, index[row.label], int(row.fold), torch.from_numpy(ff.features),
                                 torch.from_numpy(ff.children).long(), ff.magnification, ff.encoder, ff.coords,
                                 int(ff.patch_size_level0), ff.weights_sha256)
        makers.setdefault((ff.encoder, ff.weights_sha256, ff.magnification, ff.features.shape[1]),
                          []).append(row.slide_id)
    if not bags:
        held = sorted(p.name for p in Path(features_dir).glob("*.h5"))
        if not (first := feature_path(features_dir, splits["slide_id"].iloc[0])).is_file():
            first = missing_feature_file(features_dir, splits["slide_id"].iloc[0])[0]
        raise FileNotFoundError(f"{features_dir}: no readable feature files for the slides in the splits CSV (looked "
                                f"for {first.name}, ...; the folder holds "
                                f"{f'{len(held)} .h5 file(s), e.g. {held[0]}' if held else 'no .h5 files'})"
                                f"{_feature_folders_within(Path(features_dir))}")
    # one model on two encoders' features would train on noise (same width, other weights) or stop mid-epoch
    # (CLAM/TRIDENT files name no encoder: UNI's 1024-d beside CONCH's 512-d)
    if len(makers) > 1:
        found = "; ".join(f"{name or '?'} weights {sha[:8] or '?'} at {f'{mag:g}x' if mag else '?'}, {width}-d: "
                          f"{len(ids)} slide(s), e.g. {ids[0]}" for (name, sha, mag, width), ids in makers.items())
        raise ValueError(f"{features_dir}: features from more than one encoder ({found}); extract every slide with "
                         "one encoder and its weights, each encoder into its own --out")
    return bags


def _named_in_other_cases(path: Path) -> str:
    """Two files named so in other cases (Case7.h5, CASE7.h5): which one is the slide's is not for a guess."""
    others = in_other_case(path.parent, path.name)
    return f" ({' and '.join(p.name for p in others)} differ from it only in case: keep the slide's)" if others else ""


def _feature_folders_within(folder: Path) -> str:
    """`lrmil extract --out work20` writes work20/features/<encoder>_<mag>x_<px>px/; given work20 (or its
    features/) as --features, every slide was 'no feature file' and the run stopped without saying where they are."""
    inside = sorted(str(d) for d in [*folder.glob("*"), *folder.glob("features/*")]
                    if d.is_dir() and d.name not in ("features", "patches") and any(d.glob("*.h5")))
    return f"; give --features the folder of one encoder's files: {', '.join(inside)}" if inside else ""
