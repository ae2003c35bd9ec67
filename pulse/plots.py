"""Figures people would rather look at than read: spectrogram with detections, scores over time, embedding.

Each function takes the tables of pulse/schema.py (and the per-window embedding), so `pulse
analyze` outputs, the field app and notebooks draw the same pictures. Figures are built on
matplotlib's Agg canvas directly, never through pyplot, so there is no global figure state and
drawing is safe inside a server. `save_png` writes atomically at exactly width_px x height_px.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FixedLocator, FuncFormatter
from matplotlib.text import Text

from export.atomic import atomic_path
from pulse.detect import merge_consecutive_table


@dataclass(frozen=True)
class PlotConfig:
    """Size and resolution of every PULSE figure."""

    width_px: int = 1000
    height_px: int = 360
    dpi: int = 100
    n_fft: int = 1024  # spectrogram frame; 23 ms at 44.1 kHz separates syllables
    max_frames: int = 2000  # longer recordings get a larger hop, so drawing cost stays flat
    dynamic_range_db: float = 80.0
    max_species: int = 5  # curves in the scores figure: the species that score highest
    strip_after_s: float = 600.0  # a longer recording: scores as a species x time strip, embedding points small
    max_strip_bins: int = 180  # time bins of the strip (a minute each up to 3 h, then longer)
    max_strip_species: int = 12  # rows of the strip: the species that score highest
    max_box_labels: int = 40  # beyond this, boxes are drawn without captions
    max_display_s: float = 600.0  # spectrograms show at most the first 10 minutes of a recording,
    max_display_samples: int = 1 << 25  # and at most 2^25 samples decoded (87 s at 384 kHz)


def new_figure(cfg: PlotConfig) -> Figure:
    figure = Figure(figsize=(cfg.width_px / cfg.dpi, cfg.height_px / cfg.dpi), dpi=cfg.dpi, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: str | Path) -> Path:
    """Write the figure as PNG at its own size (no tight bbox, so the pixel size is predictable). zlib level 1:
    a spectrogram barely compresses (6 % larger than at the default level 6) and saves in 0.19 s, not 0.25."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=figure.dpi, pil_kwargs={"compress_level": 1})
    return Path(path)


def readable(figure: Figure) -> Figure:
    """Every text of `figure` in fonts that draw it. DejaVu Sans, matplotlib's font, has no Japanese, Chinese or
    Korean: a recording or common name in them was a row of boxes and a warning per character. Each character the
    text's font lacks is drawn from an installed font that has it (matplotlib falls back from font to font), and one
    that no installed font has is written as its code point (\\u30b3), as a name that is not UTF-8 is written.
    A `$` is the name's own character, not the start of mathtext: `site$1$_2024.wav` was drawn as math, and
    `a$_$b.wav` made the figure raise at save time (the field app's request, a `pulse segments --plots` clip)."""
    for text in figure.findobj(Text):
        content = text.get_text()
        if "$" in content:  # a name (tick labels, filled in at draw time, keep a formatter's math)
            text.set_parse_math(False)
        if content.isascii():
            continue
        primary = font_manager.findfont(text.get_fontproperties())
        lacking = [c for c in dict.fromkeys(content) if not c.isascii() and ord(c) not in _charmap(primary)]
        fallbacks = {c: _font_with(c) for c in lacking}
        text.set_fontfamily(list(dict.fromkeys([font_manager.get_font(primary).family_name,
                                                *filter(None, fallbacks.values())])))
        text.set_text("".join(c if fallbacks.get(c, True) else c.encode("unicode_escape").decode() for c in content))
    return figure


@functools.cache
def _charmap(path: str) -> frozenset[int]:
    """The code points the font file at `path` has glyphs for."""
    return frozenset(font_manager.get_font(path).get_charmap())


@functools.cache
def _font_with(character: str) -> str | None:
    """The family of an installed font (matplotlib's list, by name) that draws `character`; not matplotlib's Last
    Resort, whose glyph for every character is a box."""
    fonts = sorted((entry for entry in font_manager.fontManager.ttflist if not entry.name.startswith("Last Resort")),
                   key=lambda entry: (entry.name, entry.fname))
    return next((entry.name for entry in fonts if ord(character) in _charmap(entry.fname)), None)


def _colours(labels) -> dict[str, tuple]:
    """One stable colour per label across all figures of a recording."""
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    order = (0, 1, 2, 3, 4, 5, 6, 8, 9, 7)  # grey last: it vanishes on a spectrogram
    return {label: palette(order[i % 10]) for i, label in enumerate(labels)}


@dataclass(frozen=True)
class SpectrogramView:
    """What a spectrogram figure draws: power in dB [freq bins, frames], the hop and the span shown in seconds, and
    the recording's rate (the figure reaches its Nyquist frequency)."""

    db: np.ndarray
    hop_s: float
    duration_s: float
    sample_rate: int


