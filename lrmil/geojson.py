"""Attention per patch as GeoJSON: the heatmap on the full-resolution slide, in QuPath or any GeoJSON viewer.

One Feature per patch: its square in level-0 pixels (the frame OpenSlide reads, which QuPath's OpenSlide
image server shares; border patches clipped to the slide), a QuPath "tile" object with the patch's attention
and its percentile within the slide as measurements, so that QuPath's Measure > Show measurement maps colours
the slide by attention as the heatmap PNG does on a thumbnail. Import: File > Import objects from file (QuPath
0.4 or later, which reads "objectType" and measurements as a map).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from export.atomic import write_text
from lrmil.heatmap import percentiles


def attention_collection(coords: np.ndarray, size_level0: int, attention: np.ndarray,
                         dimensions: tuple[int, int]) -> dict:
    """A FeatureCollection of the patches at `coords` (level-0 top-left corners), in `coords` order."""
    width, height = dimensions
    features = []
    for (x, y), a, p in zip(coords.tolist(), np.asarray(attention).tolist(), percentiles(attention).tolist()):
        right, bottom = min(x + size_level0, width), min(y + size_level0, height)
        ring = [[x, y], [right, y], [right, bottom], [x, bottom], [x, y]]
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                         "properties": {"objectType": "tile",
                                        "measurements": {"attention": a, "attention percentile": p}}})
    return {"type": "FeatureCollection", "features": features}


def save_attention_geojson(path: str | Path, coords: np.ndarray, size_level0: int, attention: np.ndarray,
                           dimensions: tuple[int, int]) -> None:
    """Written compactly and atomically (a slide of 20 000 patches: a few MB)."""
    collection = attention_collection(coords, size_level0, attention, dimensions)
    write_text(path, json.dumps(collection, separators=(",", ":")) + "\n")
