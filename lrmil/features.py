"""Feature extraction job: slides -> tissue mask -> grid -> encoder -> one HDF5 file per slide.

Idempotent and resumable per slide: a slide whose feature file carries the current config hash
and came from the same slide file (path, size, mtime) is skipped. One whose hash differs in the tissue settings
alone (a new mask rule, a changed --min-saturation) has its grid cut again, seconds of no encoding: where it is the
grid the features were encoded on, they are kept and only the file's config is rewritten. A slide that fails (corrupt
file, no MPP, unreadable tile, an id already used in the batch) becomes one row in OUT/errors.csv
and the batch goes on; `strict` re-raises instead. Patches are read by the workers of one DataLoader for the
whole run (each opens the slides it reads itself, keeping the last one open) and encoded in batches, under autocast
on GPU: workers started per slide cost a torch import a slide where they are spawned (macOS, Python 3.14's Linux).

`lrmil patch` (`run_patching`) is here too: the masks and grids alone, rewritten on every run. Their common
step, `segment_and_patch` (slide -> mask -> grid), also cuts stage 1's grids and `lrmil export`'s parity patches.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from export.atomic import write_json
from export.folder_lock import sweep_killed_runs
from lrmil.config import ExtractConfig, PatchConfig, TissueConfig, hash_record
from lrmil.encoders import autocast, create_encoder, preprocess
from lrmil.batch import run_batch
from lrmil.patching import GridLevel, PatchGrid, make_grid, note_if_enlarged, note_if_no_tissue
from lrmil.slide import (SlideReadError, check_not_another_slides, open_slide, read_scaled, slide_file_name, slide_id,
                         slide_source)
from lrmil.store import FeatureFile, feature_dir, is_current, read_features, stored_key, write_features, write_grid
from lrmil.tissue import save_mask_png, thumbnail_size, tissue_mask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlideGrid:
    """What the tissue and patching steps produce for one slide."""

    slide_id: str
    grid: PatchGrid
    thumbnail: np.ndarray
    mask: np.ndarray
    mpp_source: str  # "metadata" or "--mpp"


def segment_and_patch(path: str | Path, tissue: TissueConfig, patch: PatchConfig, mpp: float | None = None,
                      override_mpp: bool = False, sid: str | None = None) -> SlideGrid:
    """Open the slide, build its tissue mask from a thumbnail and cut the two-resolution grid (`sid`: its id in
    the batch, `slide_id` by default)."""
    with open_slide(path, mpp, override_mpp) as reader:
        thumb = reader.thumbnail(thumbnail_size(reader.dimensions, reader.mpp, tissue))
        mask = tissue_mask(thumb, tissue)
        grid = make_grid(mask, reader.dimensions, reader.mpp, reader.level_downsamples, patch)
        mpp_source = reader.mpp_source
    return SlideGrid(sid or slide_id(path), grid, thumb, mask, mpp_source)


def check_resolution(resolution: str) -> None:
    if resolution not in ("teacher", "student"):
        raise ValueError(f"--resolution must be 'teacher' or 'student', got {resolution!r}")


PatchKey = tuple[Path, float, int, int, int, int]  # slide path, mpp, level-0 x and y, size at level 0, px


class PatchDataset(Dataset):
    """uint8 patch [px, px, 3] for a `PatchKey`; each process keeps the last slide it read open.

    A patch that cannot be read comes back as the reason (a str), which `encode_level` raises in the main
    process: raised in a DataLoader worker, it would arrive as a RuntimeError carrying the worker's traceback,
    which the batch loop cannot tell from a bug, and the whole batch would stop."""

    def __init__(self):
        self._reader, self._opened = None, None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader, self._opened = None, None

    def __getitem__(self, key: PatchKey) -> torch.Tensor | str:
        path, mpp, x, y, size_level0, patch_px = key
        try:
            if self._opened != (path, mpp):
                self.close()
                self._reader = open_slide(path, mpp, override_mpp=True)  # the grid's scale
                self._opened = (path, mpp)
            return torch.from_numpy(read_scaled(self._reader, (x, y), size_level0, patch_px))
        except SlideReadError as exc:
            return exc.reason

    @staticmethod
    def collate(items: list[torch.Tensor | str]) -> torch.Tensor | str:
        """The batch, or the reason its first unreadable patch gave."""
        return next((item for item in items if isinstance(item, str)), None) or default_collate(items)


class SlideBatches(Sampler):
    """Batches of `PatchKey`s of the slide being encoded. It lives in the main process only, so that the run's one
    DataLoader, its workers kept (persistent_workers), is pointed at each slide in turn (`select`)."""

    def __init__(self, batch_size: int):
        self.batch_size, self.keys = batch_size, []

    def select(self, path: Path, mpp: float, level: GridLevel) -> None:
        self.keys = [(path, mpp, int(x), int(y), level.size_level0, level.patch_px) for x, y in level.coords]

    def __len__(self) -> int:
        return -(-len(self.keys) // self.batch_size)

    def __iter__(self) -> Iterator[list[PatchKey]]:
        for start in range(0, len(self.keys), self.batch_size):
            yield self.keys[start:start + self.batch_size]


def stop_if_run_ended(worker_id: int) -> None:
    """A worker whose run was killed while it started (spawn, forkserver: seconds of imports) exits. torch's workers
    watch the parent they find once started, which is by then init: they waited for it forever, 0.5 GB each."""
    if not multiprocessing.parent_process().is_alive():
        raise SystemExit(0)


@contextmanager
def patch_loader(cfg: ExtractConfig) -> Iterator[DataLoader]:
    """The DataLoader that reads every slide's patches in a run: its `cfg.num_workers` processes start at the first
    slide and end with the run (on its last reference; at exit, or within 5 s of a killed parent, as torch's do)."""
    dataset = PatchDataset()
    loader = DataLoader(dataset, batch_sampler=SlideBatches(cfg.batch_size), num_workers=cfg.num_workers,
                        collate_fn=dataset.collate, pin_memory=torch.device(cfg.device).type == "cuda",
                        persistent_workers=cfg.num_workers > 0, worker_init_fn=stop_if_run_ended)
    try:
        yield loader
    finally:
        dataset.close()  # the main process's reader (--workers 0)


@torch.inference_mode()
def encode_level(loader: DataLoader, path: Path, mpp: float, level: GridLevel, encoder: torch.nn.Module,
                 cfg: ExtractConfig) -> np.ndarray:
    """Features [N, embed_dim] of every patch of `level`, in grid order, read by `loader` (`patch_loader`)."""
    from tqdm import tqdm

    device = torch.device(cfg.device)
    out = np.zeros((len(level), encoder.cfg.embed_dim), np.float32)
    if len(level) == 0:
        return out
    loader.batch_sampler.select(path, mpp, level)
    start = 0
    # disable=None: a terminal shows the bar, a log file gets no nested-bar fragments
    for batch in tqdm(loader, desc=path.name, unit="batch", leave=False, disable=None):
        if isinstance(batch, str):
            raise SlideReadError(path, batch)
        with autocast(encoder.cfg, device, cfg.autocast):
            feats = encoder(preprocess(encoder.cfg, batch.to(device, non_blocking=True)))
        out[start:start + len(feats)] = feats.float().cpu().numpy()
        start += len(feats)
    return out


def job_hash(cfg: ExtractConfig, encoder_cfg) -> tuple[dict, str]:
    """Only what changes the numbers goes into the hash (not batch size, workers or device)."""
    job = dataclasses.replace(cfg, batch_size=0, num_workers=0, device="", resume=True, strict=False)
    record = {"extract": job.to_dict(), "encoder": encoder_cfg.to_dict()}
    return record, hash_record(record)


def without_tissue(record: dict) -> dict:
    """A feature file's config (`job_hash`'s record) less the tissue settings, which decide its features only
    through the grid."""
    return {**record, "extract": {k: v for k, v in record.get("extract", {}).items() if k != "tissue"}}


def features_on_same_grid(path: Path, record: dict, source: dict, level: GridLevel,
                          children: np.ndarray) -> np.ndarray | None:
    """The features stored in `path` when it differs from the `record` now only in the tissue settings, came from
    the same slide file, and holds the grid cut now (`level`'s patches, and to a 5x file the links to the 20x
    patches, which `lrmil distill` follows into the 20x file): encoding again would give the same numbers.
    None where any of these differs, or `path` is absent or unreadable."""
    if not path.is_file() or stored_key(path)[1] != source:
        return None
    try:
        stored = read_features(path)
    except (OSError, KeyError, ValueError):
        return None
    same_grid = ((stored.patch_size_level0, stored.patch_px) == (level.size_level0, level.patch_px)
                 and np.array_equal(stored.coords, level.coords) and np.array_equal(stored.children, children))
    same_job = hash_record(without_tissue(stored.config)) == hash_record(without_tissue(record))
    return stored.features if same_grid and same_job else None


def extract_slide(path: str | Path, encoder: torch.nn.Module, loader: DataLoader, cfg: ExtractConfig,
                  out: str | Path, sid: str | None = None) -> tuple[Path, str]:
    """Features of one slide at `cfg.resolution`, its patches read by `loader` (`sid`: its id in the batch): the
    feature file, and how: "encoded" now, "kept" (an earlier run's features, on the grid the tissue settings now
    cut) or "current" (an earlier run's file, reused as it is)."""
    path, out, sid = Path(path), Path(out), sid or slide_id(path)
    magnification, px = cfg.patch.level(cfg.resolution)
    folder = feature_dir(out / "features", encoder.cfg.name, magnification, px)
    target = folder / slide_file_name(sid, ".h5")
    with open_slide(path, cfg.mpp, cfg.override_mpp) as reader:  # a header read: the scale this slide gets
        applied = dataclasses.replace(cfg, mpp=reader.mpp, override_mpp=False)
    # Keyed on the scale applied, not the flags: adding --mpp for the slides without it must not re-encode
    # the slides whose metadata decides.
    record, digest = job_hash(applied, encoder.cfg)
    source = slide_source(path)
    if cfg.resume and is_current(target, digest, source):
        return target, "current"
    check_not_another_slides(target, path, stored_key(target)[1])
    sg = segment_and_patch(path, cfg.tissue, cfg.patch, cfg.mpp, cfg.override_mpp, sid)
    write_mask_and_grid(out, sg, grid_config(cfg.tissue, cfg.patch, cfg.mpp, cfg.override_mpp))
    note_if_no_tissue(path, sg.grid)
    level = getattr(sg.grid, cfg.resolution)  # a name cfg.patch.level has checked
    note_if_enlarged(path, level, cfg.resolution, sg.grid.mpp)
    children = sg.grid.children if cfg.resolution == "student" else np.zeros((len(level), 0), np.int64)
    kept = features_on_same_grid(target, record, source, level, children) if cfg.resume else None
    feats = kept if kept is not None else encode_level(loader, path, sg.grid.mpp, level, encoder, cfg)
    write_features(target, FeatureFile(
        coords=level.coords, features=feats, children=children, patch_size_level0=level.size_level0,
        patch_px=level.patch_px, magnification=level.magnification, mpp=sg.grid.mpp, mpp_source=sg.mpp_source,
        encoder=encoder.cfg.name, weights_sha256=encoder.cfg.weights_sha256, slide_id=sg.slide_id, source=source,
        config=record, config_hash=digest))
    return target, "encoded" if kept is None else "kept"


def write_mask_and_grid(out: Path, sg: SlideGrid, record: dict) -> None:
    """OUT/masks/SLIDE.png and OUT/patches/SLIDE.h5 (`record`: `grid_config`)."""
    save_mask_png(out / "masks" / slide_file_name(sg.slide_id, ".png"), sg.thumbnail, sg.mask)
    write_grid(out / "patches" / slide_file_name(sg.slide_id, ".h5"), sg.grid, record, hash_record(record), sg.slide_id)


def grid_config(tissue: TissueConfig, patch: PatchConfig, mpp: float | None, override_mpp: bool) -> dict:
    """What decides a slide's grid, as stored next to it."""
    return {"tissue": tissue.to_dict(), "patch": patch.to_dict(), "mpp": mpp, "override_mpp": override_mpp}


def run_patching(slides: list[Path], tissue: TissueConfig, patch: PatchConfig, mpp: float | None,
                 out: str | Path, strict: bool = False, override_mpp: bool = False) -> dict:
    """Tissue masks (OUT/masks/*.png) and grids (OUT/patches/*.h5) without encoding anything."""
    out = Path(out)
    sweep_killed_runs(out)
    record = grid_config(tissue, patch, mpp, override_mpp)
    write_json(out / "config_patch.json", record)

    def patch_slide(path: Path, sid: str) -> tuple[int, int]:
        sg = segment_and_patch(path, tissue, patch, mpp, override_mpp, sid)
        note_if_no_tissue(path, sg.grid)
        for name in ("teacher", "student"):
            note_if_enlarged(path, getattr(sg.grid, name), name, sg.grid.mpp)
        write_mask_and_grid(out, sg, record)
        return len(sg.grid.teacher), len(sg.grid.student)

    counts, errors = run_batch(slides, patch_slide, out, "patch", strict, desc="tissue + grid")
    return {"done": len(counts), **errors.summary(),
            "teacher_patches": int(sum(c[0] for c in counts)), "student_patches": int(sum(c[1] for c in counts))}


def run_extract(slides: list[Path], cfg: ExtractConfig, out: str | Path) -> dict:
    """Extract every slide; returns counts and the errors file. Bad slides are logged, not fatal."""
    out = Path(out)
    check_resolution(cfg.resolution)  # refused before any slide is read (exit status 2)
    encoder = create_encoder(cfg.encoder, weights=cfg.weights).to(cfg.device)
    sweep_killed_runs(out)
    write_json(out / f"config_extract_{cfg.resolution}.json", {**cfg.to_dict(), "encoder_cfg": encoder.cfg.to_dict()})

    with patch_loader(cfg) as loader:
        def timed_extract(path: Path, sid: str) -> tuple[str, float]:
            """How the slide's features came (`extract_slide`) and the seconds it took."""
            start = time.perf_counter()
            how = extract_slide(path, encoder, loader, cfg, out, sid)[1]
            return how, time.perf_counter() - start

        results, errors = run_batch(slides, timed_extract, out, "extract", cfg.strict,
                                    desc=f"extract {cfg.resolution}")
    seconds = [s for how, s in results if how == "encoded"]
    kept = sum(how == "kept" for how, _ in results)
    if kept:
        log.info("%d kept: grid unchanged under the new tissue settings (only their config was rewritten)", kept)
    return {"done": len(seconds), "kept": kept, "skipped": sum(how == "current" for how, _ in results),
            **errors.summary(), "seconds_per_slide": float(np.mean(seconds)) if seconds else 0.0}
