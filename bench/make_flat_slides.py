"""Large slides without a pyramid OpenSlide sees, small on disk: white glass with CMU-1-Small-Region's tissue.

They measure what reading a slide without a usable pyramid costs (docs/lrmil.md: "A slide without a pyramid").
The figures there (2026-12-06) came from peak RSS under `/usr/bin/time -v`:

    .venv/bin/python bench/make_flat_slides.py tiled 20000 /tmp/flat20k.tif
    /usr/bin/time -v .venv/bin/lrmil predict /tmp/flat20k.tif --out /tmp/flat_out   # "Maximum resident set size"

Kinds: `tiled` (one level, tiled: generic TIFF), `strips` (one level, untiled: PIL reads it whole), `pyr` (the
same with reduced levels in the main IFD chain, as `vips tiffsave --tile --pyramid` writes: the pyramid
OpenSlide uses), `ome` (reduced levels in SubIFDs, scale only in the OME-XML, as QuPath and Bio-Formats write).
"""

from __future__ import annotations

import argparse

import numpy as np
import openslide
import tifffile

MPP = 0.5
TISSUE_PX = 4096
GLASS = 245


def tissue_block(slide_path: str) -> np.ndarray:
    slide = openslide.OpenSlide(slide_path)
    region = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
    return np.tile(region, (2, 2, 1))[:TISSUE_PX, :TISSUE_PX]


def canvas_rows(tissue: np.ndarray, size: int, y0: int, y1: int) -> np.ndarray:
    """Rows y0:y1 of a size x size slide: tissue blocks on a 3 x 3 lattice, the rest glass."""
    out = np.full((y1 - y0, size, 3), GLASS, np.uint8)
    step = size // 3
    for oy in range(500, size, step):
        for ox in range(500, size, step):
            a, b = max(y0, oy), min(y1, oy + TISSUE_PX)
            if a < b:
                width = min(TISSUE_PX, size - ox)
                out[a - y0:b - y0, ox:ox + width] = tissue[a - oy:b - oy, :width]
    return out


def tiles(tissue: np.ndarray, size: int, tile: int = 512):
    for ty in range(0, size, tile):
        band = canvas_rows(tissue, size, ty, min(size, ty + tile))
        band = np.pad(band, ((0, tile - band.shape[0]), (0, -size % tile), (0, 0)), constant_values=GLASS)
        for tx in range(0, band.shape[1], tile):
            yield band[:, tx:tx + tile]


def reduced(tissue: np.ndarray, size: int, factor: int) -> np.ndarray:
    return np.concatenate([canvas_rows(tissue, size, y, min(size, y + 1024))[::factor, ::factor]
                           for y in range(0, size, 1024)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("tiled", "strips", "pyr", "ome"))
    parser.add_argument("size", type=int, help="width and height in pixels")
    parser.add_argument("out")
    parser.add_argument("--slide", default="../shared/data/slides/CMU-1-Small-Region.svs", help="tissue source")
    args = parser.parse_args()
    tissue, size = tissue_block(args.slide), args.size
    pixels = dict(photometric="rgb", compression="deflate")
    scale = dict(resolution=(1e4 / MPP, 1e4 / MPP), resolutionunit="CENTIMETER")
    shape = dict(shape=(size, size, 3), dtype=np.uint8)
    with tifffile.TiffWriter(args.out, bigtiff=True, ome=args.kind == "ome") as tif:
        if args.kind == "strips":
            rows = np.concatenate([canvas_rows(tissue, size, y, min(size, y + 64)) for y in range(0, size, 64)])
            tif.write(rows, rowsperstrip=64, **scale, **pixels)
        elif args.kind in ("tiled", "pyr"):
            tif.write(tiles(tissue, size), tile=(512, 512), **shape, **scale, **pixels)
            if args.kind == "pyr":
                for factor in (4, 16):
                    tif.write(reduced(tissue, size, factor), tile=(512, 512), subfiletype=1, **pixels,
                              resolution=(1e4 / MPP / factor, 1e4 / MPP / factor), resolutionunit="CENTIMETER")
        else:
            meta = {"axes": "YXS", "PhysicalSizeX": MPP, "PhysicalSizeY": MPP}
            tif.write(tiles(tissue, size), tile=(512, 512), subifds=2, metadata=meta, **shape, **pixels)
            for factor in (4, 16):
                tif.write(reduced(tissue, size, factor), tile=(512, 512), subfiletype=1, metadata=None, **pixels)


if __name__ == "__main__":
    main()
