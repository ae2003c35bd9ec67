"""A 40x resection-sized pyramidal TIFF from real tissue, written tile by tile (bench/README.md, "A 40x resection
slide of 100,000 x 80,000 px").

Texture: CMU-1-Small-Region (20x, 0.499 um/px) enlarged 2x to 40x and mirror-tiled without seams; outline: the
tissue of the TCGA section (a whole resection face), stretched over the slide; outside it, plain glass. Levels /1,
/4, /16, /64 in the main IFD chain (OpenSlide's generic tiled TIFF), deflate with the horizontal predictor (no
imagecodecs needed), 0.25 um/px in the resolution tags. Every pixel is a function of its level-0 position, so each
level is rendered from a box-reduced copy of the texture and the builder holds tiles, never a level:

    .venv/bin/python bench/make_big_slide.py /tmp/big.tif --width 100000 --height 80000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import openslide
import tifffile
from PIL import Image
from scipy import ndimage

MPP = 0.25
TILE = 512
LEVELS = (1, 4, 16, 64)
GLASS = (246, 243, 243)  # the median of CMU-1-Small-Region's empty corner
MASK_STEP = 8  # the outline is evaluated every 8 level-0-grid pixels of a tile and repeated


def texture(slide_path: str) -> np.ndarray:
    """The source tissue at 40x, cropped to sides that every level's factor divides (mirroring then commutes with
    box reduction)."""
    with openslide.OpenSlide(slide_path) as slide:
        rgb = slide.read_region((0, 0), 0, slide.dimensions).convert("RGB")
    up = np.asarray(rgb.resize((rgb.width * 2, rgb.height * 2), Image.Resampling.BILINEAR))
    step = 2 * max(LEVELS)
    return np.ascontiguousarray(up[:up.shape[0] // step * step, :up.shape[1] // step * step])


def outline(slide_path: str) -> np.ndarray:
    """A smooth [0, 1] tissue field of the outline source, about 600 px wide: > 0.5 is tissue."""
    with openslide.OpenSlide(slide_path) as slide:
        rgb = np.asarray(slide.get_thumbnail((600, 600)).convert("RGB")).astype(np.float32)
    saturation = (rgb.max(-1) - rgb.min(-1)) / np.maximum(rgb.max(-1), 1)
    return ndimage.gaussian_filter((saturation > 0.08).astype(np.float32), 1.5)


def reflect(index: np.ndarray, n: int) -> np.ndarray:
    index = index % (2 * n)
    return np.where(index < n, index, 2 * n - 1 - index)


def tiles(tex: np.ndarray, field: np.ndarray, width: int, height: int, factor: int):
    """The level's tiles in TIFF order (row by row), each [TILE, TILE, 3]."""
    h, w = tex.shape[0] // factor, tex.shape[1] // factor
    reduced = np.asarray(Image.fromarray(tex).reduce(factor)) if factor > 1 else tex  # box mean, uint8 throughout
    lw, lh = -(-width // factor), -(-height // factor)
    scale = (field.shape[1] / width, field.shape[0] / height)  # field px per level-0 px
    glass = np.empty((TILE, TILE, 3), np.uint8)
    glass[:] = GLASS
    for y0 in range(0, lh, TILE):
        rows = reflect(np.arange(y0, y0 + TILE), h)
        for x0 in range(0, lw, TILE):
            ys = (np.arange(y0, y0 + TILE, MASK_STEP) + MASK_STEP / 2) * factor * scale[1]
            xs = (np.arange(x0, x0 + TILE, MASK_STEP) + MASK_STEP / 2) * factor * scale[0]
            inside = ndimage.map_coordinates(field, np.meshgrid(ys, xs, indexing="ij"), order=1) > 0.5
            inside &= (ys[:, None] < field.shape[0]) & (xs[None, :] < field.shape[1])
            if not inside.any():
                yield glass
                continue
            tile = reduced[rows[:, None], reflect(np.arange(x0, x0 + TILE), w)[None, :]]
            if not inside.all():
                full = inside.repeat(MASK_STEP, 0).repeat(MASK_STEP, 1)
                tile[~full] = GLASS
            yield tile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--width", type=int, default=100_000)
    parser.add_argument("--height", type=int, default=80_000)
    parser.add_argument("--texture", default="../shared/data/slides/CMU-1-Small-Region.svs")
    parser.add_argument("--outline", default="../shared/data/slides/TCGA-CR-7395-01A-01-TS1-no-mpp.svs")
    args = parser.parse_args()
    tex, field = texture(args.texture), outline(args.outline)
    start = time.perf_counter()
    with tifffile.TiffWriter(args.out, bigtiff=True) as tif:
        for factor in LEVELS:
            shape = (-(-args.height // factor), -(-args.width // factor), 3)
            tif.write(tiles(tex, field, args.width, args.height, factor), shape=shape, dtype=np.uint8,
                      tile=(TILE, TILE), photometric="rgb", compression="zlib", compressionargs={"level": 1},
                      predictor=True, subfiletype=0 if factor == 1 else 1, maxworkers=2,
                      resolution=(1e4 / MPP / factor, 1e4 / MPP / factor), resolutionunit="CENTIMETER")
            print(f"level /{factor}: {shape[1]} x {shape[0]}, {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
