"""Shared fixtures. Tests that need ../shared/data skip with a reason where it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is not present on this machine")
    return SHARED_DATA


@pytest.fixture(scope="session")
def oldest_onnxruntime_reads():
    """Whether an ONNX file's header is one ONNX Runtime 1.16 reads (IR <= 9, ai.onnx opset <= 19), JetPack 5's
    version (docs/pulse.md, "Which ONNX Runtime", lists those checked). The suite cannot load the file with 1.16 itself;
    1.16 and 1.17 refused the IR 10 graphs written until 2026-12-06."""
    import onnx

    def reads(path: Path) -> bool:
        model = onnx.load(str(path), load_external_data=False)
        opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        return model.ir_version <= 9 and opset <= 19

    return reads


@pytest.fixture(scope="module")
def torch_one_thread():
    """One intra-op thread for a test module: on a small shared CPU, torch's spinning threads made
    tiny models 5x slower. Use with `pytestmark = pytest.mark.usefixtures("torch_one_thread")`."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def pulse_bundle(tmp_path_factory) -> Path:
    """A tiny PULSE model (1 s window) exported by `pulse export --int8 --ort-graph fft`: checkpoint, fft,
    conv and INT8 graphs.

    Batch-norm statistics are randomised so that outputs spread like a trained model's, and
    calibration uses a chirp-in-noise recording shipped with the test, so it runs everywhere.
    """
    import numpy as np
    import soundfile as sf
    import torch
    from typer.testing import CliRunner

    from export.artifact import save_weights
    from pulse.cli import app
    from pulse.config import ModelConfig
    from pulse.models import create_model

    root = tmp_path_factory.mktemp("pulse_bundle")
    cfg = ModelConfig(arch="pulse_cnn_xs", window_s=1.0, n_mels=32, embed_dim=32)
    torch.manual_seed(0)
    model = create_model(cfg)
    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.running_mean.normal_(0, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    if isinstance(model.input_norm, torch.nn.BatchNorm1d):
        model.input_norm.running_mean.fill_(-6.0)  # log-mel levels of quiet field audio
    save_weights(root / "tiny.safetensors", model.state_dict(), cfg.to_dict())
    rng = np.random.default_rng(0)
    t = np.arange(3 * cfg.sample_rate) / cfg.sample_rate
    (root / "audio").mkdir()
    for k in range(6):  # pulsed chirps at different pitches and levels, one recording each
        chirp = 0.05 * (k + 1) * np.sin(2 * np.pi * (1000 * (k + 1) + 1500 * t) * t) * (np.sin(2 * np.pi * 8 * t) > 0)
        sf.write(root / "audio" / f"chirp{k}.wav", (chirp + 0.01 * rng.standard_normal(t.size)).astype(np.float32),
                 cfg.sample_rate)
    result = CliRunner().invoke(app, ["export", "--model", str(root / "tiny.safetensors"), "--out",
                                      str(root / "bundle"), "--int8", "--calibration", str(root / "audio"),
                                      "--ort-graph", "fft"])
    assert result.exit_code == 0, result.output
    return root / "bundle"


@pytest.fixture(scope="session")
def random_lrmil_bundle(tmp_path_factory) -> Path:
    """An LRMIL bundle with random weights and the demo notice: the mechanics, not the accuracy, are under test."""
    import dataclasses

    import torch

    from lrmil.config import PatchConfig, TissueConfig
    from lrmil.encoders import create_encoder, save_encoder
    from lrmil.mil.attention import ABMIL, save_mil
    from lrmil.mil.bundle import save_bundle
    from lrmil.mil.config import DEMO_NOTICE, ABMILConfig

    root = tmp_path_factory.mktemp("lrmil_model")
    torch.manual_seed(0)
    encoder = create_encoder("lrmil_vit_tiny", weights="random")
    fast = dataclasses.replace(encoder.cfg, patch_px=64)  # 16 tokens a patch: keeps the tests fast
    save_encoder(root / "enc.safetensors", encoder, fast)
    for name, mag in (("student", 5.0), ("teacher", 20.0)):
        save_mil(root / f"{name}.safetensors",
                 ABMIL(ABMILConfig(in_dim=encoder.cfg.embed_dim, labels=("normal", "atypical"), magnification=mag)))
    return save_bundle(root / "bundle", (root / "enc.safetensors", root / "student.safetensors"),
                       (root / "enc.safetensors", root / "teacher.safetensors"), PatchConfig(), TissueConfig(),
                       notice=DEMO_NOTICE)


@pytest.fixture
def unlistable(monkeypatch):
    """Call with a folder name: os.scandir then refuses every folder of that name, as a colleague's folder (mode 700
    on a shared NAS) refused a run whose root user was stripped of its power to read any folder."""
    import os

    scandir = os.scandir

    def refuse(name: str) -> None:
        def refusing(path="."):
            if os.path.basename(path) == name:
                raise PermissionError(13, "Permission denied", str(path))
            return scandir(path)

        monkeypatch.setattr(os, "scandir", refusing)

    return refuse


@pytest.fixture
def ctrl_c_after(monkeypatch):
    """Call with a module and the name of a function it calls: the function then does its work and Ctrl-C comes as
    it returns, as Python raises a Ctrl-C that came during a system call."""

    def after(module, name: str) -> None:
        work = getattr(module, name)

        def ctrl_c_as_it_returns(*args, **kwargs):
            work(*args, **kwargs)
            raise KeyboardInterrupt

        monkeypatch.setattr(module, name, ctrl_c_as_it_returns)

    return after
