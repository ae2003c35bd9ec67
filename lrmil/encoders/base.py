"""What every patch encoder carries: a cfg (as timm's PretrainedCfg) and transforms derived from it.

Call sites never type in a normalisation or an input size: `preprocess(encoder.cfg, patches)`
turns uint8 patches into exactly what that encoder was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from export.jsonconfig import JsonConfig
from lrmil.config import IMAGENET_MEAN, IMAGENET_STD, PRECISIONS

AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class EncoderCfg(JsonConfig):
    """Everything needed to use an encoder's weights correctly, stored next to them."""

    name: str
    embed_dim: int
    magnification: float = 20.0  # what the weights were trained or distilled for
    patch_px: int = 256  # network input side; other patch sizes are resized to it
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    precision: str = "bf16"  # autocast dtype on GPU
    weights_sha256: str = ""  # of the file the weights came from; "" = random init
    source: str = ""
    license: str = ""
    training_data: str = ""

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")



def preprocess(cfg: EncoderCfg, patches: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] (on any device) -> normalised float [B, 3, patch_px, patch_px]."""
    x = normalize(cfg, patches)
    if x.shape[-1] != cfg.patch_px or x.shape[-2] != cfg.patch_px:
        x = F.interpolate(x, size=(cfg.patch_px, cfg.patch_px), mode="bilinear", antialias=True,
                          align_corners=False)
    return x


def normalize(cfg: EncoderCfg, patches: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> normalised float [B, 3, H, W] at their own size (training crops)."""
    x = patches.permute(0, 3, 1, 2).float().div(255.0)  # not in place: a float input is the caller's tensor
    mean = torch.tensor(cfg.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def autocast(cfg: EncoderCfg, device: torch.device | str, enabled: bool = True):
    """Autocast in the encoder's precision on CUDA; a no-op context on CPU or for fp32."""
    device = torch.device(device)
    dtype = AUTOCAST_DTYPES.get(cfg.precision)
    use = enabled and device.type == "cuda" and dtype is not None
    return torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=use)
