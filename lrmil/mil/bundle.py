"""A prediction model folder: both paths (5x student, 20x teacher) as encoder + ABMIL, plus settings.

`model.json` names the four weight files and holds the patch and tissue configs the MIL models
were trained with, so `lrmil predict` cuts exactly the same grid. Encoders are stored in fp16
(half the size, same features to ~1e-3), which keeps the bundled demo model small. A folder
written by `lrmil export` holds `onnx.json` and ONNX graphs instead; `load_path` reads either,
and both kinds of path answer the same two calls (`encode`, `classify`), so `lrmil predict`,
the lab app and the benchmark never ask which runtime is behind them.
"""

from __future__ import annotations

import copy
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from export.atomic import atomic_path, write_json
from export.jsonconfig import read_json
from export.predictor import Predictor
from lrmil.config import PatchConfig, TissueConfig
from lrmil.mil.attention import ABMIL, load_mil

BUNDLE_FILE = "model.json"
ONNX_FILE = "onnx.json"  # written by `lrmil export` (lrmil.onnx_export)
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

    @property
    def labels(self) -> tuple[str, ...]:
        return self.mil.cfg.labels

    @torch.inference_mode()
    def encode(self, patches: np.ndarray) -> np.ndarray:
        """uint8 RGB patches [B, H, W, 3] as read from the slide -> features [B, D] (float32)."""
        from lrmil.encoders import autocast, preprocess

        device = next(self.encoder.parameters()).device
        with autocast(self.encoder.cfg, device):
            features = self.encoder(preprocess(self.encoder.cfg, torch.from_numpy(patches).to(device)))
        return features.float().cpu().numpy()

    @torch.inference_mode()
    def classify(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One bag's features [N, D] -> (class probabilities [C], attention [N])."""
        result = self.mil(torch.from_numpy(features).to(next(self.mil.parameters()).device))
        return torch.softmax(result.logits, -1).cpu().numpy(), result.attention.cpu().numpy()


@dataclass(frozen=True)
class OnnxPathModel:
    """The same path as ONNX graphs run by ONNX Runtime (`lrmil export` wrote them)."""

    name: str
    encoder: Predictor  # of {path}_encoder.onnx
    mil: Predictor  # of {path}_mil.onnx
    patch: PatchConfig
    tissue: TissueConfig
    notice: str
    labels: tuple[str, ...]

    def encode(self, patches: np.ndarray) -> np.ndarray:
        return self.encoder.predict(patches)["features"]

    def classify(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.mil.predict(features)
        return out["probabilities"], out["attention"]


def save_bundle(out: str | Path, student: tuple[Path, Path], teacher: tuple[Path, Path], patch: PatchConfig,
                tissue: TissueConfig, notice: str = "") -> Path:
    """Write a model folder from (encoder file, ABMIL file) pairs, both checked before anything is written (a
    refused teacher left a folder of the student's files); returns the folder."""
    from lrmil.encoders import SYNTHETIC_NOTICE, load_encoder, save_encoder

    pairs = {}
    for name, (encoder_file, mil_file) in zip(PATHS, (student, teacher)):
        encoder, mil = load_encoder(encoder_file), load_mil(mil_file)
        check_encoder_slot(name, encoder, encoder_file, patch)
        check_pair(name, mil, encoder, mil_file, patch)
        check_features_weights(name, mil_file, encoder, encoder_file)
        pairs[name] = encoder, mil, mil_file
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entry, synthetic = {}, False
    for name, (encoder, mil, mil_file) in pairs.items():
        save_encoder(out / f"{name}_encoder.safetensors", copy.deepcopy(encoder).half(), encoder.cfg)
        with atomic_path(out / f"{name}_mil.safetensors") as tmp:  # a link there is replaced, not written through
            shutil.copyfile(mil_file, tmp)
        entry[name] = {"encoder": f"{name}_encoder.safetensors", "mil": f"{name}_mil.safetensors"}
        notice = notice or mil.cfg.notice
        synthetic |= "synthetic" in encoder.cfg.training_data
    notice = notice or (SYNTHETIC_NOTICE if synthetic else "")  # weights trained on lrmil.synth slides say so
    write_json(out / BUNDLE_FILE, {"package": "lrmil", "notice": notice, "patch": patch.to_dict(),
                                   "tissue": tissue.to_dict(), **entry})
    return out


def check_pair(name: str, mil: ABMIL, encoder: nn.Module, where: str | Path, patch: PatchConfig) -> None:
    """An ABMIL only runs on features of the size its encoder gives, from its encoder architecture, at the
    magnification of its slot (a 20x ABMIL in the 5x student slot would run, and be wrong)."""
    if mil.cfg.in_dim != encoder.cfg.embed_dim:
        raise ValueError(f"{where}: {name} ABMIL expects {mil.cfg.in_dim}-d features, "
                         f"encoder gives {encoder.cfg.embed_dim}")
    if mil.cfg.encoder and mil.cfg.encoder != encoder.cfg.name:
        raise ValueError(f"{where}: {name} ABMIL was trained on {mil.cfg.encoder} features, "
                         f"encoder is {encoder.cfg.name}")
    expected, _ = patch.level(name)
    if not math.isclose(mil.cfg.magnification, expected):
        raise ValueError(f"{where}: the {name} slot takes a {expected:g}x ABMIL, this one was trained on "
                         f"{mil.cfg.magnification:g}x features (swapped --student-mil and --teacher-mil?)")


def check_features_weights(name: str, mil_file: Path, encoder: nn.Module, encoder_file: Path) -> None:
    """An ABMIL runs on features of another weights file of its encoder too (the demo model's teacher encoder
    where the features came from the bundled default), and its predictions flip; a model trained before its
    features' weights were recorded, or on CLAM's or TRIDENT's files, is not checked."""
    from export.artifact import read_weights_metadata, sha256
    from lrmil.encoders import bundled_weights

    trained_on = read_weights_metadata(mil_file, package="lrmil").get("features_weights_sha256", "")
    if not trained_on or trained_on == encoder.cfg.weights_sha256:
        return
    default = bundled_weights(encoder.cfg.name)
    where = f" (those of `--weights default`: {default})" if default.is_file() and sha256(default) == trained_on else ""
    raise ValueError(f"{encoder_file}: the {name} ABMIL {mil_file} was trained on features of encoder weights "
                     f"{trained_on[:8]}, this file holds {encoder.cfg.weights_sha256[:8]}; give --{name}-encoder the "
                     f"weights its features were extracted with{where}")


def check_encoder_slot(name: str, encoder: nn.Module, where: str | Path, patch: PatchConfig) -> None:
    """An encoder distilled for coarser patches than its slot's would run, and be wrong (a 20x encoder in the 5x
    slot is allowed: the baseline without distillation)."""
    expected, _ = patch.level(name)
    if encoder.cfg.magnification < expected and not math.isclose(encoder.cfg.magnification, expected):
        raise ValueError(f"{where}: the {name} slot reads {expected:g}x patches, and this encoder was distilled for "
                         f"{encoder.cfg.magnification:g}x (swapped --student-encoder and --teacher-encoder?)")


def load_path(folder: str | Path, name: str, device: str = "cpu", threads: int = 0) -> PathModel | OnnxPathModel:
    """Load one path of a model folder (weights, or ONNX graphs), ready on `device`; clear errors for a
    missing folder or an unknown path."""
    from lrmil.encoders import load_encoder

    folder = Path(folder)
    if name not in PATHS:
        raise ValueError(f"--path must be one of {', '.join(PATHS)}, got {name!r}")
    if not (folder / BUNDLE_FILE).is_file() and (folder / ONNX_FILE).is_file():
        return _load_onnx_path(folder, name, device, threads)
    spec_file = folder / BUNDLE_FILE
    if not spec_file.is_file():
        if any(folder.glob("fold*/model.safetensors")):  # the --out of `lrmil train` or `distill`, a likely guess
            raise FileNotFoundError(f"{folder}: a training run, not a model folder; `lrmil bundle` makes one of a "
                                    "fold's model.safetensors and the encoders of its features")
        raise FileNotFoundError(f"{folder}: not an LRMIL model folder (no {BUNDLE_FILE} or {ONNX_FILE})")
    spec = read_json(spec_file)
    encoder = load_encoder(folder / spec[name]["encoder"]).float().eval().to(device)
    mil = load_mil(folder / spec[name]["mil"]).to(device)
    patch = PatchConfig.from_dict(spec["patch"])
    check_encoder_slot(name, encoder, folder, patch)
    check_pair(name, mil, encoder, folder, patch)
    notice = spec.get("notice", "") or mil.cfg.notice
    return PathModel(name, encoder, mil, patch, TissueConfig.from_dict(spec["tissue"]), notice)


def _load_onnx_path(folder: Path, name: str, device: str, threads: int) -> OnnxPathModel:
    from export.backends.onnxruntime_backend import OnnxRuntimePredictor

    spec = read_json(folder / ONNX_FILE)
    if name not in spec:
        exported = [p for p in PATHS if p in spec]
        raise ValueError(f"{folder}: this ONNX export has no {name} path (exported: {', '.join(exported)}); "
                         f"use --path {exported[0] if exported else 'student'} or export it")
    encoder = OnnxRuntimePredictor(folder / spec[name]["encoder"], device, threads)
    mil = OnnxRuntimePredictor(folder / spec[name]["mil"], device, threads)
    return OnnxPathModel(name, encoder, mil, PatchConfig.from_dict(spec["patch"]),
                         TissueConfig.from_dict(spec["tissue"]), spec.get("notice", ""),
                         tuple(mil.metadata["mil"]["labels"]))
