"""Pool window-level scores into one clip-level score (weak labels name the clip, not the window).

All poolers map (window logits [B, K, C], window embeddings [B, K, D]) -> clip logits [B, C]:
- max: the clip holds the species if its best window does (multiple-instance learning);
- mean: every window counts equally (suits species that sing without pause);
- attention: learned per-class weights over windows (Kong et al. 2019 decision-level attention).
Max and mean act on logits; max of logits is max of probabilities, the sigmoid being monotone.
"""

from __future__ import annotations

import torch
from torch import nn

from export.registry import Registry

POOLING: Registry[nn.Module] = Registry("clip pooling")


@POOLING.register("max")
class MaxPool(nn.Module):
    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__()

    def forward(self, logits: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        return logits.amax(dim=1)


@POOLING.register("mean")
class MeanPool(nn.Module):
    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__()

    def forward(self, logits: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        return logits.mean(dim=1)


@POOLING.register("attention")
class AttentionPool(nn.Module):
    """Softmax over windows of a per-class relevance computed from each window's embedding."""

    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__()
        self.relevance = nn.Linear(embed_dim, num_classes)

    def forward(self, logits: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.relevance(embeddings), dim=1)  # [B, K, C], sums to 1 over windows
        return (weights * logits).sum(dim=1)


def create_pooling(name: str, embed_dim: int, num_classes: int) -> nn.Module:
    return POOLING.create(name, embed_dim=embed_dim, num_classes=num_classes)
