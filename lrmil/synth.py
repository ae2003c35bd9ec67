"""Synthetic labelled slides whose class signal lives in fine detail (plain at 20x, blurred at 5x).

A slide is procedural: every pixel is a function of its level-0 coordinates and the slide seed,
so tiles render independently and a 24000-px slide is written tile by tile, never held whole.
Tissue is a thresholded smooth random field; stroma is eosin with mild texture; nuclei sit on a
jittered grid (6-10 px at 20x). On a positive slide a few round "lesions" hold atypical nuclei
whose chromatin carries pixel-scale intensity texture (iid speckle, checkerboard or stripes: one
per class) and which are slightly darker, larger and more crowded. A 4x4 box average (20x -> 5x)
cancels the texture and shrinks the nuclei to 2-3 px blobs, so at 5x the lesion survives only as
a subtle shift in blob size, contrast and density: a weak cue of what 20x shows plainly.
Colours follow Beer-Lambert mixing of haematoxylin and eosin optical densities.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from export.jsonconfig import read_json
from lrmil.config import SynthConfig

FIELD_CELL = 64  # level-0 px per cell of the low-resolution tissue field
HAEMATOXYLIN = np.array([0.65, 0.70, 0.29], np.float32) * 1.6
EOSIN = np.array([0.07, 0.99, 0.11], np.float32) * 1.2
MAX_CLASSES = 4  # class 0 (no lesion) plus three fine textures
PYRAMID_FACTOR = 4  # level 1 is 5x for a 20x slide: the student path reads it directly


@dataclass(frozen=True)
class SlideSpec:
    """All random choices of one slide; rendering any region is a pure function of this."""

    slide_id: str
    size: int
    seed: int
    label: int
    field: np.ndarray  # low-resolution tissue field (FIELD_CELL px per cell)
    threshold: float  # tissue where the interpolated field exceeds this
    lesions: np.ndarray  # [L, 3] level-0 (x, y, radius)


def _hash(seed: int, *keys: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) from integer keys (splitmix64 finaliser): same inputs, same numbers, any tiling."""
    h = np.full(np.broadcast(*keys).shape, np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64), np.uint64)
    with np.errstate(over="ignore"):
        for key in keys:
            h ^= (np.asarray(key).astype(np.int64).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
                  + (h << np.uint64(6)))
            h ^= h >> np.uint64(30)
            h *= np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(27)
            h *= np.uint64(0x94D049BB133111EB)
            h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) / float(2**53)


