"""ONNX export, INT8 quantisation and parity checks (export/onnx.py, quantize.py, parity.py, bundle.py).

Stated tolerances (export/parity.py), as a fraction of max(1, max |reference|) per output:
FP32 1e-4 (torch vs ONNX Runtime, fft and conv graphs), INT8 1e-1.
"""

from __future__ import annotations

import dataclasses
import json
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf
import torch

from export.artifact import CheckpointError, load_weights, read_weights_metadata, save_weights
from export.onnx import OnnxExportError, check_frontend_ops, export_onnx, graph_ops
from export.parity import FP32_TOLERANCE, INT8_TOLERANCE, compare
from export.predictor import load_predictor
from export.quantize import calibration_windows, quantize_onnx
from pulse.config import ExportConfig, ModelConfig
from pulse.models import MODELS, create_model


def _windows(n: int, samples: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((n, samples))).astype(np.float32)


@pytest.mark.parametrize("arch", MODELS.list())
def test_every_registered_model_runs_and_exports(arch, tmp_path):
    cfg = ModelConfig(arch=arch, window_s=1.0)
    model = create_model(cfg).eval()
    wave = torch.from_numpy(_windows(2, cfg.window_samples))
    with torch.inference_mode():
        logits, embedding = model(wave)
    assert logits.shape == (2, cfg.num_classes) and embedding.shape == (2, cfg.embed_dim)
    assert torch.isfinite(logits).all() and torch.isfinite(embedding).all()
    path = export_onnx(model, tmp_path / "m.onnx", frontend="conv")
    scores = load_predictor(path).predict(wave.numpy())["scores"]
    np.testing.assert_allclose(scores, torch.sigmoid(logits).numpy(), atol=FP32_TOLERANCE)


def test_band_contrast_adds_a_channel_that_a_gain_or_a_steady_band_leaves_unchanged(tmp_path):
    model = create_model(ModelConfig(window_s=1.0, band_contrast=True)).eval()
    seen = []
    model.encoder.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    wave = torch.from_numpy(_windows(1, model.cfg.window_samples))
    steady = 0.2 * torch.sin(2 * torch.pi * 6000 * torch.arange(wave.shape[1]) / model.cfg.sample_rate)
    with torch.inference_mode():
        scores = torch.sigmoid(model(wave).logits)
        model(4 * wave), model(wave + steady)
    plain, louder, with_band = seen
    assert plain.shape[1] == 2 and model.encoder.stem[0].in_channels == 2
    torch.testing.assert_close(louder[:, 1], plain[:, 1], atol=1e-3, rtol=0)  # 12 dB louder: the same contrast
    assert not torch.allclose(louder[:, 0], plain[:, 0], atol=1e-3)  # the level channel does change
    tone_band = (with_band[0, 0].mean(-1) - plain[0, 0].mean(-1)).argmax()
    # In the band of a steady tone the level rises and the contrast flattens (noise alone flickers more).
    assert with_band[0, 1, tone_band].std() < 0.5 * plain[0, 1, tone_band].std()
    path = export_onnx(model, tmp_path / "m.onnx", frontend="conv")
    np.testing.assert_allclose(load_predictor(path).predict(wave.numpy())["scores"], scores.numpy(),
                               atol=FP32_TOLERANCE)


def test_graphs_have_the_promised_structure(pulse_bundle):
    fft, conv = onnx.load(str(pulse_bundle / "model.onnx")), onnx.load(str(pulse_bundle / "model.trt.onnx"))
    assert "STFT" in graph_ops(fft)
    assert not graph_ops(conv) & {"STFT", "DFT"} and "Conv" in graph_ops(conv)
    folded = onnx.load(str(pulse_bundle / "model.folded.onnx"))
    assert not graph_ops(folded) & {"STFT", "DFT"} and "MatMul" in graph_ops(folded)
    for proto, frontend in ((fft, "fft"), (conv, "conv"), (folded, "folded")):
        (wave,) = proto.graph.input
        assert wave.name == "waveform"
        assert [d.dim_param or d.dim_value for d in wave.type.tensor_type.shape.dim] == ["batch", 44100]
        assert [o.name for o in proto.graph.output] == ["scores", "embedding"]
        meta = json.loads({p.key: p.value for p in proto.metadata_props}["model_config"])
        assert meta["frontend"] == frontend and len(meta["labels"]) == 9 and meta["window_s"] == 1.0
        # the input contract travels in the file: a deployment reading only model.onnx learns the scaling
        assert "float32 [batch, 44100], 1 s of mono audio at 44100 Hz, scaled to [-1, 1]" in proto.doc_string
        assert "pulse analyze reports a species where its score is at least 0.25 (--min-conf)" in proto.doc_string
    with pytest.raises(OnnxExportError, match="not TensorRT-portable"):
        check_frontend_ops(fft, "conv")
    with pytest.raises(OnnxExportError, match="without an STFT"):
        check_frontend_ops(conv, "fft")


