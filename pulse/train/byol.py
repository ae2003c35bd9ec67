"""BYOL on unlabelled audio, as a loss term of the multitask loop.

BYOL (Grill et al. 2020): an online network (the student's own encoder + a projector + a
predictor) learns to predict a slowly moving target network's projection of another view of the
same window; loss 2 - 2 cos per direction; the target follows the online weights by EMA.
Views follow BYOL-A (Niizumi et al. 2021), written from the paper: mixup with a memory of past
unlabelled inputs in the linear (power) domain, random resize-crop of the log-mel from a wider
virtual canvas, and normalisation; before the frontend each view also gets a second pool window
mixed in at a random SNR and a random gain. Normalisation gives each view the mean and standard
deviation of its clean log-mel, so the student's input BatchNorm sees one distribution for the
supervised and the BYOL batches.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import torch
from torch import nn

from pulse.config import SemiConfig, TrainConfig
from pulse.train.augment import apply_gain, mix_at_snr
from pulse.train.losses import LOSS_TERMS, LossTerm, StepOutputs, schedule_span

STREAM = 104_729  # BYOL draws its windows from its own random stream


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """BYOL's projector/predictor: linear, batch norm, ReLU, linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_dim))


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of 2 - 2 cos(prediction, target) over the batch (the target carries no gradient)."""
    cos = nn.functional.cosine_similarity(prediction, target.detach(), dim=-1)
    return (2.0 - 2.0 * cos).mean()


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, decay: float) -> None:
    """target <- decay * target + (1 - decay) * online; buffers (BatchNorm statistics) are copied."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.mul_(decay).add_(o.detach(), alpha=1.0 - decay)
    for t, o in zip(target.buffers(), online.buffers()):
        t.copy_(o)


class MixupMemory(nn.Module):
    """BYOL-A mixup: log((1 - a) exp(x) + a exp(m)), a ~ U(0, ratio), m a past input from a FIFO."""

    def __init__(self, size: int, ratio: float):
        super().__init__()
        self.size, self.ratio = size, ratio
        self.items: list[torch.Tensor] = []

    def get_extra_state(self) -> torch.Tensor:
        """The remembered inputs go into the checkpoint: a resumed run mixes what the uninterrupted one would."""
        return torch.stack(self.items).cpu() if self.items else torch.zeros(0)

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.items = list(state) if state.numel() else []

    def forward(self, logmel: torch.Tensor, generator: torch.Generator, remember: bool = True) -> torch.Tensor:
        """Mix each example with a remembered past input; then remember this batch if `remember`."""
        batch = logmel.shape[0]
        out = logmel
        if self.items:
            memory = torch.stack([item.to(logmel.device) for item in self.items])  # restored ones are on the CPU
            picks = memory[torch.randint(len(memory), (batch,), generator=generator)]
            alpha = (torch.rand(batch, 1, 1, 1, generator=generator) * self.ratio).to(logmel)
            out = torch.log((1 - alpha) * logmel.exp() + alpha * picks.exp())
        if remember:
            self.items = (self.items + list(logmel.detach()))[-self.size:]
        return out


def random_resize_crop(logmel: torch.Tensor, generator: torch.Generator, virtual_time: float,
                       scale: tuple[float, float]) -> torch.Tensor:
    """Crop each [1, F, T] log-mel from a canvas `virtual_time` x wider (filled with its mean) and
    resize the crop back to [F, T] (bicubic): shifts and stretches in time and frequency."""
    batch, _, n_mels, frames = logmel.shape
    width = int(round(frames * virtual_time))
    out = torch.empty_like(logmel)
    for i in range(batch):
        canvas = logmel[i].mean().expand(1, n_mels, width).clone()
        left = (width - frames) // 2
        canvas[:, :, left:left + frames] = logmel[i]
        h, w = (torch.empty(2).uniform_(*scale, generator=generator) * torch.tensor([n_mels, frames])).long().tolist()
        h, w = min(max(h, 1), n_mels), min(max(w, 1), width)
        top = int(torch.randint(0, n_mels - h + 1, (1,), generator=generator))
        start = int(torch.randint(0, width - w + 1, (1,), generator=generator))
        crop = canvas[None, :, top:top + h, start:start + w]
        out[i] = nn.functional.interpolate(crop, size=(n_mels, frames), mode="bicubic", align_corners=False)[0]
    return out