def spectrogram(audio: np.ndarray, sample_rate: int, cfg: PlotConfig = PlotConfig()) -> tuple[np.ndarray, float]:
    """Power in dB [freq bins, frames] (Hann, hop grown for long audio) and the hop in seconds."""
    return spectrogram_of_blocks([np.asarray(audio, np.float32)], len(audio), sample_rate, cfg)


def spectrogram_of_blocks(blocks: Iterable[np.ndarray], n_samples: int, sample_rate: int,
                          cfg: PlotConfig = PlotConfig()) -> tuple[np.ndarray, float]:
    """`spectrogram` of `n_samples` of audio arriving in blocks, only the frames drawn computed and kept: ten minutes
    at 48 kHz are 2000 frames of 1024 samples (7 % of them), so a block is the most audio held, not the 110 MB."""
    hop = max(cfg.n_fft // 4, -(-(n_samples - cfg.n_fft) // max(cfg.max_frames - 1, 1)))
    window = np.hanning(cfg.n_fft).astype(np.float32)
    powers, pending, skip = [], np.zeros(0, np.float32), 0  # pending starts at the next frame; skip: samples to it
    for block in blocks:
        dropped = min(skip, len(block))
        skip -= dropped
        pending = np.concatenate([pending, block[dropped:]])
        count = (len(pending) - cfg.n_fft) // hop + 1 if len(pending) >= cfg.n_fft else 0
        if count:
            frames = np.lib.stride_tricks.sliding_window_view(pending, cfg.n_fft)[::hop][:count]
            powers.append(np.abs(np.fft.rfft(frames * window, axis=1)) ** 2)
            skip = max(0, count * hop - len(pending))
            pending = pending[count * hop:]
    if not powers:  # shorter than a frame: one, zero-padded
        powers.append(np.abs(np.fft.rfft(np.pad(pending, (0, cfg.n_fft - len(pending))) * window)[None]) ** 2)
    return 10 * np.log10(np.concatenate(powers).T + 1e-12), hop / sample_rate


def spectrogram_figure(audio: np.ndarray, sample_rate: int, detections: pd.DataFrame, title: str = "",
                       labels: tuple[str, ...] = (), cfg: PlotConfig = PlotConfig()) -> Figure:
    """`spectrogram_view_figure` of `audio`."""
    db, hop_s = spectrogram(audio, sample_rate, cfg)
    view = SpectrogramView(db, hop_s, max(len(audio) / sample_rate, cfg.n_fft / sample_rate), sample_rate)
    return spectrogram_view_figure(view, detections, title, labels, cfg)


def spectrogram_view_figure(view: SpectrogramView, detections: pd.DataFrame, title: str = "",
                            labels: tuple[str, ...] = (), cfg: PlotConfig = PlotConfig()) -> Figure:
    """Spectrogram up to Nyquist with one box per run of a species' per-window detections (merged here,
    so a song across minutes stays one readable box), captioned code + the run's score (the mean of its
    three best windows, as merged tables score it), and a legend of species.

    `labels` (the model's label order) keeps each species' colour the same as in the other figures.
    """
    db, hop_s, duration, sample_rate = view.db, view.hop_s, view.duration_s, view.sample_rate
    figure = new_figure(cfg)
    ax = figure.add_subplot()
    top = float(db.max())
    ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=top - cfg.dynamic_range_db, vmax=top,
              extent=(0.0, db.shape[1] * hop_s, 0.0, sample_rate / 2000))
    colours = _colours(labels or sorted(set(detections["label"])))
    runs = detection_runs(detections[detections["start_s"] < duration])
    stacked: dict[float, int] = {}
    for i, d in enumerate(runs.itertuples(index=False)):
        colour = colours[d.label]
        ax.add_patch(Rectangle((d.start_s, d.low_hz / 1000), d.end_s - d.start_s, (d.high_hz - d.low_hz) / 1000,
                               fill=False, edgecolor=colour, linewidth=1.5))
        if i < cfg.max_box_labels:
            row = stacked.get(d.start_s, 0)  # several species from one window on: stack their captions
            stacked[d.start_s] = row + 1
            ax.annotate(f"{d.code} {d.score:.2f}", (d.start_s, d.high_hz / 1000), xytext=(3, -13 * (row + 1)),
                        textcoords="offset points", color="white", fontsize=8,
                        bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "linewidth": 0})
    species = runs.drop_duplicates("label")
    if len(species):
        ax.legend(handles=[Patch(facecolor=colours[d.label], label=f"{d.code} {d.label}")
                           for d in species.itertuples(index=False)],
                  # beside: boxes stay clear
                  loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0, fontsize=7)
    ax.set_xlim(0, duration)
    ax.set_ylim(0, sample_rate / 2000)
    ax.set_xlabel("Time (s)")
    ax.set_ylabel("Frequency (kHz)")
    ax.set_title(title or f"Spectrogram with {len(detections)} detection(s)", fontsize=10)
    return readable(figure)