@pytest.mark.parametrize("batch", [1, 7])
def test_torch_and_onnxruntime_agree_at_any_batch(pulse_bundle, batch):
    torch_model = load_predictor(pulse_bundle, backend="torch")
    batch_in = _windows(batch, torch_model.input_spec.shape[1], seed=batch)
    for name in ("model.onnx", "model.trt.onnx", "model.folded.onnx"):
        check = compare(torch_model, load_predictor(pulse_bundle / name), batch_in, FP32_TOLERANCE)
        assert check.ok, check.line()
    scores = torch_model.predict(batch_in)["scores"]
    assert scores.std() > 1e-3  # the outputs really vary, so agreement means something


def test_int8_is_quantised_and_within_looser_tolerance(pulse_bundle):
    int8 = onnx.load(str(pulse_bundle / "model.int8.onnx"))
    assert {"QuantizeLinear", "DequantizeLinear"} <= graph_ops(int8)
    assert json.loads({p.key: p.value for p in int8.metadata_props}["model_config"])["quantization"] == "int8-static"
    assert int8.doc_string == onnx.load(str(pulse_bundle / "model.onnx")).doc_string != ""
    fp32, q = load_predictor(pulse_bundle / "model.onnx"), load_predictor(pulse_bundle / "model.int8.onnx")
    batch = _windows(8, fp32.input_spec.shape[1], seed=3)
    check = compare(fp32, q, batch, INT8_TOLERANCE)
    assert check.ok, check.line()
    assert check.max_abs_diff["embedding"] > 0  # 8-bit arithmetic really ran


def test_export_config_records_every_file_and_passing_parity(pulse_bundle):
    config = json.loads((pulse_bundle / "config.json").read_text())
    assert set(config["files"]) == {"model.safetensors", "model.onnx", "model.trt.onnx", "model.folded.onnx",
                                    "model.int8.onnx"}
    assert [p["candidate"] for p in config["parity"]] == ["onnxruntime fft", "onnxruntime conv", "onnxruntime folded",
                                                          "int8 static fft", "int8 static folded"]
    assert {p["reference"] for p in config["parity"]} == {"torch"}  # every artefact against PyTorch itself
    int8_speed = {m: config["ms_per_window"][f"onnxruntime {m} int8 static"] for m in ("fft", "folded")}
    assert config["int8_graph"] == min(int8_speed, key=int8_speed.get)  # the faster INT8 graph is kept
    assert all(p["ok"] for p in config["parity"]) and config["parity_windows"] == 16
    assert config["onnxruntime_graph"] == "fft"
    assert {f"onnxruntime {m} fp32" for m in ("fft", "conv", "folded")} <= set(config["ms_per_window"])


@pytest.mark.parametrize("ort_graph", ["auto", "conv", "folded"])
def test_model_onnx_holds_the_chosen_graph(pulse_bundle, tmp_path, ort_graph):
    """auto keeps the graph ONNX Runtime ran fastest; conv forces the DFT-free one (same file as TensorRT's)."""
    from export.bundle import export_bundle

    cfg = ExportConfig(ort_graph=ort_graph, calibration=(str(pulse_bundle.parent / "audio"),), parity_windows=4)
    checks = export_bundle(pulse_bundle / "model.safetensors", tmp_path, cfg)
    assert all(c.ok for c in checks)
    config = json.loads((tmp_path / "config.json").read_text())
    speed = config["ms_per_window"]
    modes = ("fft", "conv", "folded")
    expected = ort_graph if ort_graph != "auto" else min(modes, key=lambda m: speed[f"onnxruntime {m} fp32"])
    assert config["onnxruntime_graph"] == expected
    ops = graph_ops(onnx.load(str(tmp_path / "model.onnx")))
    assert ("STFT" in ops) == (expected == "fft") and ("Conv" in ops)  # the network's own convolutions
    for mode, name in (("conv", "model.trt.onnx"), ("folded", "model.folded.onnx")):
        assert ((tmp_path / "model.onnx").read_bytes() == (tmp_path / name).read_bytes()) == (expected == mode)


