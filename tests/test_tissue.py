"""Tissue masks: pure function checks on drawn thumbnails, plus the real CMU-1 slide."""

from __future__ import annotations

import numpy as np
from PIL import Image

from lrmil.config import TissueConfig
from lrmil.slide import open_slide
from lrmil.tissue import save_mask_png, saturation, thumbnail_size, tissue_mask

PINK = (220, 120, 180)


def _drawn(size=200):
    """White glass, a pink disk with a small hole and a large hole, plus a speck of dust."""
    yy, xx = np.mgrid[:size, :size]
    image = np.full((size, size, 3), 245, np.uint8)
    disk = (yy - 100) ** 2 + (xx - 100) ** 2 < 70 ** 2
    image[disk] = PINK
    image[(yy - 80) ** 2 + (xx - 80) ** 2 < 4 ** 2] = 245  # small hole: filled
    image[(yy - 120) ** 2 + (xx - 120) ** 2 < 20 ** 2] = 245  # large hole: stays background
    image[5:7, 190:192] = PINK  # 4-px speck: removed
    return image


def test_mask_finds_tissue_removes_speck_and_fills_small_holes():
    mask = tissue_mask(_drawn(), TissueConfig(blur_sigma=0.0))
    assert mask[100, 60] and mask[80, 80]  # tissue, and the small hole filled
    assert not mask[120, 120]  # the large hole is kept
    assert not mask[6, 191] and not mask[0, 0]  # speck and glass
    expected = np.pi * (70 ** 2 - 20 ** 2)
    assert abs(mask.sum() - expected) / expected < 0.05


def test_blank_slide_gives_empty_mask():
    blank = np.full((64, 64, 3), 240, np.uint8)
    blank += np.random.default_rng(0).integers(0, 3, blank.shape, dtype=np.uint8)  # sensor noise
    assert not tissue_mask(blank, TissueConfig()).any()


def test_min_saturation_floor_controls_faint_stain():
    image = _drawn()
    faint = np.where(image == 245, 245, 235).astype(np.uint8)  # barely saturated "tissue"
    faint[..., 1] = np.where(image[..., 1] == 245, 245, 225)
    assert saturation(faint).max() < 0.05
    assert not tissue_mask(faint, TissueConfig(min_saturation=0.05)).any()
    assert tissue_mask(faint, TissueConfig(min_saturation=0.01)).any()


def test_thumbnail_size_follows_mask_mpp():
    assert thumbnail_size((24000, 12000), 0.5, TissueConfig(mask_mpp=8.0)) == 1500
    assert thumbnail_size((24000, 12000), 0.25, TissueConfig(mask_mpp=8.0)) == 750


def test_real_slide_mask_and_review_png(shared_data, tmp_path):
    cfg = TissueConfig()
    with open_slide(shared_data / "slides" / "CMU-1-Small-Region.svs") as reader:
        thumb = reader.thumbnail(thumbnail_size(reader.dimensions, reader.mpp, cfg))
    mask = tissue_mask(thumb, cfg)
    assert mask.shape == thumb.shape[:2]
    assert 0.15 < mask.mean() < 0.8  # the section covers part of the region, glass the rest
    assert saturation(thumb)[mask].mean() > 2 * saturation(thumb)[~mask].mean()
    save_mask_png(tmp_path / "m.png", thumb, mask)
    with Image.open(tmp_path / "m.png") as png:
        assert png.size == (thumb.shape[1], thumb.shape[0])
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]  # no temporary file left behind


