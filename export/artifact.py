"""Weights and ONNX files that carry their own metadata.

A model's metadata (labels, sample rate, window, frontend settings, version, training data,
licence) is one JSON-able dict. It is stored in the safetensors header and in the ONNX
`metadata_props`, so any single artefact file is enough to rebuild preprocessing exactly.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

METADATA_KEY = "model_config"


def save_weights(path: str | Path, state_dict: dict, metadata: dict) -> None:
    """Save tensors with safetensors, atomically, with `metadata` in the header."""
    from safetensors.torch import save_file

    from export.atomic import atomic_path

    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(metadata)})


def load_weights(path: str | Path) -> tuple[dict, dict]:
    """Return (state_dict, metadata) from a safetensors file; never unpickles anything."""
    from safetensors import safe_open

    tensors = {}
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
        for key in f.keys():
            tensors[key] = f.get_tensor(key)
    return tensors, json.loads(header.get(METADATA_KEY, "{}"))


def read_weights_metadata(path: str | Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return json.loads((f.metadata() or {}).get(METADATA_KEY, "{}"))


def set_onnx_metadata(model_proto, metadata: dict) -> None:
    """Attach `metadata` to an in-memory ONNX ModelProto (replacing an older copy)."""
    for prop in list(model_proto.metadata_props):
        if prop.key == METADATA_KEY:
            model_proto.metadata_props.remove(prop)
    entry = model_proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)


def read_onnx_metadata(path: str | Path) -> dict:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    return {}


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
