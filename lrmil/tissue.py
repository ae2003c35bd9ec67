"""Tissue mask from a thumbnail: pure functions, testable without a slide.

Stained tissue is saturated, glass and background are not, so Otsu's threshold on the HSV
saturation channel separates them across stains and scanners; a floor keeps a blank slide empty.
Blue and green pen ink is saturated too, but passes more green than red light, where haematoxylin, eosin and DAB
all pass more red than green (Ruifrok and Johnston's stain vectors). Black ink that is neutral has next to no
saturation, as has a scanner's black or transparent fill; a bluish or greenish black is saturated, with green only a
few levels above red, but it is dark in all three channels, where haematoxylin still passes blue and dark H&E (dense
nuclei, a fold) passes clearly more red than green. Such pixels are left out first (`exclude_ink`; off for slides
stained blue or green, such as Alcian blue or a trichrome). Red ink is not: red markers share eosin's and a red
fold's colours (bench/README.md, "Pen ink"). Morphology then removes speckle, bridges gaps, drops small islands and
fills small holes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from lrmil.config import TissueConfig

INK_GREEN_OVER_RED = 15  # 0-255 levels: ink passes this much more green than red; stains pass more red than green
INK_DARK = 100  # 0-255: below this in all three channels, passing no less green than red is black ink


def thumbnail_size(dimensions: tuple[int, int], mpp: float, cfg: TissueConfig) -> int:
    """Longer side (px) of the thumbnail that puts the mask at `cfg.mask_mpp` microns per pixel."""
    return max(8, int(round(max(dimensions) * mpp / cfg.mask_mpp)))


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return xx * xx + yy * yy <= radius * radius


def _otsu(values: np.ndarray) -> float:
    """Otsu threshold of values in [0, 1]; 1.0 (nothing above) when they are all equal."""
    hist, edges = np.histogram(values, bins=256, range=(0.0, 1.0))
    if np.count_nonzero(hist) < 2:
        return 1.0
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(centers[np.argmax(between[:-1])])


def _remove_small(mask: np.ndarray, max_px: int) -> np.ndarray:
    """Drop connected components (8-connectivity) of at most `max_px` pixels."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes > max_px
    keep[0] = False
    return keep[labels]


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation in [0, 1] of an RGB uint8 image."""
    rgb = rgb.astype(np.float32)
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    return np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0)


def pen_ink(rgb: np.ndarray) -> np.ndarray:
    """Pixels of an RGB uint8 image that are blue, green or black pen ink, not H&E or DAB: clearly more green than
    red, or dark and no less green than red (a scanner's colour cast, which the margin allows for, shrinks with the
    light)."""
    green_over_red = rgb[..., 1].astype(np.int16) - rgb[..., 0]
    dark = rgb.max(axis=-1) < INK_DARK
    return (green_over_red > INK_GREEN_OVER_RED) | (dark & (green_over_red >= 0))


def tissue_mask(thumbnail: np.ndarray, cfg: TissueConfig) -> np.ndarray:
    """RGB uint8 thumbnail [h, w, 3] -> boolean tissue mask [h, w]."""
    if thumbnail.ndim != 3 or thumbnail.shape[-1] != 3:
        raise ValueError(f"expected an RGB thumbnail [h, w, 3], got shape {thumbnail.shape}")
    sat = saturation(thumbnail)
    if cfg.exclude_ink:
        sat[pen_ink(thumbnail)] = 0.0  # as glass, before Otsu: ink neither counts nor shifts the threshold
    if cfg.blur_sigma > 0:
        sat = ndimage.gaussian_filter(sat, cfg.blur_sigma)
    mask = sat > max(_otsu(sat), cfg.min_saturation)
    if cfg.close_radius > 0:
        mask = ndimage.binary_closing(mask, _disk(cfg.close_radius), border_value=0)
    if cfg.open_radius > 0:
        mask = ndimage.binary_opening(mask, _disk(cfg.open_radius))
    mask = _remove_small(mask, cfg.min_object_px)
    if not mask.any():
        return mask
    background = _remove_small(~mask, cfg.max_hole_px)  # parts big enough to stay background
    return ~background


def overlay(thumbnail: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Thumbnail with the mask outline in green and background dimmed, for review."""
    out = thumbnail.astype(np.float32)
    out[~mask] = out[~mask] * 0.5 + 127
    edge = mask & ~ndimage.binary_erosion(mask, iterations=max(1, min(mask.shape) // 300))
    out[edge] = (0, 200, 0)
    return out.astype(np.uint8)


def save_mask_png(path: str | Path, thumbnail: np.ndarray, mask: np.ndarray) -> None:
    """Write the review overlay atomically as PNG."""
    from PIL import Image

    from export.atomic import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(overlay(thumbnail, mask)).save(tmp, format="PNG")
