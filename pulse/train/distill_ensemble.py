"""Distillation from trained PULSE models, as a loss term of the multitask loop.

Why: on the validation proxy the distilled default and the supervised model fail differently (one
is steadier in F1 in noise, the other in detection), and the mean of their scores keeps the
strengths of both; running two networks would halve throughput, so one student learns that mean.
Each step the teachers (frozen, in eval mode) score the same augmented windows the student sees,
before SpecAugment, and the student's window logits are pulled towards the mean of the teachers'
sigmoid scores (BCE against soft targets). Teachers are `.safetensors` files written by
`pulse train`; they must name the same species and frame the audio the same way. A student of a
BirdNET-distilled teacher inherits BirdNET's licence, as in distill_birdnet.py.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pulse.config import TrainConfig
from pulse.train.losses import LOSS_TERMS, LossTerm, StepOutputs, schedule_span


def load_teachers(cfg: TrainConfig) -> list[nn.Module]:
    """The teacher networks of `cfg.ensemble_teachers`, checked against the student's config."""
    from pulse.models import load_model

    teachers = []
    for path in cfg.ensemble_teachers:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: ensemble teacher not found (a model.safetensors written by pulse train)")
        teacher = load_model(path).eval().requires_grad_(False)
        theirs, ours = teacher.cfg, cfg.model
        if (theirs.labels, theirs.sample_rate, theirs.window_s) != (ours.labels, ours.sample_rate, ours.window_s):
            raise ValueError(f"{path}: an ensemble teacher must name the same species at the same sample rate "
                             f"and window as the student ({len(theirs.labels)} species, {theirs.sample_rate} Hz, "
                             f"{theirs.window_s:g} s against {len(ours.labels)}, {ours.sample_rate} Hz, "
                             f"{ours.window_s:g} s)")
        teachers.append(teacher)
    return teachers


def teacher_licenses(cfg: TrainConfig) -> list[str]:
    """The licence each ensemble teacher's weights carry (from their headers; no tensors read)."""
    from export.artifact import read_weights_metadata

    if cfg.lambda_ensemble <= 0:
        return []
    return [read_weights_metadata(path, package="pulse").get("license", "") for path in cfg.ensemble_teachers]


class EnsembleDistillation(LossTerm):
    """BCE of the student's window logits against the teachers' mean window scores."""

    def __init__(self, weight: float, teachers: list[nn.Module], active: tuple[float, float] = (0.0, 1.0)):
        super().__init__(weight, active)
        self.teachers = tuple(teachers)  # a tuple: not submodules, so never trained, checkpointed or moved

    @torch.no_grad()
    def targets(self, waves: torch.Tensor) -> torch.Tensor:
        """Mean teacher sigmoid scores [B, K, C] of the windows [B, K, N]."""
        batch, windows, samples = waves.shape
        flat = waves.reshape(batch * windows, samples)
        scores = [torch.sigmoid(teacher.to(waves.device)(flat).logits) for teacher in self.teachers]
        return torch.stack(scores).mean(dim=0).reshape(batch, windows, -1)

    def forward(self, model: nn.Module, out: StepOutputs) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(out.window_logits, self.targets(out.waves))


@LOSS_TERMS.register("ensemble")
def ensemble(cfg: TrainConfig, model: nn.Module) -> LossTerm | None:
    if cfg.lambda_ensemble <= 0:
        return None
    if not cfg.ensemble_teachers:
        raise ValueError("lambda_ensemble > 0 needs ensemble_teachers: the model.safetensors files to learn from")
    return EnsembleDistillation(cfg.lambda_ensemble, load_teachers(cfg), schedule_span(cfg, supervised=True))
