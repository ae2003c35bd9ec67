"""`pulse export`: turn one safetensors checkpoint into a checked deployment folder.

The folder holds the checkpoint, model.onnx (what ONNX Runtime runs), model.trt.onnx (conv
frontend, what TensorRT builds), model.folded.onnx (folded frontend), optionally model.int8.onnx
and a TensorRT engine, and config.json with the model config, the export settings, every file's
sha256 and the parity of each artefact against the PyTorch model on real audio windows.

Which frontend graph is fastest in ONNX Runtime depends on the FFT size, the hop and the CPU (the
STFT op costs n log n per frame but runs slowly; the DFT-as-convolution costs n^2 but runs as a
GEMM; the folded DFT half that, plus some data movement), so by default all three are timed on the
parity windows and model.onnx is the fastest.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import importlib.util
import json
import logging
import shutil
import tempfile
from pathlib import Path

from export.artifact import sha256
from export.atomic import remove_stale, write_json
from export.parity import FP16_TOLERANCE, FP32_TOLERANCE, INT8_TOLERANCE, Parity, compare
from export.predictor import ARTEFACT_FILES, load_predictor
from export.timing import ms_per_window

ONNX_FILES = {"fft": ARTEFACT_FILES["onnxruntime"], "conv": ARTEFACT_FILES["tensorrt"], "folded": "model.folded.onnx"}
INT8_FILE = "model.int8.onnx"
WEIGHTS_FILE = ARTEFACT_FILES["torch"]
CONFIG_FILE = "config.json"

log = logging.getLogger(__name__)


def export_bundle(weights: str | Path, out: str | Path, cfg) -> list[Parity]:
    """Write the artefacts `cfg` (a pulse.config.ExportConfig) asks for; returns the parity checks.

    Everything is built and checked in a hidden staging folder inside `out` and moved into `out` only when
    every check passes, so a failed export never leaves a graph that `pulse analyze` would run.
    """
    from export.onnx import export_onnx
    from export.quantize import QUANT_METHODS, calibration_windows
    from pulse.models import load_model

    if cfg.ort_graph not in ("auto", *ONNX_FILES):
        raise ValueError(f"ort_graph must be auto, fft, conv or folded, got {cfg.ort_graph!r}")
    if cfg.quantization not in QUANT_METHODS:
        raise ValueError(f"quantisation method must be one of {QUANT_METHODS}, got {cfg.quantization!r}")
    if cfg.trt and importlib.util.find_spec("tensorrt") is None:
        raise ImportError("--trt needs an NVIDIA GPU with the tensorrt package, which is not installed here")
    out = Path(out)
    cfg = dataclasses.replace(cfg, calibration=resolve_calibration(cfg.calibration))
    model = load_model(weights)
    mc = model.cfg
    # Read the audio first: a wrong --calibration fails before anything is written.
    check = calibration_windows(cfg.calibration, mc.sample_rate, mc.window_samples, cfg.parity_windows,
                                position=0.25)
    calibration = calibration_windows(cfg.calibration, mc.sample_rate, mc.window_samples,
                                      cfg.calibration_windows, position=0.5) if cfg.int8 else None
    out.mkdir(parents=True, exist_ok=True)
    earlier = _published_before(out)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        shutil.copyfile(weights, staging / WEIGHTS_FILE)
        files = {mode: export_onnx(model, staging / name, mode) for mode, name in ONNX_FILES.items()}
        reference = load_predictor(staging / WEIGHTS_FILE, backend="torch")
        graphs = {mode: load_predictor(path, backend="onnxruntime") for mode, path in files.items()}
        checks = [compare(reference, graphs[mode], check, FP32_TOLERANCE, ("torch", f"onnxruntime {mode}"))
                  for mode in graphs]
        speed = {f"onnxruntime {mode} fp32": ms_per_window(graph, check, repeats=3) for mode, graph in graphs.items()}
        record = {}
        if cfg.int8:
            files["int8"], int8_checks, record["int8_graph"] = _int8(files, reference, check, calibration, cfg,
                                                                     staging, speed)
            checks += int8_checks
        ort_graph = cfg.ort_graph
        if ort_graph == "auto":
            ort_graph = min(graphs, key=lambda mode: speed[f"onnxruntime {mode} fp32"])
        if ort_graph != "fft":
            shutil.copyfile(files[ort_graph], files["fft"])
        if cfg.trt:
            engine = load_predictor(files["conv"], backend="tensorrt", device="cuda", fp16=cfg.trt_fp16)
            files["tensorrt"] = engine.engine_path
            # FP32 engines use TF32 convolutions on recent GPUs, so both precisions get the FP16 tolerance.
            checks.append(compare(reference, engine, check, FP16_TOLERANCE, ("torch", f"tensorrt {engine.precision}")))
        if not all(c.ok for c in checks):
            return checks  # nothing published; the caller reports the failed checks
        published = [out / p.name for p in [staging / WEIGHTS_FILE, *files.values()]]
        for path in sorted(staging.iterdir()):  # the engine's metadata JSON goes with it
            path.replace(out / path.name)
        # an earlier INT8 graph or engine would run old weights (an engine's metadata JSON goes with it)
        remove_stale(out, [n for name in earlier - {p.name for p in published} for n in (name, f"{name}.json")])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_json(out / CONFIG_FILE, {
        "model": mc.to_dict(), "export": cfg.to_dict(), "source": str(weights),
        "onnxruntime_graph": ort_graph, **record,
        "files": {p.name: sha256(p) for p in published},
        "parity_windows": len(check), "parity": [c.to_dict() for c in checks],
        "ms_per_window": speed,
    })
    return checks


def _published_before(out: Path) -> set[str]:
    """The files an earlier export into `out` published (its config.json lists them), so that those this export
    does not replace are removed with it (`remove_stale` takes plain names only)."""
    try:
        files = json.loads((out / CONFIG_FILE).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    return {name for name in files if isinstance(name, str)} if isinstance(files, dict) else set()


def _int8(files: dict, reference, check, calibration, cfg, staging: Path, speed: dict) -> tuple[Path, list, str]:
    """model.int8.onnx quantised from the STFT graph and from the folded one (their DFTs stay float: STFT and
    MatMul are not quantised, where the conv graph's DFT would be rounded to 8 bits), each checked against
    PyTorch; the faster one is kept. Which is faster depends on the model and the CPU (the bundled default on
    2 cores: folded 0.59 against 1.83 ms a window, the STFT op staying as slow as in the float graph)."""
    from export.quantize import quantize_onnx

    candidates, checks = {}, []
    for mode in ("fft", "folded"):
        path = quantize_onnx(files[mode], staging / f".{mode}.{INT8_FILE}", cfg.quantization, calibration)
        int8 = load_predictor(path, backend="onnxruntime")
        checks.append(compare(reference, int8, check, INT8_TOLERANCE, ("torch", f"int8 {cfg.quantization} {mode}")))
        speed[f"onnxruntime {mode} int8 {cfg.quantization}"] = ms_per_window(int8, check, repeats=3)
        candidates[mode] = path
    best = min(candidates, key=lambda mode: speed[f"onnxruntime {mode} int8 {cfg.quantization}"])
    kept = candidates[best].replace(staging / INT8_FILE)
    for path in candidates.values():
        path.unlink(missing_ok=True)
    return kept, checks, best


def checkout_root() -> Path:
    """The folder holding the pulse package: in a checkout, ../shared (the default calibration audio) lies beside it."""
    import pulse

    return Path(pulse.__file__).resolve().parents[1]


def resolve_calibration(calibration: tuple[str, ...]) -> tuple[str, ...]:
    """`calibration`; for the default (real songs in ../shared), that folder found from the checkout rather than
    the working directory, else pulse's bundled example recordings.

    The fallback lets export run anywhere; any other missing path stays an error (raised by calibration_windows).
    """
    from pulse.config import ExportConfig

    if calibration != ExportConfig().calibration:
        return calibration
    beside_checkout = tuple(str((checkout_root() / item).resolve()) for item in calibration)
    if all(Path(item).exists() for item in beside_checkout):
        return beside_checkout
    examples = importlib.resources.files("pulse") / "assets" / "examples"
    log.info("calibration: %s not found, using the bundled example recordings in %s", ", ".join(beside_checkout),
             examples)
    return (str(examples),)
