"""Synthetic slides: deterministic tiles, pyramidal TIFF readable by OpenSlide, class signal plain at 20x, faint at
5x."""

from __future__ import annotations

import csv
import json
import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from lrmil.config import SynthConfig
from lrmil.slide import open_slide
from lrmil.synth import assign_labels, make_spec, render, synthesize, write_slide

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CFG = SynthConfig(size=1024, tile=256, lesion_radius_px=(300, 400))


def _lesion_window(spec, px=128):
    lx, ly, _ = spec.lesions[0]
    return int(lx) - px // 2, int(ly) - px // 2, px


def test_render_is_a_pure_function_of_coordinates():
    spec = make_spec(CFG, 0, 1)
    big, big_mask = render(spec, 256, 256, 256, 256, CFG)
    small, small_mask = render(spec, 300, 270, 50, 70, CFG)  # not aligned to tiles or nucleus cells
    np.testing.assert_array_equal(small, big[14:84, 44:94])
    np.testing.assert_array_equal(small_mask, big_mask[14:84, 44:94])
    again, _ = render(make_spec(CFG, 0, 1), 256, 256, 256, 256, CFG)
    np.testing.assert_array_equal(again, big)


def test_negative_slides_have_no_lesions_and_positives_do():
    assert len(make_spec(CFG, 3, 0).lesions) == 0
    spec = make_spec(CFG, 3, 1)
    assert CFG.lesions[0] <= len(spec.lesions) <= CFG.lesions[1]
    x, y, px = _lesion_window(spec)
    assert render(spec, x, y, px, px, CFG)[1].any()


def _high_and_low(image: np.ndarray, mask: np.ndarray):
    """Mean |pixel - its 4x4 block mean| (20x-only detail) and the 4x4 block means (what 5x keeps)."""
    g = image.astype(np.float32).mean(axis=-1)
    h, w = (s // 4 * 4 for s in g.shape)
    blocks = g[:h, :w].reshape(h // 4, 4, w // 4, 4)
    low = blocks.mean(axis=(1, 3))
    high = np.abs(blocks - low[:, None, :, None]).reshape(h, w)[mask[:h, :w]].mean()
    return high, low


def _lesion_and_normal(cfg, label):
    """The same lesion window rendered as drawn and with its lesions removed (a negative twin)."""
    spec = make_spec(cfg, 1, label)
    x, y, px = _lesion_window(spec)
    atypical_img, atypical = render(spec, x, y, px, px, cfg)
    normal_img, _ = render(dataclasses.replace(spec, label=0, lesions=spec.lesions[:0]), x, y, px, px, cfg)
    return atypical_img, atypical, normal_img


@pytest.mark.parametrize("label", [1, 2, 3])
def test_class_signal_is_plain_at_20x_and_blurred_but_present_at_5x(label):
    cfg = dataclasses.replace(CFG, classes=4)
    atypical_img, atypical, normal_img = _lesion_and_normal(cfg, label)
    assert atypical.mean() > 0.05
    interior = ndimage.binary_erosion(atypical, iterations=2)  # nucleus edges are detail in both images
    high_a, low_a = _high_and_low(atypical_img, interior)
    high_n, low_n = _high_and_low(normal_img, interior)
    assert high_a > 2.0 * high_n  # plain at 20x ...
    # ... and at 5x blurred but present: the lesion's blocks are darker by about one grey level on average
    shift = low_n.mean() - low_a.mean()
    assert 0.6 < shift < 3.0
    dark = lambda low: (low < np.quantile(low_n, 0.05)).mean()  # noqa: E731  share of dark nuclear blobs
    assert dark(low_a) > 1.1 * dark(low_n)


def test_without_coarse_changes_the_texture_alone_averages_out_at_5x():
    cfg = dataclasses.replace(CFG, coarse_cue=0.0, atypical_scale=1.0, atypical_density=CFG.nucleus_density)
    atypical_img, atypical, normal_img = _lesion_and_normal(cfg, 1)
    high_a, low_a = _high_and_low(atypical_img, atypical)
    _, low_n = _high_and_low(normal_img, atypical)
    assert np.abs(low_a - low_n).mean() < 0.1 * high_a  # the knobs above are the only 5x cue


def test_pyramidal_tiff_is_readable_by_openslide(tmp_path):
    spec = make_spec(CFG, 2, 1)
    write_slide(tmp_path / "s.tiff", spec, CFG)
    with open_slide(tmp_path / "s.tiff") as reader:
        assert type(reader).__name__ == "OpenSlideReader"
        assert reader.dimensions == (1024, 1024) and reader.mpp == pytest.approx(0.5)
        assert reader.level_downsamples == (1.0, 4.0)
        level0 = reader.read_region((256, 256), 0, (256, 256))
        level1 = reader.read_region((256, 256), 1, (64, 64))
    np.testing.assert_array_equal(level0, render(spec, 256, 256, 256, 256, CFG)[0])  # lossless zlib
    box = level0.astype(np.float32).reshape(64, 4, 64, 4, 3).mean(axis=(1, 3))
    assert np.abs(box - level1).max() <= 1  # level 1 is the 4x4 box average: true 5x


def test_tiles_rendered_by_spawned_processes_make_the_same_file(tmp_path):
    """--workers renders tiles in processes started by spawn on every platform: each gets its job pickled
    (nothing inherited from the parent), and the slide must come out byte for byte as from one process."""
    import multiprocessing

    cfg = dataclasses.replace(CFG, size=512)  # four tiles
    spec = make_spec(cfg, 2, 1)
    write_slide(tmp_path / "one.tiff", spec, cfg)
    with multiprocessing.get_context("spawn").Pool(2) as pool:  # as synthesize starts it for --workers 2
        write_slide(tmp_path / "two.tiff", spec, dataclasses.replace(cfg, workers=2), pool)
    assert (tmp_path / "two.tiff").read_bytes() == (tmp_path / "one.tiff").read_bytes()


def test_labels_are_balanced_and_folds_stratified():
    rows = assign_labels(SynthConfig(count=20, classes=2, folds=5, seed=3))
    labels = np.array([r[0] for r in rows])
    folds = np.array([r[1] for r in rows])
    assert (np.bincount(labels) == 10).all()
    for f in range(5):
        assert np.bincount(labels[folds == f], minlength=2).tolist() == [2, 2]
    with pytest.raises(ValueError, match="classes"):
        assign_labels(SynthConfig(classes=7))


def test_synth_cli_writes_slides_and_csv(tmp_path):
    from typer.testing import CliRunner

    from lrmil.cli import app

    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path), "--count", "6", "--size", "512", "--seed", "1",
                                      "--atypical-scale", "1.1", "--atypical-density", "0.7"])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "synth_config.json").read_text())
    assert (written["atypical_scale"], written["atypical_density"]) == (1.1, 0.7)
    with open(tmp_path / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["slide_id", "label", "fold"]
    assert sorted(r["label"] for r in rows) == ["0", "0", "0", "1", "1", "1"]
    for row in rows:
        with open_slide(tmp_path / "slides" / f"{row['slide_id']}.tiff") as reader:
            assert reader.dimensions == (512, 512)
    before = (tmp_path / "slides" / "synth_0000.tiff").stat().st_mtime_ns
    same = dataclasses.replace(SynthConfig(), count=6, size=512, seed=1, atypical_scale=1.1, atypical_density=0.7)
    synthesize(tmp_path, dataclasses.replace(same, workers=2))  # re-run keeps slides
    assert (tmp_path / "slides" / "synth_0000.tiff").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="other settings \\(atypical_density, atypical_scale\\)"):
        synthesize(tmp_path, dataclasses.replace(SynthConfig(), count=6, size=512, seed=1))


