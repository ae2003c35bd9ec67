"""The PULSE classifier: raw waveform in, species logits and embedding out.

frontend (log-mel) -> per-mel-bin normalisation -> encoder -> embedding -> multi-label head.
The embedding is a first-class output: distillation matches it to BirdNET's, BYOL trains it,
and the apps display it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from pulse.config import ModelConfig
from pulse.frontend import LogMel


class ModelOutput(NamedTuple):
    logits: torch.Tensor  # [B, num_classes], before the sigmoid
    embedding: torch.Tensor  # [B, embed_dim]


class PulseClassifier(nn.Module):
    def __init__(self, cfg: ModelConfig, encoder: nn.Module, frontend_mode: str = "fft"):
        super().__init__()
        self.cfg = cfg
        self.frontend = LogMel.for_model(cfg, frontend_mode)
        self.input_norm = nn.BatchNorm1d(cfg.n_mels)  # PANNs' bn0: learns each mel band's level
        self.encoder = encoder
        self.embed = nn.Sequential(nn.Linear(encoder.num_features, cfg.embed_dim), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(cfg.drop_rate), nn.Linear(cfg.embed_dim, cfg.num_classes))

    def features_from_logmel(self, logmel: torch.Tensor) -> torch.Tensor:
        """Log-mel [B, 1, mels, frames] -> embedding; training augments the log-mel first."""
        x = self.input_norm(logmel[:, 0])[:, None]
        if self.cfg.band_contrast:
            x = torch.cat([x, x - x.mean(dim=3, keepdim=True)], dim=1)
        return self.embed(self.encoder(x))

    def forward_features(self, wave: torch.Tensor) -> torch.Tensor:
        return self.features_from_logmel(self.frontend(wave))

    def forward_head(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.head(embedding)

    def forward(self, wave: torch.Tensor) -> ModelOutput:
        embedding = self.forward_features(wave)
        return ModelOutput(self.forward_head(embedding), embedding)


class ScoresAndEmbedding(nn.Module):
    """Deployment view: sigmoid scores and the embedding, the two outputs every artefact exposes."""

    output_names = ("scores", "embedding")

    def __init__(self, model: PulseClassifier):
        super().__init__()
        self.model = model

    def forward(self, wave: torch.Tensor):
        logits, embedding = self.model(wave)
        return torch.sigmoid(logits), embedding