def make_spec(cfg: SynthConfig, index: int, label: int) -> SlideSpec:
    """Draw slide `index` of the set: its tissue field and, for label > 0, its lesions."""
    rng = np.random.default_rng([cfg.seed, index])
    cells = -(-cfg.size // FIELD_CELL) + 1
    field = ndimage.gaussian_filter(rng.standard_normal((cells, cells)), sigma=max(2.0, cells / 10))
    ramp = np.minimum(np.arange(cells), np.arange(cells)[::-1]) / max(1.0, cells * 0.08)
    field = (field - field.mean()) / (field.std() + 1e-9) - 3.0 * (1 - np.clip(np.minimum.outer(ramp, ramp), 0, 1))
    threshold = float(np.quantile(field, 1.0 - cfg.tissue_fraction))
    lesions = np.zeros((0, 3), np.float64)
    if label > 0:
        count = int(rng.integers(cfg.lesions[0], cfg.lesions[1] + 1))
        inner = np.argwhere(field > threshold + 0.5 * (field.max() - threshold))
        picks = inner[rng.integers(0, len(inner), count)]
        radii = rng.uniform(*cfg.lesion_radius_px, count)
        lesions = np.column_stack([picks[:, 1] * FIELD_CELL, picks[:, 0] * FIELD_CELL, radii]).astype(np.float64)
    return SlideSpec(f"synth_{index:04d}", cfg.size, int(rng.integers(2**31)), label, field, threshold, lesions)


def _fine_texture(label: int, xs: np.ndarray, ys: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Zero-mean pixel-scale texture in [-1, 1]; every variant averages to ~0 over a 4x4 block."""
    if label == 1:
        return np.sign(noise - 0.5)
    if label == 2:
        return ((xs + ys) % 2) * 2.0 - 1.0
    return (xs % 2) * 2.0 - 1.0


def _uniforms(seed: int, xs: np.ndarray, ys: np.ndarray, count: int) -> list[np.ndarray]:
    """`count` (<= 4) independent 16-bit uniforms per pixel from one 64-bit hash."""
    h = np.asarray(_hash(seed, xs, ys) * 2**53, np.uint64)
    return [((h >> np.uint64(13 * i)) & np.uint64(0xFFFF)).astype(np.float32) / 65536.0 for i in range(count)]


def _interp_matrix(coords: np.ndarray, n: int) -> np.ndarray:
    """Linear-interpolation weights [len(coords), n] for positions in cell units (clamped)."""
    coords = np.clip(coords, 0, n - 1)
    lo = np.minimum(coords.astype(int), n - 2)
    frac = (coords - lo).astype(np.float32)
    weights = np.zeros((len(coords), n), np.float32)
    rows = np.arange(len(coords))
    weights[rows, lo], weights[rows, lo + 1] = 1 - frac, frac
    return weights


def _sample_field(field: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear samples of the low-resolution field on the separable grid ys x xs (cell units)."""
    return _interp_matrix(ys, field.shape[0]) @ field.astype(np.float32) @ _interp_matrix(xs, field.shape[1]).T


def render(spec: SlideSpec, x0: int, y0: int, w: int, h: int, cfg: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 [h, w, 3] of a level-0 region, and the mask of its atypical-nucleus pixels."""
    c = cfg.nucleus_cell_px
    bx0, by0 = x0 // c * c, y0 // c * c  # render whole nucleus cells, crop at the end
    ny, nx = -(-(y0 + h - by0) // c), -(-(x0 + w - bx0) // c)
    ys, xs = np.mgrid[by0:by0 + ny * c, bx0:bx0 + nx * c]
    row, col = ys[:, 0] / FIELD_CELL, xs[0] / FIELD_CELL
    tissue = np.clip((_sample_field(spec.field, row, col) - spec.threshold) * 4.0, 0.0, 1.0)  # soft edge
    n = spec.field.shape[0] - 1
    low = _sample_field(spec.field, row * 3.1 % n, col * 3.1 % n)  # stain variation at a finer scale
    u_stroma, u_chromatin, u_fine, u_sensor = _uniforms(spec.seed, xs, ys, 4)
    eosin = tissue * (0.55 + 0.12 * np.tanh(low) + 0.10 * (u_stroma - 0.5))
    # Nuclei: at most one per cell, placed so it stays inside its cell (one distance per pixel).
    gy, gx = np.mgrid[by0 // c:by0 // c + ny, bx0 // c:bx0 // c + nx]
    u_present, u_x, u_y, u_shade = _uniforms(spec.seed + 1, gx, gy, 4)
    atypical_cell = np.zeros(gx.shape, bool)  # a cell whose centre lies in a lesion
    for lx, ly, lr in spec.lesions:
        atypical_cell |= np.hypot((gx + 0.5) * c - lx, (gy + 0.5) * c - ly) < lr
    radius = cfg.nucleus_radius_px[0] + (cfg.nucleus_radius_px[1] - cfg.nucleus_radius_px[0]) * u_shade
    radius = np.where(atypical_cell, np.minimum(radius * cfg.atypical_scale, c / 2 - 1), radius)
    present = u_present < np.where(atypical_cell, cfg.atypical_density, cfg.nucleus_density)
    room = np.maximum(c - 2 * (radius + 1), 0)
    cell = lambda a: np.repeat(np.repeat(a, c, axis=0), c, axis=1)  # noqa: E731  per cell -> per pixel
    centre_x = cell(gx * c + radius + 1 + room * u_x)
    centre_y = cell(gy * c + radius + 1 + room * u_y)
    r = cell(radius)
    d = np.hypot(xs + 0.5 - centre_x, ys + 0.5 - centre_y)
    inside = np.clip(r - d, 0.0, 1.0) * cell(present) * (tissue > 0.5)  # 1-px soft rim
    shade = cell(0.8 + 0.3 * u_shade)
    atypical = cell(atypical_cell) & (inside > 0.5)
    chromatin = 0.12 * (u_chromatin - 0.5)  # normal nuclei: faint texture
    texture = np.zeros(xs.shape, np.float32)
    if spec.label > 0:
        chromatin = np.where(atypical, cfg.coarse_cue, chromatin)
        # in intensity, not optical density: the pattern itself averages out in a 4x4 block
        texture = np.where(atypical, cfg.fine_amplitude * _fine_texture(spec.label, xs, ys, u_fine), 0.0)
    haem = tissue * 0.06 + inside * shade * (1.0 + chromatin)
    eosin = eosin * (1.0 - 0.6 * inside)
    density = haem[..., None].astype(np.float32) * HAEMATOXYLIN + eosin[..., None].astype(np.float32) * EOSIN
    rgb = 255.0 * np.exp(-(density + 0.04)) * (1.0 + texture[..., None]) + 3.0 * (u_sensor[..., None] - 0.5)
    crop = (slice(y0 - by0, y0 - by0 + h), slice(x0 - bx0, x0 - bx0 + w))
    return np.clip(rgb[crop], 0, 255).astype(np.uint8), atypical[crop]


def _box_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    h, w = image.shape[0] // factor, image.shape[1] // factor
    blocks = image[:h * factor, :w * factor].reshape(h, factor, w, factor, -1).astype(np.float32)
    return (blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8)


def _render_tile(job: tuple) -> np.ndarray:
    spec, x, y, tile, cfg = job
    return render(spec, x, y, tile, tile, cfg)[0]


def write_slide(path: str | Path, spec: SlideSpec, cfg: SynthConfig, pool=None) -> None:
    """Pyramidal tiled TIFF (levels /4, /16, ...), rendered tile by tile (by `pool`'s processes, if given); written
    atomically."""
    import tifffile

    from export.atomic import atomic_path

    tile, size = cfg.tile, spec.size
    n = -(-size // tile)
    level1 = np.zeros((-(-n * tile // PYRAMID_FACTOR),) * 2 + (3,), np.uint8)  # 1/16 of the pixels

    def tiles(pool):
        origins = [(tx * tile, ty * tile) for ty in range(n) for tx in range(n)]  # TIFF tile order
        jobs = [(spec, x, y, tile, cfg) for x, y in origins]
        rendered = pool.imap(_render_tile, jobs, chunksize=4) if pool else map(_render_tile, jobs)
        s = tile // PYRAMID_FACTOR
        for (x, y), rgb in zip(origins, rendered):
            level1[y // PYRAMID_FACTOR:y // PYRAMID_FACTOR + s, x // PYRAMID_FACTOR:x // PYRAMID_FACTOR + s] = \
                _box_downsample(rgb, PYRAMID_FACTOR)
            yield rgb

    options = dict(photometric="rgb", compression=cfg.compression, resolutionunit="CENTIMETER")
    if cfg.compression == "jpeg":
        options["compressionargs"] = {"level": cfg.jpeg_quality}
    res = 1e4 / cfg.mpp
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=size > 16384) as tif:
        tif.write(tiles(pool), shape=(size, size, 3), dtype=np.uint8, tile=(tile, tile),
                  resolution=(res, res), description=f"LRMIL synthetic slide {spec.slide_id} (not for diagnosis)",
                  **options)
        level, factor = level1[:size // PYRAMID_FACTOR, :size // PYRAMID_FACTOR], PYRAMID_FACTOR
        while min(level.shape[:2]) >= tile // 2:
            r = res / factor
            tif.write(level, tile=(tile, tile), subfiletype=1, resolution=(r, r), **options)
            level, factor = _box_downsample(level, PYRAMID_FACTOR), factor * PYRAMID_FACTOR


def assign_labels(cfg: SynthConfig) -> list[tuple[int, int]]:
    """(label, fold) per slide: classes balanced, folds stratified, order shuffled by the seed."""
    if not 2 <= cfg.classes <= MAX_CLASSES:
        raise ValueError(f"classes must be between 2 and {MAX_CLASSES}, got {cfg.classes}")
    rng = np.random.default_rng(cfg.seed)
    labels = rng.permutation(np.arange(cfg.count) % cfg.classes)
    folds = np.zeros(cfg.count, int)
    for label in range(cfg.classes):
        members = np.flatnonzero(labels == label)
        folds[members] = (np.arange(len(members)) + int(rng.integers(cfg.folds))) % cfg.folds
    return [(int(lab), int(fold)) for lab, fold in zip(labels, folds)]


def synthesize(out: str | Path, cfg: SynthConfig) -> Path:
    """Write OUT/slides/*.tiff and OUT/labels.csv (slide_id,label,fold); existing slides are kept,
    so a killed run resumes, but only under the settings that made them (OUT/synth_config.json)."""
    from tqdm import tqdm

    from export.atomic import write_json, write_text

    out = Path(out)
    assigned = assign_labels(cfg)  # refuses a class count before anything is written
    settings, record = json.loads(json.dumps(cfg.to_dict())), out / "synth_config.json"
    if record.is_file():
        before = read_json(record)
        changed = sorted(k for k in settings if k != "workers" and before.get(k) != settings[k])
        if changed:
            raise ValueError(f"{out}: its slides were made with other settings ({', '.join(changed)}); "
                             "write to a new folder")
    write_json(record, settings)
    rows = []
    # One pool for the run: spawned workers import numpy and this module afresh, ~1-3 s, which a pool per slide paid
    # again for every slide (six 1024-px slides took 18.9 s with 2 workers against 6.4 s with one).
    pool = multiprocessing.get_context("spawn").Pool(cfg.workers) if cfg.workers > 1 else None
    with pool or nullcontext():
        for index, (label, fold) in enumerate(tqdm(assigned, desc="synthetic slides", unit="slide")):
            spec = make_spec(cfg, index, label)
            path = out / "slides" / f"{spec.slide_id}.tiff"
            if not path.is_file():
                write_slide(path, spec, cfg, pool)
            rows.append((spec.slide_id, label, fold))
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([("slide_id", "label", "fold"), *rows])
    write_text(out / "labels.csv", buffer.getvalue())
    return out / "labels.csv"
