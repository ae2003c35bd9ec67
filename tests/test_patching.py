"""The two-resolution grid: pure arithmetic on masks, sizes and scales."""

from __future__ import annotations

import numpy as np
import pytest

from lrmil.config import PatchConfig
from lrmil.patching import children_line_up, make_grid, teacher_size_level0

CFG = PatchConfig()


def _children_consistent(grid, ratio=4):
    """Each valid child's coords are its parent's plus its (dx, dy) block offset."""
    t = grid.teacher.size_level0
    for parent, kids in zip(grid.student.coords, grid.children):
        for k, idx in enumerate(kids):
            if idx >= 0:
                expected = parent + np.array([k % ratio, k // ratio]) * t
                np.testing.assert_array_equal(grid.teacher.coords[idx], expected)


def test_full_mask_gives_complete_families():
    grid = make_grid(np.ones((64, 64), bool), (2048, 2048), 0.5, (1.0, 4.0), CFG)
    assert len(grid.teacher) == 64 and len(grid.student) == 4
    assert grid.teacher.size_level0 == 256 and grid.student.size_level0 == 1024
    assert grid.children.shape == (4, 16) and (grid.children >= 0).all()
    assert sorted(grid.children.ravel().tolist()) == list(range(64))  # every 20x patch has one parent
    assert grid.teacher.read_level == 0 and grid.student.read_level == 1  # 5x read straight from level 1
    assert grid.student.magnification == 5.0 and grid.teacher.magnification == 20.0
    _children_consistent(grid)


def test_partial_mask_marks_background_children():
    mask = np.zeros((64, 64), bool)
    mask[:, :24] = True  # left 3/8 of a 2048-px slide is tissue: teacher columns 0..2
    grid = make_grid(mask, (2048, 2048), 0.5, (1.0,), CFG)
    assert set(grid.teacher.coords[:, 0].tolist()) == {0, 256, 512}
    assert len(grid.student) == 2  # only the left column of parents has tissue
    assert ((grid.children >= 0).sum(axis=1) == 12).all()  # 3 of 4 child columns
    assert (grid.children[:, 3::4] == -1).all()
    _children_consistent(grid)


def test_forty_x_scan_reads_from_the_pyramid():
    grid = make_grid(np.ones((32, 32), bool), (8192, 8192), 0.25, (1.0, 2.0, 8.0), CFG)
    assert grid.teacher.size_level0 == 512 and grid.student.size_level0 == 2048
    assert grid.teacher.read_level == 1  # downsample 2 matches 512 -> 256
    assert grid.student.read_level == 2  # downsample 8 is still sharper than 2048 -> 256
    assert grid.teacher.patch_px == 256


def test_near_target_mpp_is_read_natively_and_far_ones_are_scaled():
    assert teacher_size_level0(0.499, CFG) == 256
    assert teacher_size_level0(0.5, PatchConfig(teacher_px=224)) == 224
    assert teacher_size_level0(0.3, CFG) == round(256 * 0.5 / 0.3)
    assert teacher_size_level0(0.499, PatchConfig(mpp_tolerance=0.0)) == 257


def test_border_patches_count_only_the_part_inside_the_slide():
    # 1100-px slide: cells starting at 1024 hold 76 px of slide, 76/256 = 0.30 of a full cell.
    grid = make_grid(np.ones((110, 110), bool), (1100, 1100), 0.5, (1.0,), CFG)
    coords = {tuple(c) for c in grid.teacher.coords.tolist()}
    assert len(coords) == 16 + 4 + 4  # interior, right strip, bottom strip
    assert (1024, 1024) not in coords  # the corner cell is only 0.09 inside
    assert len(grid.student) == 3
    strict = make_grid(np.ones((110, 110), bool), (1100, 1100), 0.5, (1.0,), PatchConfig(min_tissue=0.5))
    assert len(strict.teacher) == 16 and len(strict.student) == 1
    _children_consistent(grid)


def test_empty_mask_gives_empty_grid():
    grid = make_grid(np.zeros((16, 16), bool), (2048, 2048), 0.5, (1.0,), CFG)
    assert len(grid.teacher) == 0 and len(grid.student) == 0
    assert grid.children.shape == (0, 16)


def test_min_tissue_threshold():
    mask = np.zeros((64, 64), bool)
    mask[0:8, 0:3] = True  # 3/8 of the first teacher cell
    assert len(make_grid(mask, (2048, 2048), 0.5, (1.0,), PatchConfig(min_tissue=0.3)).teacher) == 1
    assert len(make_grid(mask, (2048, 2048), 0.5, (1.0,), PatchConfig(min_tissue=0.5)).teacher) == 0
    assert len(make_grid(mask, (2048, 2048), 0.5, (1.0,), PatchConfig(min_tissue=0.375)).teacher) == 1  # at it: kept


def test_children_line_up_only_with_the_grid_they_were_cut_from():
    rng = np.random.default_rng(0)
    mask = rng.random((64, 64)) < 0.4  # patchy tissue: the two thresholds keep different 20x patches
    grid, other = (make_grid(mask, (2048, 2048), 0.5, (1.0,), PatchConfig(min_tissue=t)) for t in (0.25, 0.5))
    assert 0 < len(other.teacher) < len(grid.teacher)
    assert children_line_up(grid.student.coords, grid.student.size_level0, grid.children, grid.teacher.coords)
    assert children_line_up(other.student.coords, other.student.size_level0, other.children, other.teacher.coords)
    assert not children_line_up(other.student.coords, other.student.size_level0, other.children, grid.teacher.coords)
    assert not children_line_up(grid.student.coords, grid.student.size_level0, grid.children, other.teacher.coords)
    assert not children_line_up(grid.student.coords, grid.student.size_level0, grid.children[:, :0],
                                grid.teacher.coords)


def test_bad_mask_shape():
    with pytest.raises(ValueError, match="2-D"):
        make_grid(np.ones((4, 4, 3), bool), (100, 100), 0.5, (1.0,), CFG)