def detection_runs(detections: pd.DataFrame) -> pd.DataFrame:
    """Each species' touching or overlapping windows as one row (`merge_consecutive_table` over whole runs), by time."""
    return merge_consecutive_table(detections).sort_values(["start_s", "label"], ignore_index=True)


def _one_file(scores: pd.DataFrame) -> pd.DataFrame:
    files = scores.index.get_level_values("file").unique()
    if len(files) > 1:
        raise ValueError(f"the scores table holds {len(files)} files; select one (scores.xs(file, level='file'))")
    return scores


def scores_figure(scores: pd.DataFrame, min_conf: float | None = None, title: str = "",
                  cfg: PlotConfig = PlotConfig(), start: datetime | None = None) -> Figure:
    """Per-window score of the highest-scoring species over time, with the detection threshold. A recording longer
    than `cfg.strip_after_s` gets `score_strip_figure` instead: an hour is 1200 windows, and their curves a wall."""
    scores = _one_file(scores)
    starts = scores.index.get_level_values("start_s").to_numpy(float)
    ends = scores.index.get_level_values("end_s").to_numpy(float)
    if ends[-1] > cfg.strip_after_s:
        return score_strip_figure(scores, min_conf, title, cfg, start)
    best = scores.max().sort_values(ascending=False).index[:cfg.max_species]
    colours = _colours(scores.columns)
    figure = new_figure(cfg)
    ax = figure.add_subplot()
    for label in best:
        values = scores[label].to_numpy(float)
        # A step per window: each score holds from the window's start to its end.
        ax.step(np.append(starts, ends[-1]), np.append(values, values[-1]), where="post", color=colours[label],
                linewidth=1.5, label=f"{label} (max {values.max():.2f})")
    if min_conf is not None:
        ax.axhline(min_conf, color="0.4", linestyle="--", linewidth=1, label=f"min-conf {min_conf:g}")
    ax.set_xlim(0, max(float(ends[-1]), 1e-3))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("Time (s)")
    ax.set_ylabel("Score")
    ax.set_title(title or "Species scores per window", fontsize=10)
    figure.legend(loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    return readable(figure)


STRIP_BINS_S = (60, 120, 300, 600, 900, 1800, 3600)  # a minute, 2, 5, 10, 15, 30 minutes, an hour
TIME_TICKS_S = (300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def strip_bin_s(duration_s: float, max_bins: int) -> int:
    """The shortest of STRIP_BINS_S (else whole hours) that cuts `duration_s` into at most `max_bins` bins."""
    return next((b for b in STRIP_BINS_S if duration_s <= b * max_bins), 3600 * math.ceil(duration_s / 3600 / max_bins))


def _h_mm(seconds: float) -> str:
    return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}"


def score_strip_figure(scores: pd.DataFrame, min_conf: float | None = None, title: str = "",
                       cfg: PlotConfig = PlotConfig(), start: datetime | None = None) -> Figure:
    """One row per species (the highest-scoring, in the model's order), one cell per time bin of a minute or more:
    the highest score of the windows starting in it, so a short song still shows. Empty bins (a gap in the
    recording) stay blank. Time runs in h:mm from the start, or on the recorder's clock when `start` is given
    (`pulse.timestamps.recording_start`)."""
    scores = _one_file(scores)
    starts = scores.index.get_level_values("start_s").to_numpy(float)
    duration = float(scores.index.get_level_values("end_s").max())
    bin_s = strip_bin_s(duration, cfg.max_strip_bins)
    n_bins = math.ceil(duration / bin_s)
    top = set(scores.max().sort_values(ascending=False, kind="stable").index[:cfg.max_strip_species])
    species = [label for label in scores.columns if label in top]
    binned = scores[species].groupby((starts // bin_s).astype(int)).max().reindex(range(n_bins))
    figure = new_figure(cfg)
    ax = figure.add_subplot()
    image = ax.imshow(binned.to_numpy(float).T, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0,
                      vmax=1, extent=(0.0, n_bins * bin_s, len(species) - 0.5, -0.5))
    ax.set_yticks(range(len(species)), species, fontsize=7)
    colourbar = figure.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    colourbar.set_label(f"Highest score per {bin_s // 60} min"
                        + (f" (red line: min-conf {min_conf:g})" if min_conf is not None else ""), fontsize=8)
    if min_conf is not None:
        colourbar.ax.axhline(min_conf, color="red", linewidth=1.5)
    step = next((s for s in TIME_TICKS_S if duration <= 8 * s), TIME_TICKS_S[-1])
    clock_s = (start.hour * 3600 + start.minute * 60 + start.second) if start else 0  # ticks on round clock times
    ax.xaxis.set_major_locator(FixedLocator(np.arange((-clock_s) % step, duration + 1e-9, step)))
    ax.xaxis.set_major_formatter(FuncFormatter(
        (lambda x, _: f"{start + timedelta(seconds=x):%H:%M}") if start else (lambda x, _: _h_mm(x))))
    ax.set_xlim(0, duration)
    ax.set_xlabel(f"Recorder's clock from {start:%Y-%m-%d %H:%M:%S}" if start else "Time from the start (h:mm)")
    ax.set_title(title or f"Species scores, {len(scores)} windows in {bin_s // 60} min bins", fontsize=10)
    return readable(figure)


def training_figure(history: list[dict], title: str = "", cfg: PlotConfig = PlotConfig()) -> Figure:
    """Per-epoch training losses (left) and validation F1 / detection AUC per condition (right), from history.json."""
    epochs = [row["epoch"] for row in history]
    figure = new_figure(cfg)
    losses, validation = figure.subplots(1, 2)
    for key in sorted({k for row in history for k in row if k.startswith("loss_")}):
        losses.plot(epochs, [row.get(key, np.nan) for row in history], marker=".", label=key.removeprefix("loss_"))
    losses.set_xlabel("Epoch")
    losses.set_ylabel("Training loss (epoch mean)")
    losses.legend(fontsize=8)
    metrics = [k for k in history[0] if k.endswith(("_f1", "_det_auc")) or k == "score"] if history else []
    for key in metrics:
        style = {"color": "black", "linewidth": 2} if key == "score" else {"linestyle": "--" if "auc" in key else "-"}
        validation.plot(epochs, [row.get(key, np.nan) for row in history], label=key, **style)
    validation.set_xlabel("Epoch")
    validation.set_ylabel("Validation")
    if metrics:
        validation.legend(fontsize=7, ncol=2)
    figure.suptitle(title or "Training", fontsize=10)
    return readable(figure)


def pca_2d(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows projected on their first two principal components, and the variance share of each."""
    x = np.asarray(embeddings, np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    coords = np.zeros((len(x), 2))
    share = np.zeros(2)
    if len(x) > 1 and x.shape[1]:
        _, s, vt = np.linalg.svd(x, full_matrices=False)
        k = min(2, len(s))
        coords[:, :k] = x @ vt[:k].T
        total = float((s ** 2).sum())
        share[:k] = (s[:k] ** 2) / total if total > 0 else 0.0
    return coords, share


def embedding_figure(embeddings: np.ndarray, scores: pd.DataFrame, title: str = "",
                     cfg: PlotConfig = PlotConfig()) -> Figure:
    """Window embeddings in 2-D (PCA), joined in time order and coloured by each window's top species. Past
    `cfg.strip_after_s` the points are small and see-through, not joined, and their times in h:mm: an hour's 1200
    large points and their path hid whole species."""
    scores = _one_file(scores)
    if len(embeddings) != len(scores):
        raise ValueError(f"{len(embeddings)} embeddings for {len(scores)} score rows")
    coords, share = pca_2d(embeddings)
    top = scores.to_numpy().argmax(axis=1)
    labels = np.asarray(scores.columns)[top]
    colours = _colours(scores.columns)
    starts = scores.index.get_level_values("start_s").to_numpy(float)
    long_recording = scores.index.get_level_values("end_s").max() > cfg.strip_after_s
    figure = new_figure(cfg)
    ax = figure.add_subplot()
    if not long_recording:  # an hour's path (1200 windows) is a grey web over the clusters
        ax.plot(coords[:, 0], coords[:, 1], color="0.8", linewidth=0.8, zorder=1)
    for label in dict.fromkeys(labels):
        pick = labels == label
        size = scores.to_numpy().max(axis=1)[pick]
        ax.scatter(coords[pick, 0], coords[pick, 1], color=colours[label], label=label, zorder=2,
                   **({"s": 4 + 12 * size, "alpha": 0.5, "linewidths": 0} if long_recording else
                      {"s": 20 + 80 * size, "edgecolors": "white", "linewidths": 0.5}))
    for i in np.linspace(0, len(coords) - 1, min(len(coords), 8)).astype(int):
        ax.annotate(_h_mm(starts[i]) if long_recording else f"{starts[i]:g}s", coords[i], fontsize=7, color="0.3",
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"PC1 ({share[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({share[1]:.0%} of variance)")
    ax.set_title(title or f"Window embeddings (PCA, {len(coords)} windows): colour = top species", fontsize=10)
    figure.legend(loc="outside lower center", ncol=3, fontsize=8, frameon=False, markerscale=2 if long_recording else 1)
    return readable(figure)