def test_an_export_that_fails_parity_publishes_nothing(pulse_bundle, tmp_path, monkeypatch):
    """A graph that drifted must not be left where `pulse analyze --model` would run it."""
    import export.bundle

    monkeypatch.setattr(export.bundle, "FP32_TOLERANCE", 0.0)  # no float graph can pass
    out = tmp_path / "out"
    (out / "model.onnx").parent.mkdir()
    (out / "model.onnx").write_bytes(b"an earlier export")
    cfg = ExportConfig(calibration=(str(pulse_bundle.parent / "audio"),), parity_windows=4)
    checks = export.bundle.export_bundle(pulse_bundle / "model.safetensors", out, cfg)
    assert checks and not all(c.ok for c in checks)
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]  # no staging left, nothing new
    assert (out / "model.onnx").read_bytes() == b"an earlier export"


def test_a_new_export_into_the_same_folder_removes_what_it_does_not_replace(pulse_bundle, tmp_path):
    """An INT8 graph (or engine) left from an earlier export would run the old weights under the new folder's name;
    files the earlier config.json does not list are the user's and stay."""
    from export.bundle import export_bundle

    out, cfg = tmp_path / "out", ExportConfig(calibration=(str(pulse_bundle.parent / "audio"),), parity_windows=4)
    int8 = dataclasses.replace(cfg, int8=True)
    assert all(c.ok for c in export_bundle(pulse_bundle / "model.safetensors", out, int8))
    assert (out / "model.int8.onnx").is_file()
    (out / "notes.txt").write_text("the user's")
    config = json.loads((out / "config.json").read_text())
    config["files"]["../outside.txt"] = "a name that is not a plain file name is never removed"
    config["files"].update({"": "?", "..": "?", "calibration": "a folder of the user's is never removed"})
    (out / "calibration").mkdir()
    (out / "config.json").write_text(json.dumps(config))
    (tmp_path / "outside.txt").write_text("kept")
    assert all(c.ok for c in export_bundle(pulse_bundle / "model.safetensors", out, cfg))
    assert not (out / "model.int8.onnx").exists()
    assert sorted(json.loads((out / "config.json").read_text())["files"]) == sorted(
        p.name for p in out.iterdir() if p.suffix in (".onnx", ".safetensors"))
    assert (out / "notes.txt").read_text() == "the user's" and (tmp_path / "outside.txt").is_file()
    assert (out / "calibration").is_dir()


def test_static_int8_calibrated_on_real_songs(shared_data, pulse_bundle, tmp_path):
    fp32 = load_predictor(pulse_bundle / "model.onnx")
    songs = [shared_data / "audio" / "insectset32"]
    calibration = calibration_windows(songs, 44100, fp32.input_spec.shape[1], 12, position=0.5)
    check_in = calibration_windows(songs, 44100, fp32.input_spec.shape[1], 12, position=0.25)
    assert calibration.shape == (12, 44100) and not np.array_equal(calibration, check_in)
    q = load_predictor(quantize_onnx(pulse_bundle / "model.onnx", tmp_path / "q.onnx", "static", calibration))
    check = compare(fp32, q, check_in, INT8_TOLERANCE)
    assert check.ok, check.line()
    conv = compare(fp32, load_predictor(pulse_bundle / "model.trt.onnx"), check_in, FP32_TOLERANCE)
    assert conv.ok, conv.line()


def test_bundled_and_exported_graphs_load_in_onnxruntime_1_16(pulse_bundle, oldest_onnxruntime_reads):
    bundled = sorted((Path(__file__).resolve().parents[1] / "pulse" / "assets").glob("*/model.onnx"))
    exported = sorted(pulse_bundle.glob("*.onnx"))
    assert len(bundled) == 3 and {p.name for p in exported} >= {"model.onnx", "model.trt.onnx", "model.int8.onnx"}
    assert [p for p in bundled + exported if not oldest_onnxruntime_reads(p)] == []


