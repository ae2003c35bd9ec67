"""Which frontend path is fast where: fft (STFT op) vs conv (Conv1d DFT basis), and INT8 vs FP32.

Times, in ms per 3 s window at batch 32 on real InsectSet32 windows: the log-mel frontend alone
and the whole model, each in PyTorch and in ONNX Runtime (CPU), plus the whole model in ONNX
Runtime INT8 (static, calibrated on other real windows, and dynamic) with what INT8 does to
the scores. Results are printed as a markdown table and written as JSON.

    .venv/bin/python bench/bench_frontend.py [--model M.safetensors] [--threads 2]
"""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import typer

from export.atomic import write_json
from export.onnx import export_frontend, export_onnx
from export.predictor import load_predictor
from export.quantize import QUANT_METHODS, calibration_windows, quantize_onnx
from export.timing import ms_per_window
from pulse.config import DEFAULT_AUDIO_ROOT, ModelConfig
from pulse.frontend import FRONTEND_MODES


class _TorchModule:
    """A bare torch module behind Predictor.predict, to time the frontend alone."""

    def __init__(self, module):
        import torch

        self._module, self._torch = module.eval(), torch

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        with self._torch.inference_mode():
            return {"logmel": self._module(self._torch.from_numpy(batch)).numpy()}


def bench(
    model: str = typer.Option("", help="Checkpoint to time; empty: an untrained model with the default ModelConfig."),
    audio: Path = typer.Option(Path(DEFAULT_AUDIO_ROOT), help="Real recordings for the timed and calibration windows."),
    batch: int = typer.Option(32, help="Windows per call."),
    threads: int = typer.Option(2, help="Threads for torch and ONNX Runtime."),
    repeats: int = typer.Option(5, help="Timed runs per configuration (the fastest reported: export.timing)."),
    out: Path = typer.Option(Path("bench/results/frontend.json"), help="JSON results file."),
) -> None:
    """Time fft vs conv frontends in torch and ONNX Runtime, and ONNX Runtime FP32 vs INT8."""
    import torch

    from export.artifact import save_weights
    from pulse.frontend import LogMel
    from pulse.models import create_model, load_model

    torch.set_num_threads(threads)
    work = Path(tempfile.mkdtemp(prefix="bench_frontend_"))
    label = model or "untrained default ModelConfig"
    if model:
        network = load_model(model)
    else:
        torch.manual_seed(0)  # timings do not depend on the weights, but the file written should not vary
        network = create_model(ModelConfig()).eval()
        model = str(work / "untrained.safetensors")
        save_weights(model, network.state_dict(), network.cfg.to_dict())
    cfg = network.cfg
    windows = calibration_windows([audio], cfg.sample_rate, cfg.window_samples, batch, position=0.25)
    calibration = calibration_windows([audio], cfg.sample_rate, cfg.window_samples, 64, position=0.5)
    ms: dict[str, float] = {}
    for mode in FRONTEND_MODES:
        frontend = LogMel.for_model(cfg, mode)
        ms[f"frontend torch {mode}"] = ms_per_window(_TorchModule(frontend), windows, repeats)
        graph = export_frontend(cfg, work / f"frontend_{mode}.onnx", mode)
        ms[f"frontend onnxruntime {mode}"] = ms_per_window(load_predictor(graph, threads=threads), windows, repeats)
    fp32 = {}
    for mode in FRONTEND_MODES:
        ms[f"model torch {mode}"] = ms_per_window(
            load_predictor(model, backend="torch", frontend_mode=mode), windows, repeats)
        fp32[mode] = load_predictor(export_onnx(network, work / f"model_{mode}.onnx", mode), threads=threads)
        ms[f"model onnxruntime {mode} fp32"] = ms_per_window(fp32[mode], windows, repeats)
    int8_effect = {}
    for method in QUANT_METHODS:
        graph = quantize_onnx(work / "model_fft.onnx", work / f"model_{method}.onnx", method, calibration)
        int8 = load_predictor(graph, threads=threads)
        ms[f"model onnxruntime fft int8 {method}"] = ms_per_window(int8, windows, repeats)
        int8_effect[method] = _score_effect(fp32["fft"], int8, windows)
    results = {"model": label,
               "batch": batch, "threads": threads, "repeats": repeats, "window_s": cfg.window_s,
               "machine": f"{platform.machine()}, {os.cpu_count()} cores, {threads} threads",
               "ms_per_window": ms, "int8_vs_fp32_scores": int8_effect}
    write_json(out, results)
    _print_table(results)


def _score_effect(fp32, int8, windows: np.ndarray) -> dict[str, float]:
    """How INT8 moves scores on real windows: max and mean |diff|, and top-1 species agreement."""
    a, b = fp32.predict(windows)["scores"], int8.predict(windows)["scores"]
    return {"max_abs_diff": float(np.abs(a - b).max()), "mean_abs_diff": float(np.abs(a - b).mean()),
            "top1_agreement": float((a.argmax(1) == b.argmax(1)).mean())}


def _print_table(results: dict) -> None:
    print(f"ms per {results['window_s']:g} s window, batch {results['batch']}, {results['machine']} "
          f"({results['model']})")
    print("| configuration | ms / window | x real time |\n|---|---|---|")
    for name, value in results["ms_per_window"].items():
        print(f"| {name} | {value:.2f} | {1e3 * results['window_s'] / value:.0f} |")
    for method, effect in results["int8_vs_fp32_scores"].items():
        print(f"INT8 {method} vs FP32 scores: max |diff| {effect['max_abs_diff']:.4f}, "
              f"mean |diff| {effect['mean_abs_diff']:.5f}, top-1 agreement {effect['top1_agreement']:.2%}")


def main() -> None:
    typer.run(bench)


if __name__ == "__main__":
    main()
