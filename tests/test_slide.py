"""Slide readers on the real fixtures (CMU-1, no-MPP TCGA, broken.svs) and on tiny generated files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lrmil.slide import SlideReadError, best_level, find_slides, open_slide, read_scaled

SLIDES = "slides"


def test_cmu1_reads_with_metadata_mpp(shared_data):
    with open_slide(shared_data / SLIDES / "CMU-1-Small-Region.svs") as reader:
        assert reader.dimensions == (2220, 2967)
        assert reader.level_count == 1 and reader.level_downsamples == (1.0,)
        assert reader.mpp == pytest.approx(0.499)
        region = reader.read_region((100, 200), 0, (64, 48))
        assert region.shape == (48, 64, 3) and region.dtype == np.uint8
        thumb = reader.thumbnail(256)
        assert max(thumb.shape[:2]) == 256 and thumb.shape[2] == 3
        assert 0 < thumb.std()  # real tissue, not a blank image


def test_no_mpp_slide_fails_clearly_and_works_with_override(shared_data):
    path = shared_data / SLIDES / "TCGA-CR-7395-01A-01-TS1-no-mpp.svs"
    with pytest.raises(SlideReadError) as info:
        open_slide(path)
    message = str(info.value)
    assert "\n" not in message and path.name in message and "--mpp" in message
    with open_slide(path, mpp_override=0.25) as reader:
        assert reader.mpp == 0.25 and reader.metadata_mpp is None
        assert reader.level_count == 2
        patch = read_scaled(reader, (1000, 1000), 512, 256)  # read from level 1 (downsample ~2)
        assert patch.shape == (256, 256, 3)


def test_broken_and_missing_files_raise_one_line(shared_data, tmp_path):
    for path in (shared_data / SLIDES / "broken.svs", tmp_path / "nope.svs"):
        with pytest.raises(SlideReadError) as info:
            open_slide(path)
        assert "\n" not in str(info.value) and path.name in str(info.value)


def test_bad_override_is_rejected(shared_data):
    with pytest.raises(SlideReadError, match="positive"):
        open_slide(shared_data / SLIDES / "CMU-1-Small-Region.svs", mpp_override=-1.0)


def test_png_needs_mpp_and_tiff_resolution_is_used(tmp_path):
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:, :, 0] = np.arange(60, dtype=np.uint8)[None] * 4
    Image.fromarray(rgb).save(tmp_path / "a.png")
    with pytest.raises(SlideReadError, match="--mpp"):
        open_slide(tmp_path / "a.png")
    with open_slide(tmp_path / "a.png", mpp_override=0.5) as reader:
        assert reader.dimensions == (60, 40) and reader.mpp == 0.5
        np.testing.assert_array_equal(reader.read_region((0, 0), 0, (60, 40)), rgb)
    # plain (untiled) TIFF with resolution in pixels per centimetre: 20000 px/cm = 0.5 um/px
    Image.fromarray(rgb).save(tmp_path / "b.tif", resolution_unit=3, resolution=20000.0)
    with open_slide(tmp_path / "b.tif") as reader:
        assert reader.mpp == pytest.approx(0.5)


def test_screen_dpi_is_not_taken_as_a_scale(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "c.tif", resolution_unit=2, resolution=72.0)
    with pytest.raises(SlideReadError, match="--mpp"):
        open_slide(tmp_path / "c.tif")


def test_best_level_picks_coarsest_sharp_enough_level():
    downsamples = (1.0, 2.0, 4.0, 16.0)
    assert best_level(downsamples, 1.0) == 0
    assert best_level(downsamples, 3.0) == 1
    assert best_level(downsamples, 4.0) == 2
    assert best_level(downsamples, 4.0 * 1.004) == 2
    assert best_level((1.0, 2.0005), 2.0) == 1  # a TCGA-style inexact downsample still counts
    assert best_level(downsamples, 100.0) == 3


def test_find_slides_expands_folders(tmp_path):
    for name in ("b.svs", "a.tiff", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = find_slides([tmp_path, tmp_path / "missing.svs"])
    assert [p.name for p in found] == ["a.tiff", "b.svs", "missing.svs"]