def _float_convs(model) -> list[int]:
    """Input channels per group of the Conv nodes that read a float weight (not one an INT8 graph dequantises)."""
    weights = {init.name: init for init in model.graph.initializer}
    return [weights[node.input[1]].dims[1] for node in model.graph.node
            if node.op_type == "Conv" and node.input[1] in weights
            and weights[node.input[1]].data_type == onnx.TensorProto.FLOAT]


def test_int8_leaves_the_one_channel_stem_float(pulse_bundle):
    """ONNX Runtime 1.21-1.24 compute a QLinearConv with one input channel wrongly (the bundled default's INT8
    scores off by up to 0.8 there): `pulse export --int8` keeps that layer float and quantises the rest."""
    fp32, int8 = (onnx.load(str(pulse_bundle / name)) for name in ("model.onnx", "model.int8.onnx"))
    assert _float_convs(int8) == [1]
    # every other convolution is still there, reading a dequantised weight (QDQ), none dropped or fused away
    assert sum(n.op_type == "Conv" for n in int8.graph.node) == len(_float_convs(fp32)) > 1


def _int8_weights(model) -> list[np.ndarray]:
    return [onnx.numpy_helper.to_array(init) for init in model.graph.initializer
            if init.data_type == onnx.TensorProto.INT8]


def test_int8_weights_fit_in_7_bits_so_no_x86_cpu_saturates(pulse_bundle, tmp_path):
    """On x86 without VNNI (AVX2 only: many AMD and older Intel servers) ONNX Runtime multiplies 8-bit activations
    by 8-bit weights in pairs summed into 16 bits, which saturate: the LRMIL demo encoder's INT8 features were 0.58
    off PyTorch's there and failed the export's check, and a graph exported on a VNNI machine would be as wrong on
    such a CPU. 7-bit weights (reduce_range) keep every pair sum within 16 bits on any CPU."""
    dynamic = onnx.load(str(quantize_onnx(pulse_bundle / "model.onnx", tmp_path / "d.onnx", "dynamic")))
    for model in (onnx.load(str(pulse_bundle / "model.int8.onnx")), dynamic):
        weights = _int8_weights(model)
        assert weights and max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 64


def test_dynamic_int8_needs_no_calibration(pulse_bundle, tmp_path):
    q = load_predictor(quantize_onnx(pulse_bundle / "model.onnx", tmp_path / "d.onnx", "dynamic"))
    fp32 = load_predictor(pulse_bundle / "model.onnx")
    check = compare(fp32, q, _windows(4, fp32.input_spec.shape[1]), INT8_TOLERANCE)
    assert check.ok, check.line()
    with pytest.raises(ValueError, match="calibration windows"):
        quantize_onnx(pulse_bundle / "model.onnx", tmp_path / "s.onnx", "static")
    with pytest.raises(ValueError, match="quantisation method"):
        quantize_onnx(pulse_bundle / "model.onnx", tmp_path / "s.onnx", "int4")


