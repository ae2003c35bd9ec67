"""The one inference contract shared by CLIs, apps and benchmarks.

A Predictor takes a float32 batch and returns named float32 outputs. Each backend (torch,
onnxruntime, tensorrt, birdnet) is one file, `export/backends/<name>_backend.py`, that registers
itself as <name>: adding a backend is adding that file (and, for "auto" to pick it by suffix, a line
in _SUFFIX_BACKENDS); neither the callers nor this module name it otherwise.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from export.registry import Registry


@dataclass(frozen=True)
class InputSpec:
    """Name, shape (None marks a dynamic axis) and dtype of the single model input."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"


@runtime_checkable
class Predictor(Protocol):
    input_spec: InputSpec
    output_names: tuple[str, ...]
    metadata: dict

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch; returns every output by name, as numpy arrays."""

    def close(self) -> None:
        """Release sessions, engines and memory."""


BACKENDS: Registry[Predictor] = Registry("predictor backend")


def checked_batch(batch: np.ndarray, spec: InputSpec) -> np.ndarray:
    """`batch` as the contiguous float32 array every backend runs, or the same clear ValueError from each
    for a wrong rank or size or an empty batch. Values are cast, not scaled or scanned: audio must already be
    in -1..1 (int16 PCM would run 32768 times too loud), patches in 0..255, and NaN is the caller's to
    refuse (`pulse analyze` does, per file)."""
    batch = np.asarray(batch)
    expected = "[" + ", ".join("batch" if d is None else str(d) for d in spec.shape) + "]"
    if batch.ndim != len(spec.shape) or any(d is not None and n != d for n, d in zip(batch.shape, spec.shape)):
        raise ValueError(f"{spec.name}: expected {expected}, got shape {list(batch.shape)}")
    if len(batch) == 0:
        raise ValueError(f"{spec.name}: empty batch")
    return np.ascontiguousarray(batch, np.float32)

# Which backend serves which artefact file, in order of preference for "auto".
_SUFFIX_BACKENDS = {".onnx": "onnxruntime", ".safetensors": "torch", ".engine": "tensorrt", ".plan": "tensorrt",
                    ".tflite": "birdnet"}
# The file each backend serves from an artefact folder (written by `pulse export`): model.onnx
# holds whichever log-mel graph ONNX Runtime ran faster at export time (export/bundle.py);
# TensorRT builds the DFT-free conv graph, which every TensorRT version parses.
ARTEFACT_FILES = {"onnxruntime": "model.onnx", "tensorrt": "model.trt.onnx", "torch": "model.safetensors"}
BACKEND_SUFFIX = "_backend"  # export/backends/<name>_backend.py registers the backend <name>


def backend_names() -> list[str]:
    """Every backend there is a file for, found without importing any (their heavy imports stay lazy)."""
    import pkgutil

    import export.backends

    return sorted(m.name.removesuffix(BACKEND_SUFFIX) for m in pkgutil.iter_modules(export.backends.__path__)
                  if m.name.endswith(BACKEND_SUFFIX))


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's share), not the host's count."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def load_predictor(path: str | Path, backend: str = "auto", device: str = "cpu", **options) -> Predictor:
    """Open a model file or artefact folder with the named backend.

    "auto" picks the backend from the file suffix, or ONNX Runtime for a folder; a folder
    resolves to the backend's own file in ARTEFACT_FILES.
    """
    path = Path(path)
    if backend != "auto" and backend not in (known := backend_names()):
        raise ValueError(f"unknown backend {backend!r} (known: {', '.join(known)})")
    if path.is_dir():
        backend = "onnxruntime" if backend == "auto" else backend
        if backend not in ARTEFACT_FILES:
            raise ValueError(f"{path}: a folder; the {backend} backend takes its model file itself")
        path = path / ARTEFACT_FILES[backend]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    if backend == "auto":
        backend = _SUFFIX_BACKENDS.get(path.suffix)
        if backend is None:
            raise ValueError(f"{path}: cannot tell the backend from suffix {path.suffix!r}")
    importlib.import_module(f"export.backends.{backend}{BACKEND_SUFFIX}")  # registers itself; heavy imports stay lazy
    return BACKENDS.create(backend, path=path, device=device, **options)
