"""Encoder registry: every entry builds and runs on CPU; the small ViT exposes token maps; weights round-trip."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lrmil.encoders import (ENCODERS, EncoderCfg, bundled_weights, create_encoder, load_encoder, normalize,
                            preprocess, save_encoder)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

NEEDS_CHECKPOINT = {"conch"}


@pytest.mark.parametrize("name", [n for n in ENCODERS.list() if n not in NEEDS_CHECKPOINT])
def test_every_encoder_runs_on_tiny_input(name):
    encoder = create_encoder(name, weights="random")
    assert isinstance(encoder.cfg, EncoderCfg) and encoder.cfg.embed_dim > 0
    patches = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    with torch.inference_mode():
        out = encoder(preprocess(encoder.cfg, patches))
    assert out.shape == (2, encoder.cfg.embed_dim) and torch.isfinite(out).all()


def test_timm_encoders_never_download_by_default():
    with pytest.raises(ValueError, match="--weights"):
        create_encoder("timm_resnet18")
    with pytest.raises(FileNotFoundError):
        create_encoder("timm/resnet18", weights="/nonexistent/model.safetensors")


def test_timm_weights_from_a_local_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    source = create_encoder("timm/resnet18", weights="random")
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    loaded = create_encoder("timm/resnet18", weights=str(tmp_path / "model.safetensors"))
    x = preprocess(loaded.cfg, torch.randint(0, 256, (1, 64, 64, 3), dtype=torch.uint8))
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), source(x))
    assert len(loaded.cfg.weights_sha256) == 64


def test_conch_without_package_or_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="CONCH checkpoint"):
        create_encoder("conch")
    with pytest.raises((RuntimeError, FileNotFoundError), match="CONCH|checkpoint"):
        create_encoder("conch", weights=str(tmp_path / "pytorch_model.bin"))


def test_unknown_encoder_names_the_known_ones():
    with pytest.raises(KeyError, match="lrmil_vit_tiny"):
        create_encoder("nope")


def test_vit_token_maps():
    vit = create_encoder("lrmil_vit_tiny", weights="random")
    x = normalize(vit.cfg, torch.randint(0, 256, (3, 64, 96, 3), dtype=torch.uint8))
    with torch.inference_mode():
        maps = vit.forward_tokens(x, (2, 0))
        pooled = vit(x)
    assert [m.shape for m in maps.layers] == [(3, 4, 6, 192)] * 2
    assert maps.final.shape == (3, 4, 6, 192)
    torch.testing.assert_close(maps.pooled, maps.final.mean(dim=(1, 2)))
    torch.testing.assert_close(pooled, maps.pooled)
    assert not torch.allclose(maps.layers[0], maps.layers[1])  # block 2 differs from block 0
    with pytest.raises(ValueError, match="out of range"):
        vit.forward_tokens(x, (vit.depth,))


def test_preprocess_normalises_and_resizes():
    cfg = EncoderCfg(name="t", embed_dim=4, patch_px=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    white = torch.full((1, 64, 64, 3), 255, dtype=torch.uint8)
    out = preprocess(cfg, white)
    assert out.shape == (1, 3, 32, 32)
    torch.testing.assert_close(out, torch.ones_like(out))
    assert normalize(cfg, white).shape == (1, 3, 64, 64)


def test_save_and_load_round_trip_keeps_cfg(tmp_path):
    vit = create_encoder("lrmil_vit_tiny", weights="random")
    cfg = dataclasses.replace(vit.cfg, magnification=5.0, training_data="unit test")
    save_encoder(tmp_path / "s.safetensors", vit, cfg)
    back = load_encoder(tmp_path / "s.safetensors")
    assert back.cfg.magnification == 5.0 and back.cfg.training_data == "unit test"
    assert len(back.cfg.weights_sha256) == 64
    x = normalize(vit.cfg, torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8))
    with torch.inference_mode():
        torch.testing.assert_close(back(x), vit(x), atol=2e-2, rtol=2e-2)  # stored as fp16
    with pytest.raises(ValueError, match="not weights for"):
        create_encoder("timm_resnet18", weights="random").load_file(tmp_path / "s.safetensors")


def test_weights_whose_header_names_another_encoder_in_its_settings_are_refused(tmp_path):
    """The settings' name names the feature folder `lrmil extract` writes (features/<name>_20x_256px): a shared
    weights file naming '../../x' there had features written outside --out."""
    from export.artifact import save_weights

    vit = create_encoder("lrmil_vit_tiny", weights="random")
    save_weights(tmp_path / "shared.safetensors", vit.state_dict(),
                 {"package": "lrmil", "kind": "patch_encoder", "arch": "lrmil_vit_tiny",
                  "cfg": dataclasses.replace(vit.cfg, name="../../x").to_dict()})
    with pytest.raises(ValueError, match="shared.safetensors: its header names the encoder 'lrmil_vit_tiny' and "
                                         "'../../x'; not a file lrmil wrote"):
        load_encoder(tmp_path / "shared.safetensors")


def test_bundled_teacher_encoder_is_small_and_labelled():
    path = bundled_weights("lrmil_vit_tiny")  # shipped: create_encoder's default weights
    assert path.is_file() and path.stat().st_size < 5 * 2**20
    encoder = create_encoder("lrmil_vit_tiny")
    assert "synthetic" in encoder.cfg.training_data and "not for diagnosis" in encoder.cfg.training_data
    assert encoder.cfg.magnification == 20.0
    card = path.with_suffix(".md")
    assert card.is_file() and "not for diagnosis" in card.read_text().lower()


def test_missing_default_weights_hint(tmp_path, monkeypatch):
    import lrmil.encoders as enc

    monkeypatch.setattr(enc, "bundled_weights", lambda name: tmp_path / f"{name}.safetensors")
    with pytest.raises(FileNotFoundError, match="pretrain-encoder"):
        create_encoder("lrmil_vit_tiny")


def test_autocast_is_a_noop_on_cpu():
    from lrmil.encoders import autocast

    vit = create_encoder("lrmil_vit_tiny", weights="random")
    x = normalize(vit.cfg, torch.randint(0, 256, (1, 32, 32, 3), dtype=torch.uint8))
    with torch.inference_mode(), autocast(vit.cfg, "cpu"):
        assert vit(x).dtype == torch.float32
    assert np.isfinite(vit(x).detach().numpy()).all()


def test_token_labels_from_generator_truth():
    from lrmil.pretrain import IGNORE, token_labels

    rgb = np.full((32, 32, 3), 245, np.uint8)
    rgb[:, 16:] = (200, 100, 170)  # right half is stained tissue
    atypical = np.zeros((32, 32), bool)
    atypical[16:, 16:] = True  # bottom-right token: fully atypical
    atypical[0:2, 16:18] = True  # top-right token: 4 px, ambiguous
    assert token_labels(rgb, atypical, label=1).tolist() == [[0, IGNORE], [0, 2]]


def test_pretrain_writes_a_loadable_labelled_encoder(tmp_path):
    from lrmil.config import PretrainConfig, SynthConfig
    from lrmil.pretrain import pretrain

    metrics = pretrain(PretrainConfig(steps=2, batch_size=2, crop_px=32), SynthConfig(), tmp_path / "e.safetensors")
    assert set(metrics) >= {"recall_20x", "recall_5x", "final_loss"} and len(metrics["recall_20x"]) == 3
    encoder = load_encoder(tmp_path / "e.safetensors")
    assert encoder.cfg.magnification == 20.0 and "not for diagnosis" in encoder.cfg.training_data


@pytest.mark.parametrize("steps", [1, 9, 10, 11, 20])
def test_pretrain_schedule_runs_for_any_step_count(steps):
    """torch's OneCycleLR divided by zero at 10 steps (its warm-up ending exactly on the first step)."""
    from lrmil.pretrain import one_cycle

    optim = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = one_cycle(optim, 1e-3, steps)
    for _ in range(steps):
        assert 0 < optim.param_groups[0]["lr"] <= 1e-3
        optim.step()
        sched.step()


def test_pretrain_encoder_refuses_zero_steps_as_a_bad_option(tmp_path):
    from typer.testing import CliRunner

    from lrmil.cli import app

    result = CliRunner().invoke(app, ["pretrain-encoder", "--out", str(tmp_path / "e.safetensors"), "--steps", "0"])
    assert result.exit_code == 2 and "--steps" in result.output
