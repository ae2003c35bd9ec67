"""Export one path of an LRMIL model folder to ONNX: two graphs, checked against PyTorch.

A slide is thousands of patches but one bag, so the path splits where `lrmil predict` splits it:
- `{path}_encoder.onnx`: RGB patches as read from the slide, float [batch, px, px, 3] in 0..255
  (the encoder's normalisation and resize are inside the graph) -> "features" [batch, D];
- `{path}_mil.onnx`: the bag's features [patches, D] -> "probabilities" [classes] (softmax) and
  "attention" [patches] (sums to 1: the heatmap).
Both carry their configs in ONNX metadata (as PULSE's graphs do), and the folder gets an
`onnx.json` naming them with the patch and tissue settings a deployment must cut the same grid
with. Before anything is written each graph is run by ONNX Runtime next to PyTorch on the same
input (`export.parity`); a graph outside the FP32 tolerance is an error, not a file. With
`--int8` the encoder is also quantised (static INT8, calibrated on real tissue patches) and the
INT8 graph becomes the one the folder runs, checked at the INT8 tolerance; exporting the path again
without it removes that INT8 graph (of the old weights, and no longer in onnx.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from export.atomic import remove_stale, write_json
from export.jsonconfig import read_json
from export.onnx import OPSET, export_module
from export.parity import Parity, compare
from lrmil.encoders import preprocess
from lrmil.mil.bundle import BUNDLE_FILE, ONNX_FILE, PATHS, PathModel

INT8_OPS = ("Conv", "Gemm", "MatMul")  # a ViT's work is in its MatMuls
MIN_CALIBRATION = 8  # INT8 calibrated on 3 patches of one slide drifted 0.25 on another slide's
GRAPH_KEYS = ("encoder", "encoder_fp32", "mil")  # the entries of a path in onnx.json that name its files


class PatchGraph(nn.Module):
    """Raw RGB patches in, features out: a deployment feeds pixels, never a normalisation of its own."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.encoder(preprocess(self.encoder.cfg, patches))


class BagGraph(nn.Module):
    """One bag of features in, class probabilities and attention out."""

    def __init__(self, mil: nn.Module):
        super().__init__()
        self.mil = mil

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        result = self.mil(features)
        return torch.softmax(result.logits, -1), result.attention


class TorchModule:
    """A module behind the `Predictor` call (`predict(batch) -> {name: array}`), as the reference in parity checks."""

    def __init__(self, module: nn.Module, output_names: tuple[str, ...]):
        self.module, self.output_names = module.eval(), output_names

    @torch.inference_mode()
    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        out = self.module(torch.from_numpy(np.ascontiguousarray(batch, np.float32)))
        out = out if isinstance(out, tuple) else (out,)
        return {name: o.numpy() for name, o in zip(self.output_names, out)}


def export_path(model: PathModel, patch_px: int, out: str | Path, patches: np.ndarray, threads: int = 0,
                calibration: np.ndarray | None = None) -> dict:
    """Write both graphs of `model` into `out` and return the parity report (raises if a graph drifts).

    `patches` (float [B, patch_px, patch_px, 3], 0..255) feed the encoder check; their features, as one
    bag, feed the MIL check. With `calibration` (other real tissue patches), the encoder is also
    quantised to static INT8 on them and becomes the folder's encoder, checked on `patches` at the
    INT8 tolerance; the float graph stays beside it.
    """
    from export.backends.onnxruntime_backend import OnnxRuntimePredictor
    from export.parity import FP32_TOLERANCE, INT8_TOLERANCE
    from export.quantize import quantize_onnx

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    encoder_file, mil_file = out / f"{model.name}_encoder.onnx", out / f"{model.name}_mil.onnx"
    int8_file = out / f"{model.name}_encoder.int8.onnx"
    published = (encoder_file, mil_file) + ((int8_file,) if calibration is not None else ())
    staged = {f: f.with_name(f".{f.name}.check") for f in published}  # checked before published
    patch_graph, bag_graph = PatchGraph(model.encoder.float()), BagGraph(model.mil)
    patch_ref = TorchModule(patch_graph, ("features",))
    meta = {"package": "lrmil", "path": model.name, "notice": model.notice}

    def check(graph: Path, reference: TorchModule, inputs: np.ndarray, tolerance: float = FP32_TOLERANCE) -> Parity:
        return compare(reference, OnnxRuntimePredictor(staged[graph], threads=threads), inputs, tolerance,
                       names=("torch", graph.name), batch_size=16 if graph != mil_file else len(inputs))

    try:
        encoder_cfg = {**model.encoder.cfg.to_dict(), "precision": "fp32"}  # the graph's, not the GPU autocast's
        export_module(patch_graph, torch.zeros(2, patch_px, patch_px, 3), staged[encoder_file], "patches",
                      ("features",), {**meta, "encoder": encoder_cfg, "patch_px": patch_px}, "batch", OPSET,
                      doc=f"LRMIL {model.name} patch encoder ({model.encoder.cfg.name}). Input 'patches': float32 "
                          f"[batch, {patch_px}, {patch_px}, 3], RGB 0-255 (uint8 values as floats; transparent "
                          f"pixels composited onto white), read at {model.mil.cfg.magnification:g}x; the "
                          f"normalisation is inside the graph. Output 'features' [batch, {model.mil.cfg.in_dim}].")
        export_module(bag_graph, torch.zeros(3, model.mil.cfg.in_dim), staged[mil_file], "features",
                      ("probabilities", "attention"), {**meta, "mil": model.mil.cfg.to_dict()}, "patches", OPSET,
                      doc=f"LRMIL {model.name} ABMIL. Input 'features': float32 [patches, {model.mil.cfg.in_dim}], "
                          f"one slide's patch features from the encoder graph. Outputs 'probabilities' "
                          f"[{model.mil.cfg.num_classes}] (softmax, classes {', '.join(model.mil.cfg.labels)}) and "
                          f"'attention' [patches]. An empty bag (a slide without tissue) is no error here: it "
                          f"returns the classifier's bias alone, like a prediction; lrmil predict refuses such a "
                          f"slide.")
        checks = [check(encoder_file, patch_ref, patches),
                  check(mil_file, TorchModule(bag_graph, ("probabilities", "attention")),
                        patch_ref.predict(patches)["features"])]
        if calibration is not None:
            quantize_onnx(staged[encoder_file], staged[int8_file], "static", calibration, "patches", INT8_OPS)
            checks.append(check(int8_file, patch_ref, patches, INT8_TOLERANCE))
        if failed := [c.line() for c in checks if not c.ok]:
            raise RuntimeError("ONNX export drifted from PyTorch: " + "; ".join(failed))
    except BaseException:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
        raise
    for final, tmp in staged.items():
        tmp.replace(final)
    report = {"encoder": encoder_file.name, "mil": mil_file.name, "parity": [c.to_dict() for c in checks],
              "parity_patches": int(len(patches))}
    if calibration is not None:  # what predict runs; the float graph stays for comparison
        report.update(encoder=int8_file.name, encoder_fp32=encoder_file.name, quantization="int8-static",
                      calibration_patches=int(len(calibration)))
    return report


