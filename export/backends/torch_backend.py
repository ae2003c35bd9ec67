"""PyTorch backend: a safetensors checkpoint rebuilt from the config in its header."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from export.predictor import BACKENDS, InputSpec, checked_batch


def torch_device(name: str):
    """`--device` checked before any work (a run folder, synthetic slides): without a GPU, `cuda` was a torch
    traceback part way through a run. One wording for every CLI and backend."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device {name}: expected cpu, cuda or cuda:N") from exc
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: expected cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: torch finds no CUDA GPU here; use --device cpu")
    return device


@BACKENDS.register("torch")
class TorchPredictor:
    def __init__(self, path: Path, device: str = "cpu", threads: int = 0, frontend_mode: str = "fft"):
        import torch

        if threads:  # process-wide in torch; 0 keeps torch's default (every physical core)
            torch.set_num_threads(threads)
        torch_device(device)

        from export.artifact import load_weights

        # Waveform in, scores out: PULSE's models. LRMIL's patch encoders and ABMILs run through `lrmil predict`.
        state, self.metadata = load_weights(path, package="pulse")
        package = importlib.import_module("pulse.models")
        network = package.build_from_metadata(self.metadata, frontend_mode=frontend_mode)
        network.load_state_dict(state)
        self._module = package.ScoresAndEmbedding(network.eval()).to(device)
        self.output_names = tuple(self._module.output_names)
        self.input_spec = InputSpec("waveform",
                                    (None, int(round(self.metadata["window_s"] * self.metadata["sample_rate"]))))
        self._device, self._torch = device, torch

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        with self._torch.inference_mode():
            # np.array copies: callers may pass read-only window views, which torch warns about.
            outputs = self._module(self._torch.from_numpy(np.array(checked_batch(batch, self.input_spec)))
                                   .to(self._device))
        return {name: out.float().cpu().numpy() for name, out in zip(self.output_names, outputs)}

    def close(self) -> None:
        self._module = None
