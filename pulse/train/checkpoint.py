"""Resumable training state in safetensors: tensors in the file, scalars as JSON in its header.

torch.save would pickle the optimiser; here every tensor of the model, pooler, loss terms and
AdamW moments is stored flat under a prefix, and param_groups plus counters go to the header.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from export.artifact import load_weights, save_weights


def save_checkpoint(path: Path, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer, state: dict) -> None:
    tensors = {f"{name}.{k}": v for name, m in modules.items() for k, v in m.state_dict().items()}
    optim = optimizer.state_dict()
    for index, slots in optim["state"].items():
        for key, value in slots.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value)
    save_weights(path, tensors, {**state, "param_groups": optim["param_groups"]})


def load_checkpoint(path: Path, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer) -> dict:
    """Restore modules and optimiser in place; returns the JSON state saved with them."""
    tensors, state = load_weights(path)
    for name, module in modules.items():
        prefix = f"{name}."
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    slots: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, slot = key.split(".", 2)
            slots.setdefault(int(index), {})[slot] = value
    optimizer.load_state_dict({"state": slots, "param_groups": state.pop("param_groups")})
    return state