def match_statistics(view: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Give each example of `view` the mean and standard deviation of the same example of `reference`."""
    dims = (1, 2, 3)
    standard = (view - view.mean(dims, keepdim=True)) / (view.std(dims, keepdim=True) + 1e-5)
    return standard * reference.std(dims, keepdim=True) + reference.mean(dims, keepdim=True)


def waveform_view(window: np.ndarray, pool_window: np.ndarray, cfg: SemiConfig, rng: np.random.Generator) -> np.ndarray:
    """Background mixing (another unlabelled window at a random SNR), then a random gain."""
    mixed = mix_at_snr(window, pool_window, float(rng.uniform(*cfg.byol_snr_db)))
    return apply_gain(mixed, float(rng.uniform(*cfg.byol_gain_db)))


@contextlib.contextmanager
def running_stats_frozen(model: nn.Module):
    """BatchNorm layers still normalise with the batch's statistics, but do not fold them into their
    running averages: those serve inference, so they must describe the labelled (field-like)
    inputs, not BYOL's cropped, mixed and re-normalised views."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


class BYOL(LossTerm):
    """The BYOL term: draws its own unlabelled batch each step and returns the symmetric loss."""

    def __init__(self, weight: float, model: nn.Module, cfg: SemiConfig, pool, seed: int,
                 active: tuple[float, float] = (0.0, 1.0)):
        super().__init__(weight, active)
        self.cfg, self.pool, self.seed = cfg, pool, seed
        embed_dim = model.embed[0].out_features
        self.projector = mlp(embed_dim, cfg.byol_hidden, cfg.byol_dim)
        self.predictor = mlp(cfg.byol_dim, cfg.byol_hidden, cfg.byol_dim)
        self.target_model = copy.deepcopy(model).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.mixup = MixupMemory(cfg.mixup_memory, cfg.mixup_ratio)

    def views(self, model: nn.Module, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Two augmented log-mels [B, 1, F, T] of the same unlabelled windows."""
        rng = np.random.default_rng([self.seed, STREAM, step])
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        windows = self.pool.batch(rng, self.cfg.byol_batch)
        others = self.pool.batch(rng, 2 * self.cfg.byol_batch)
        out = []
        for v in range(2):
            waves = np.stack([waveform_view(w, others[v * len(windows) + i], self.cfg, rng)
                              for i, w in enumerate(windows)])
            with torch.no_grad():
                clean = model.frontend(torch.from_numpy(waves).to(next(model.parameters()).device))
                view = self.mixup(clean, generator, remember=v == 1)  # never mixed with its own other view
                view = random_resize_crop(view, generator, self.cfg.rrc_virtual_time, self.cfg.rrc_scale)
                out.append(match_statistics(view, clean))
        return out[0], out[1]

    def forward(self, model: nn.Module, out: StepOutputs) -> torch.Tensor:
        one, two = self.views(model, out.step)
        with running_stats_frozen(model):
            online = self.predictor(self.projector(model.features_from_logmel(torch.cat([one, two]))))
        with torch.no_grad():
            target = self.target_projector(self.target_model.features_from_logmel(torch.cat([two, one])))
        return byol_loss(online, target)

    def after_step(self, model: nn.Module) -> None:
        ema_update(self.target_model, model, self.cfg.byol_ema)
        ema_update(self.target_projector, self.projector, self.cfg.byol_ema)


@LOSS_TERMS.register("byol")
def byol(cfg: TrainConfig, model: nn.Module) -> LossTerm | None:
    if cfg.lambda_byol <= 0:
        return None
    from pulse.unlabelled import UnlabelledPool

    semi = cfg.semi
    pool = UnlabelledPool.from_manifests(semi.unlabelled_manifests, semi.unlabelled_roots, semi.unlabelled_split,
                                         cfg.model.sample_rate, cfg.model.window_s)
    return BYOL(cfg.lambda_byol, model, semi, pool, cfg.seed, schedule_span(cfg, supervised=False))
