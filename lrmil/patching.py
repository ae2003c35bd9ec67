"""Two-resolution patch grid: pure arithmetic on a tissue mask, the slide size and its scale.

The student grid tiles the slide with squares that each cover exactly ratio x ratio teacher
squares, so a 5x patch and its 16 20x children share one level-0 coordinate frame. A teacher
patch is kept when enough of it is tissue; a student patch is kept when any child is kept, and
its `children` row holds the teacher indices (row-major within the block, -1 for background).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from lrmil.config import PatchConfig, magnification_for_mpp, mpp_for_magnification
from lrmil.slide import best_level

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridLevel:
    """One resolution of the grid: where to read and how to scale."""

    coords: np.ndarray  # [N, 2] int64 level-0 (x, y) of each patch's top-left corner
    size_level0: int  # side of a patch in level-0 pixels
    patch_px: int  # side after resizing, what the encoder sees
    magnification: float  # target magnification (20x teacher, 5x student)
    read_level: int  # pyramid level read before resizing

    def __len__(self) -> int:
        return len(self.coords)

    @property
    def enlargement(self) -> float:
        """How many times a patch is enlarged to `patch_px`: above 1 when the slide was scanned coarser than
        `magnification`, and the encoder sees interpolated pixels instead of the detail it learned from."""
        return self.patch_px / self.size_level0


def note_if_enlarged(path, level: GridLevel, name: str, mpp: float) -> None:
    """One line for a slide scanned coarser than the `name` path reads (a 10x scan on the 20x path): its patches
    are enlarged, and what the model says of them is said of blur."""
    if level.enlargement > 1:
        log.warning("%s: scanned at %.3gx (%g um/px), coarser than the %gx the %s path reads: its patches are "
                    "enlarged %.2gx, so the encoder sees interpolated pixels, not the detail it learned from", path,
                    magnification_for_mpp(mpp), mpp, level.magnification, name, level.enlargement)


def note_if_no_tissue(path, grid: PatchGrid) -> None:
    """One line for a slide whose mask is empty (blank glass, or a stain paler than the saturation floor): its grid
    and feature file hold no patches, which `lrmil train` would only name later, as a slide it skips."""
    if len(grid.teacher) == 0:
        log.warning("%s: no tissue found, so no patches (blank glass? a stain paler than --min-saturation? see its "
                    "mask PNG)", path)


@dataclass(frozen=True)
class PatchGrid:
    teacher: GridLevel
    student: GridLevel
    children: np.ndarray  # [N_student, ratio*ratio] int64 index into teacher.coords, -1 = background
    mpp: float  # level-0 microns per pixel
    dimensions: tuple[int, int]  # level-0 (width, height)


def teacher_size_level0(mpp: float, cfg: PatchConfig) -> int:
    """Level-0 side of a teacher patch; scans within tolerance of the target are read 1:1."""
    scale = mpp_for_magnification(cfg.teacher_magnification) / mpp
    if abs(scale - 1.0) <= cfg.mpp_tolerance:
        scale = 1.0
    return max(1, int(round(cfg.teacher_px * scale)))


def _cell_fractions(mask: np.ndarray, dimensions: tuple[int, int], cell: int, nx: int, ny: int) -> np.ndarray:
    """Tissue fraction of each level-0 cell (ny x nx grid of side `cell`); outside the slide counts as background."""
    mh, mw = mask.shape
    sx, sy = mw / dimensions[0], mh / dimensions[1]  # mask px per level-0 px
    integral = np.zeros((mh + 1, mw + 1), np.float64)
    integral[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.float64), axis=1)
    x_edges = np.clip(np.round(np.arange(nx + 1) * cell * sx).astype(int), 0, mw)
    y_edges = np.clip(np.round(np.arange(ny + 1) * cell * sy).astype(int), 0, mh)
    sums = (integral[y_edges[1:, None], x_edges[None, 1:]] - integral[y_edges[:-1, None], x_edges[None, 1:]]
            - integral[y_edges[1:, None], x_edges[None, :-1]] + integral[y_edges[:-1, None], x_edges[None, :-1]])
    area = (cell * sx) * (cell * sy)  # a full cell, so cells cut by the slide border count partially
    return sums / max(area, 1e-9)


def children_line_up(student_coords: np.ndarray, student_size: int, children: np.ndarray,
                     teacher_coords: np.ndarray) -> bool:
    """True when every children link of a 5x grid lands on the 20x patch at its place in the block: the
    two feature files were cut from one grid. A 20x grid cut with other tissue settings shifts the indices."""
    if children.ndim != 2 or children.shape[1] == 0:
        return False
    ratio = int(round(children.shape[1] ** 0.5))
    rows, slots = np.nonzero(children >= 0)
    if len(rows) and int(children.max()) >= len(teacher_coords):
        return False
    expected = student_coords[rows] + np.stack([slots % ratio, slots // ratio], axis=1) * (student_size // ratio)
    return bool(np.array_equal(teacher_coords[children[rows, slots]], expected))


def make_grid(mask: np.ndarray, dimensions: tuple[int, int], mpp: float,
              level_downsamples: tuple[float, ...], cfg: PatchConfig) -> PatchGrid:
    """Tissue mask (any resolution, covering the whole slide) -> two-resolution grid."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    t_size = teacher_size_level0(mpp, cfg)
    s_size = cfg.ratio * t_size
    n_sx, n_sy = -(-dimensions[0] // s_size), -(-dimensions[1] // s_size)  # partial border patches included
    n_tx, n_ty = n_sx * cfg.ratio, n_sy * cfg.ratio
    keep = _cell_fractions(mask.astype(bool), dimensions, t_size, n_tx, n_ty) >= cfg.min_tissue
    ty, tx = np.nonzero(keep)  # row-major order
    teacher_index = np.full((n_ty, n_tx), -1, np.int64)
    teacher_index[ty, tx] = np.arange(len(tx))
    # [n_sy, ratio, n_sx, ratio] -> [n_sy, n_sx, ratio*ratio]: the 16 children of each student cell
    blocks = teacher_index.reshape(n_sy, cfg.ratio, n_sx, cfg.ratio).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(n_sy, n_sx, cfg.ratio * cfg.ratio)
    sy, sx = np.nonzero((blocks >= 0).any(axis=-1))
    t_coords = np.stack([tx, ty], axis=1).astype(np.int64) * t_size
    s_coords = np.stack([sx, sy], axis=1).astype(np.int64) * s_size
    teacher = GridLevel(t_coords, t_size, cfg.teacher_px, cfg.teacher_magnification,
                        best_level(level_downsamples, t_size / cfg.teacher_px))
    student = GridLevel(s_coords, s_size, cfg.student_px, cfg.student_magnification,
                        best_level(level_downsamples, s_size / cfg.student_px))
    return PatchGrid(teacher, student, blocks[sy, sx].astype(np.int64), float(mpp),
                     (int(dimensions[0]), int(dimensions[1])))
