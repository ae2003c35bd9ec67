"""Export a PULSE model to ONNX: waveform in, sigmoid scores and embedding out. The last step of it,
`export_module` (one module, one input with a dynamic first axis, metadata, checked, written atomically), is
also how `lrmil export` writes its patch and bag graphs (`lrmil.onnx_export`).

Three graphs from the same weights, differing only in how the frontend computes |STFT|^2
(`pulse.frontend`):
- "fft": torch.stft becomes the ONNX STFT op.
- "conv": a Conv1d DFT basis, no DFT/STFT op at all, so every TensorRT version can build it.
- "folded": frames folded on their centre, then two matrix products: half conv's multiply-adds,
  also without DFT/STFT ops (the bundled models' fastest in ONNX Runtime on CPU).

Exporter choice (torch 2.9): the TorchScript exporter (dynamo=False) rejects the fft graph
("STFT does not currently support complex types"), because the frontend uses a complex STFT.
The dynamo exporter handles both graphs. A named `Dim("batch")` fails on the conv graph (the
reflect pad adds a `batch != 1` guard), while `Dim.DYNAMIC` exports a graph that runs at every
batch size, batch 1 included; we rename its symbolic axis to "batch" afterwards.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from export.artifact import set_onnx_metadata
from export.atomic import atomic_path

INPUT_NAME = "waveform"
OUTPUT_NAMES = ("scores", "embedding")
BATCH_AXIS = "batch"
FOURIER_OPS = frozenset({"STFT", "DFT"})
OPSET = 18  # STFT exists from opset 17; 18 is the dynamo exporter's native opset
IR_VERSION = 9  # what ONNX Runtime 1.16 and 1.17 read (JetPack 5, frozen clinical installs): they refuse the exporter's
# IR 10 ("Unsupported model IR version: 10, max supported IR version: 9"), and these graphs use nothing IR 10 added
# (4-bit types, function overloads); docs/pulse.md, "Which ONNX Runtime"


class OnnxExportError(RuntimeError):
    """The exported graph does not have the structure its frontend promises."""


def export_onnx(model, path: str | Path, frontend: str = "fft", opset: int = OPSET) -> Path:
    """Write `model` (a pulse PulseClassifier) as ONNX with the chosen frontend; returns the path.

    The graph has input "waveform" [batch, samples], outputs "scores" [batch, classes] (sigmoid)
    and "embedding" [batch, embed_dim], and carries the model config plus the frontend name in
    its metadata. The model passes onnx.checker and the frontend op check before it is written.
    """
    from pulse.models import ScoresAndEmbedding, create_model

    network = create_model(model.cfg, frontend_mode=frontend)
    network.load_state_dict(model.state_dict())
    deployed = ScoresAndEmbedding(network).eval()
    return _save(deployed, model.cfg, path, frontend, OUTPUT_NAMES, opset)


def export_frontend(cfg, path: str | Path, frontend: str = "fft", opset: int = OPSET) -> Path:
    """Write the log-mel frontend alone (waveform -> "logmel"), to time the two paths in isolation."""
    from pulse.frontend import LogMel

    module = LogMel.for_model(cfg, frontend)
    return _save(module.eval(), cfg, path, frontend, ("logmel",), opset)


def _save(module, cfg, path: str | Path, frontend: str, output_names: tuple[str, ...], opset: int) -> Path:
    import torch

    path = Path(path)
    export_module(module, torch.zeros(2, cfg.window_samples), path, INPUT_NAME, output_names,
                  {**cfg.to_dict(), "frontend": frontend}, opset=opset,
                  check=lambda proto: check_frontend_ops(proto, frontend), doc=input_contract(cfg))
    return path


def input_contract(cfg) -> str:
    """What a deployment must feed the graph and what comes out, and the score PULSE reports from, in the model file
    itself (docs/pulse.md: "Running `model.onnx` without PULSE"): the scaling and the windowing are easy to get wrong
    and fail silently, and a deployment holding only the file had no threshold to start from."""
    from pulse.config import LEVEL_FLOOR_DBFS, MAX_RAISE_DB, InferConfig

    floor = f"{LEVEL_FLOOR_DBFS:g} dBFS"
    return (f"PULSE {cfg.arch} v{cfg.version}. Input '{INPUT_NAME}': float32 [batch, {cfg.window_samples}], "
            f"{cfg.window_s:g} s of mono audio at {cfg.sample_rate} Hz, scaled to [-1, 1] as soundfile and librosa "
            f"read it (int16 PCM / 32768: raw int16 values wreck the scores); resample other rates with a "
            f"high-quality resampler (PULSE uses soxr HQ). pulse analyze cuts a recording into windows without "
            f"overlap and zero-pads the last one, scored only if it holds at least 1 s, and raises a window peaking "
            f"below {floor} to {floor} (by at most {MAX_RAISE_DB:g} dB: training windows peaked at -20..+6 dBFS, "
            f"and quieter songs are missed). Outputs: 'scores' float32 "
            f"[batch, {cfg.num_classes}], sigmoid probabilities in the order of the labels in the 'model_config' "
            f"metadata (JSON); pulse analyze reports a species where its score is at least {InferConfig.min_conf:g} "
            f"(--min-conf). 'embedding' [batch, {cfg.embed_dim}], the penultimate layer.")


def export_module(module, example, path: str | Path, input_name: str, output_names: tuple[str, ...], metadata: dict,
                  axis_name: str = BATCH_AXIS, opset: int = OPSET, check=None, doc: str = "") -> None:
    """Export `module` (one input, dynamic first axis named `axis_name`) with `metadata`, check it, write atomically.

    `check(model_proto)` may raise to refuse the graph before anything is written; `doc` becomes the model's
    doc_string (what Netron and `onnx.load(...).doc_string` show a deploying engineer).
    """
    import logging

    import onnx
    import torch

    quiet = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript")]  # both log every pass at INFO,
    levels = [logger.level for logger in quiet]  # which a CLI logging at INFO would print
    try:
        for logger in quiet:
            logger.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter, not our problem
            program = torch.onnx.export(
                module.eval(), (example,), dynamo=True, verbose=False, opset_version=opset,
                input_names=[input_name], output_names=list(output_names),
                dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    proto = program.model_proto
    _name_dynamic_axis(proto, axis_name)
    set_onnx_metadata(proto, metadata)
    proto.doc_string = doc
    proto.ir_version = min(proto.ir_version, IR_VERSION)
    onnx.checker.check_model(proto, full_check=True)
    if check is not None:
        check(proto)
    with atomic_path(Path(path)) as tmp:
        onnx.save(proto, str(tmp))


def graph_ops(model_proto) -> set[str]:
    """Every op type in the graph, its subgraphs and its local functions."""
    ops: set[str] = set()

    def visit(graph):
        for node in graph.node:
            ops.add(node.op_type)
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    visit(attr.g)
                for sub in attr.graphs:
                    visit(sub)

    visit(model_proto.graph)
    for function in model_proto.functions:
        ops.update(node.op_type for node in function.node)
    return ops


def check_frontend_ops(model_proto, frontend: str) -> None:
    """fft graphs must use STFT (or DFT, for frames folded onto the DFT); conv and folded graphs must contain
    no DFT/STFT (TensorRT < 10.5 lacks them)."""
    fourier = graph_ops(model_proto) & FOURIER_OPS
    if frontend == "fft" and not fourier:
        raise OnnxExportError("fft frontend exported without an STFT or DFT op")
    if frontend in ("conv", "folded") and fourier:
        raise OnnxExportError(f"{frontend} frontend exported with {sorted(fourier)}: not TensorRT-portable")


def _name_dynamic_axis(model_proto, name: str) -> None:
    """Give the dynamic first axis of every input and output a readable name ("batch", "patches")."""
    for value in [*model_proto.graph.input, *model_proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = name
