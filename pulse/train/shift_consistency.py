"""Shift consistency: the same window scored a fraction of a frame later should score the same.

Why: the bundled models frame 44.1 kHz audio with 512-sample frames every 882 samples, so 42 % of
the samples fall between frames, and where a song's pulses fall on that grid is chance in a
user's recording. On the validation proxy the true species' score moves by more than 0.4 for one
excerpt in ten when the excerpt starts 0-17.5 ms later (bench/README.md, "Where the song falls on
the frame grid"). Training already sees random alignments, but the weak-label loss never compares
two of them. This term does: each training window is also scored starting 1..hop-1 samples later
(`weak_labels.step_outputs`, same augmentations, same batch), and the squared difference of the two
sets of sigmoid scores, summed over species, is minimised. Inference is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from pulse.config import TrainConfig
from pulse.train.losses import LOSS_TERMS, LossTerm, StepOutputs, schedule_span


def sub_frame_offsets(count: int, hop_length: int, generator: torch.Generator) -> torch.Tensor:
    """[count] offsets drawn uniformly from 1..hop_length-1 samples: never a whole frame."""
    return torch.randint(1, hop_length, (count,), generator=generator)


def advanced(waves: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Row i of [B, N] started `offsets[i]` samples later: its first samples dropped, zeros at the end."""
    index = torch.arange(waves.shape[1], device=waves.device)[None] + offsets.to(waves.device)[:, None]
    inside = index < waves.shape[1]
    return torch.where(inside, waves.gather(1, index.clamp(max=waves.shape[1] - 1)), torch.zeros((), dtype=waves.dtype))


class ShiftConsistency(LossTerm):
    """Sum over species of the squared score difference between a window and its shifted copy."""

    def forward(self, model: nn.Module, out: StepOutputs) -> torch.Tensor:
        if out.shifted_logits is None:
            raise ValueError("shift consistency needs the shifted windows' logits (set lambda_shift > 0)")
        difference = torch.sigmoid(out.window_logits) - torch.sigmoid(out.shifted_logits)
        return difference.square().sum(dim=-1).mean()


@LOSS_TERMS.register("shift")
def shift(cfg: TrainConfig, model: nn.Module) -> LossTerm | None:
    if cfg.lambda_shift <= 0:
        return None
    return ShiftConsistency(cfg.lambda_shift, schedule_span(cfg, supervised=True))  # it trains the species head
