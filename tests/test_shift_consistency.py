"""Shift consistency: the shifted copy, its augmentations, the loss, and a tiny real run."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from pulse.config import ModelConfig, TrainConfig
from pulse.models import create_model
from pulse.train import weak_labels
from pulse.train.losses import StepOutputs, build_loss_terms
from pulse.train.pooling import create_pooling
from pulse.train.shift_consistency import ShiftConsistency, advanced, sub_frame_offsets
from test_train import tiny_config  # the tiny real-data run of the training tests

TINY = ModelConfig(arch="pulse_cnn_xs", labels=("a", "b", "c"), common_names=(), codes=(), window_s=0.5,
                   sample_rate=16000, f_max=8000.0, n_mels=32, embed_dim=32, n_fft=256, hop_length=400)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_offsets_stay_inside_one_frame_and_advancing_drops_the_first_samples():
    offsets = sub_frame_offsets(5000, 882, torch.Generator().manual_seed(0))
    assert offsets.min() == 1 and offsets.max() == 881
    waves = torch.arange(20.0).reshape(2, 10)
    shifted = advanced(waves, torch.tensor([3, 9]))
    torch.testing.assert_close(shifted[0], torch.cat([waves[0, 3:], torch.zeros(3)]))
    torch.testing.assert_close(shifted[1], torch.cat([waves[1, 9:], torch.zeros(9)]))


def masked(logmel: torch.Tensor) -> torch.Tensor:
    """Where SpecAugment filled a log-mel: the cells holding its most frequent value."""
    values, counts = logmel.unique(return_counts=True)
    return logmel == values[counts.argmax()]


def test_the_shifted_copy_gets_the_same_tilts_and_masks_and_the_first_view_is_unchanged():
    cfg = TrainConfig(model=TINY, lambda_shift=1.0, tilt_db=10.0, freq_masks=2, freq_mask_bins=6,
                      time_masks=2, time_mask_frames=5)
    torch.manual_seed(0)
    model, pooling = create_model(TINY).eval(), create_pooling("max", TINY.embed_dim, TINY.num_classes)
    seen = []
    features = model.features_from_logmel
    model.features_from_logmel = lambda logmel: seen.append(logmel) or features(logmel)
    t = torch.arange(TINY.window_samples) / TINY.sample_rate
    waves = torch.stack([torch.sin(2 * torch.pi * f * t) for f in (1500.0, 2500.0, 3500.0, 5000.0)]).reshape(2, 2, -1)
    targets = torch.zeros(2, 3)

    def outputs(config):
        return weak_labels.step_outputs(model, pooling, waves, targets, config, 0, torch.Generator().manual_seed(7))

    on, off = outputs(cfg), outputs(dataclasses.replace(cfg, lambda_shift=0.0))
    first, second = seen[0].chunk(2)
    for a, b in zip(first, second):  # masked cells all hold one fill value: the same cells in both views
        masked_a, masked_b = masked(a), masked(b)
        assert masked_a.sum() >= 10
        assert torch.equal(masked_a, masked_b)
    torch.testing.assert_close(on.window_logits, off.window_logits)  # the recipe's own view is not disturbed
    assert off.shifted_logits is None and on.shifted_logits.shape == on.window_logits.shape
    assert not torch.equal(on.shifted_logits, on.window_logits)


def test_the_loss_is_zero_for_equal_scores_and_pulls_different_ones_together():
    term = ShiftConsistency(1.0)
    logits = torch.randn(2, 3, 4)

    def loss(shifted):
        return term(None, StepOutputs(0, None, None, logits, None, None, None, shifted))

    assert loss(logits.clone()) == 0
    shifted = (logits + 1.0).requires_grad_(True)
    expected = (torch.sigmoid(logits) - torch.sigmoid(logits + 1.0)).square().sum(-1).mean()
    value = loss(shifted)
    torch.testing.assert_close(value, expected)
    value.backward()
    assert (shifted.grad > 0).all()  # the shifted scores are higher, so the gradient lowers them
    with pytest.raises(ValueError, match="lambda_shift"):
        loss(None)
    assert "shift" not in build_loss_terms(TrainConfig(model=TINY), create_model(TINY))


def test_a_tiny_run_logs_the_term(shared_data, tmp_path):
    cfg = tiny_config(shared_data, tmp_path, epochs=1, val_split="", lambda_shift=1.0)
    weak_labels.train(cfg, tmp_path / "run")
    row = json.loads((tmp_path / "run/history.json").read_text())[-1]
    assert row["loss_shift"] > 0 and row["loss_bce"] > 0