def test_calibration_reads_each_window_not_whole_recordings(tmp_path):
    """INT8 calibration on field recordings held each one whole, resampled: 691 MB for 30 minutes at 384 kHz, more
    for a night. Each window is read on its own now: here 4 one-second windows of 2 minutes at 96 kHz take far less
    than the 21 MB the recording resampled to 44.1 kHz would."""
    second = (0.3 * 32767 * np.sin(2 * np.pi * 3000 * np.arange(96000) / 96000)).astype(np.int16)
    sf.write(tmp_path / "20250701_213000.WAV", np.tile(second, 120), 96000)
    tracemalloc.start()
    try:
        windows = calibration_windows([tmp_path], 44100, 44100, 4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert windows.shape == (4, 44100) and 0.25 < np.abs(windows).max() < 0.35
    assert peak < 5 * 2**20


def test_calibration_skips_unreadable_files(tmp_path, pulse_bundle, caplog):
    audio = pulse_bundle.parent / "audio"
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wave file")
    windows = calibration_windows([audio / "chirp0.wav", tmp_path / "broken.wav"], 44100, 44100, 8)
    assert windows.shape == (3, 44100)  # all three 1 s windows of the 3 s recording, none from the broken one
    assert len({w.tobytes() for w in windows}) == 3
    assert "broken.wav" in caplog.text
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no audio files"):
        calibration_windows([tmp_path / "empty"], 44100, 44100, 8)
    with pytest.raises(ValueError, match="calibration audio not found"):
        calibration_windows([tmp_path / "nowhere"], 44100, 44100, 8)
    with pytest.raises(ValueError, match="could be read"):
        calibration_windows([tmp_path / "broken.wav"], 44100, 44100, 8)


class _Fixed:
    def __init__(self, **outputs):
        self.outputs = outputs

    def predict(self, batch):
        return {k: np.repeat(v[None], len(batch), axis=0) for k, v in self.outputs.items()}


def test_compare_reports_drift_and_rejects_mismatches():
    batch = np.zeros((3, 10), np.float32)
    ref = _Fixed(scores=np.array([0.5, 0.5], np.float32))
    check = compare(ref, _Fixed(scores=np.array([0.5, 0.6], np.float32)), batch, tolerance=0.05)
    assert check.max_abs_diff["scores"] == pytest.approx(0.1, abs=1e-6) and not check.ok and "FAIL" in check.line()
    with pytest.raises(ValueError, match="outputs"):
        compare(ref, _Fixed(logits=np.zeros(2, np.float32)), batch)
    with pytest.raises(ValueError, match="shape"):
        compare(ref, _Fixed(scores=np.zeros(3, np.float32)), batch)


class _DriftsAfter:
    """Scores of 0.5 for the first `first` windows it is given, 0.6 for those after: drift only late in a batch."""

    def __init__(self, first: int):
        self.first, self.seen = first, 0

    def predict(self, batch):
        rows = self.seen + np.arange(len(batch))
        self.seen += len(batch)
        return {"scores": np.where(rows[:, None] < self.first, 0.5, 0.6).astype(np.float32).repeat(2, axis=1)}


def test_compare_fails_if_any_output_or_any_chunk_drifts_and_floors_the_scale_at_1():
    """The verdict is every output's, over every chunk of the batch, and the tolerance scales with the output's
    range only above 1: a second output that drifts, drift only past the first chunk, or small [0, 1] scores
    judged to a hair of their own size would each pass a broken export."""
    batch = np.zeros((10, 4), np.float32)
    ref = _Fixed(scores=np.array([0.5, 0.5], np.float32), embedding=np.array([3.0, 4.0], np.float32))
    drifting = _Fixed(scores=np.array([0.5, 0.5], np.float32), embedding=np.array([3.0, 5.0], np.float32))
    check = compare(ref, drifting, batch, tolerance=0.05)
    assert check.max_abs_diff == {"scores": 0.0, "embedding": 1.0} and not check.ok
    late = compare(_Fixed(scores=np.array([0.5, 0.5], np.float32)), _DriftsAfter(8), batch, tolerance=0.05,
                   batch_size=4)
    assert late.max_abs_diff["scores"] == pytest.approx(0.1, abs=1e-6) and not late.ok  # rows 8-9: the last chunk
    small = _Fixed(scores=np.array([0.001, 0.002], np.float32))
    near = _Fixed(scores=np.array([0.001, 0.00205], np.float32))
    assert compare(small, near, batch, tolerance=FP32_TOLERANCE).ok  # 5e-5 of a full scale of 1


def test_pulse_export_fails_early_and_clearly(pulse_bundle, tmp_path):
    from typer.testing import CliRunner

    from pulse.cli import app

    args = ["export", "--model", str(pulse_bundle / "model.safetensors"), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, [*args, "--calibration", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "nowhere: calibration audio not found" in result.output
    result = CliRunner().invoke(app, [*args, "--int8", "--quantization", "int4"])
    assert result.exit_code == 2 and "quantisation method" in result.output
    result = CliRunner().invoke(app, [*args, "--ort-graph", "dft"])
    assert result.exit_code == 2 and "ort_graph must be auto, fft, conv or folded" in result.output
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_weights_loader_names_files_it_cannot_use(pulse_bundle, tmp_path):
    with pytest.raises(CheckpointError, match=r"model.onnx: not a safetensors checkpoint \(.*header"):
        load_weights(pulse_bundle / "model.onnx")
    save_weights(tmp_path / "mil.safetensors", {"w": torch.zeros(2)}, {"package": "lrmil"})
    with pytest.raises(CheckpointError, match="mil.safetensors: a checkpoint written by lrmil, not by pulse"):
        read_weights_metadata(tmp_path / "mil.safetensors", package="pulse")
    save_weights(tmp_path / "bare.safetensors", {"w": torch.zeros(2)}, {})
    with pytest.raises(CheckpointError, match="written by an unknown package, not by lrmil"):
        load_weights(tmp_path / "bare.safetensors", package="lrmil")
    state, metadata = load_weights(tmp_path / "mil.safetensors", package="lrmil")
    assert metadata == {"package": "lrmil"} and state["w"].shape == (2,)
    with pytest.raises(FileNotFoundError, match="a folder, not a weights file"):
        load_weights(tmp_path)
    with pytest.raises(FileNotFoundError, match="gone.safetensors: file not found"):
        read_weights_metadata(tmp_path / "gone.safetensors")


def test_pulse_export_rejects_wrong_checkpoints_in_one_line(pulse_bundle, tmp_path):
    from typer.testing import CliRunner

    from pulse.cli import app

    save_weights(tmp_path / "mil.safetensors", {"w": torch.zeros(2)}, {"package": "lrmil"})
    expected = {pulse_bundle / "model.onnx": "not a safetensors checkpoint",
                tmp_path / "mil.safetensors": "a checkpoint written by lrmil, not by pulse"}
    for model, problem in expected.items():
        result = CliRunner().invoke(app, ["export", "--model", str(model), "--out", str(tmp_path / "out")])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {model}: {problem}"), lines
    assert not (tmp_path / "out").exists()


def test_pulse_export_without_shared_data_calibrates_on_bundled_examples(pulse_bundle, tmp_path, monkeypatch, caplog):
    """The default --calibration is ../shared/... beside the checkout, from any working directory; where there is
    no such folder (an installed package), the examples installed with pulse stand in."""
    import logging
    from pathlib import Path

    from typer.testing import CliRunner

    import pulse
    from export import bundle
    from pulse.cli import app

    monkeypatch.chdir(tmp_path)  # the working directory does not matter: ../shared is looked for beside the checkout
    shared = bundle.checkout_root() / ExportConfig().calibration[0]
    if shared.is_dir():
        assert bundle.resolve_calibration(ExportConfig().calibration) == (str(shared.resolve()),)
    monkeypatch.setattr(bundle, "checkout_root", lambda: tmp_path / "installed")  # no ../shared beside it
    caplog.set_level(logging.INFO, logger="export")
    result = CliRunner().invoke(app, ["export", "--model", str(pulse_bundle / "model.safetensors"), "--out", "out"])
    assert result.exit_code == 0, result.output
    examples = str(Path(pulse.__file__).parent / "assets" / "examples")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["export"]["calibration"] == [examples] and config["parity_windows"] == 16
    assert f"using the bundled example recordings in {examples}" in caplog.text


def test_calibration_windows_lie_where_position_says_and_a_short_recording_is_padded_at_its_end(tmp_path, caplog):
    """Windows start at (j + position) / n of what precedes the last window; a recording shorter than a window gives
    one, its audio first as analysis pads it; a FLAC cut short past its header is named and skipped."""
    sf.write(tmp_path / "ramp.wav", (np.arange(441000) / 441000).astype(np.float32), 44100, subtype="FLOAT")
    windows = calibration_windows([tmp_path / "ramp.wav"], 44100, 44100, 4, position=0.5)
    np.testing.assert_allclose(windows[:, 0] * 10, [1.125, 3.375, 5.625, 7.875], atol=1e-3)  # 9 s * (j + .5) / 4
    sf.write(tmp_path / "short.wav", np.full(22050, 0.5, np.float32), 44100)
    sf.write(tmp_path / "cut.flac", _windows(1, 176400)[0], 44100)
    (tmp_path / "cut.flac").write_bytes((tmp_path / "cut.flac").read_bytes()[:100_000])
    windows = calibration_windows([tmp_path / "short.wav", tmp_path / "cut.flac"], 44100, 44100, 2)
    assert windows.shape == (1, 44100) and (windows[0, :22050] == 0.5).all() and not windows[0, 22050:].any()
    assert "cut.flac: corrupt or truncated in" in caplog.text
