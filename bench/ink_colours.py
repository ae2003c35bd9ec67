"""Which pen-ink colours the tissue mask keeps, and what the ink rule costs real slides.

Marker strokes (8 mask px = 64 um wide, 80 long) are painted on the thumbnail of each real slide, once on the glass
beside the section and once over tissue: the ink's transmittance multiplies what lies under it (glass becomes the
ink's colour). The kept fraction is the share of the stroke's pixels the mask calls tissue (0: left out). Colours:
blue and green as in tests/test_tissue.py; black neutral, bluish and greenish, as scanned markers show; red from the
red-pen ranges of the deephistopath / histolab filters (R above, G and B below each of their corners, here a few
levels inside). For red, it counts the real tissue pixels within 15 levels (every channel) of each red, which a
colour rule for that red would take out. Per real slide (CMU-1-Small-Region; the TCGA slide, which has no MPP, at
0.5 and 0.25 um/px): tissue-mask area and 20x / 5x patches with --keep-ink and with --exclude-ink (the default).

    python bench/ink_colours.py --json bench/results/ink_colours.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lrmil.config import PatchConfig, TissueConfig  # noqa: E402
from lrmil.patching import make_grid  # noqa: E402
from lrmil.slide import open_slide  # noqa: E402
from lrmil.tissue import thumbnail_size, tissue_mask  # noqa: E402

SLIDES = REPO.parent / "shared" / "data" / "slides"
INKS = {"blue": (35, 70, 190), "green": (30, 140, 70), "black": (40, 40, 45), "black, bluish": (30, 40, 70),
        "black, bluish 2": (40, 45, 70), "black, grey-blue": (30, 35, 50), "black, greenish": (35, 55, 45),
        "red, vivid": (200, 40, 60), "red (150,80,90)": (160, 70, 80), "red (110,20,30)": (120, 15, 25),
        "red (185,65,105)": (195, 55, 95), "red (200,120,150)": (210, 110, 140), "red (125,40,70)": (135, 30, 60)}
# (file, --mpp, stroke on glass, stroke over tissue): rows, columns of the thumbnail at 8 um/px
CASES = [("CMU-1-Small-Region.svs", None, np.s_[60:140, 2:10], np.s_[60:140, 70:78]),
         ("TCGA-CR-7395-01A-01-TS1-no-mpp.svs", 0.5, np.s_[10:90, 4:12], np.s_[80:160, 120:128]),
         ("TCGA-CR-7395-01A-01-TS1-no-mpp.svs", 0.25, None, None)]


def painted(thumb: np.ndarray, ink: tuple[int, int, int], where) -> np.ndarray:
    out = thumb.copy()
    glass = np.median(thumb[:6, :6].reshape(-1, 3), axis=0)
    out[where] = np.clip(out[where] * (np.array(ink) / glass), 0, 255).astype(np.uint8)
    return out


def measure(name: str, mpp: float | None, on_glass, on_tissue) -> dict:
    cfg, patch = TissueConfig(), PatchConfig()
    with open_slide(SLIDES / name, mpp=mpp) as reader:
        thumb = reader.thumbnail(thumbnail_size(reader.dimensions, reader.mpp, cfg))
        dims, mpp, downsamples = reader.dimensions, reader.mpp, reader.level_downsamples
    result = {"slide": name, "mpp": mpp, "thumbnail": list(thumb.shape[:2])}
    for label, exclude in [("keep_ink", False), ("exclude_ink", True)]:
        mask = tissue_mask(thumb, replace(cfg, exclude_ink=exclude))
        grid = make_grid(mask, dims, mpp, downsamples, patch)
        mm2 = mask.sum() * (dims[0] * mpp / mask.shape[1]) * (dims[1] * mpp / mask.shape[0]) / 1e6
        result[label] = {"mask_px": int(mask.sum()), "mask_mm2": round(float(mm2), 3),
                         "patches_20x": len(grid.teacher.coords), "patches_5x": len(grid.student.coords)}
    tissue = thumb[tissue_mask(thumb, cfg)].astype(int)
    result["tissue_px_near_red"] = {ink: int((np.abs(tissue - rgb).max(axis=1) <= 15).sum())
                                    for ink, rgb in INKS.items() if ink.startswith("red")}
    if on_glass is not None:
        base = tissue_mask(thumb, cfg)
        result["tissue_under_stroke"] = {"glass": float(base[on_glass].mean()), "tissue": float(base[on_tissue].mean())}
        result["kept"] = {ink: {where: round(float(tissue_mask(painted(thumb, rgb, s), cfg)[s].mean()), 3)
                                for where, s in [("glass", on_glass), ("tissue", on_tissue)]}
                          for ink, rgb in INKS.items()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    results = [measure(*case) for case in CASES]
    for r in results:
        print(f"{r['slide']} at {r['mpp']:g} um/px, thumbnail {r['thumbnail']}")
        for label in ("keep_ink", "exclude_ink"):
            print(f"  {label:12s} {r[label]}")
        print(f"  tissue px within 15 levels of a red: {r['tissue_px_near_red']}")
        for ink, kept in r.get("kept", {}).items():
            print(f"  {ink:18s} {str(INKS[ink]):15s} kept on glass {kept['glass']:.2f}, "
                  f"over tissue {kept['tissue']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