@pytest.mark.parametrize("options, message", [
    (["--folds", "1"], "error: --folds 1: `lrmil train` needs at least 3 folds (test, validation, train)"),
    (["--count", "0"], "error: --count 0: `lrmil train` needs each class's slides in 3 folds, so at least 6 slides "
                       "of 2 classes"),
    (["--count", "8", "--classes", "3"], "error: --count 8: `lrmil train` needs each class's slides in 3 folds, so "
                                          "at least 9 slides of 3 classes")])
def test_synth_refuses_a_set_train_would_refuse_before_writing_it(tmp_path, options, message):
    """`--folds 1` and `--count 0` wrote a labels.csv that `lrmil train` then refused ('need at least 3 fold(s)',
    'no slides listed'); `--classes 7` was refused after synth_config.json was written."""
    from typer.testing import CliRunner

    from lrmil.cli import app

    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "set"), "--size", "512", *options])
    assert (result.exit_code, result.stderr.strip()) == (2, message)
    with pytest.raises(ValueError, match="classes must be between 2 and 4, got 7"):
        synthesize(tmp_path / "set", SynthConfig(classes=7))
    assert not (tmp_path / "set").exists()


def test_workers_are_started_once_a_run_not_once_a_slide(tmp_path, monkeypatch):
    """Spawned workers import numpy and lrmil afresh (1-3 s); a pool per slide paid it for every slide. Every
    slide's tiles are rendered by the one pool."""
    import multiprocessing

    import lrmil.synth

    pools, rendered, get_context = [], [], multiprocessing.get_context

    class Counted:
        def __init__(self, method):
            self.context = get_context(method)

        def Pool(self, processes):
            pools.append(processes)
            pool = self.context.Pool(processes)
            imap = pool.imap
            pool.imap = lambda *args, **kwargs: rendered.append(processes) or imap(*args, **kwargs)
            return pool

    monkeypatch.setattr(lrmil.synth.multiprocessing, "get_context", Counted)
    cfg = dataclasses.replace(SynthConfig(), count=3, size=512, seed=1, workers=2)
    synthesize(tmp_path, cfg)
    assert pools == [2] and rendered == [2] * 3 and len(list((tmp_path / "slides").glob("*.tiff"))) == 3
