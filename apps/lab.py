"""Lab app: one slide in; tissue mask, attention heatmap, top-k patches, attention GeoJSON and the prediction JSON out.

The callback is a plain function of its inputs and a work folder, so tests call it directly.
It runs `lrmil.predict.predict_slide`, the same student path (and the same images) as `lrmil predict`.
Whenever the model carries a notice, such as the bundled demo model's "synthetic demo model, not for diagnosis", the
page shows it above every result.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from apps import in_page_terms, prune_old_outputs
from export.atomic import utf8_text
from lrmil.mil.bundle import PATHS, load_path
from lrmil.mil.config import DEMO_NOTICE, PredictConfig
from lrmil.predict import IMAGES, predict_slide, resolve_model_dir
from lrmil.slide import SLIDE_SUFFIXES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabView:
    """Everything the page shows for one request; `status` carries the error when there is one."""

    status: str
    notice: str = ""
    mask_png: str | None = None
    heatmap_png: str | None = None
    topk_png: str | None = None
    geojson: str | None = None
    record: dict | None = None

    def outputs(self) -> tuple:
        """In the order of the page's output components."""
        banner = f"## ⚠ {self.notice[:1].upper()}{self.notice[1:]}" if self.notice else ""
        # As JSON text: gradio_client takes every object in a JSON output that has a "path" string for a file to
        # download (the record's MIL path, "student", and its source's), and a request failed on a 403 for
        # `file=student`. The slide by its name, not the server's upload path (nor in the file record that lets a
        # rerun skip it). A name that is not UTF-8 is escaped wherever it appears (slide id, image and GeoJSON names
        # too): the page sends its outputs as UTF-8, which cannot carry it.
        record = self.record
        shown = None if record is None else json.dumps(_utf8({
            **record, "slide": Path(record["slide"]).name,
            "source": {**record["source"], "path": Path(record["source"]["path"]).name}}), indent=2, ensure_ascii=False)
        return self.status, banner, self.mask_png, self.heatmap_png, self.topk_png, self.geojson, shown


def _utf8(value):
    """`value` with every string in it escaped as `utf8_text` escapes it."""
    if isinstance(value, dict):
        return {_utf8(key): _utf8(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_utf8(item) for item in value]
    return utf8_text(value) if isinstance(value, str) else value


def predict_upload(slide_path: str | None, mpp: float | None, model: str, path: str, work_root: str | Path) -> LabView:
    """Predict one slide into a fresh folder under `work_root`; a bad slide or model becomes a message.

    `mpp` overrides the slide's microns per pixel, metadata or not (the user typed it for this one
    slide); None or 0 reads it from the slide's metadata.
    """
    if not slide_path:
        return LabView("Upload a slide.")
    defaults = PredictConfig()
    cfg = dataclasses.replace(defaults, model=model or defaults.model, path=path or defaults.path,
                              mpp=float(mpp) if mpp else None, override_mpp=bool(mpp))
    prune_old_outputs(Path(work_root), "lab-")
    out = Path(tempfile.mkdtemp(prefix="lab-", dir=work_root))
    name = utf8_text(Path(slide_path).name)  # a name that is not UTF-8 cannot be shown: escaped as in the tables
    try:
        bundle = load_path(resolve_model_dir(cfg.model), cfg.path, cfg.device)
        record = predict_slide(slide_path, bundle, cfg, out)
    except Exception as exc:  # the request is the unit of work here: report it, keep serving
        reason = getattr(exc, "reason", None) or str(exc).removeprefix(f"{slide_path}: ")  # the path once
        log.warning("%s: %s", slide_path, reason, exc_info=log.isEnabledFor(logging.DEBUG))
        shutil.rmtree(out, ignore_errors=True)  # a failed request leaves nothing behind
        return LabView(f"**Could not analyse `{name}`:** {_in_page_terms(exc, slide_path)}")
    probs = ", ".join(f"{k} {v:.3f}" for k, v in record["probabilities"].items())
    status = (f"**{name}**: predicted **{record['label']}** ({probs}) from {record['patches']} patches at "
              f"{record['magnification']:g}x ({cfg.path} path), mpp {record['mpp']:.4g} from {record['mpp_source']}, "
              f"{record['seconds']['total']:.2f} s.")
    if record["enlargement"] > 1:  # scanned coarser than the path reads
        status += (f" **Patches enlarged {record['enlargement']:.2g}x**: the slide is scanned coarser than "
                   f"{record['magnification']:g}x, so the model saw interpolated pixels, "
                   "not the detail it learned from.")
    mask_png, heatmap_png, topk_png = (str(out / record[image]) for image in IMAGES)
    return LabView(status, record["notice"], mask_png, heatmap_png, topk_png, str(out / record["geojson"]), record)


def _in_page_terms(exc: Exception, upload: str) -> str:
    """The error without the server's upload path, and with the page's MPP field where the CLI says --mpp."""
    reason = in_page_terms(exc, upload)
    return (reason.replace("pass --mpp", "type it in the MPP override field").replace("e.g. --mpp ", "e.g. ")
            .replace("--mpp is", "the MPP override field is"))


def build(work_root: str | Path | None = None):
    """The lab app as a gr.Blocks (not launched); outputs go to per-request folders under `work_root`."""
    import gradio as gr

    root = Path(work_root or tempfile.mkdtemp(prefix="lrmil-lab-"))
    root.mkdir(parents=True, exist_ok=True)
    defaults = PredictConfig()

    def run(slide, mpp, model, path):
        return predict_upload(slide, mpp, model, path, root).outputs()

    with gr.Blocks(title="LRMIL slide prediction", analytics_enabled=False,
                   delete_cache=(3600, 86400)) as app:  # uploads and served copies: a day
        gr.Markdown("# LRMIL: whole-slide prediction from 5x patches\nUpload a slide (SVS, TIFF, NDPI, ... or a plain "
                    "image); the tissue is found on a thumbnail, the slide classified by attention MIL. "
                    f"The default model `demo` is a **{DEMO_NOTICE}**.")
        with gr.Row():
            slide = gr.File(label="Slide", file_types=list(SLIDE_SUFFIXES), type="filepath")
            with gr.Column():
                mpp = gr.Number(value=defaults.mpp, label="MPP override (µm per level-0 pixel)", minimum=0,
                                info="Empty or 0 reads it from the slide; a value here replaces the slide's own "
                                     "(as the CLI's --mpp with --override-mpp); slides without it need one.")
                model = gr.Textbox(value=defaults.model, label="Model",
                                   info="'demo' is the bundled synthetic demo model; or a model folder (model.json, "
                                        "or onnx.json from lrmil export)")
                path = gr.Radio(list(PATHS), value=defaults.path, label="Path",
                                info="student reads 5x patches only; teacher runs the 20x path for comparison")
                button = gr.Button("Predict", variant="primary")
        notice = gr.Markdown()
        status = gr.Markdown()
        with gr.Row():
            mask = gr.Image(type="filepath", label="Tissue mask (green outline)", interactive=False, height=480)
            heatmap = gr.Image(type="filepath", label="Attention heatmap (percentile within slide)", interactive=False,
                               height=480)
        topk = gr.Image(type="filepath", label="Top-k attended patches", interactive=False, height=440)
        geojson = gr.File(label="Attention of every patch, GeoJSON (QuPath: File > Import objects from file)",
                          interactive=False)
        record = gr.Code(language="json", label="Prediction JSON", interactive=False)
        button.click(run, [slide, mpp, model, path], [status, notice, mask, heatmap, topk, geojson, record])
    return app
