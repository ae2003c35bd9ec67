"""Weights and ONNX files that carry their own metadata.

A model's metadata (labels, sample rate, window, frontend settings, version, training data,
licence) is one JSON-able dict. It is stored in the safetensors header and in the ONNX
`metadata_props`, so any single artefact file is enough to rebuild preprocessing exactly.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path

METADATA_KEY = "model_config"


class CheckpointError(ValueError):
    """A weights file that is not safetensors, or that another package wrote: one line naming the file."""


def save_weights(path: str | Path, state_dict: dict, metadata: dict) -> None:
    """Save tensors with safetensors, atomically, with `metadata` in the header.

    The bytes are built in memory and written through `atomic_path`: safetensors' own `save_file`
    renames a 0600 temporary file over the target, and weights must get the user's umask like any output.
    """
    from safetensors.torch import save

    from export.atomic import atomic_path

    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        tmp.write_bytes(save(tensors, metadata={METADATA_KEY: json.dumps(metadata)}))


def load_weights(path: str | Path, package: str | None = None) -> tuple[dict, dict]:
    """Return (state_dict, metadata) from a safetensors file; never unpickles anything.

    With `package` ("pulse", "lrmil"), a checkpoint written by another package is rejected
    before its tensors meet a model they do not fit.
    """
    with _open_safetensors(path, "pt") as f:
        metadata = _checked_metadata(path, f, package)
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    return tensors, metadata


def read_weights_metadata(path: str | Path, package: str | None = None) -> dict:
    """The metadata alone (no tensors read), checked against `package` as in `load_weights`."""
    with _open_safetensors(path, "np") as f:
        return _checked_metadata(path, f, package)


@contextmanager
def _open_safetensors(path: str | Path, framework: str):
    """safe_open, but a file of another format (safetensors says only "header too large") is named."""
    from safetensors import SafetensorError, safe_open

    if not Path(path).is_file():
        problem = "a folder, not a weights file" if Path(path).is_dir() else "file not found"
        raise FileNotFoundError(f"{path}: {problem}")
    try:
        with safe_open(str(path), framework=framework) as f:
            yield f
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({exc})") from None


def check_is_model(path: str | Path, metadata: dict) -> None:
    """A training checkpoint (pulse.train.checkpoint's resumable state) sits beside model.safetensors and is
    an easy file to give by mistake: say which file is meant."""
    if "package" not in metadata and "param_groups" in metadata:
        raise CheckpointError(f"{path}: a training checkpoint (the state `pulse train` resumes from), not a "
                              f"model; use {Path(path).with_name('model.safetensors')}")


def _checked_metadata(path: str | Path, f, package: str | None) -> dict:
    metadata = json.loads((f.metadata() or {}).get(METADATA_KEY, "{}"))
    if package is not None:
        check_is_model(path, metadata)
    if package is not None and metadata.get("package") != package:
        writer = metadata.get("package", "an unknown package")
        raise CheckpointError(f"{path}: a checkpoint written by {writer}, not by {package}")
    return metadata


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
