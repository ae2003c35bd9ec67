"""Gradio apps and PULSE plots: callbacks called directly on real audio and real slides, servers on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import urllib.request
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
import soundfile as sf
import soxr
import torch
from PIL import Image

from apps import field, in_page_terms, lab
from apps.__main__ import ServeConfig, launch
from lrmil.heatmap import COLOUR_BAR_PX
from pulse.plots import (PlotConfig, detection_runs, embedding_figure, pca_2d, save_png, scores_figure,
                         spectrogram_figure, strip_bin_s)
from pulse.schema import DETECTION_COLUMNS, LabelSet, scores_frame
from pulse.writers.raven import RAVEN_COLUMNS

GRYLLUS = field.EXAMPLES_DIR / "Gryllus_campestris_dat003-004.flac"  # 7.3 s at 44.1 kHz


@pytest.fixture(scope="module")
def audio_model(tmp_path_factory):
    """A tiny untrained PULSE checkpoint with a 1 s window (the bundled model may not be built yet)."""
    from export.artifact import save_weights
    from pulse.config import ModelConfig
    from pulse.models import create_model

    cfg = ModelConfig(arch="pulse_cnn_xs", window_s=1.0, n_mels=32, embed_dim=16)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("audio_model") / "tiny.safetensors"
    save_weights(path, create_model(cfg).state_dict(), cfg.to_dict())
    return path


@pytest.fixture(scope="module")
def slide_model(random_lrmil_bundle):
    return random_lrmil_bundle


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def test_field_callback_on_a_bundled_example_gives_figures_table_and_downloads(audio_model, tmp_path):
    view = field.analyze_upload(str(GRYLLUS), str(audio_model), 0.0, tmp_path)
    windows, labels = 7, 9  # 7.3 s in 1 s windows; the 0.3 s tail is under min_len; nine species
    assert GRYLLUS.name in view.status and "Could not" not in view.status
    for png, plots in ((view.spectrogram_png, field.WIDE), (view.scores_png, field.HALF),
                       (view.embedding_png, field.HALF)):
        assert _png_size(png) == (plots.width_px, plots.height_px)
    # min-conf 0 keeps every (window, species) pair, so the table size is known exactly.
    assert list(view.detections.columns) == list(field.TABLE_COLUMNS.values())
    assert len(view.detections) == windows * labels
    assert view.detections["End (s)"].max() == pytest.approx(7.0)
    raven, detections_csv, scores_csv = view.downloads
    header, *rows = Path(raven).read_text().splitlines()
    assert header.split("\t") == list(RAVEN_COLUMNS) and len(rows) == windows * labels
    assert len(pd.read_csv(detections_csv)) == windows * labels
    assert len(pd.read_csv(scores_csv)) == windows
    # The recording as uploaded, by its name: not the server's copy (Gradio's cache path) of it.
    assert {row.split("\t")[RAVEN_COLUMNS.index("Begin Path")] for row in rows} == {GRYLLUS.name}
    assert set(pd.read_csv(detections_csv)["File"]) == set(pd.read_csv(scores_csv)["file"]) == {GRYLLUS.name}

    merged = field.analyze_upload(str(GRYLLUS), str(audio_model), 0.0, tmp_path, merge=100)
    assert len(merged.detections) == labels  # every species' 7 windows touch: one row each, 0-7 s
    assert set(merged.detections["Start (s)"]) == {0.0} and set(merged.detections["End (s)"]) == {7.0}
    assert len(pd.read_csv(merged.downloads[1])) == labels and len(pd.read_csv(merged.downloads[2])) == windows
    in_threes = field.analyze_upload(str(GRYLLUS), str(audio_model), 0.0, tmp_path, merge=3)
    assert len(in_threes.detections) == 3 * labels  # 7 windows: rows of 3, 3 and 1
    # The figure draws each species' whole run captioned with its 3 best windows, whatever the table's merge.
    assert Path(in_threes.spectrogram_png).read_bytes() == Path(view.spectrogram_png).read_bytes()
    unmerged = field.analyze_upload(str(GRYLLUS), str(audio_model), 0.0, tmp_path, merge=0)
    assert len(unmerged.detections) == windows * labels

    strict = field.analyze_upload(str(GRYLLUS), str(audio_model), 1.0, tmp_path)
    assert len(strict.detections) < len(view.detections)
    assert _png_size(strict.spectrogram_png) == (field.WIDE.width_px, field.WIDE.height_px)
    assert len(field.FieldView("x").outputs()) == len(view.outputs()) == 6
    assert "below the model's" not in view.status  # a 44.1 kHz recording


def test_field_status_flags_a_recording_below_the_model_rate(audio_model, tmp_path):
    slow = tmp_path / "slow.wav"
    sf.write(slow, sf.read(GRYLLUS)[0][: 3 * 44100 : 2], 22050)  # every other sample: a 22.05 kHz file
    view = field.analyze_upload(str(slow), str(audio_model), 0.25, tmp_path)
    assert "Could not" not in view.status
    assert "songs above 11025 Hz are not in the file, below the model's" in view.status


def test_field_status_says_an_ultrasonic_recordings_content_above_the_band_is_not_used(audio_model, tmp_path):
    """The spectrogram of a 384 kHz AudioMoth file shows its ultrasound up to 192 kHz; the page says the model
    heard none of it."""
    fast = tmp_path / "20250701_213000.WAV"
    sf.write(fast, soxr.resample(sf.read(GRYLLUS, dtype="float32")[0][: 3 * 44100], 44100, 384000), 384000)
    view = field.analyze_upload(str(fast), str(audio_model), 0.25, tmp_path)
    assert "Could not" not in view.status and "This file was recorded at 384000 Hz" in view.status
    assert "above 22050 Hz (up to 192000 Hz) is not used" in view.status


def test_field_shows_a_recording_that_breaks_off_up_to_the_break(audio_model, tmp_path):
    """As `pulse analyze`: a FLAC cut short mid-file is analysed as far as it goes, and the page says so."""
    cut = tmp_path / "cut.flac"
    sf.write(cut, np.tile(sf.read(GRYLLUS, dtype="float32")[0][: 3 * 44100], 10), 44100)  # 30 s
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 3 // 4])
    view = field.analyze_upload(str(cut), str(audio_model), 0.25, tmp_path)
    assert "Could not" not in view.status and view.spectrogram_png and len(view.downloads) == 3
    assert "**Partly readable:** corrupt or truncated after" in view.status
    assert "the audio before it was analysed" in view.status
    assert "The spectrogram shows the first" not in view.status  # all there is to show: no view limit cut it
    scores = pd.read_csv(next(d for d in view.downloads if d.endswith("scores.csv")))
    assert 15 <= len(scores) < 30  # the 1 s windows up to the break, not all thirty


def test_field_status_names_the_models_licence(tmp_path):
    """The bundled default is distilled from BirdNET: the app says under which licence its output falls."""
    assert "licence: CC BY-NC-SA 4.0" in field.analyze_upload(str(GRYLLUS), "default", 0.25, tmp_path).status
    supervised = field.analyze_upload(str(GRYLLUS), "supervised", 0.25, tmp_path).status
    assert "Could not" not in supervised and "licence: CC BY 4.0 (weights trained on InsectSet32" in supervised


def test_field_callback_reports_bad_audio_and_bad_models_as_messages(audio_model, tmp_path, caplog):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(np.random.default_rng(0).bytes(2048))
    with caplog.at_level(logging.WARNING):
        view = field.analyze_upload(str(junk), str(audio_model), 0.25, tmp_path)
    assert caplog.text.count("junk.wav") == 1  # the server's log names the file once, then the reason
    assert "Could not analyse `junk.wav`" in view.status and "not readable as audio" in view.status
    assert str(tmp_path) not in view.status  # the file by its name, never the server's upload path
    assert view.spectrogram_png is None and view.downloads == () and view.detections.empty
    missing = field.analyze_upload(str(GRYLLUS), str(tmp_path / "nope.onnx"), 0.25, tmp_path)
    assert "nope.onnx" in missing.status and missing.scores_png is None
    assert "Upload" in field.analyze_upload(None, "default", 0.25, tmp_path).status
    assert not list(tmp_path.glob("field-*"))  # a failed request leaves no empty output folder behind


def test_field_shows_a_file_name_that_is_not_utf8_escaped_as_the_cli_tables_do(audio_model, tmp_path):
    """A Latin-1 name (bytes Python holds as surrogates) broke drawing the spectrogram's title: an exception out of
    the callback instead of a page. It is escaped, as `pulse analyze` escapes it in its tables."""
    latin1 = Path(os.fsdecode(bytes(tmp_path) + b"/\xe9t\xe9.flac"))
    latin1.write_bytes(GRYLLUS.read_bytes())
    view = field.analyze_upload(str(latin1), str(audio_model), 0.25, tmp_path)
    assert view.status.startswith("**\\udce9t\\udce9.flac**") and view.spectrogram_png
    assert set(pd.read_csv(view.downloads[1])["File"]) == {"\\udce9t\\udce9.flac"}
    junk = latin1.with_name(latin1.name.replace(".flac", ".wav"))
    junk.write_bytes(b"not audio" * 100)
    failed = field.analyze_upload(str(junk), str(audio_model), 0.25, tmp_path).status
    assert "Could not analyse `\\udce9t\\udce9.wav`" in failed and failed.encode("utf-8")



def test_an_error_naming_an_upload_whose_name_is_not_utf8_can_be_shown(tmp_path):
    """An error that names the upload inside its text, not as its first word: the name in its place, escaped, as the
    page cannot send the raw surrogates of a Latin-1 name (gradio's orjson refuses them)."""
    upload = Path(os.fsdecode(bytes(tmp_path) + b"/\xe9t\xe9.wav"))
    said = in_page_terms(ValueError(f"could not decode {upload} (not audio)"), upload)
    assert said == "could not decode \\udce9t\\udce9.wav (not audio)" and orjson.dumps(said)
    missing = in_page_terms(FileNotFoundError(2, "No such file or directory", str(upload)), upload)
    assert str(tmp_path) not in missing and "\\udce9t\\udce9.wav" in missing  # an OSError quotes the path's repr


def test_field_says_the_spectrogram_shows_the_start_of_a_recording_longer_than_the_view(audio_model, tmp_path,
                                                                                       monkeypatch):
    """The view's limit (10 minutes; 2 s here) cuts the spectrogram of a longer recording: the page says so."""
    monkeypatch.setattr(field, "WIDE", dataclasses.replace(field.WIDE, max_display_s=2.0))
    view = field.analyze_upload(str(GRYLLUS), str(audio_model), 0.25, tmp_path)
    assert "The spectrogram shows the first 2.0 s." in view.status and "Partly readable" not in view.status

def _noise_wav(path: Path, seconds: float, rate: int = 16000) -> Path:
    """A recording of the given length whose content does not matter: white noise, 16-bit as a recorder writes."""
    sf.write(path, np.random.default_rng(0).uniform(-0.3, 0.3, int(seconds * rate)).astype(np.float32), rate,
             subtype="PCM_16")
    return path


def test_field_table_on_the_page_is_capped_and_the_downloads_hold_every_detection(audio_model, tmp_path, monkeypatch):
    """Two hours at min-conf 0 were 21 600 rows sent to the page; now the first TABLE_ROWS (20 here), and the page
    says the downloads hold them all."""
    monkeypatch.setattr(field, "TABLE_ROWS", 20)
    night = _noise_wav(tmp_path / "20250701_213000.WAV", 12.0)
    view = field.analyze_upload(str(night), str(audio_model), 0.0, tmp_path)
    every = 12 * 9  # 1 s windows, nine species, min-conf 0
    assert len(view.detections) == 20 and view.detections["Start (s)"].is_monotonic_increasing
    assert "The table shows the first 20; the downloads hold all 108." in view.status
    assert len(pd.read_csv(view.downloads[1])) == every
    merged = field.analyze_upload(str(night), str(audio_model), 0.0, tmp_path, merge=100)  # a row per species
    assert len(merged.detections) == 9 and "The table shows" not in merged.status


def test_field_reports_the_share_scored_after_each_batch_and_the_page_shows_it(audio_model, tmp_path):
    """Two hours took 10 s (longer on a slow laptop) with nothing on the page but a spinner: now a progress bar."""
    import inspect

    import gradio as gr

    heard = []
    night = _noise_wav(tmp_path / "20250701_213000.WAV", 40.0)
    view = field.analyze_upload(str(night), str(audio_model), 0.25, tmp_path, on_progress=heard.append)
    assert "Could not" not in view.status
    assert len(heard) >= 4 and heard == sorted(heard) and 0 < heard[0] < 0.5 and heard[-1] == 1.0  # 10 s blocks
    blocks = field.build(tmp_path / "app")
    (run,) = [block.fn for block in blocks.fns.values() if block.name == "run"]
    assert any(isinstance(p.default, gr.Progress) for p in inspect.signature(run).parameters.values())


def test_field_progress_rises_and_says_full_once_when_the_recording_ends_in_a_part_window(audio_model, tmp_path):
    """The bar followed the end of the last window scored: a tail under --min-len (read, not scored) left it at 0.95,
    a FLAC that breaks off at 22 s of 30 at 0.8. Now it rises, and says 1.0 once, after the last window."""
    song = sf.read(GRYLLUS, dtype="float32")[0]
    tail = tmp_path / "tail.wav"  # 10 windows of 1 s and 0.5 s more
    sf.write(tail, np.tile(song, 2)[: int(10.5 * 44100)], 44100, subtype="PCM_16")
    broken = tmp_path / "broken.flac"
    sf.write(broken, np.tile(song[: 3 * 44100], 10), 44100)
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size * 3 // 4])
    for path in (tail, broken):
        heard = []
        view = field.analyze_upload(str(path), str(audio_model), 0.25, tmp_path, on_progress=heard.append)
        assert "Could not" not in view.status
        assert len(heard) >= 2 and np.all(np.diff(heard) > 0) and heard[-1] == 1.0 and heard.count(1.0) == 1, heard


def test_a_model_without_pulse_metadata_is_named_the_same_by_the_app_and_the_batch(tmp_path):
    import onnx

    from pulse.analyze import analyze
    from pulse.config import InferConfig

    bare = onnx.load(str(Path(field.__file__).parents[1] / "pulse" / "assets" / "default" / "model.onnx"))
    del bare.metadata_props[:]  # an ONNX classifier of someone else's: no labels, rate or window
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    view = field.analyze_upload(str(GRYLLUS), str(tmp_path / "bare.onnx"), 0.25, tmp_path)
    assert "not a PULSE model (its metadata lacks labels, sample_rate, window_s" in view.status
    with pytest.raises(ValueError, match="bare.onnx: not a PULSE model"):
        analyze([GRYLLUS], tmp_path / "out", InferConfig(model=str(tmp_path / "bare.onnx")))


def test_plots_draw_one_box_per_run_and_reject_mixed_files(tmp_path):
    rng = np.random.default_rng(0)
    labels = LabelSet(("Gryllus campestris", "Tettigonia viridissima"), ("Field Cricket", "Great Green"),
                      ("GRYCAM", "TETVIR"))
    starts = np.arange(4.0)
    scores = scores_frame("a.wav", starts, starts + 1, rng.uniform(0, 1, (4, 2)), labels.labels)
    from pulse.detect import detect

    found = detect(scores, labels, 0.3, 500.0, 8000.0)
    figure = spectrogram_figure(rng.standard_normal(4 * 16000).astype(np.float32), 16000, found, "a", labels.labels)
    runs = detection_runs(found)
    assert len(figure.axes[0].patches) == len(runs) > 0
    assert {t.get_text() for t in figure.axes[0].get_legend().get_texts()} == {f"{c} {l}" for c, l in
                                                                               zip(runs.code, runs.label)}
    assert figure.axes[0].get_ylim() == pytest.approx((0.0, 8.0))  # kHz, up to Nyquist
    small = PlotConfig(width_px=320, height_px=200, dpi=80)
    assert _png_size(save_png(scores_figure(scores, 0.3, cfg=small), tmp_path / "s.png")) == (320, 200)
    both = pd.concat([scores, scores_frame("b.wav", starts, starts + 1, rng.uniform(0, 1, (4, 2)), labels.labels)])
    with pytest.raises(ValueError, match="2 files"):
        scores_figure(both)
    one = scores_frame("c.wav", np.zeros(1), np.ones(1), np.full((1, 2), 0.5), labels.labels)
    assert len(embedding_figure(np.ones((1, 8)), one).axes) == 1  # a single window still draws


def test_scores_of_a_long_recording_are_a_species_by_minute_strip_of_the_highest_score():
    """Curves of 1200 windows (an hour) were a wall of colour: past ten minutes, one row per species and one cell per
    minute, the highest score of the windows starting in it; a gap stays blank, the time axis is the recorder's."""
    from datetime import datetime

    rng = np.random.default_rng(1)
    labels = ("Gryllus campestris", "Nemobius sylvestris", "Tettigonia viridissima")
    starts = np.array([s for s in np.arange(0.0, 901.0, 3.0) if not 300 <= s < 360])  # 15 min 3 s, minute 5 missing
    values = rng.uniform(0, 1, (len(starts), 3))
    table = scores_frame("night.wav", starts, starts + 3, values, labels)
    figure = scores_figure(table, 0.5, start=datetime(2025, 7, 1, 21, 27, 30))
    ax = figure.axes[0]
    assert not ax.lines and len(ax.images) == 1
    strip = ax.images[0].get_array()
    assert strip.shape == (3, 16)  # 903 s in minutes
    assert ax.images[0].get_extent()[:2] == [0.0, 960.0]
    minute = (starts // 60).astype(int)
    for row in range(3):
        for column in range(16):
            if column == 5:
                assert strip.mask[row, column]
            else:
                assert strip[row, column] == pytest.approx(values[minute == column, row].max())
    assert [t.get_text() for t in ax.get_yticklabels()] == list(labels)
    ticks = ax.xaxis.get_major_locator()()
    assert ticks[0] == 150 and ax.xaxis.get_major_formatter()(ticks[0], 0) == "21:30"  # round clock times
    untimed = scores_figure(table).axes[0]
    assert untimed.xaxis.get_major_formatter()(5400, 0) == "1:30"  # h:mm from the start
    short = scores_frame("clip.wav", starts[:100], starts[:100] + 3, values[:100], labels)  # 5 min: curves as before
    assert len(scores_figure(short, 0.5).axes[0].lines) == 3 + 1 and not scores_figure(short).axes[0].images


def test_field_scores_strip_runs_on_the_recorders_clock(audio_model, tmp_path, monkeypatch):
    """The page's scores of a long recording (long here: past 5 s) are the strip, timed by the file's name."""
    monkeypatch.setattr(field, "HALF", dataclasses.replace(field.HALF, strip_after_s=5.0))
    drawn, draw = [], field.scores_figure
    monkeypatch.setattr(field, "scores_figure", lambda *args, **kw: drawn.append(draw(*args, **kw)) or drawn[-1])
    night = _noise_wav(tmp_path / "20250701_213000.WAV", 12.0)
    assert field.analyze_upload(str(night), str(audio_model), 0.5, tmp_path).scores_png
    assert len(drawn[0].axes[0].images) == 1
    assert drawn[0].axes[0].get_xlabel() == "Recorder's clock from 2025-07-01 21:30:00"


def test_embedding_of_a_long_recording_is_small_unjoined_points():
    """An hour's 1200 windows joined in time order were a grey web, their large points hiding whole species."""
    labels = ("Gryllus campestris", "Nemobius sylvestris")
    rng = np.random.default_rng(2)

    def cloud(seconds):
        starts = np.arange(0.0, seconds, 3.0)
        table = scores_frame("night.wav", starts, starts + 3, rng.uniform(0, 1, (len(starts), 2)), labels)
        return embedding_figure(rng.standard_normal((len(starts), 8)), table).axes[0]

    short, long = cloud(300.0), cloud(3600.0)
    assert len(short.lines) == 1 and short.collections[0].get_sizes().min() >= 20
    assert not long.lines and long.collections[0].get_sizes().max() <= 16
    assert [t.get_text() for t in long.texts][-1] == "0:59"


def test_strip_bins_are_a_minute_until_the_strip_is_full():
    assert [strip_bin_s(h * 3600, 180) for h in (1, 3, 4, 24, 200)] == [60, 60, 120, 600, 7200]


def test_detection_runs_merge_a_species_consecutive_windows_only():
    """A cricket singing for minutes is one box, not a caption per 3 s window; a gap or another species is not
    merged."""
    labels = LabelSet(("Gryllus campestris", "Tettigonia viridissima"), ("Field Cricket", "Great Green"),
                      ("GRYCAM", "TETVIR"))
    starts = np.arange(0.0, 15.0, 3.0)
    table = scores_frame("a.wav", starts, starts + 3, np.array([[0.9, 0.1], [0.6, 0.8], [0.1, 0.1], [0.7, 0.1],
                                                               [0.95, 0.1]]), labels.labels)
    from pulse.detect import detect

    runs = detection_runs(detect(table, labels, 0.5, 500.0, 8000.0))
    assert list(zip(runs.code, runs.start_s, runs.end_s, runs.score.round(2))) == [
        ("GRYCAM", 0.0, 6.0, 0.75), ("TETVIR", 3.0, 6.0, 0.8), ("GRYCAM", 9.0, 15.0, 0.82)]


def test_display_spectrogram_is_bounded_in_seconds_and_samples():
    from pulse.recording import display_spectrogram

    view = display_spectrogram(GRYLLUS, PlotConfig(max_display_s=2.0))
    assert view.sample_rate == 44100 and view.duration_s == 2.0 and view.db.shape[0] == 1024 // 2 + 1
    assert display_spectrogram(GRYLLUS, PlotConfig(max_display_samples=1000)).duration_s == 1000 / 44100
    assert display_spectrogram(GRYLLUS, PlotConfig()).duration_s == sf.info(str(GRYLLUS)).frames / 44100


def test_display_spectrogram_holds_a_block_not_the_view(tmp_path):
    """Ten minutes at 48 kHz were read whole (110 MB) to draw 2000 frames of 1024 samples from them. Streamed, the
    frames are those of the whole view, and a block (60 s of the 600 here) and its decoding the most audio held."""
    import tracemalloc

    from pulse.plots import spectrogram
    from pulse.recording import display_spectrogram

    night = _noise_wav(tmp_path / "20250701_213000.WAV", 700.0, rate=8000)
    cfg = PlotConfig(max_frames=200)
    tracemalloc.start()
    try:
        view = display_spectrogram(night, cfg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    whole = sf.read(night, frames=600 * 8000, dtype="float32")[0]
    assert view.duration_s == 600.0 and view.sample_rate == 8000
    db, hop_s = spectrogram(whole, 8000, cfg)
    assert view.hop_s == hop_s and np.array_equal(view.db, db)
    assert peak < 0.5 * whole.nbytes


def test_pca_2d_finds_the_direction_of_largest_variance():
    t = np.linspace(-1, 1, 50)
    points = np.stack([3 * t, 0.1 * np.sin(7 * t), np.zeros_like(t)], axis=1) + 5.0
    coords, share = pca_2d(points)
    assert abs(np.corrcoef(coords[:, 0], t)[0, 1]) > 0.999
    assert share[0] > 0.99 and share.sum() == pytest.approx(1.0)


def test_lab_callback_on_a_real_slide_shows_mask_heatmap_topk_and_the_notice(slide_model, shared_data, tmp_path):
    from lrmil.mil.config import DEMO_NOTICE, PredictConfig

    slide = shared_data / "slides" / "CMU-1-Small-Region.svs"
    view = lab.predict_upload(str(slide), None, str(slide_model), "student", tmp_path)
    assert "CMU-1-Small-Region.svs" in view.status and "Could not" not in view.status
    assert view.notice == DEMO_NOTICE and "not for diagnosis" in view.outputs()[1]
    mask_w, mask_h = _png_size(view.mask_png)
    assert mask_h > mask_w  # the slide is 2220 x 2967: portrait
    heat_w, heat_h = _png_size(view.heatmap_png)
    assert PredictConfig().heatmap_px <= heat_h <= PredictConfig().heatmap_px + 32  # plus the notice band
    assert heat_w - COLOUR_BAR_PX == pytest.approx(heat_h * 2220 / 2967, abs=40)  # the slide, then its scale
    assert _png_size(view.topk_png)[0] > 0
    record = view.record
    assert view.geojson.endswith(record["geojson"])  # offered for download, for QuPath
    assert len(json.loads(Path(view.geojson).read_text())["features"]) == record["patches"]
    assert record["label"] in ("normal", "atypical") and record["patches"] >= 1
    assert record["mpp"] == pytest.approx(0.499, abs=1e-3) and record["notice"] == DEMO_NOTICE

    overridden = lab.predict_upload(str(slide), 1.0, str(slide_model), "student", tmp_path)  # coarser pixels:
    assert overridden.record["mpp_source"] == "--mpp"
    assert overridden.record["patches"] > record["patches"]  # more patches
    assert "enlarged" not in view.status and "enlarged" not in overridden.status
    coarse = lab.predict_upload(str(slide), 4.0, str(slide_model), "student", tmp_path)  # as if scanned at 2.5x
    assert "**Patches enlarged 2x**: the slide is scanned coarser than 5x" in coarse.status
    native = lab.predict_upload(str(slide), 2.0, str(slide_model), "student", tmp_path)  # as if scanned at 5x
    assert native.record["enlargement"] == 1.0 and "enlarged" not in native.status  # read as scanned


def test_lab_shows_a_slide_name_that_is_not_utf8_escaped(slide_model, shared_data, tmp_path):
    """As the field page: Latin-1 bytes in a name (surrogates in Python) cannot go into the page's JSON."""
    import shutil

    slide = tmp_path / os.fsdecode(b"\xe9t\xe9.svs")
    shutil.copy(shared_data / "slides" / "CMU-1-Small-Region.svs", slide)
    view = lab.predict_upload(str(slide), None, str(slide_model), "student", tmp_path)
    assert view.status.startswith("**\\udce9t\\udce9.svs**: predicted")  # as pulse analyze's tables write it
    shown = view.outputs()[-1]
    sent = json.loads(orjson.dumps(shown))  # as gradio sends it: it refuses what UTF-8 cannot hold
    sent = json.loads(sent)  # the record, as JSON text
    assert sent["slide"] == "\\udce9t\\udce9.svs"
    assert sent["source"]["path"] == "\\udce9t\\udce9.svs" and sent["mask"] == "\\udce9t\\udce9_mask.png"


def test_lab_callback_reports_corrupt_slides_missing_mpp_and_bad_models(slide_model, shared_data, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        broken = lab.predict_upload(str(shared_data / "slides" / "broken.svs"), None, str(slide_model), "student",
                                    tmp_path)
    assert caplog.text.count("broken.svs") == 1  # the server's log names the slide once, then the reason
    assert "Could not analyse `broken.svs`" in broken.status
    assert broken.record is None and broken.heatmap_png is None and broken.outputs()[1] == ""
    no_mpp = shared_data / "slides" / "TCGA-CR-7395-01A-01-TS1-no-mpp.svs"
    missing = lab.predict_upload(str(no_mpp), None, str(slide_model), "student", tmp_path).status
    assert "type it in the MPP override field (e.g. 0.5 for a 20x scan" in missing and str(no_mpp) not in missing
    assert "model.json" in lab.predict_upload(str(no_mpp), 0.5, str(tmp_path), "student", tmp_path).status
    cmu = shared_data / "slides" / "CMU-1-Small-Region.svs"
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # a far too fine scale
        no_tissue = lab.predict_upload(str(cmu), 1e-6, str(slide_model), "student", tmp_path).status
    assert "no tissue found" in no_tissue and str(cmu) not in no_tissue
    assert caplog.text.count(str(cmu)) == 1  # a reason that names the slide itself: the log named it twice
    magnification = lab.predict_upload(str(cmu), 20, str(slide_model), "student", tmp_path).status
    assert "the MPP override field is level-0 microns per pixel" in magnification
    assert "(a magnification?)" in magnification
    assert not list(tmp_path.glob("lab-*"))  # failed requests leave no output folders behind


def test_lab_json_output_names_the_slide_and_is_no_file_to_gradio_client(slide_model, shared_data, tmp_path):
    """gradio_client takes every object with a "path" string in an output for a file to download: the record's
    MIL path ("student") made a request through the server fail on a 403 for `file=student`."""
    from gradio_client.utils import is_file_obj, traverse

    slide = shared_data / "slides" / "CMU-1-Small-Region.svs"
    outputs = lab.predict_upload(str(slide), None, str(slide_model), "student", tmp_path).outputs()
    taken = []
    traverse(list(outputs), taken.append, is_file_obj)
    assert taken == []  # the images and the GeoJSON go as plain paths, the page's components make them files
    shown = json.loads(outputs[-1])
    assert shown["slide"] == slide.name and shown["path"] == "student"
    assert shown["source"]["path"] == slide.name and str(slide.parent) not in outputs[-1]


def test_request_folders_older_than_a_day_are_pruned(tmp_path):
    import os
    import time

    from apps import prune_old_outputs

    old, new, other = tmp_path / "field-old", tmp_path / "field-new", tmp_path / "lab-old"
    for folder in (old, new, other):
        folder.mkdir()
        (folder / "spectrogram.png").write_bytes(b"x")
    two_days_ago = time.time() - 2 * 86400
    for folder in (old, other):
        os.utime(folder, (two_days_ago, two_days_ago))
    prune_old_outputs(tmp_path, "field-")
    assert not old.exists() and new.exists() and other.exists()  # only this app's, only the old
    old.mkdir()
    os.utime(old, (two_days_ago, two_days_ago))
    field.analyze_upload(str(GRYLLUS), "default", 0.25, tmp_path)  # each request prunes its own app's folders
    assert not old.exists() and other.exists()
    lab.predict_upload(str(tmp_path / "missing.svs"), None, "demo", "student", tmp_path)  # failed, still pruned
    assert not other.exists()


def test_both_apps_build_without_a_server(tmp_path):
    import gradio as gr

    for module in (field, lab):
        blocks = module.build(tmp_path / module.__name__)
        assert isinstance(blocks, gr.Blocks) and not blocks.is_running
        assert (tmp_path / module.__name__).is_dir()
        assert blocks.delete_cache == (3600, 86400)  # gradio's copies of uploads go after a day


def test_the_launcher_caps_uploads_per_app(tmp_path, monkeypatch):
    import gradio as gr

    asked = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **options: asked.update(options))
    for name, cap in (("field", "2gb"), ("lab", "20gb")):
        launch(name, ServeConfig(work_dir=str(tmp_path)), block=False)
        assert asked["max_file_size"] == cap and asked["server_name"] == "127.0.0.1" and asked["share"] is False


def test_the_field_server_does_not_import_the_lab_apps_torch(tmp_path):
    """`python -m apps field` imported the lab app too: torch and lrmil, 644 MB before the first request (157 MB
    without). In a fresh interpreter, as the server starts: this one has torch already."""
    import subprocess
    import sys

    code = ("import sys; from apps.__main__ import builder; builder('field')(sys.argv[1]); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'lrmil'}))")
    shown = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONPATH": str(Path(field.__file__).parents[1])})
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "[]"


def test_launcher_binds_127_0_0_1_by_default(tmp_path):
    from typer.testing import CliRunner

    from apps.__main__ import app

    assert ServeConfig().host == "127.0.0.1"
    for command in ("field", "lab"):
        shown = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
        assert shown.exit_code == 0 and "[default: 127.0.0.1]" in shown.output
    for attempt in range(3):  # a free port, taken back by another process before gradio binds it: try another
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            blocks = launch("field", ServeConfig(port=port, work_dir=str(tmp_path)), block=False)
            break
        except OSError:
            if attempt == 2:
                raise
    try:
        assert blocks.server_name == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as page:
            assert page.status == 200 and b"PULSE" in page.read()
    finally:
        blocks.close()


def test_names_in_a_script_matplotlibs_font_lacks_draw_without_a_warning_per_character(audio_model, tmp_path):
    """A recording named in Japanese, Chinese or Korean (or a common name in them) drew a row of boxes and a warning
    per character, 'Glyph 12467 (\\N{KATAKANA LETTER KO}) missing from font(s) DejaVu Sans.' (34 stderr lines for 4
    clips of `pulse segments --plots`). Each character is drawn from an installed font that has it, or written as
    its code point (\\u30b3) where none has it."""
    import warnings

    from matplotlib import font_manager
    from matplotlib.text import Text

    from pulse.detect import detect

    upload = tmp_path / "コオロギ_野原.flac"
    upload.write_bytes(GRYLLUS.read_bytes())
    labels = LabelSet(("Gryllus campestris",), ("エンマコオロギ",), ("エンマコオロギ",))
    scores = scores_frame(upload.name, np.arange(2.0), np.arange(2.0) + 1, np.array([[0.9], [0.8]]), labels.labels)
    audio, rate = sf.read(GRYLLUS, dtype="float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        view = field.analyze_upload(str(upload), str(audio_model), 0.0, tmp_path)
        figure = spectrogram_figure(audio, rate, detect(scores, labels, 0.5, 0.0, 8000.0), f"{upload.name} 귀뚜라미")
        save_png(figure, tmp_path / "s.png")
    assert view.spectrogram_png and not [w for w in caught if "missing from font" in str(w.message)]
    for text in figure.findobj(Text):  # the title, the box's caption and the legend among them
        fonts = [font_manager.get_font(font_manager.findfont(font_manager.FontProperties(family=[family])))
                 for family in text.get_fontfamily()]
        assert all(any(ord(c) in font.get_charmap() for font in fonts) for c in text.get_text()), text.get_text()
    assert figure.axes[0].get_title() in (f"{upload.name} 귀뚜라미",  # escaped where no installed font has them:
                                          "\\u30b3\\u30aa\\u30ed\\u30ae_\\u91ce\\u539f.flac "
                                          "\\uadc0\\ub69c\\ub77c\\ubbf8")


def test_a_dollar_sign_in_a_recording_name_is_drawn_as_written_not_as_mathtext(audio_model, tmp_path):
    """Matplotlib reads text between two `$` as mathtext: `a$_$b.flac` made the field app's request raise
    (ValueError from the mathtext parser at save time) and `site$1$_2024.flac` was drawn as math."""
    upload = tmp_path / "a$_$b.flac"
    upload.write_bytes(GRYLLUS.read_bytes())
    view = field.analyze_upload(str(upload), str(audio_model), 0.0, tmp_path)
    assert view.spectrogram_png and Path(view.spectrogram_png).is_file()
    audio, rate = sf.read(GRYLLUS, dtype="float32")
    for title in ("site$1$_2024.flac", "plot$\\x$ cost$ 5 $.flac"):
        figure = spectrogram_figure(audio, rate, pd.DataFrame(columns=DETECTION_COLUMNS), title)
        save_png(figure, tmp_path / "s.png")
        drawn = figure.axes[0].title
        assert drawn.get_text() == title and drawn._preprocess_math(title) == (title, False)  # plain text, as named


def test_spectrogram_of_blocks_is_each_frame_of_the_audio_however_the_blocks_cut_it():
    """Frames at every hop of the whole audio, computed directly, whatever the block sizes (hops shorter and longer
    than a frame, a frame ending where the last block ends), and never more than max_frames of them."""
    from pulse.plots import spectrogram, spectrogram_of_blocks

    audio = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    window = np.hanning(64).astype(np.float32)
    for cfg, hop in ((PlotConfig(n_fft=64, max_frames=1000), 16), (PlotConfig(n_fft=64, max_frames=5), 234)):
        expected = 10 * np.log10(np.abs(np.fft.rfft(np.stack(
            [audio[i:i + 64] * window for i in range(0, 1000 - 64 + 1, hop)]), axis=1)).T ** 2 + 1e-12)
        cuts = np.cumsum([50, 7, 130, 64, 1] * 10)
        db, hop_s = spectrogram_of_blocks(np.split(audio, cuts[cuts < 1000]), 1000, 1000, cfg)
        assert hop_s == hop / 1000 and db.shape == expected.shape
        np.testing.assert_allclose(db, expected, atol=1e-3)
    db, _ = spectrogram_of_blocks([audio[:70], audio[70:80]], 80, 1000, PlotConfig(n_fft=64))
    assert db.shape[1] == 2  # frames at 0 and 16, the second ending with the last block
    assert spectrogram(np.zeros(2094, np.float32), 1000, PlotConfig(n_fft=64, max_frames=100))[0].shape[1] <= 100


def test_strip_ticks_fall_on_round_clock_times_and_the_colour_bar_marks_min_conf():
    from datetime import datetime

    starts = np.arange(0.0, 7200.0, 3.0)  # two hours from 21:37
    table = scores_frame("night.wav", starts, starts + 3, np.full((len(starts), 2), 0.2), ("A a", "B b"))
    figure = scores_figure(table, 0.4, start=datetime(2025, 7, 1, 21, 37, 0))
    axis = figure.axes[0].xaxis
    ticks = axis.get_major_locator()()
    assert [axis.get_major_formatter()(t, 0) for t in ticks[:3]] == ["21:45", "22:00", "22:15"]
    assert [line.get_ydata()[0] for line in figure.axes[1].lines] == [0.4]


def test_display_spectrogram_reads_no_further_than_its_view_and_ends_where_a_file_breaks_off(tmp_path, monkeypatch):
    """A two-hour file was read to its end to draw its first ten minutes; a short file is drawn at its own hop, not at
    that of a full view; a file cut short is shown as far as it decodes."""
    from pulse import recording
    from pulse.plots import spectrogram

    whole = sf.read(GRYLLUS, dtype="float32")[0]
    short = recording.display_spectrogram(GRYLLUS, PlotConfig())
    db, hop_s = spectrogram(whole, 44100)
    assert short.hop_s == hop_s and np.array_equal(short.db, db)
    pulled, stream = [], recording.stream_audio
    monkeypatch.setattr(recording, "stream_audio",
                        lambda *args, **kw: (pulled.append(len(block)) or block for block in stream(*args, **kw)))
    night = _noise_wav(tmp_path / "night.wav", 30.0, rate=8000)
    assert recording.display_spectrogram(night, PlotConfig(max_display_s=10.0)).duration_s == 10.0
    assert sum(pulled) == 80000
    cut = tmp_path / "cut.flac"
    sf.write(cut, np.tile(whole[: 3 * 44100], 10), 44100)  # 30 s
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 3 // 4])
    assert 15 < recording.display_spectrogram(cut, PlotConfig()).duration_s < 30


def test_field_progress_of_a_recording_shorter_than_a_window_is_whole(audio_model, tmp_path):
    heard = []
    view = field.analyze_upload(str(_noise_wav(tmp_path / "chirp.wav", 0.5)), str(audio_model), 0.25, tmp_path,
                                on_progress=heard.append)
    assert "Could not" not in view.status and heard == [1.0]  # its one window, padded, is 1 s of the 0.5 s


def test_lab_json_shows_a_utf8_slide_name_as_written():
    """The page's JSON is text people read: 'Präparat 3.svs', not 'Pr\\u00e4parat 3.svs'."""
    record = {"slide": "/uploads/x/Präparat 3.svs", "source": {"path": "/uploads/x/Präparat 3.svs", "size": 1}}
    shown = lab.LabView("ok", record=record).outputs()[-1]
    assert '"slide": "Präparat 3.svs"' in shown and json.loads(shown)["source"]["path"] == "Präparat 3.svs"


def test_field_says_nothing_of_a_view_that_leaves_out_less_than_a_second(audio_model, tmp_path, monkeypatch):
    monkeypatch.setattr(field, "WIDE", dataclasses.replace(field.WIDE, max_display_s=7.0))  # of 7.34 s
    assert "The spectrogram shows" not in field.analyze_upload(str(GRYLLUS), str(audio_model), 0.25, tmp_path).status


def test_field_table_of_exactly_table_rows_detections_is_whole(audio_model, tmp_path, monkeypatch):
    monkeypatch.setattr(field, "TABLE_ROWS", 9)
    night = _noise_wav(tmp_path / "night.wav", 12.0)
    view = field.analyze_upload(str(night), str(audio_model), 0.0, tmp_path, merge=100)  # a row per species: 9
    assert len(view.detections) == 9 and "The table shows" not in view.status
