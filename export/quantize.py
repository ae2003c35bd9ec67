"""ONNX Runtime INT8 quantisation of an exported graph, calibrated on real inputs.

For PULSE only the encoder and head (Conv, Gemm) are quantised, less the first convolution
(`single_channel_convs`). The log-mel frontend stays float: the power spectrum spans some 20
decades before the log, which 8 bits cannot hold. An LRMIL patch
encoder (`lrmil export --int8`) also quantises its MatMuls, calibrated on real tissue patches.
- "static": weights and activations in 8 bits (QDQ format, per-channel weights), with
  activation ranges measured on windows of real audio. Calibration must see songs, not noise.
- "dynamic": 8-bit weights, activation ranges computed per batch at run time; no calibration.
  Its ConvInteger with signed weights loads in ONNX Runtime 1.24 and newer only (1.18-1.23:
  "Could not find an implementation for ConvInteger(10)").
Weights use 7 of their 8 bits (`reduce_range`) in both: on x86 CPUs without VNNI (AVX2 only) ONNX Runtime sums
pairs of 8-bit products in 16 bits, which full-range weights overflow (saturate); the LRMIL demo encoder's INT8
features came out 0.58 off PyTorch's there, against 0.04-0.2 with 7-bit weights. Where it runs is the deploying
machine's business, not the exporting one's, so every graph is made safe for both.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from export.artifact import read_onnx_metadata, set_onnx_metadata
from export.atomic import atomic_path
from export.onnx import IR_VERSION

QUANT_METHODS = ("static", "dynamic")
QUANTIZED_OPS = ("Conv", "Gemm")
_CALIBRATION_BATCH = 8

log = logging.getLogger(__name__)


def calibration_windows(inputs: list[str | Path], sample_rate: int, window_samples: int, count: int,
                        position: float = 0.5) -> np.ndarray:
    """Up to `count` windows of real audio, spread over the recordings in `inputs`.

    Up to `count` files are picked evenly from the sorted list; each gives ceil(count / files)
    windows (fewer if it is short) at fractions (j + position) / n of its length, so two calls
    with different `position` draw different windows. Each window is read on its own (sought to, and
    resampled), so memory does not grow with the recordings' length. Short recordings are zero-padded, as
    analysis does. A file that cannot be read is logged and skipped; no readable audio at all
    raises ValueError.
    """
    from pulse.discovery import find_audio
    from pulse.io import AudioReadError, audio_info, read_span

    missing = [str(item) for item in inputs if not Path(item).exists()]
    if missing:
        raise ValueError(f"{', '.join(missing)}: calibration audio not found")
    files = [path for path, _ in find_audio(list(inputs))]
    if not files:
        raise ValueError(f"{', '.join(map(str, inputs))}: no audio files found for calibration")
    picks = sorted(set(np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int)))
    per_file = -(-count // len(picks))
    window_s = window_samples / sample_rate
    windows = []
    for index in picks:
        try:  # each window read on its own: a field recording of hours at 384 kHz is never held whole
            info = audio_info(files[index])
            n = min(per_file, max(1, int(info.duration_s * sample_rate) // window_samples))
            starts_s = [max(0.0, info.duration_s - window_s) * (j + position) / n for j in range(n)]
            windows += [read_span(files[index], start_s, window_s, sample_rate, info) for start_s in starts_s]
        except AudioReadError as exc:  # damaged, or cut short past its header
            log.warning("calibration: %s", exc)
    if not windows:
        raise ValueError(f"{', '.join(map(str, inputs))}: none of the {len(files)} audio files could be read")
    return np.stack(windows[:count])


def quantize_onnx(src: str | Path, dst: str | Path, method: str = "static",
                  windows: np.ndarray | None = None, input_name: str = "waveform",
                  op_types: tuple[str, ...] = QUANTIZED_OPS) -> Path:
    """Write an INT8 copy of the float graph `src` to `dst`; "static" needs calibration `windows`
    (inputs of `input_name`: audio windows for PULSE, tissue patches for LRMIL)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    if method not in QUANT_METHODS:
        raise ValueError(f"quantisation method must be one of {QUANT_METHODS}, got {method!r}")
    if method == "static" and (windows is None or not len(windows)):
        raise ValueError("static quantisation needs calibration windows (real audio, or real tissue patches)")
    dst = Path(dst)
    root = logging.getLogger()
    root.addFilter(_no_preprocessing_advice)
    try:
        with atomic_path(dst) as tmp:
            if method == "dynamic":
                quantize_dynamic(str(src), str(tmp), op_types_to_quantize=list(op_types),
                                 weight_type=QuantType.QInt8, reduce_range=True)
            else:
                quantize_static(str(src), str(tmp), _BatchReader(windows, input_name), quant_format=QuantFormat.QDQ,
                                op_types_to_quantize=list(op_types), per_channel=True,
                                nodes_to_exclude=single_channel_convs(onnx.load(str(src))),
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True,
                                extra_options={"CalibTensorRangeSymmetric": False},
                                calibration_providers=["CPUExecutionProvider"])
            model = onnx.load(str(tmp))
            set_onnx_metadata(model, {**read_onnx_metadata(src), "quantization": f"int8-{method}"})
            model.doc_string = onnx.load(str(src), load_external_data=False).doc_string  # the input contract
            model.ir_version = min(model.ir_version, IR_VERSION)  # as the float graph, whatever the quantiser wrote
            onnx.save(model, str(tmp))
    finally:
        root.removeFilter(_no_preprocessing_advice)
    return dst


def single_channel_convs(model) -> list[str]:
    """The Conv nodes that read one input channel per group (PULSE's stem, on the 1-channel log-mel), left float in
    static INT8: ONNX Runtime 1.21-1.24 on x86 compute such a QLinearConv wrongly (1% of its outputs off by up to
    199 of 255 steps, varying with the thread count), which moved the bundled default's INT8 scores by up to 0.8
    there (bench/README.md, "ONNX Runtime versions"). The layer holds a few hundred weights: 8 bits gain it little."""
    weights = {init.name: init.dims for init in model.graph.initializer}
    return [node.name for node in model.graph.node
            if node.op_type == "Conv" and len(weights.get(node.input[1], ())) > 1 and weights[node.input[1]][1] == 1]


def _no_preprocessing_advice(record: logging.LogRecord) -> bool:
    """ONNX Runtime's quantiser advises shape pre-processing on the root logger at every call; on these graphs
    it changed nothing measured (LRMIL teacher encoder: 8.95 against 8.97 ms a patch, the same 0.057 from PyTorch),
    so the advice is dropped."""
    return not record.getMessage().startswith("Please consider")


class _BatchReader:
    """Feeds calibration inputs to ONNX Runtime's calibrator in small batches."""

    def __init__(self, inputs: np.ndarray, input_name: str):
        self._name = input_name
        self._batches = iter([inputs[i:i + _CALIBRATION_BATCH] for i in range(0, len(inputs), _CALIBRATION_BATCH)])

    def get_next(self) -> dict | None:
        batch = next(self._batches, None)
        return None if batch is None else {self._name: np.ascontiguousarray(batch, np.float32)}
