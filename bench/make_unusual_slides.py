"""Slides of unusual content, made from CMU-1-Small-Region's pixels: what `lrmil` does with each is in docs/lrmil.md
("The tissue mask"). Each is a tiled TIFF at the source's 0.499 um/px, with /4 and /16 levels unless named
single-level:

    .venv/bin/python bench/make_unusual_slides.py /tmp/unusual
    .venv/bin/lrmil predict /tmp/unusual --out /tmp/unusual_pred    # predictions.csv: patches per slide

blank (glass only), tiny_biopsy (a 400 x 500 px piece on glass: 5 20x patches, 1 5x patch), black_fill and
transparent_fill (the right 600 and bottom 500 px out of scan: black after JPEG, or alpha 0), ink (blue and green
marker strokes and a black line on the glass beside the section), small (600 x 700 px, under one 5x patch, single
level), single_level (the section 2 x 2, no reduced levels), pale (a quarter of its contrast to glass) and
unchanged (the source as such a TIFF).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import openslide
import tifffile
from PIL import Image

TILE = 256


def write_tiff(path: Path, image: np.ndarray, mpp: float, pyramid: bool = True) -> None:
    """Tiled TIFF with its scale in the resolution tags; levels box-reduced by 4 as a scanner's are."""
    res = 1e4 / mpp
    options = dict(photometric="rgb", compression="zlib", resolutionunit="CENTIMETER", tile=(TILE, TILE))
    if image.shape[-1] == 4:
        options["extrasamples"] = ("UNASSALPHA",)
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, resolution=(res, res), **options)
        factor = 4
        while pyramid and min(image.shape[:2]) // factor >= TILE // 2:
            level = np.asarray(Image.fromarray(image).reduce(factor))
            tif.write(level, subfiletype=1, resolution=(res / factor, res / factor), **options)
            factor *= 4


def glass_like(source: np.ndarray, height: int, width: int) -> np.ndarray:
    """Glass from the source's empty top-left corner, mirrored so that tiles meet without seams."""
    corner = source[20:420, 20:420]
    block = np.concatenate([np.concatenate([corner, corner[:, ::-1]], 1),
                            np.concatenate([corner[::-1], corner[::-1, ::-1]], 1)], 0)
    return np.tile(block, (-(-height // 800), -(-width // 800), 1))[:height, :width].copy()


def jpeg_round_trip(image: np.ndarray, quality: int = 80) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def make(source: np.ndarray) -> dict[str, tuple[np.ndarray, bool]]:
    """Slide name -> (pixels, pyramid)."""
    h, w = source.shape[:2]
    out_of_scan = np.zeros((h, w), bool)
    out_of_scan[:, w - 600:] = out_of_scan[h - 500:] = True
    tiny = glass_like(source, h, w)
    tiny[1000:1400, 1200:1700] = source[1800:2200, 900:1400]
    black = source.copy()
    black[out_of_scan] = 0
    transparent = np.dstack([source, np.full((h, w), 255, np.uint8)])
    transparent[out_of_scan] = 0
    ink, (yy, xx) = source.copy(), np.mgrid[:h, :w]
    ink[(np.abs(xx - 350 - 0.1 * yy) < 70) & (yy > 1200) & (yy < 2700)] = (35, 70, 190)  # blue stroke
    ink[np.abs(np.hypot(xx - 1900, yy - 400) - 250) < 60] = (30, 140, 70)  # green circle
    ink[(np.abs(yy - 2850) < 50) & (xx > 1300) & (xx < 2150)] = (25, 25, 30)  # black line
    pale = (255 - 0.25 * (255 - source.astype(np.float32))).round().astype(np.uint8)
    return {"blank": (glass_like(source, h, w), True), "tiny_biopsy": (tiny, True),
            "black_fill": (jpeg_round_trip(black), True), "transparent_fill": (transparent, True), "ink": (ink, True),
            "small": (source[1700:2300, 800:1500].copy(), False), "single_level": (np.tile(source, (2, 2, 1)), False),
            "pale": (pale, True), "unchanged": (source, True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--slide", default="../shared/data/slides/CMU-1-Small-Region.svs", help="source slide")
    args = parser.parse_args()
    with openslide.OpenSlide(args.slide) as slide:
        source = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
        mpp = float(slide.properties[openslide.PROPERTY_NAME_MPP_X])
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (pixels, pyramid) in make(source).items():
        write_tiff(args.out / f"{name}.tif", pixels, mpp, pyramid)


if __name__ == "__main__":
    main()