def test_patch_cli_reports_bad_slides_and_goes_on(shared_data, tmp_path):
    import json

    from typer.testing import CliRunner

    from lrmil.cli import app

    slides = shared_data / "slides"
    result = CliRunner().invoke(app, ["patch", str(slides / "broken.svs"), str(slides / "CMU-1-Small-Region.svs"),
                                      "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output  # ran to the end, one slide failed
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["done"] == 1 and summary["failed"] == 1 and summary["teacher_patches"] > 0
    assert (tmp_path / "masks" / "CMU-1-Small-Region.png").is_file()
    assert (tmp_path / "patches" / "CMU-1-Small-Region.h5").is_file()
    assert "broken.svs" in (tmp_path / "errors.csv").read_text()


def test_blue_and_green_pen_ink_is_not_tissue_unless_kept_while_stains_are():
    """Pen ink beside tissue was counted as tissue: saturated like a stain, Otsu took it in (CLAM's known problem).
    Haematoxylin, eosin and DAB pass more red than green, blue and green ink more green than red."""
    image = np.full((200, 200, 3), 245, np.uint8)
    image[20:80, 20:80] = PINK  # eosin-rich
    image[20:80, 120:180] = (96, 89, 165)  # haematoxylin (Ruifrok and Johnston's vector)
    image[120:180, 20:80] = (150, 100, 60)  # DAB brown
    image[120:180, 110:130] = (35, 70, 190)  # blue marker stroke
    image[120:180, 160:180] = (30, 140, 70)  # green marker stroke
    mask = tissue_mask(image, TissueConfig())
    assert mask[50, 50] and mask[50, 150] and mask[150, 50]
    assert not mask[120:180, 110:130].any() and not mask[120:180, 160:180].any()
    kept = tissue_mask(image, TissueConfig(exclude_ink=False))  # a stain of blue or green dye: Alcian blue
    assert kept[150, 120] and kept[150, 170]


def test_ink_drawn_beside_the_real_slide_s_tissue_leaves_its_grid_as_without_ink(shared_data):
    """The ink rule costs the real slides nothing: CMU-1's grid is the same with it and without it, and a stroke
    drawn on its glass adds no patch."""
    from lrmil.config import PatchConfig
    from lrmil.patching import make_grid

    with open_slide(shared_data / "slides" / "CMU-1-Small-Region.svs") as reader:
        thumb = reader.thumbnail(thumbnail_size(reader.dimensions, reader.mpp, TissueConfig()))
        dimensions, mpp = reader.dimensions, reader.mpp

    def teacher_coords(image, cfg):
        return make_grid(tissue_mask(image, cfg), dimensions, mpp, (1.0,), PatchConfig()).teacher.coords

    plain = teacher_coords(thumb, TissueConfig())
    assert np.array_equal(plain, teacher_coords(thumb, TissueConfig(exclude_ink=False)))
    inked = thumb.copy()
    inked[90:170, 8:18] = (35, 70, 190)  # a blue stroke on the glass left of the section
    assert np.array_equal(teacher_coords(inked, TissueConfig()), plain)
    assert len(teacher_coords(inked, TissueConfig(exclude_ink=False))) > len(plain)


def test_a_scanner_s_blue_cast_on_haematoxylin_is_tissue_not_ink():
    """Ink is green clearly above red (INK_GREEN_OVER_RED); a haematoxylin nucleus under a bluish scanner cast, green
    a few levels above red, is still tissue."""
    image = np.full((200, 200, 3), 245, np.uint8)
    image[40:160, 40:160] = (100, 110, 170)
    assert tissue_mask(image, TissueConfig())[100, 100]


def test_black_marker_on_glass_is_not_tissue_while_dark_stained_tissue_is():
    """A bluish or neutral black marker stroke on glass was tissue: saturated enough, and green only a few levels
    above red. Dark in all three channels and passing no less green than red is ink; haematoxylin still passes blue,
    and dark H&E (a dense nucleus cluster, a fold) passes more red than green."""
    for black in [(25, 30, 40), (30, 35, 50), (30, 40, 70), (40, 45, 70), (50, 55, 75)]:
        image = np.full((200, 200, 3), 245, np.uint8)
        image[20:180, 20:90] = PINK
        image[20:180, 130:140] = black
        mask = tissue_mask(image, TissueConfig())
        assert mask[100, 50] and not mask[20:180, 130:140].any(), black
        assert tissue_mask(image, TissueConfig(exclude_ink=False))[100, 135], black
    for dark in [(40, 10, 42), (69, 63, 143), (42, 0, 10), (60, 45, 95)]:  # CMU-1's darkest, dense H, TCGA's fold
        image = np.full((200, 200, 3), 245, np.uint8)
        image[40:160, 40:160] = dark
        assert tissue_mask(image, TissueConfig())[100, 100], dark


def test_black_marker_beside_the_real_slides_adds_no_patch(shared_data):
    """On both real slides the grid is the same with the ink rule as without it, and a black marker stroke drawn
    on the glass beside the section adds no patch (it did before the rule took dark pixels in)."""
    from lrmil.config import PatchConfig
    from lrmil.patching import make_grid

    for name, mpp, stroke in [("CMU-1-Small-Region.svs", None, np.s_[90:170, 2:12]),
                              ("TCGA-CR-7395-01A-01-TS1-no-mpp.svs", 0.5, np.s_[10:90, 2:12])]:
        with open_slide(shared_data / "slides" / name, mpp=mpp) as reader:
            thumb = reader.thumbnail(thumbnail_size(reader.dimensions, reader.mpp, TissueConfig()))
            dimensions, mpp = reader.dimensions, reader.mpp

        def grid(image, cfg):
            g = make_grid(tissue_mask(image, cfg), dimensions, mpp, (1.0,), PatchConfig())
            return g.teacher.coords, g.student.coords

        plain = grid(thumb, TissueConfig())
        assert all(np.array_equal(a, b) for a, b in zip(plain, grid(thumb, TissueConfig(exclude_ink=False))))
        inked = thumb.copy()
        inked[stroke] = (30, 40, 70)  # a bluish black marker on the glass left of the section
        assert all(np.array_equal(a, b) for a, b in zip(grid(inked, TissueConfig()), plain)), name