def write_manifest(model_dir: Path, out: str | Path, exported: dict[str, dict]) -> Path:
    """`onnx.json`: the graphs per path and the grid settings of the source folder's model.json. A path an
    earlier export of the same model folder wrote there stays listed (student now, teacher later). Files the
    earlier onnx.json listed for a path exported again and this one does not (its INT8 encoder, exported now
    without --int8) are removed once the new onnx.json is written: they hold the old weights."""
    spec = read_json(model_dir / BUNDLE_FILE)
    path = Path(out) / ONNX_FILE
    earlier = read_json(path) if path.is_file() else {}
    kept = {name: earlier[name] for name in PATHS
            if name in earlier and name not in exported and earlier.get("source") == str(model_dir)}
    write_json(path, {"package": "lrmil", "format": "onnx", "opset": OPSET, "source": str(model_dir),
                      "notice": spec.get("notice", ""), "patch": spec["patch"], "tissue": spec["tissue"],
                      **kept, **exported})
    remove_stale(path.parent, [file for name, entry in exported.items() for file in _graph_files(earlier.get(name))
                               if file not in _graph_files(entry)])
    return path


def _graph_files(entry) -> list:
    """The files one path's entry of an onnx.json names (none if an edited file holds no record there)."""
    return [entry[key] for key in GRAPH_KEYS if key in entry] if isinstance(entry, dict) else []


def slide_patches(slides: list[str | Path], model: PathModel, mpp: float | None, count: int) -> np.ndarray:
    """Up to `count` tissue patches of `slides` on `model`'s grid (an equal share from each, spread over
    the slide), as float 0..255."""
    from lrmil.features import segment_and_patch
    from lrmil.slide import open_slide, read_scaled

    share, patches = -(-count // len(slides)), []
    for slide in slides:
        level = getattr(segment_and_patch(slide, model.tissue, model.patch, mpp).grid, model.name)
        if len(level) == 0:
            raise ValueError(f"{slide}: no tissue found, no patches to check the export on")
        picks = np.unique(np.linspace(0, len(level) - 1, min(share, len(level))).astype(int))
        with open_slide(slide, mpp) as reader:
            patches += [read_scaled(reader, tuple(int(v) for v in level.coords[i]), level.size_level0, level.patch_px)
                        for i in picks]
    return np.stack(patches).astype(np.float32)


def export_model(model_dir: str | Path, out: str | Path, paths: tuple[str, ...], slides: tuple[str | Path, ...] = (),
                 mpp: float | None = None, count: int = 32, threads: int = 0, int8: bool = False) -> dict:
    """Export `paths` of a model folder into `out` (a folder `lrmil predict --model` reads); returns onnx.json's
    content.

    Parity is checked on `count` tissue patches of `slides`, or on seeded random pixels without any.
    `int8` calibrates on other tissue patches of `slides` (patches dealt alternately: calibration and
    check never share one), at least MIN_CALIBRATION of each, so it needs slides.
    """
    from lrmil.mil.bundle import load_path

    if int8 and not slides:
        raise ValueError("--int8 calibrates on real tissue: give --slide (one or more)")
    exported = {}
    for name in paths:
        model = load_path(model_dir, name)
        if not isinstance(model, PathModel):
            raise ValueError(f"{model_dir}: already an ONNX export; "
                             "export from the folder with the weights (model.json)")
        _, patch_px = model.patch.level(name)
        calibration = None
        if not slides:
            patches = np.random.default_rng(0).integers(0, 256, (count, patch_px, patch_px, 3)).astype(np.float32)
        elif int8:
            tissue = slide_patches(list(slides), model, mpp, 2 * count)
            patches, calibration = tissue[1::2], tissue[0::2]
            if len(patches) < MIN_CALIBRATION:
                raise ValueError(f"--int8: the {name} grid of {', '.join(map(str, slides))} holds {len(tissue)} tissue "
                                 f"patches; calibrating and checking INT8 needs {2 * MIN_CALIBRATION}: add --slide")
        else:
            patches = slide_patches(list(slides), model, mpp, count)
        exported[name] = {**export_path(model, patch_px, out, patches, threads, calibration),
                          "parity_input": [str(s) for s in slides] or "seeded random pixels"}
    write_manifest(Path(model_dir), out, exported)
    return json.loads((Path(out) / ONNX_FILE).read_text())
