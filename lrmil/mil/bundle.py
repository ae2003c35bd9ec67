"""A prediction model folder: both paths (5x student, 20x teacher) as encoder + ABMIL, plus settings.

`model.json` names the four weight files and holds the patch and tissue configs the MIL models
were trained with, so `lrmil predict` cuts exactly the same grid. Encoders are stored in fp16
(half the size, same features to ~1e-3), which keeps the bundled demo model small.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from export.atomic import write_json
from lrmil.config import PatchConfig, TissueConfig
from lrmil.mil.attention import ABMIL, load_mil

BUNDLE_FILE = "model.json"
PATHS = ("student", "teacher")


def demo_model_dir() -> Path:
    """The bundled demo model (package data next to the code; works for editable installs too)."""
    return Path(__file__).resolve().parents[1] / "assets" / "demo_model"


@dataclass(frozen=True)
class PathModel:
    """One resolution path, ready to run."""

    name: str  # "student" (5x) or "teacher" (20x)
    encoder: nn.Module
    mil: ABMIL
    patch: PatchConfig
    tissue: TissueConfig
    notice: str  # shown in every output; "" for a real model


def save_bundle(out: str | Path, student: tuple[Path, Path], teacher: tuple[Path, Path], patch: PatchConfig,
                tissue: TissueConfig, notice: str = "") -> Path:
    """Write a model folder from (encoder file, ABMIL file) pairs; returns the folder."""
    from lrmil.encoders import load_encoder, save_encoder

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entry = {}
    for name, (encoder_file, mil_file) in zip(PATHS, (student, teacher)):
        encoder = load_encoder(encoder_file)
        check_pair(name, load_mil(mil_file), encoder, mil_file)
        save_encoder(out / f"{name}_encoder.safetensors", copy.deepcopy(encoder).half(), encoder.cfg)
        shutil.copyfile(mil_file, out / f"{name}_mil.safetensors")
        entry[name] = {"encoder": f"{name}_encoder.safetensors", "mil": f"{name}_mil.safetensors"}
    write_json(out / BUNDLE_FILE, {"package": "lrmil", "notice": notice, "patch": patch.to_dict(),
                                   "tissue": tissue.to_dict(), **entry})
    return out


def check_pair(name: str, mil: ABMIL, encoder: nn.Module, where: str | Path) -> None:
    """An ABMIL only runs on features of the size its encoder gives."""
    if mil.cfg.in_dim != encoder.cfg.embed_dim:
        raise ValueError(f"{where}: {name} ABMIL expects {mil.cfg.in_dim}-d features, encoder gives {encoder.cfg.embed_dim}")


def load_path(folder: str | Path, name: str) -> PathModel:
    """Load one path of a model folder; clear errors for a missing folder or an unknown path."""
    from lrmil.encoders import load_encoder

    folder = Path(folder)
    if name not in PATHS:
        raise ValueError(f"--path must be one of {', '.join(PATHS)}, got {name!r}")
    spec_file = folder / BUNDLE_FILE
    if not spec_file.is_file():
        raise FileNotFoundError(f"{folder}: not an LRMIL model folder (no {BUNDLE_FILE})")
    spec = json.loads(spec_file.read_text())
    encoder = load_encoder(folder / spec[name]["encoder"]).float().eval()
    mil = load_mil(folder / spec[name]["mil"])
    check_pair(name, mil, encoder, folder)
    notice = spec.get("notice", "") or mil.cfg.notice
    return PathModel(name, encoder, mil, PatchConfig.from_dict(spec["patch"]), TissueConfig.from_dict(spec["tissue"]), notice)
