"""Patch encoder registry; `create_encoder(name, weights)` is the single door.

Every encoder is an `nn.Module` with `.cfg` (EncoderCfg) and `forward(x) -> [B, embed_dim]` on
inputs made by `preprocess(cfg, uint8_patches)`. Names: registered entries (`ENCODERS.list()`)
plus `timm/<arch>` for any timm architecture. `weights` is "default" (the bundled file, if the
encoder has one), "random", "hub" (timm only: downloads, so only when the user is online and
asks), or a path to a local weights file. Nothing touches the network unless "hub" is given.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import nn

from export.artifact import load_weights, save_weights, sha256
from export.registry import Registry
from lrmil.encoders.base import EncoderCfg, autocast, normalize, preprocess
from lrmil.encoders.vit import SmallViT, TokenMaps

ENCODERS: Registry[nn.Module] = Registry("patch encoder")
ENCODER_KIND = "patch_encoder"
ASSETS = Path(__file__).resolve().parents[1] / "assets"
SYNTHETIC_NOTICE = "trained on synthetic slides only; a software demo, not for diagnosis"


def bundled_weights(name: str) -> Path:
    """Where the shipped weights of a registered encoder live (the file may not exist)."""
    return ASSETS / f"{name}.safetensors"


@ENCODERS.register("lrmil_vit_tiny")
def lrmil_vit_tiny(weights: str = "default") -> nn.Module:
    """16-px tokens from a conv stem, dim 192, depth 4, 3 heads (~2 M parameters), input 256 px."""
    cfg = EncoderCfg(name="lrmil_vit_tiny", embed_dim=192, patch_px=256, mean=(0.5, 0.5, 0.5),
                     std=(0.25, 0.25, 0.25), precision="bf16")
    return _with_weights(SmallViT(cfg, stages=4, depth=4, heads=3), weights)


@ENCODERS.register("timm_resnet18")
def timm_resnet18(weights: str = "default") -> nn.Module:
    """A registered example; any other timm architecture works as `timm/<arch>`."""
    return _timm("resnet18", weights)


@ENCODERS.register("conch")
def conch(weights: str = "default") -> nn.Module:
    from lrmil.encoders.conch import ConchEncoder

    if weights in ("default", "random", "hub"):
        raise ValueError("encoder 'conch' needs --weights PATH to your local CONCH checkpoint "
                         "(its weights are gated and never downloaded here)")
    return ConchEncoder(Path(weights))


def _timm(arch: str, weights: str) -> nn.Module:
    from lrmil.encoders.timm_encoder import TimmEncoder

    if weights == "default":
        raise ValueError(f"timm/{arch} has no bundled weights: pass --weights PATH (a local "
                         f"model.safetensors), --weights hub (downloads) or --weights random")
    encoder = TimmEncoder(arch, weights)
    if weights not in ("random", "hub"):
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: weights file not found")
        encoder.load_file(path)
        encoder.cfg = dataclasses.replace(encoder.cfg, weights_sha256=sha256(path))
    return encoder


def _with_weights(model: nn.Module, weights: str) -> nn.Module:
    """Load our own safetensors file into `model` (cfg from its header) unless weights is "random"."""
    if weights == "random":
        return model
    if weights == "hub":
        raise ValueError(f"{model.cfg.name} is not on any hub: use --weights default, random or a path")
    path = bundled_weights(model.cfg.name) if weights == "default" else Path(weights)
    if not path.is_file():
        hint = " (train it with `lrmil pretrain-encoder`, or pass --weights random)" if weights == "default" else ""
        raise FileNotFoundError(f"{path}: weights file not found{hint}")
    state, metadata = load_weights(path)
    if metadata.get("kind") != ENCODER_KIND or metadata.get("arch") != model.cfg.name:
        raise ValueError(f"{path}: holds {metadata.get('kind', 'unknown')} {metadata.get('arch', '?')!r}, "
                         f"not weights for {model.cfg.name}")
    cfg = EncoderCfg.from_dict(metadata["cfg"])
    if cfg.name != model.cfg.name:  # it names the feature folder `lrmil extract` writes: '../x' was outside --out
        raise ValueError(f"{path}: its header names the encoder {model.cfg.name!r} and {cfg.name!r}; "
                         "not a file lrmil wrote")
    model.load_state_dict(state)
    model.cfg = dataclasses.replace(cfg, weights_sha256=sha256(path))
    return model


def create_encoder(name: str, weights: str = "default") -> nn.Module:
    """Build a registered encoder, or any timm architecture as `timm/<arch>`; returns it in eval mode."""
    if name.startswith("timm/"):
        return _timm(name.split("/", 1)[1], weights).eval()
    return ENCODERS.create(name, weights=weights).eval()


def save_encoder(path: str | Path, model: nn.Module, cfg: EncoderCfg, extra: dict | None = None) -> None:
    """Write fp16 weights + cfg (with `arch` so `create_encoder(arch, weights=path)` rebuilds it).

    fp16 halves the file (the bundled ViT stays under 5 MB); loading casts back to fp32.
    """
    metadata = {"package": "lrmil", "kind": ENCODER_KIND, "arch": cfg.name,
                "cfg": dataclasses.replace(cfg, weights_sha256="").to_dict(), **(extra or {})}
    save_weights(path, {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()},
                 metadata)


def load_encoder(path: str | Path) -> nn.Module:
    """Rebuild an encoder saved by `save_encoder` from the header alone (e.g. a stage-1 5x student)."""
    from export.artifact import read_weights_metadata

    arch = read_weights_metadata(path).get("arch")
    if arch is None:
        raise ValueError(f"{path}: not an LRMIL encoder file (no 'arch' in its header)")
    return create_encoder(arch, weights=str(path))


__all__ = ["ENCODERS", "EncoderCfg", "SmallViT", "TokenMaps", "SYNTHETIC_NOTICE", "autocast",
           "bundled_weights", "create_encoder", "load_encoder", "normalize", "preprocess", "save_encoder"]
