"""Distillation from trained PULSE models: soft targets, checks on the teachers, licence, a tiny run."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from export.artifact import load_weights, save_weights
from pulse.config import ModelConfig, TrainConfig
from pulse.models import create_model
from pulse.train import weak_labels
from pulse.train.distill_birdnet import student_model_config
from pulse.train.distill_ensemble import EnsembleDistillation, load_teachers
from pulse.train.losses import StepOutputs, build_loss_terms
from test_train import tiny_config  # the tiny real-data run of the training tests

TINY = ModelConfig(arch="pulse_cnn_xs", labels=("a", "b", "c"), common_names=(), codes=(), window_s=0.5,
                   sample_rate=16000, f_max=8000.0, n_mels=32, embed_dim=32)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def save_teacher(path, cfg: ModelConfig = TINY, seed: int = 0, license: str = "") -> str:
    torch.manual_seed(seed)
    cfg = dataclasses.replace(cfg, license=license or cfg.license)
    save_weights(path, create_model(cfg).state_dict(), cfg.to_dict())
    return str(path)


def student_config(*teachers: str) -> TrainConfig:
    return TrainConfig(model=TINY, lambda_ensemble=1.0, ensemble_teachers=teachers)


def test_targets_are_the_teachers_mean_score_and_the_loss_is_least_at_them(tmp_path):
    paths = [save_teacher(tmp_path / f"t{i}.safetensors", seed=i) for i in range(2)]
    term = EnsembleDistillation(1.0, load_teachers(student_config(*paths)))
    assert not list(term.parameters())  # frozen teachers are neither trained nor checkpointed
    waves = torch.randn(2, 3, TINY.window_samples)
    targets = term.targets(waves)
    with torch.no_grad():
        each = [torch.sigmoid(t(waves.reshape(6, -1)).logits).reshape(2, 3, -1) for t in term.teachers]
    torch.testing.assert_close(targets, (each[0] + each[1]) / 2)
    assert not torch.allclose(each[0], each[1])  # two different teachers, so the mean is not either one

    def loss(logits):
        out = StepOutputs(0, waves, None, logits, None, None, None)
        return term(None, out)

    matched = torch.logit(targets).requires_grad_(True)
    loss(matched).backward()
    assert matched.grad.abs().max() < 1e-6
    assert loss(torch.logit(targets) + 1.0) > loss(torch.logit(targets))


def test_teachers_must_exist_and_fit_the_student(tmp_path):
    with pytest.raises(ValueError, match="needs ensemble_teachers"):
        build_loss_terms(student_config(), create_model(TINY))
    with pytest.raises(FileNotFoundError, match="missing.safetensors: ensemble teacher not found"):
        load_teachers(student_config(str(tmp_path / "missing.safetensors")))
    other = save_teacher(tmp_path / "other.safetensors", dataclasses.replace(TINY, labels=("a", "b")))
    with pytest.raises(ValueError, match=r"other.safetensors: .* same species"):
        load_teachers(student_config(other))


def test_a_student_of_a_birdnet_distilled_teacher_carries_birdnets_licence(tmp_path):
    plain = save_teacher(tmp_path / "plain.safetensors")
    assert student_model_config(student_config(plain)) == TINY
    distilled = save_teacher(tmp_path / "kd.safetensors",
                             license="CC BY-NC-SA 4.0 (weights distilled from BirdNET V2.4)")
    inherited = student_model_config(student_config(plain, distilled))
    assert inherited.license.startswith("CC BY-NC-SA 4.0") and "BirdNET" in inherited.attribution
    off = dataclasses.replace(student_config(distilled), lambda_ensemble=0.0)
    assert student_model_config(off) == TINY  # a teacher that is not used passes nothing on


def test_a_tiny_run_logs_the_term_and_keeps_teachers_out_of_its_files(shared_data, tmp_path):
    base = tiny_config(shared_data, tmp_path, epochs=1, val_split="")
    teacher = save_teacher(tmp_path / "teacher.safetensors", base.model)
    weak_labels.train(dataclasses.replace(base, lambda_ensemble=1.0, ensemble_teachers=(teacher,)), tmp_path / "run")
    history = (tmp_path / "run/history.json").read_text()
    assert '"loss_ensemble"' in history and '"loss_bce"' in history
    state = load_weights(tmp_path / "run/checkpoint.safetensors")[0]
    assert not any(".teachers" in key or key.startswith("loss.ensemble") for key in state)
