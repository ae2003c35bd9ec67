"""Loss terms: the training step minimises a weighted sum of named terms, each one logged.

A term is an `nn.Module` (so its own parameters, e.g. a BYOL projector, train and checkpoint
with the model) built by a factory registered in LOSS_TERMS. The factory receives the
TrainConfig and the model and returns None when its weight is 0. To add a term, write it in its
own module (pulse/train/byol.py, distill_birdnet.py, ...), register it there, add the module to
TERM_MODULES and give its weight a field of TrainConfig (`lambda_<name>`, default 0, in
pulse/config.py: a config naming a key no field takes is refused); weak_labels.py needs no change
unless the term needs a second forward pass of the batch itself (shift_consistency.py:
`StepOutputs.shifted_logits`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
from torch import nn

from export.registry import Registry
from pulse.config import TrainConfig

# Modules that register loss terms when imported.
TERM_MODULES: tuple[str, ...] = ("pulse.train.losses", "pulse.train.byol", "pulse.train.distill_birdnet",
                                 "pulse.train.distill_ensemble", "pulse.train.shift_consistency")


@dataclass(frozen=True)
class StepOutputs:
    """What one training step computed; every term reads what it needs from here."""

    step: int
    waves: torch.Tensor  # [B, K, N] augmented windows
    logmel: torch.Tensor  # [B*K, 1, mels, frames] after SpecAugment
    window_logits: torch.Tensor  # [B, K, C]
    embeddings: torch.Tensor  # [B, K, D]
    clip_logits: torch.Tensor  # [B, C] pooled over windows
    targets: torch.Tensor  # [B, C] clip-level (weak) labels
    shifted_logits: torch.Tensor | None = None  # [B, K, C] the windows a fraction of a frame later (lambda_shift)


class LossTerm(nn.Module):
    """A weighted loss; `after_step` runs after each optimiser step (e.g. an EMA update).

    `active` is the span of the run (as shares of all steps) in which the term counts; outside it
    its weight is 0 and the loop skips it (the "pre-train then fine-tune" schedule).
    """

    def __init__(self, weight: float, active: tuple[float, float] = (0.0, 1.0)):
        super().__init__()
        self.weight, self.active = weight, active

    def weight_at(self, progress: float) -> float:
        return self.weight if self.active[0] <= progress < self.active[1] else 0.0

    def forward(self, model: nn.Module, out: StepOutputs) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, model: nn.Module) -> None:
        return None


LOSS_TERMS: Registry = Registry("loss term")


class WeakLabelBCE(LossTerm):
    """Binary cross-entropy of pooled clip logits against clip labels, lightly smoothed."""

    def __init__(self, weight: float, smoothing: float, active: tuple[float, float] = (0.0, 1.0)):
        super().__init__(weight, active)
        self.smoothing = smoothing

    def forward(self, model: nn.Module, out: StepOutputs) -> torch.Tensor:
        target = out.targets * (1 - self.smoothing) + 0.5 * self.smoothing
        return nn.functional.binary_cross_entropy_with_logits(out.clip_logits, target)


def schedule_span(cfg: TrainConfig, supervised: bool) -> tuple[float, float]:
    """Where a term is active: everywhere ("joint"), or BYOL/KD first and the labels after
    ("pretrain_finetune", split at cfg.semi.pretrain_frac)."""
    if cfg.semi.schedule == "joint":
        return (0.0, 1.0)
    return (cfg.semi.pretrain_frac, 1.0) if supervised else (0.0, cfg.semi.pretrain_frac)


@LOSS_TERMS.register("bce")
def bce(cfg: TrainConfig, model: nn.Module) -> LossTerm:
    return WeakLabelBCE(1.0, cfg.label_smoothing, schedule_span(cfg, supervised=True))


def build_loss_terms(cfg: TrainConfig, model: nn.Module) -> nn.ModuleDict:
    """Every enabled term, keyed by its registered name (sorted, so the order is stable)."""
    for module in TERM_MODULES:
        importlib.import_module(module)
    terms = {name: LOSS_TERMS.create(name, cfg=cfg, model=model) for name in LOSS_TERMS.list()}
    return nn.ModuleDict({name: term for name, term in terms.items() if term is not None})
