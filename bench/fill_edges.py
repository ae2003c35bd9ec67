"""How far the tissue mask reaches past a section's edge where a scanner's black fill meets it, against glass there.

`bench/make_unusual_slides.py`'s black_fill and transparent_fill are CMU-1-Small-Region with its right 600 and
bottom 500 px out of scan (black after JPEG; alpha 0, which reads as glass). Both go through what `lrmil patch`,
`extract` and `predict` run (`open_slide`, the thumbnail at the mask's scale, `tissue_mask`, default settings). Where
the section crosses a cut line (mask rows for the right one, columns for the bottom one; from the unchanged slide's
mask), the mask's last tissue pixel is compared with the cut line: the median over those rows or columns, in mask
pixels (8 um) and level-0 pixels, and the mask's tissue area.

    python bench/fill_edges.py --json bench/results/fill_edges.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import openslide

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from lrmil.config import TissueConfig  # noqa: E402
from lrmil.slide import open_slide  # noqa: E402
from lrmil.tissue import thumbnail_size, tissue_mask  # noqa: E402
from make_unusual_slides import make, write_tiff  # noqa: E402

CUT_RIGHT, CUT_BOTTOM = 600, 500  # level-0 px out of scan, as make_unusual_slides cuts them


def mask_of(path: Path) -> np.ndarray:
    cfg = TissueConfig()
    reader = open_slide(path)
    return tissue_mask(reader.thumbnail(thumbnail_size(reader.dimensions, reader.mpp, cfg)), cfg)


def reach(mask: np.ndarray, lines: list[int], cut: float, axis: int) -> float:
    """Median over `lines` (rows for axis 1, columns for axis 0) of the last tissue pixel past `cut` (mask px)."""
    last = [np.flatnonzero(mask[i] if axis == 1 else mask[:, i]).max() + 1 for i in lines]
    return float(np.median(last) - cut)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slide", type=Path, default=REPO.parent / "shared" / "data" / "slides" /
                        "CMU-1-Small-Region.svs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with openslide.OpenSlide(args.slide) as slide:
        source = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
        mpp = float(slide.properties[openslide.PROPERTY_NAME_MPP_X])
    height, width = source.shape[:2]
    slides = make(source)
    with tempfile.TemporaryDirectory() as folder:
        masks = {}
        for name in ("unchanged", "black_fill", "transparent_fill"):
            pixels, pyramid = slides[name]
            write_tiff(Path(folder) / f"{name}.tif", pixels, mpp, pyramid)
            masks[name] = mask_of(Path(folder) / f"{name}.tif")
    scale = masks["unchanged"].shape[1] / width  # mask px per level-0 px
    right, bottom = (width - CUT_RIGHT) * scale, (height - CUT_BOTTOM) * scale
    rows = [r for r in range(int(bottom)) if masks["unchanged"][r, int(right):].any()]
    columns = [c for c in range(int(right)) if masks["unchanged"][int(bottom):, c].any()]
    result = {"command": " ".join(sys.argv), "mask_um_per_px": TissueConfig().mask_mpp, "level0_um_per_px": mpp,
              "rows_crossing_right_cut": len(rows), "columns_crossing_bottom_cut": len(columns)}
    for name in ("black_fill", "transparent_fill"):
        past = {"right": reach(masks[name], rows, right, 1), "bottom": reach(masks[name], columns, bottom, 0)}
        result[name] = {"tissue_mask_px": int(masks[name].sum()),
                        **{f"{edge}_edge_past_cut_mask_px": round(v, 2) for edge, v in past.items()},
                        **{f"{edge}_edge_past_cut_level0_px": round(v / scale) for edge, v in past.items()}}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
