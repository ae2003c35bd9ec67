"""TensorRT backend: builds an engine from the conv-frontend ONNX graph, caches it, runs it on CUDA.

The conv graph has no DFT/STFT op, so every TensorRT 10 version parses it. In FP16 mode the
log-mel frontend is pinned to FP32: a 1024-point power spectrum reaches ~2.6e5 for a
full-scale tone, beyond FP16's 65504. The engine is cached next to the ONNX file as
`<name>.<precision>.engine` with its metadata in `<engine>.json`, and rebuilt when the
ONNX file is newer, or the engine was built by another TensorRT version or for another GPU (an engine
only runs where it was built), or its metadata is missing. TensorRT 11 dropped the FP16 builder flag
(networks are strongly typed), so there the engine is built in FP32 with a warning. tensorrt and torch
(for CUDA buffers) are imported only here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from export.atomic import atomic_path, write_json
from export.predictor import BACKENDS, InputSpec, checked_batch

log = logging.getLogger(__name__)
MAX_BATCH = 256  # largest batch the optimisation profile accepts
OPT_BATCH = 32  # the batch TensorRT tunes its kernels for (the analyze default)
WORKSPACE_BYTES = 1 << 30


@BACKENDS.register("tensorrt")
class TensorRTPredictor:
    def __init__(self, path: Path, device: str = "cuda", threads: int = 0, fp16: bool = True):
        del threads  # the Predictor contract's CPU threads: the engine runs on the GPU
        import tensorrt as trt
        import torch

        if not device.startswith("cuda") or not torch.cuda.is_available():
            raise ValueError(f"{path}: the tensorrt backend needs a CUDA device (got {device!r}, "
                             f"CUDA available: {torch.cuda.is_available()})")
        self._torch, self._device = torch, torch.device(device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        path = Path(path)
        if fp16 and not hasattr(trt.BuilderFlag, "FP16"):
            log.warning("TensorRT %s has no FP16 builder flag (strong typing only, 11.x): building FP32",
                        trt.__version__)
            fp16 = False
        if path.suffix == ".onnx":
            self.engine_path = path.with_suffix(f".{'fp16' if fp16 else 'fp32'}.engine")
            self._built_for = {"tensorrt": trt.__version__, "gpu": torch.cuda.get_device_name(self._device)}
            if not _engine_current(self.engine_path, path, self._built_for):
                with torch.cuda.device(self._device):  # built on the GPU it will run on
                    self._build(trt, path, fp16)
        else:
            self.engine_path = path
        self.metadata = json.loads(Path(f"{self.engine_path}.json").read_text())
        self.precision = self.metadata["precision"]
        with torch.cuda.device(self._device):
            self._runtime = trt.Runtime(self._logger)  # must outlive the engine it deserialises
            self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
            if self._engine is None:
                raise ValueError(f"{self.engine_path}: not a TensorRT engine for this TensorRT version and GPU")
            self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = tuple(n for n in names if n not in inputs)
        shape = tuple(d if d >= 0 else None for d in self._engine.get_tensor_shape(inputs[0]))
        self.input_spec = InputSpec(inputs[0], shape)

    def _build(self, trt, onnx_path: Path, fp16: bool) -> None:
        from export.artifact import read_onnx_metadata

        builder = trt.Builder(self._logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ValueError(f"{onnx_path}: TensorRT cannot parse this graph ({errors})")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            _pin_frontend_fp32(trt, network)
        model_input = network.get_input(0)
        samples = model_input.shape[1]
        profile = builder.create_optimization_profile()
        profile.set_shape(model_input.name, (1, samples), (OPT_BATCH, samples), (MAX_BATCH, samples))
        config.add_optimization_profile(profile)
        log.info("building TensorRT engine %s (takes a minute)", self.engine_path)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ValueError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log above)")
        with atomic_path(self.engine_path) as tmp:
            tmp.write_bytes(bytes(serialized))
        write_json(f"{self.engine_path}.json", {**read_onnx_metadata(onnx_path),
                                                "precision": "fp16" if fp16 else "fp32", **self._built_for})

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.cuda.device(self._device):
            waveform = torch.from_numpy(checked_batch(batch, self.input_spec)).to(self._device)
            if not self._context.set_input_shape(self.input_spec.name, tuple(waveform.shape)):
                raise ValueError(f"{self.engine_path}: batch of {len(waveform)} outside the engine's profile "
                                 f"(1 to {MAX_BATCH})")
            self._context.set_tensor_address(self.input_spec.name, waveform.data_ptr())
            outputs = {}
            for name in self.output_names:
                outputs[name] = torch.empty(tuple(self._context.get_tensor_shape(name)), dtype=torch.float32,
                                            device=self._device)
                self._context.set_tensor_address(name, outputs[name].data_ptr())
            stream = torch.cuda.current_stream(self._device)
            if not self._context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"{self.engine_path}: TensorRT execution failed")
            stream.synchronize()
        return {name: out.cpu().numpy() for name, out in outputs.items()}

    def close(self) -> None:
        self._context = self._engine = self._runtime = None


def _engine_current(engine: Path, onnx: Path, built_for: dict) -> bool:
    """The cached engine was built from this ONNX file (not older than it) by this TensorRT for this GPU."""
    try:
        meta = json.loads(Path(f"{engine}.json").read_text())
        return engine.stat().st_mtime >= onnx.stat().st_mtime and all(meta.get(k) == v for k, v in built_for.items())
    except (OSError, ValueError):  # no engine, or no metadata beside it (a build killed half way)
        return False


def _pin_frontend_fp32(trt, network) -> None:
    """Keep every layer up to the log of the mel power in FP32; the encoder may run in FP16."""
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    log_layers = [i for i, layer in enumerate(layers)
                  if layer.type == trt.LayerType.UNARY and "log" in layer.name.lower()]
    if not log_layers:
        log.warning("no log layer found in the network: every layer kept in FP32 (the engine runs no faster "
                    "than an FP32 one)")
    last = log_layers[0] if log_layers else len(layers) - 1
    for layer in layers[:last + 1]:
        floats = [k for k in range(layer.num_outputs) if layer.get_output(k).dtype in (trt.float32, trt.float16)]
        if floats and len(floats) == layer.num_outputs:  # shape arithmetic (int64) keeps its own type
            layer.precision = trt.float32
            for k in floats:
                layer.set_output_type(k, trt.float32)
