"""Field app: one recording in; spectrogram with detections, scores, embedding and downloadable tables out.

The callback is a plain function of its inputs and a work folder (no module state, nothing a
UI event edits), so tests call it directly. Analysis runs through `pulse.recording` and
drawing through `pulse.plots`; downloads are written by the same registered writers as
`pulse analyze`, so a table from the app is what the CLI would write, but for naming the recording by its
uploaded file name instead of the server's copy.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

import pulse
from apps import in_page_terms, prune_old_outputs
from export.atomic import utf8_text
from pulse.model_names import MODEL_ALIASES, above_band_note, below_rate_note, model_band
from pulse.config import InferConfig
from pulse.detect import merge_consecutive_table
from pulse.io import AUDIO_SUFFIXES
from pulse.plots import PlotConfig, embedding_figure, save_png, scores_figure, spectrogram_view_figure
from pulse.recording import analyze_recording, display_spectrogram
from pulse.timestamps import recording_start
from pulse.writers import WRITERS, output_path

log = logging.getLogger(__name__)

EXAMPLES_DIR = Path(pulse.__file__).parent / "assets" / "examples"
DOWNLOAD_FORMATS = ("raven", "csv", "scores")
# Figure sizes for the page: the spectrogram spans it, the scores and embedding figures share a row.
WIDE = PlotConfig()
HALF = PlotConfig(width_px=640, height_px=420)
# Detections as people read them: BirdNET-Analyzer's CSV names plus the species code.
TABLE_COLUMNS = {"start_s": "Start (s)", "end_s": "End (s)", "label": "Scientific name", "common_name": "Common name",
                 "code": "Code", "score": "Confidence"}
# Rows the page's table shows, the first in time: two hours at min-conf 0 are 21 600 rows (1.8 MB sent to the browser);
# the downloads hold every detection.
TABLE_ROWS = 1000


@dataclass(frozen=True)
class FieldView:
    """Everything the page shows for one request; `status` carries the error when there is one."""

    status: str
    spectrogram_png: str | None = None
    detections: pd.DataFrame = dataclasses.field(
        default_factory=lambda: pd.DataFrame(columns=list(TABLE_COLUMNS.values())))
    scores_png: str | None = None
    embedding_png: str | None = None
    downloads: tuple[str, ...] = ()

    def outputs(self) -> tuple:
        """In the order of the page's output components."""
        return (self.status, self.spectrogram_png, self.detections, self.scores_png, self.embedding_png,
                list(self.downloads) or None)


def examples() -> list[Path]:
    return sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)


