"""Gated-attention MIL (ABMIL; Ilse, Tomczak and Welling, ICML 2018), used as teacher and student.

One bag (the patches of one slide) in, one typed result out: bag logits, the softmax attention
over the patches (what the heatmap and the distillation losses read), and the per-patch
embeddings (what the top-k instance loss classifies with the same head).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from lrmil.mil.config import ABMILConfig


class ABMILOutput(NamedTuple):
    logits: torch.Tensor  # [num_classes]
    attention: torch.Tensor  # [N], sums to 1
    instances: torch.Tensor  # [N, hidden_dim]


class GatedAttention(nn.Module):
    """score_i = w^T (tanh(V h_i) * sigmoid(U h_i)): the gate lets attention ignore a feature."""

    def __init__(self, dim: int, attn_dim: int, drop_rate: float):
        super().__init__()
        self.value = nn.Sequential(nn.Linear(dim, attn_dim), nn.Tanh(), nn.Dropout(drop_rate))
        self.gate = nn.Sequential(nn.Linear(dim, attn_dim), nn.Sigmoid(), nn.Dropout(drop_rate))
        self.score = nn.Linear(attn_dim, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.score(self.value(h) * self.gate(h)).squeeze(-1)


class ABMIL(nn.Module):
    def __init__(self, cfg: ABMILConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Sequential(nn.Linear(cfg.in_dim, cfg.hidden_dim), nn.ReLU(), nn.Dropout(cfg.drop_rate))
        self.attend = GatedAttention(cfg.hidden_dim, cfg.attn_dim, cfg.drop_rate)
        self.head = nn.Linear(cfg.hidden_dim, cfg.num_classes)

    def forward_features(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features [N, in_dim] -> (pooled [hidden], attention [N], instances [N, hidden])."""
        if features.ndim != 2 or features.shape[0] == 0:
            raise ValueError(f"expected a non-empty bag [N, {self.cfg.in_dim}], got {tuple(features.shape)}")
        instances = self.embed(features)
        attention = torch.softmax(self.attend(instances), dim=0)
        return attention @ instances, attention, instances

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled bag embedding(s) or instance embeddings -> class logits."""
        return self.head(pooled)

    def forward(self, features: torch.Tensor) -> ABMILOutput:
        pooled, attention, instances = self.forward_features(features)
        return ABMILOutput(self.forward_head(pooled), attention, instances)


def save_mil(path: str | Path, model: ABMIL, extra: dict | None = None) -> None:
    """Weights + architecture (+ run provenance) in one safetensors file."""
    from export.artifact import save_weights

    save_weights(path, model.state_dict(), {**model.cfg.to_dict(), **(extra or {})})


def load_mil(path: str | Path) -> ABMIL:
    """Rebuild an ABMIL from a safetensors file written by `save_mil` (never unpickles)."""
    from export.artifact import load_weights

    state, metadata = load_weights(path, package="lrmil")  # a PULSE model here: one line, not a key dump
    model = ABMIL(ABMILConfig.from_dict(metadata))
    model.load_state_dict(state)
    return model.eval()
