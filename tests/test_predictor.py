"""The Predictor contract: every backend serves the same artefact with the same names and shapes."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from export.artifact import CheckpointError
from export.parity import FP16_TOLERANCE, compare
from export.predictor import ARTEFACT_FILES, Predictor, load_predictor

CPU_BACKENDS = ("torch", "onnxruntime")


def _batch(predictor, n: int = 3) -> np.ndarray:
    return (0.1 * np.random.default_rng(n).standard_normal((n, predictor.input_spec.shape[1]))).astype(np.float32)


def test_cpu_backends_share_one_contract(pulse_bundle):
    predictors = {name: load_predictor(pulse_bundle, backend=name) for name in CPU_BACKENDS}
    batch = _batch(predictors["torch"])
    outputs = {name: p.predict(batch) for name, p in predictors.items()}
    for name, p in predictors.items():
        assert isinstance(p, Predictor)
        assert p.input_spec.name == "waveform" and p.input_spec.shape == (None, 44100)
        assert p.output_names == ("scores", "embedding")
        assert p.metadata["labels"] == predictors["torch"].metadata["labels"]
        assert {k: v.shape for k, v in outputs[name].items()} == {"scores": (3, 9), "embedding": (3, 32)}
        assert all(v.dtype == np.float32 for v in outputs[name].values())
        p.close()


def test_every_backend_refuses_a_bad_batch_with_the_same_words(pulse_bundle):
    """Torch once scored windows of the wrong length (above the detection threshold, too) where ONNX Runtime
    refused them, and each backend failed an empty batch its own way."""
    predictors = {name: load_predictor(pulse_bundle, backend=name) for name in CPU_BACKENDS}
    good = _batch(predictors["torch"], 2)
    for bad, words in [(good[:, :1000], "waveform: expected [batch, 44100], got shape [2, 1000]"),
                       (good[0], "waveform: expected [batch, 44100], got shape [44100]"),
                       (good[:0], "waveform: empty batch")]:
        for name, predictor in predictors.items():
            with pytest.raises(ValueError, match=re.escape(words)):
                predictor.predict(bad)
    float64 = {name: p.predict(good.astype(np.float64))["scores"] for name, p in predictors.items()}
    assert all(np.array_equal(float64[name], p.predict(good)["scores"]) for name, p in predictors.items())


def test_threads_reach_the_cpu_backends(pulse_bundle):
    """`pulse analyze --threads N` sets ONNX Runtime's intra-op threads and torch's; 0 leaves the defaults."""
    import torch

    session = load_predictor(pulse_bundle, backend="onnxruntime", threads=1)._session
    assert session.get_session_options().intra_op_num_threads == 1
    assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert load_predictor(pulse_bundle)._session.get_session_options().intra_op_num_threads == 0
    before = torch.get_num_threads()
    try:
        load_predictor(pulse_bundle, backend="torch", threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_torch_backend_refuses_a_device_it_cannot_use(pulse_bundle):
    import torch

    with pytest.raises(ValueError, match="--device gpu: expected cpu, cuda or cuda:N"):
        load_predictor(pulse_bundle, backend="torch", device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cuda: torch finds no CUDA GPU here; use --device cpu"):
            load_predictor(pulse_bundle, backend="torch", device="cuda")


def test_auto_backend_follows_folder_and_suffix(pulse_bundle):
    assert type(load_predictor(pulse_bundle)).__name__ == "OnnxRuntimePredictor"
    assert type(load_predictor(pulse_bundle / ARTEFACT_FILES["torch"])).__name__ == "TorchPredictor"
    int8 = load_predictor(pulse_bundle / "model.int8.onnx")
    assert int8.metadata["quantization"] == "int8-static"


def test_load_predictor_errors_are_clear(pulse_bundle, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.onnx: model file not found"):
        load_predictor(tmp_path / "missing.onnx")
    (tmp_path / "model.pt").write_bytes(b"\0")
    with pytest.raises(ValueError, match="cannot tell the backend from suffix '.pt'"):
        load_predictor(tmp_path / "model.pt")
    with pytest.raises(ValueError, match="unknown backend 'openvino'"):
        load_predictor(pulse_bundle / "model.onnx", backend="openvino")
    with pytest.raises(FileNotFoundError, match="model.safetensors: model file not found"):
        load_predictor(tmp_path, backend="torch")
    with pytest.raises(ValueError, match="a folder; the birdnet backend takes its model file itself"):
        load_predictor(tmp_path, backend="birdnet")
    mil = Path(__file__).parents[1] / "lrmil" / "assets" / "demo_model" / "student_mil.safetensors"
    with pytest.raises(CheckpointError, match="student_mil.safetensors: a checkpoint written by lrmil, not by pulse"):
        load_predictor(mil)  # an ABMIL takes patch features, not waveforms


def test_onnxruntime_refuses_devices_it_cannot_serve(pulse_bundle, monkeypatch):
    """`--device cuda` without CUDA used to run on the CPU with only a warning; `--device gpu` ran too."""
    import onnxruntime

    with pytest.raises(ValueError, match="--device gpu: expected cpu, cuda or cuda:N"):
        load_predictor(pulse_bundle, device="gpu")
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ValueError, match=r"--device cuda:1: this onnxruntime build has no CUDA provider "
                                         r"\(available: CPUExecutionProvider\); use --device cpu"):
        load_predictor(pulse_bundle, device="cuda:1")


def _onnxruntime_has_cuda() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.mark.skipif(_onnxruntime_has_cuda(), reason="this onnxruntime build has CUDA, so a CUDA session may start")
@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available provider")
def test_onnxruntime_refuses_a_cuda_session_that_fell_back_to_cpu(pulse_bundle, monkeypatch):
    """A build listing CUDA can still fail to start it (no GPU, no CUDA libraries) and quietly use the CPU."""
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(ValueError, match="--device cuda: ONNX Runtime could not start CUDA"):
        load_predictor(pulse_bundle, device="cuda")


def _tensorrt_ready() -> str:
    """Why the TensorRT test cannot run here, or '' when it can."""
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt package is not installed"
    import torch

    return "" if torch.cuda.is_available() else "no CUDA device"


@pytest.mark.tensorrt
@pytest.mark.skipif(bool(_tensorrt_ready()), reason=f"TensorRT unavailable: {_tensorrt_ready()}")
def test_tensorrt_matches_torch_in_fp16(pulse_bundle, tmp_path):
    import shutil

    for name in ("model.safetensors", "model.trt.onnx"):
        shutil.copy(pulse_bundle / name, tmp_path / name)
    reference = load_predictor(tmp_path, backend="torch")
    engine = load_predictor(tmp_path, backend="tensorrt", device="cuda", fp16=True)
    assert engine.engine_path.is_file() and engine.output_names == ("scores", "embedding")
    for n in (1, 5):
        check = compare(reference, engine, _batch(reference, n), FP16_TOLERANCE)
        assert check.ok, check.line()
    cached = load_predictor(engine.engine_path, device="cuda")  # the cached engine loads without the ONNX
    assert cached.precision == engine.precision and cached.engine_path.name.startswith("model.trt.")
    assert cached.predict(_batch(reference, 2))["scores"].shape == (2, 9)


def test_a_new_backend_is_one_file_named_for_it(tmp_path, monkeypatch):
    """Adding a backend took its file plus a line in predictor.py's module table; without the line, 'unknown
    backend'."""
    import sys

    import export.backends
    from export.predictor import BACKENDS, backend_names

    (tmp_path / "echo_backend.py").write_text(
        "from export.predictor import BACKENDS, InputSpec, checked_batch\n\n\n"
        "@BACKENDS.register('echo')\n"
        "class EchoPredictor:\n"
        "    output_names = ('echo',)\n\n"
        "    def __init__(self, path, device='cpu'):\n"
        "        self.metadata, self.input_spec = {'path': str(path)}, InputSpec('x', (None, 2))\n\n"
        "    def predict(self, batch):\n"
        "        return {'echo': checked_batch(batch, self.input_spec)}\n\n"
        "    def close(self):\n"
        "        pass\n")
    (tmp_path / "model.bin").write_bytes(b"")
    monkeypatch.setattr(export.backends, "__path__", [*export.backends.__path__, str(tmp_path)])
    monkeypatch.setattr(BACKENDS, "_entries", dict(BACKENDS._entries))  # the registration ends with the test
    try:
        assert backend_names() == ["birdnet", "echo", "onnxruntime", "tensorrt", "torch"]
        predictor = load_predictor(tmp_path / "model.bin", backend="echo")
        assert isinstance(predictor, Predictor) and predictor.metadata["path"] == str(tmp_path / "model.bin")
        assert predictor.predict(np.ones((1, 2)))["echo"].dtype == np.float32
    finally:
        sys.modules.pop("export.backends.echo_backend", None)
