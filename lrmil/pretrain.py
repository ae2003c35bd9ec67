"""Supervised pre-training of the small ViT on synthetic 20x crops: the project's teacher encoder.

Crops are rendered on the fly from synthetic slide specs (no files) and every 16-px token is
labelled from the generator's own ground truth: 0 background, 1 tissue, 1 + c atypical nuclei
of class c; tokens that touch an atypical nucleus only slightly are ignored rather than guessed.
Dense labels give the encoder a clean signal at token level, where stage-1 distillation works.
The texture that separates the classes is pixel-scale, so the encoder must learn 20x detail;
`evaluate` also reports token recall on the same crops box-averaged to 5x, where only the faint
size/contrast/density cue is left.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lrmil.config import PretrainConfig, SynthConfig
from lrmil.encoders import SYNTHETIC_NOTICE, create_encoder, normalize, save_encoder
from lrmil.synth import SlideSpec, make_spec, render
from lrmil.tissue import saturation

SPEC_SIZE = 4096
TOKEN_PX = 16  # the ViT's token stride
WARMUP_SHARE = 0.1  # of the pre-training steps, rising to the peak learning rate
MIN_ATYPICAL_PX = 24  # atypical-nucleus pixels that make a token atypical; 1..23 are ignored
IGNORE = -100


def token_labels(rgb: np.ndarray, atypical: np.ndarray, label: int) -> np.ndarray:
    """[h/16, w/16] token classes: 0 background, 1 tissue, 1 + label atypical, IGNORE ambiguous."""
    h, w = atypical.shape[0] // TOKEN_PX, atypical.shape[1] // TOKEN_PX
    count = atypical.reshape(h, TOKEN_PX, w, TOKEN_PX).sum(axis=(1, 3))
    tissue = (saturation(rgb) > 0.08).reshape(h, TOKEN_PX, w, TOKEN_PX).mean(axis=(1, 3)) > 0.5
    return np.where(count >= MIN_ATYPICAL_PX, 1 + label, np.where(count > 0, IGNORE, tissue.astype(np.int64)))


def sample_crops(specs: list[SlideSpec], synth: SynthConfig, n: int, px: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n crops [n, px, px, 3] uint8 and token labels [n, px/16, px/16]; half of positive draws aim at lesions."""
    images = np.zeros((n, px, px, 3), np.uint8)
    labels = np.zeros((n, px // TOKEN_PX, px // TOKEN_PX), np.int64)
    for i in range(n):
        spec = specs[rng.integers(len(specs))]
        if len(spec.lesions) and rng.random() < 0.5:
            lx, ly, lr = spec.lesions[rng.integers(len(spec.lesions))]
            angle, dist = rng.uniform(0, 2 * np.pi), lr * np.sqrt(rng.random())
            x, y = lx + dist * np.cos(angle) - px / 2, ly + dist * np.sin(angle) - px / 2
        else:
            x, y = rng.uniform(0, spec.size - px, 2)
        x, y = int(np.clip(x, 0, spec.size - px)), int(np.clip(y, 0, spec.size - px))
        rgb, atypical = render(spec, x, y, px, px, synth)
        k = int(rng.integers(4))
        images[i] = np.rot90(rgb, k)
        labels[i] = np.rot90(token_labels(rgb, atypical, spec.label), k)
    return images, labels


def _augment(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Stain-like per-channel gain and shift (rotations are drawn with the crops, labels and all)."""
    b = x.shape[0]
    gain = 1 + 0.1 * (torch.rand(b, 3, 1, 1, generator=rng) - 0.5)
    shift = 0.2 * (torch.rand(b, 3, 1, 1, generator=rng) - 0.5)
    return x * gain + shift


def _box5x(images: np.ndarray, ratio: int = 4) -> np.ndarray:
    """20x crops as they look at 5x: box-average by `ratio`, then blown back up (nearest)."""
    n, h, w, c = images.shape
    small = images.reshape(n, h // ratio, ratio, w // ratio, ratio, c).mean(axis=(2, 4))
    return np.repeat(np.repeat(small, ratio, axis=1), ratio, axis=2).round().astype(np.uint8)


def token_logits(encoder: nn.Module, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[B, h, w, classes] logits of every token."""
    return head(encoder.forward_tokens(x).final)


@torch.inference_mode()
def evaluate(encoder: nn.Module, head: nn.Module, images: np.ndarray, labels: np.ndarray) -> dict:
    """Token recall per class at 20x and on the same crops degraded to 5x."""
    out = {}
    for name, batch in (("20x", images), ("5x", _box5x(images))):
        pred = token_logits(encoder, head, normalize(encoder.cfg, torch.from_numpy(batch))).argmax(-1).numpy()
        out[f"recall_{name}"] = [round(float((pred[labels == c] == c).mean()), 3) for c in range(head.out_features)]
    return out


def one_cycle(optim: torch.optim.Optimizer, lr: float, steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """One-cycle schedule warming up over a tenth of the steps. torch's OneCycleLR divides by zero when the
    warm-up ends exactly on the first step (a tenth of 10 steps), so there it gets half that: under one step
    either way, and `--steps 10` trains instead of crashing."""
    warmup_share = WARMUP_SHARE if WARMUP_SHARE * steps != 1 else WARMUP_SHARE / 2
    return torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=lr, total_steps=steps, pct_start=warmup_share)


def pretrain(cfg: PretrainConfig, synth: SynthConfig, out: str | Path) -> dict:
    """Train `cfg.encoder` from scratch, save it (fp16 safetensors + cfg) to `out`, return metrics."""
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    specs = [make_spec(dataclasses.replace(synth, size=SPEC_SIZE, seed=synth.seed + 1000), i, i % synth.classes)
             for i in range(4 * synth.classes)]
    encoder = create_encoder(cfg.encoder, weights="random").train()
    head = nn.Linear(encoder.cfg.embed_dim, synth.classes + 1)
    params = list(encoder.parameters()) + list(head.parameters())
    optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = one_cycle(optim, cfg.lr, cfg.steps)
    aug_rng = torch.Generator().manual_seed(cfg.seed)
    start, losses = time.perf_counter(), []
    for _ in tqdm(range(cfg.steps), desc="pretrain encoder", unit="step"):
        images, labels = sample_crops(specs, synth, cfg.batch_size, cfg.crop_px, rng)
        x = _augment(normalize(encoder.cfg, torch.from_numpy(images)), aug_rng)
        logits = token_logits(encoder, head, x)
        loss = F.cross_entropy(logits.reshape(-1, head.out_features), torch.from_numpy(labels).reshape(-1),
                               ignore_index=IGNORE)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        sched.step()
        losses.append(loss.item())
    encoder.eval()
    held_images, held_labels = sample_crops(specs, synth, 512, cfg.crop_px, np.random.default_rng(cfg.seed + 1))
    metrics = {**evaluate(encoder, head, held_images, held_labels), "final_loss": float(np.mean(losses[-20:])),
               "seconds": time.perf_counter() - start,
               "token_counts": np.bincount(held_labels[held_labels >= 0], minlength=synth.classes + 1).tolist()}
    cfg_out = dataclasses.replace(encoder.cfg, magnification=20.0, source="lrmil pretrain-encoder",
                                  training_data=f"synthetic slides (lrmil.synth); {SYNTHETIC_NOTICE}",
                                  license="MIT")
    save_encoder(out, encoder, cfg_out, extra={"pretrain": cfg.to_dict(), "synth": synth.to_dict(), "metrics": metrics})
    return metrics
