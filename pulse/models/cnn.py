"""Compact residual CNN encoders over log-mel spectrograms.

Each stage halves frequency and time, so a 3 s window of 64 mels ends as a 4-band map (the bundled
models' 151 frames of 20 ms as 10 steps); pooling then takes the mean over frequency and max + mean over
time (as in PANNs, Kong et al. 2020), which keeps short chirps and steady trills alike.
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a strided shortcut."""

    def __init__(self, in_chans: int, out_chans: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_chans, out_chans, 3, stride, 1, bias=False), nn.BatchNorm2d(out_chans), nn.ReLU(inplace=True),
            nn.Conv2d(out_chans, out_chans, 3, 1, 1, bias=False), nn.BatchNorm2d(out_chans),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(in_chans, out_chans, 1, stride, bias=False), nn.BatchNorm2d(out_chans))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.body(x) + self.shortcut(x))


class ConvEncoder(nn.Module):
    """Log-mel [B, in_chans, mels, frames] -> pooled features [B, num_features]."""

    def __init__(self, widths: tuple[int, ...] = (24, 48, 96, 192), in_chans: int = 1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, widths[0], 3, 2, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        self.stages = nn.Sequential(*[ResidualBlock(a, b, stride=2) for a, b in zip(widths[:-1], widths[1:])])
        self.num_features = 2 * widths[-1]

    def forward(self, x):
        return pool_frequency_time(self.stages(self.stem(x)))


class TimmEncoder(nn.Module):
    """Any timm backbone's feature map, pooled the same way as ConvEncoder."""

    def __init__(self, name: str, in_chans: int = 1):
        super().__init__()
        import timm

        self.backbone = timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=0)
        self.num_features = 2 * self.backbone.num_features

    def forward(self, x):
        return pool_frequency_time(self.backbone.forward_features(x))


def pool_frequency_time(x: torch.Tensor) -> torch.Tensor:
    """[B, C, F, T] -> [B, 2C]: mean over frequency, then max and mean over time."""
    x = x.mean(dim=2)
    return torch.cat([x.amax(dim=2), x.mean(dim=2)], dim=1)