def analyze_upload(audio_path: str | None, model: str, min_conf: float, work_root: str | Path,
                   merge: int = 1, on_progress: Callable[[float], None] | None = None) -> FieldView:
    """Analyse one recording into a fresh folder under `work_root`; a bad file or model becomes a message.
    `merge` is `pulse analyze --merge-consecutive` (an empty or zero field: a row per window); `on_progress` hears
    the share of the recording scored, for the page's progress bar."""
    if not audio_path:
        return FieldView("Upload a recording or pick an example.")
    cfg = dataclasses.replace(InferConfig(), model=model or InferConfig().model, min_conf=float(min_conf),
                              merge_consecutive=max(1, int(merge or 1)))
    # A name that is not UTF-8 (Latin-1 bytes Python holds as surrogates) cannot be drawn or shown: escaped as the
    # CLI's tables escape it.
    name = utf8_text(Path(audio_path).name)
    try:
        rec = analyze_recording(audio_path, cfg, on_progress)
        view = display_spectrogram(audio_path, WIDE, cfg.channel)
    except Exception as exc:  # the request is the unit of work here: report it, keep serving
        log.warning("%s: %s", audio_path, getattr(exc, "reason", None) or exc,  # its reason: the path once
                    exc_info=log.isEnabledFor(logging.DEBUG))
        return FieldView(f"**Could not analyse `{name}`:** {in_page_terms(exc, audio_path)}")
    prune_old_outputs(Path(work_root), "field-")
    out = Path(tempfile.mkdtemp(prefix="field-", dir=work_root))  # only requests with something to show
    labels = rec.labels.labels
    spectrum = save_png(spectrogram_view_figure(view, rec.detections, name, labels, WIDE), out / "spectrogram.png")
    curves = save_png(scores_figure(rec.scores, cfg.min_conf, cfg=HALF, start=recording_start(audio_path)),
                      out / "scores.png")
    cloud = (save_png(embedding_figure(rec.embeddings, rec.scores, cfg=HALF), out / "embedding.png")
             if rec.embeddings.shape[1] else None)
    found = merge_consecutive_table(rec.detections, cfg.merge_consecutive)  # table, downloads; the figure: whole runs
    # The tables name the recording as uploaded: the path of the server's copy means nothing to the user (and
    # the page does not show it).
    tables = {"detections": found.assign(file=name),
              "scores": rec.scores.rename(index={audio_path: name}, level="file")}
    downloads = []
    for fmt in DOWNLOAD_FORMATS:
        writer = WRITERS.create(fmt, **({"absolute_paths": False} if fmt == "raven" else {}))
        target = output_path(writer, out, Path(name))
        writer.write(tables[writer.table], target)
        downloads.append(str(target))
    # The view's limit, not a break in the file (which the "Partly readable" note states), cuts the spectrogram short.
    cut_by_view = view.duration_s >= min(WIDE.max_display_s, WIDE.max_display_samples / view.sample_rate)
    band = model_band(rec.metadata)
    rate_note = (below_rate_note(rec.info.sample_rate, band[1], cfg.model)
                 or above_band_note(rec.info.sample_rate, rec.metadata["sample_rate"], band))
    status = (f"**{name}**: {rec.info.duration_s:.1f} s at {rec.info.sample_rate} Hz, {len(rec.scores)} window(s) "
              f"of {rec.metadata['window_s']} s, {len(found)} detection(s) at min-conf {cfg.min_conf:g}; "
              f"model `{cfg.model}` ({rec.metadata.get('training_data', 'training data not stated')}; "
              f"licence: {rec.metadata.get('license', 'not stated')})."
              + (f" The spectrogram shows the first {view.duration_s:.1f} s."
                 if cut_by_view and rec.info.duration_s - view.duration_s > 1.0 else "")
              + (f" The table shows the first {TABLE_ROWS}; the downloads hold all {len(found)}."
                 if len(found) > TABLE_ROWS else "")
              + (f" This file was {rate_note}." if rate_note else "")
              + (f" **Partly readable:** {rec.warning}." if rec.warning else ""))
    table = found[list(TABLE_COLUMNS)].head(TABLE_ROWS).rename(columns=TABLE_COLUMNS).round({"Confidence": 3})
    return FieldView(status, str(spectrum), table, str(curves), str(cloud) if cloud else None, tuple(downloads))


def build(work_root: str | Path | None = None):
    """The field app as a gr.Blocks (not launched); outputs go to per-request folders under `work_root`."""
    import gradio as gr

    root = Path(work_root or tempfile.mkdtemp(prefix="pulse-field-"))
    root.mkdir(parents=True, exist_ok=True)
    defaults = InferConfig()

    def run(audio_path, model, min_conf, merge, progress=gr.Progress()):
        scored = lambda share: progress(share, desc="Scoring windows")  # noqa: E731
        return analyze_upload(audio_path, model, min_conf, root, merge, scored).outputs()

    with gr.Blocks(title="PULSE field analysis", analytics_enabled=False,
                   delete_cache=(3600, 86400)) as app:  # uploads and served copies: a day
        gr.Markdown("# PULSE: Orthoptera songs in field recordings\nUpload a recording (WAV, FLAC, MP3, OGG) "
                    "or pick an example; each window of the model's length gets a score per species.")
        with gr.Row():
            with gr.Column(scale=2):
                audio = gr.Audio(type="filepath", sources=["upload"], label="Recording")
                gr.Examples([[str(p)] for p in examples()], inputs=[audio], label="Bundled example recordings")
            with gr.Column(scale=1):
                model = gr.Dropdown(list(MODEL_ALIASES), value=defaults.model, allow_custom_value=True, label="Model",
                                    info="'default' is the bundled model; or type a path to a .onnx/.safetensors file")
                min_conf = gr.Slider(0.0, 1.0, value=defaults.min_conf, step=0.01, label="Minimum confidence")
                merge = gr.Number(defaults.merge_consecutive, precision=0, minimum=1, label="Merge consecutive windows",
                                  info="Up to N touching windows of a species as one detection (1: one per window)")
                button = gr.Button("Analyse", variant="primary")
        status = gr.Markdown()
        spectrum = gr.Image(type="filepath", label="Spectrogram with detections", show_label=False, interactive=False)
        table = gr.Dataframe(FieldView("").detections, label="Detections", interactive=False)
        with gr.Row():
            curves = gr.Image(type="filepath", label="Species scores per window", show_label=False, interactive=False)
            cloud = gr.Image(type="filepath", label="Window embeddings (PCA)", show_label=False, interactive=False)
        files = gr.File(label="Downloads: Raven selection table, detections.csv, scores.csv", file_count="multiple",
                        height=200)
        button.click(run, [audio, model, min_conf, merge], [status, spectrum, table, curves, cloud, files])
    return app
