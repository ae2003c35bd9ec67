"""The one inference contract shared by CLIs, apps and benchmarks.

A Predictor takes a float32 batch and returns named float32 outputs. Backends (torch,
onnxruntime, tensorrt) each live in one file under `export/backends/` and register
themselves by name, so adding a backend never touches the callers.
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

# Which backend serves which artefact file, in order of preference for "auto".
_SUFFIX_BACKENDS = {".onnx": "onnxruntime", ".safetensors": "torch", ".engine": "tensorrt", ".plan": "tensorrt"}
_BACKEND_MODULES = {
    "torch": "export.backends.torch_backend",
    "onnxruntime": "export.backends.onnxruntime_backend",
    "tensorrt": "export.backends.tensorrt_backend",
}


def load_predictor(path: str | Path, backend: str = "auto", device: str = "cpu", **options) -> Predictor:
    """Open a model artefact with the named backend ("auto" picks it from the file suffix)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    if backend == "auto":
        backend = _SUFFIX_BACKENDS.get(path.suffix)
        if backend is None:
            raise ValueError(f"{path}: cannot tell the backend from suffix {path.suffix!r}")
    if backend not in _BACKEND_MODULES:
        raise ValueError(f"unknown backend {backend!r} (known: {', '.join(_BACKEND_MODULES)})")
    importlib.import_module(_BACKEND_MODULES[backend])  # registers itself; heavy imports stay lazy
    return BACKENDS.create(backend, path=path, device=device, **options)
