"""A small Vision Transformer that trains on CPU in minutes and exposes its token maps.

Pre-norm blocks (Dosovitskiy et al. 2021) with fixed 2-D sin-cos positions (as in MAE), so the
same weights run on 64-px training crops and 256-px patches without interpolating anything.
Tokens come from a convolutional stem (four stride-2 3x3 convolutions, Xiao et al. 2021,
"Early convolutions help transformers see better") fed with RGB plus a local-contrast channel,
and are layer-normalised before the positions are added. The synthetic classes differ in
pixel-scale texture energy: with a linear 16x16 patch embedding and un-normalised tokens (whose
scale the fixed positions swamped) a ViT trained from scratch on CPU never found it in our runs;
with these three changes it does within ~150 steps.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from lrmil.encoders.base import EncoderCfg


class TokenMaps(NamedTuple):
    layers: list[torch.Tensor]  # one [B, H, W, D] per requested block, in request order
    final: torch.Tensor  # [B, H, W, D] after the last block and the final norm
    pooled: torch.Tensor  # [B, D] mean of `final`, the encoder's feature


def sincos_positions(h: int, w: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sin-cos embedding [h*w, dim]: half the channels encode y, half x."""
    if dim % 4:
        raise ValueError(f"embed dim must be divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    parts = []
    for grid in (ys.reshape(-1), xs.reshape(-1)):
        angle = grid[:, None] * omega[None]
        parts += [angle.sin(), angle.cos()]
    return torch.cat(parts, dim=1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ChannelNorm(nn.Module):
    """LayerNorm over channels at each pixel: batch-independent, so train and eval behave alike."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def local_contrast(x: torch.Tensor) -> torch.Tensor:
    """|pixel - mean of its 3x3 neighbourhood| of the channel mean: pixel-scale texture energy [B, 1, H, W]."""
    gray = x.mean(dim=1, keepdim=True)
    return (gray - F.avg_pool2d(gray, 3, stride=1, padding=1, count_include_pad=False)).abs()


def conv_stem(dim: int, stages: int) -> nn.Sequential:
    """`stages` x (3x3 conv stride 2, channel norm, GELU), widths doubling up to dim, then a 1x1 projection."""
    layers, channels = [], 4  # RGB + local contrast
    for i in range(stages):
        width = max(dim // 2 ** (stages - 1 - i), 16)
        layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), ChannelNorm(width), nn.GELU()]
        channels = width
    return nn.Sequential(*layers, nn.Conv2d(channels, dim, 1))


class SmallViT(nn.Module):
    """ViT with a 2**stages-pixel token stride; input normalised float [B, 3, H, W], H and W multiples of it."""

    def __init__(self, cfg: EncoderCfg, stages: int = 4, depth: int = 4, heads: int = 3, mlp_ratio: float = 4.0):
        super().__init__()
        self.cfg, self.patch = cfg, 2 ** stages
        self.patch_embed = conv_stem(cfg.embed_dim, stages)
        self.embed_norm = nn.LayerNorm(cfg.embed_dim)  # token content at the scale of the positions
        self.blocks = nn.ModuleList(Block(cfg.embed_dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            nn.init.kaiming_uniform_(module.weight.view(module.weight.shape[0], -1), a=math.sqrt(5))
            nn.init.zeros_(module.bias)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def forward_tokens(self, x: torch.Tensor, layers: tuple[int, ...] = ()) -> TokenMaps:
        """Token maps after the blocks in `layers` (0-based), plus the final map and pooled feature."""
        for layer in layers:
            if not 0 <= layer < self.depth:
                raise ValueError(f"layer {layer} out of range for a depth-{self.depth} ViT")
        tokens = self.patch_embed(torch.cat([x, local_contrast(x)], dim=1))
        b, d, h, w = tokens.shape
        tokens = self.embed_norm(tokens.flatten(2).transpose(1, 2)) + sincos_positions(h, w, d).to(tokens)
        maps = {}
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            if i in layers:
                maps[i] = tokens.reshape(b, h, w, d)
        final = self.norm(tokens)
        return TokenMaps([maps[i] for i in layers], final.reshape(b, h, w, d), final.mean(dim=1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final normalised tokens [B, N, D]."""
        return self.forward_tokens(x).final.flatten(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(x).pooled
