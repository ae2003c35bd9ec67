"""Attention back onto the slide: a per-patch score painted over the thumbnail, and top-k tiles.

Scores are shown as percentiles within the slide (as CLAM does): ABMIL attention is a softmax
over thousands of patches, so raw values are tiny and their scale differs between slides.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from export.atomic import atomic_path


def percentiles(values: np.ndarray) -> np.ndarray:
    """Rank of each value in [0, 1] (ties share the same rank); one value maps to 1."""
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return np.ones(len(values))
    sorted_values = np.sort(values)
    return np.searchsorted(sorted_values, values, side="right") / len(values)


def score_map(coords: np.ndarray, size_level0: int, scores: np.ndarray, dimensions: tuple[int, int],
              shape: tuple[int, int]) -> np.ndarray:
    """Float map of `shape` (h, w) covering the slide: each patch's score on its footprint, NaN elsewhere."""
    h, w = shape
    sx, sy = w / dimensions[0], h / dimensions[1]
    out = np.full((h, w), np.nan, np.float32)
    for (x, y), score in zip(np.asarray(coords), scores):
        x0, y0 = int(np.floor(x * sx)), int(np.floor(y * sy))
        x1, y1 = max(x0 + 1, int(np.ceil((x + size_level0) * sx))), max(y0 + 1, int(np.ceil((y + size_level0) * sy)))
        out[y0:y1, x0:x1] = score
    return out


OVERLAY_ROWS = 64  # rows blended at a time (about 45 bytes a pixel of temporaries)


def overlay(thumbnail: np.ndarray, scores: np.ndarray, alpha: float = 0.5, cmap: str = "inferno") -> np.ndarray:
    """Blend a [0, 1] score map (NaN = not scored) over an RGB thumbnail of the same size, in bands of rows and
    through the colour map's table, so that memory follows the image (an 8192-px heatmap took 2.9 GB at once)."""
    from matplotlib import colormaps

    colour_map = colormaps[cmap]
    table = (colour_map(np.arange(colour_map.N))[:, :3] * 255).astype(np.float32)
    out = np.array(thumbnail, np.uint8)
    for y in range(0, len(scores), OVERLAY_ROWS):
        band, rows = scores[y:y + OVERLAY_ROWS], out[y:y + OVERLAY_ROWS]
        scored = ~np.isnan(band)
        index = np.minimum((band[scored] * colour_map.N).astype(np.intp), colour_map.N - 1)  # as matplotlib indexes
        rows[scored] = ((1 - alpha) * rows[scored].astype(np.float32) + alpha * table[index]).astype(np.uint8)
    return out


COLOUR_BAR_PX = 64  # width of the scale panel beside a heatmap


def with_colour_bar(image: np.ndarray, cmap: str = "inferno") -> np.ndarray:
    """Add the scale beside a heatmap: the colour map from the slide's least to most attended patches."""
    from matplotlib import colormaps

    h = image.shape[0]
    canvas = Image.new("RGB", (image.shape[1] + COLOUR_BAR_PX, h), "white")
    canvas.paste(Image.fromarray(image), (0, 0))
    top, bottom = 16, max(h - 16, 17)
    ramp = np.linspace(1.0, 0.0, bottom - top)[:, None].repeat(14, axis=1)
    canvas.paste(Image.fromarray((colormaps[cmap](ramp)[..., :3] * 255).astype(np.uint8)), (image.shape[1] + 6, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((image.shape[1] + 4, 2), "attention", fill="black")
    draw.text((image.shape[1] + 24, top), "top", fill="black")
    draw.text((image.shape[1] + 24, bottom - 11), "least", fill="black")
    return np.asarray(canvas)


def tile_grid(patches: list[np.ndarray], captions: list[str], columns: int = 4, tile_px: int = 192) -> np.ndarray:
    """Patches side by side (resized to `tile_px`), each with a caption strip underneath."""
    rows = max(1, -(-len(patches) // columns))
    strip = 16
    canvas = Image.new("RGB", (columns * tile_px, rows * (tile_px + strip)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (patch, caption) in enumerate(zip(patches, captions)):
        x, y = (i % columns) * tile_px, (i // columns) * (tile_px + strip)
        canvas.paste(Image.fromarray(patch).resize((tile_px, tile_px), Image.Resampling.BILINEAR), (x, y))
        draw.text((x + 3, y + tile_px + 2), caption, fill="black")
    return np.asarray(canvas)


def with_notice(image: np.ndarray, notice: str) -> np.ndarray:
    """Add a caption band under the image (e.g. "synthetic demo model, not for diagnosis")."""
    if not notice:
        return image
    band = 18
    canvas = Image.new("RGB", (image.shape[1], image.shape[0] + band), (255, 255, 200))
    canvas.paste(Image.fromarray(image), (0, 0))
    ImageDraw.Draw(canvas).text((4, image.shape[0] + 3), notice, fill="black")
    return np.asarray(canvas)


def save_png(path: str | Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
