"""One recording held in memory for interactive views: its scores, detections and window embeddings.

`pulse analyze` streams folders of recordings to files; the field app and notebooks need the
tables and the per-window embedding of a single recording back as objects. This module builds
them from the same public parts as the batch path (`open_checked_model`, `refuse_truncated`, `stream_audio`,
`frame_windows`, `window_times`, `scores_frame`, `detect`), so a file scores identically in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd

from export.predictor import Predictor
from pulse.config import InferConfig
from pulse.detect import detect
from pulse.io import AudioInfo, AudioReadError, PartlyDecoded, audio_info, stream_audio
from pulse.model_names import model_band, open_checked_model
from pulse.schema import LabelSet, detection_channel, scores_frame
from pulse.windows import WindowSpec, cut_too_short, frame_windows, refuse_truncated, window_times

if TYPE_CHECKING:  # pulse.plots imports matplotlib, which `pulse analyze` never needs
    from pulse.plots import PlotConfig, SpectrogramView


@dataclass(frozen=True)
class Recording:
    """What the model says about one recording, window by window."""

    info: AudioInfo
    labels: LabelSet
    scores: pd.DataFrame  # scores table (pulse/schema.py)
    detections: pd.DataFrame  # at the config's min_conf, a row per window (merge_consecutive_table joins them)
    embeddings: np.ndarray  # [windows, embed_dim], same row order as `scores`; [windows, 0] if the model has none
    metadata: dict  # the model's own metadata (labels, rate, window, provenance)
    warning: str = ""  # the recording breaks off part way: what was analysed ("" when whole)


def analyze_recording(path: str | Path, cfg: InferConfig = InferConfig(),
                      on_progress: Callable[[float], None] | None = None) -> Recording:
    """Score one recording with `cfg.model`; raises AudioReadError for a bad file. `on_progress` hears the share of
    the recording scored after each batch of windows, and 1.0 once, after the last: two hours take a while, and the
    field app shows it."""
    info = audio_info(path)
    predictor, spec, labels = open_checked_model(cfg)
    meta = predictor.metadata
    try:
        starts_s, ends_s, outputs, warning = window_outputs(path, info, predictor, spec, cfg, on_progress)
    finally:
        predictor.close()
    table = scores_frame(str(path), starts_s, ends_s, outputs["scores"], labels.labels)
    # Selection boxes span the model's band, never above what the file itself contains.
    low_hz, high_hz = model_band(meta)
    found = detect(table, labels, cfg.min_conf, low_hz, min(high_hz, info.sample_rate / 2),
                   detection_channel(cfg.channel))
    embeddings = outputs.get("embedding", np.zeros((len(table), 0), np.float32))
    return Recording(info, labels, table, found, embeddings.astype(np.float32), meta, warning or info.warning)


def window_outputs(path: str | Path, info: AudioInfo, predictor: Predictor, spec: WindowSpec, cfg: InferConfig,
                   on_progress: Callable[[float], None] | None = None
                   ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], str]:
    """Every window's model outputs (by name, rows in time order) with the windows' start and end times, and what
    was said if the recording breaks off part way ("" otherwise): as `pulse analyze` cuts and scores them."""
    starts, outputs, warning, duration_s = [], {}, "", info.duration_s
    refuse_truncated(Path(path), info, spec)
    blocks = stream_audio(path, spec.sample_rate, cfg.block_s, cfg.channel, info=info)
    try:
        for chunk_starts, windows in frame_windows(blocks, spec, max_windows=cfg.batch_size):
            starts.append(chunk_starts)
            for name, values in predictor.predict(windows).items():
                outputs.setdefault(name, []).append(values)
            share = (chunk_starts[-1] + spec.window) / spec.sample_rate / max(duration_s, 1e-9)
            if on_progress and share < 1.0:  # the end is said once, below
                on_progress(share)
    except PartlyDecoded as exc:  # as `pulse analyze`: the audio before the break is analysed, and said so
        if short := cut_too_short(exc.decoded_s, exc.reason, spec):
            raise AudioReadError(path, short) from exc
        warning, duration_s = exc.note, exc.decoded_s
    # Here, not from the last window's end: a tail under --min-len (not scored) or a file that breaks off left the bar
    # short of full (at 0.98 for 30.5 s, 0.8 for a 30 s FLAC broken at 22 s).
    if on_progress:
        on_progress(1.0)
    starts_s, ends_s = window_times(starts, spec, duration_s)
    return starts_s, ends_s, {name: np.concatenate(values) for name, values in outputs.items()}, warning


def display_spectrogram(path: str | Path, cfg: PlotConfig, channel: int | None = None) -> SpectrogramView:
    """The spectrogram of a recording's start at its own rate (mono), for drawing up to its Nyquist frequency.

    At most `cfg.max_display_s` seconds and `cfg.max_display_samples` samples. The audio streams through
    `spectrogram_of_blocks`, which keeps only the frames drawn: held whole, ten minutes at 48 kHz were 110 MB
    (the field app's peak on 2 h: 330 MB, `pulse analyze` 195 MB).
    """
    from pulse.plots import SpectrogramView, spectrogram_of_blocks

    info = audio_info(path)
    wanted = int(min(cfg.max_display_s * info.sample_rate, cfg.max_display_samples, info.frames))
    taken = 0

    def view_blocks():
        nonlocal taken
        try:
            for block in stream_audio(path, info.sample_rate, min(cfg.max_display_s, 60.0), channel, info=info):
                part = block[:wanted - taken]
                taken += len(part)
                yield part
                if taken == wanted:
                    return
        except PartlyDecoded:  # the view ends where the recording breaks off
            pass

    db, hop_s = spectrogram_of_blocks(view_blocks(), wanted, info.sample_rate, cfg)
    return SpectrogramView(db, hop_s, taken / info.sample_rate, info.sample_rate)
