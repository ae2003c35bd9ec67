"""HDF5 store: CLAM/TRIDENT layout, round trips, config-hash resume, and the extraction job on real slides."""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lrmil.config import ExtractConfig, PatchConfig, TissueConfig
from lrmil.patching import make_grid
from lrmil.store import FeatureFile, feature_dir, is_current, read_features, read_grid, write_features, write_grid

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _file(n=5, d=8, children=True):
    rng = np.random.default_rng(0)
    return FeatureFile(
        coords=rng.integers(0, 5000, (n, 2)), features=rng.standard_normal((n, d)).astype(np.float32),
        children=rng.integers(-1, 40, (n, 16)) if children else np.zeros((n, 0), np.int64),
        patch_size_level0=1024, patch_px=256, magnification=5.0, mpp=0.25, encoder="enc", weights_sha256="ab" * 32,
        slide_id="s1", source=SOURCE, config={"a": 1}, config_hash="h1")


SOURCE = {"path": "/slides/s1.svs", "size": 100, "mtime_ns": 5}


def test_round_trip_and_clam_layout(tmp_path):
    ff = _file()
    write_features(tmp_path / "s1.h5", ff)
    back = read_features(tmp_path / "s1.h5")
    np.testing.assert_array_equal(back.coords, ff.coords)
    np.testing.assert_array_equal(back.features, ff.features)
    np.testing.assert_array_equal(back.children, ff.children)
    assert (back.magnification, back.mpp, back.encoder, back.config) == (5.0, 0.25, "enc", {"a": 1})
    with h5py.File(tmp_path / "s1.h5", "r") as f:  # what CLAM/TRIDENT readers look for
        attrs = f["coords"].attrs
        assert attrs["patch_size_level0"] == 1024 and attrs["patch_size"] == 256
        assert attrs["level0_magnification"] == pytest.approx(40.0) and attrs["target_magnification"] == 5.0
        assert f["features"].shape == (5, 8) and f["children"].shape == (5, 16)


def test_teacher_files_have_no_children_dataset(tmp_path):
    write_features(tmp_path / "t.h5", _file(children=False))
    with h5py.File(tmp_path / "t.h5", "r") as f:
        assert "children" not in f
    assert read_features(tmp_path / "t.h5").children.shape == (5, 0)


def test_mismatched_rows_fail_and_leave_nothing(tmp_path):
    bad = _file()
    bad = FeatureFile(**{**bad.__dict__, "features": bad.features[:3]})
    with pytest.raises(ValueError, match="same number of rows"):
        write_features(tmp_path / "x.h5", bad)
    assert list(tmp_path.iterdir()) == []


def test_is_current_compares_config_hash_and_slide_file(tmp_path):
    path = tmp_path / "s1.h5"
    assert not is_current(path, "h1", SOURCE)
    write_features(path, _file())
    assert is_current(path, "h1", SOURCE) and not is_current(path, "other", SOURCE)
    assert not is_current(path, "h1", {**SOURCE, "mtime_ns": 6})  # a rescan at the same path
    assert not is_current(path, "h1", {**SOURCE, "path": "/other/s1.svs"})  # another file, same id
    path.write_bytes(b"not hdf5")  # a damaged file is redone, not trusted
    assert not is_current(path, "h1", SOURCE)


def test_grid_round_trip(tmp_path):
    mask = np.zeros((64, 64), bool)
    mask[10:50, 5:30] = True
    grid = make_grid(mask, (2048, 2048), 0.5, (1.0, 4.0), PatchConfig())
    write_grid(tmp_path / "g.h5", grid, {"k": 1}, "hash")
    back = read_grid(tmp_path / "g.h5")
    np.testing.assert_array_equal(back.children, grid.children)
    np.testing.assert_array_equal(back.teacher.coords, grid.teacher.coords)
    for name in ("teacher", "student"):
        written, read = getattr(grid, name), getattr(back, name)
        np.testing.assert_array_equal(read.coords, written.coords)
        assert (read.size_level0, read.patch_px, read.magnification, read.read_level) == \
            (written.size_level0, written.patch_px, written.magnification, written.read_level), name
    assert back.student.read_level == 1 and back.dimensions == (2048, 2048) and back.mpp == grid.mpp


def test_feature_dir_encodes_parameters(tmp_path):
    assert feature_dir(tmp_path, "lrmil_vit_tiny", 5.0, 256).name == "lrmil_vit_tiny_5x_256px"


def test_extract_batch_on_real_slides_reports_bad_ones(shared_data, tmp_path):
    from lrmil.features import run_extract

    slides = shared_data / "slides"
    batch = [slides / "CMU-1-Small-Region.svs", slides / "broken.svs", slides / "TCGA-CR-7395-01A-01-TS1-no-mpp.svs"]
    cfg = ExtractConfig(weights="random", resolution="student", num_workers=0, batch_size=8)
    summary = run_extract(batch, cfg, tmp_path)
    assert summary["done"] == 1 and summary["failed"] == 2
    with open(tmp_path / "errors.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"].rsplit("/", 1)[-1] for r in rows] == ["broken.svs", "TCGA-CR-7395-01A-01-TS1-no-mpp.svs"]
    assert "--mpp" in rows[1]["message"] and rows[0]["error_type"] == "SlideReadError"
    out = feature_dir(tmp_path / "features", "lrmil_vit_tiny", 5.0, 256) / "CMU-1-Small-Region.h5"
    ff = read_features(out)
    assert ff.features.shape == (len(ff.coords), 192) and ff.children.shape == (len(ff.coords), 16)
    assert np.isfinite(ff.features).all() and len(ff.coords) > 0
    assert (tmp_path / "masks" / "CMU-1-Small-Region.png").is_file()
    # the 20x grid that the 5x children point into is stored next to it
    grid = read_grid(tmp_path / "patches" / "CMU-1-Small-Region.h5")
    assert grid.children.max() < len(grid.teacher) and grid.mpp == pytest.approx(0.499)
    # with --mpp the no-MPP slide works; the finished slide is skipped (file untouched)
    mtime = out.stat().st_mtime_ns
    again = run_extract(batch[2:], ExtractConfig(**{**cfg.__dict__, "mpp": 0.5}), tmp_path / "b")
    assert again["done"] == 1 and again["failed"] == 0
    rerun = run_extract(batch[:1], cfg, tmp_path)
    assert (rerun["done"], rerun["skipped"]) == (0, 1) and out.stat().st_mtime_ns == mtime


@pytest.mark.skipif(os.name != "posix", reason="a name that is not UTF-8 is a POSIX file system's")
def test_patch_and_extract_take_a_slide_name_that_is_not_utf8(shared_data, tmp_path):
    """A slide named in Latin-1 (an old Windows archive, unzipped) failed in patch and extract with "'utf-8' codec can't
    encode character '\\udce9'": h5py cannot store its id as it is. The id is kept with the byte as \\udcXX, as the
    tables write it."""
    from lrmil.features import run_extract, run_patching

    slide = Path(os.fsdecode(os.fsencode(tmp_path) + b"/coupe_\xe9.svs"))
    shutil.copyfile(shared_data / "slides" / "CMU-1-Small-Region.svs", slide)
    patched = run_patching([slide], TissueConfig(), PatchConfig(), None, tmp_path / "grid")
    assert (patched["done"], patched["failed"]) == (1, 0)
    cfg = ExtractConfig(weights="random", resolution="student", num_workers=0, batch_size=8)
    assert (run_extract([slide], cfg, tmp_path)["done"], run_extract([slide], cfg, tmp_path)["skipped"]) == (1, 1)
    features = feature_dir(tmp_path / "features", "lrmil_vit_tiny", 5.0, 256) / (slide.stem + ".h5")
    assert read_features(features).slide_id == "coupe_\\udce9"


def test_a_slide_with_unreadable_tiles_fails_alone_when_workers_read_the_patches(shared_data, tmp_path):
    """A tile that cannot be decoded, met by a DataLoader worker, is the slide's one row of errors.csv and the
    batch goes on (raised in the worker, it reached the batch loop as a RuntimeError and stopped it)."""
    from lrmil.features import run_extract

    scan = (shared_data / "slides" / "TCGA-CR-7395-01A-01-TS1-no-mpp.svs").read_bytes()
    damaged = tmp_path / "damaged.svs"  # 100 kB of its JPEG 2000 tiles zeroed
    damaged.write_bytes(scan[:500_000] + bytes(100_000) + scan[600_000:])
    batch = [damaged, shared_data / "slides" / "CMU-1-Small-Region.svs"]
    cfg = ExtractConfig(weights="random", resolution="teacher", num_workers=2, batch_size=8, mpp=0.5)
    summary = run_extract(batch, cfg, tmp_path / "out")
    assert summary["done"] == 1 and summary["failed"] == 1
    with open(tmp_path / "out" / "errors.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["path"] == str(damaged) and row["error_type"] == "SlideReadError"
    assert row["message"].startswith("cannot read region") and "Traceback" not in row["message"]
    assert (feature_dir(tmp_path / "out" / "features", "lrmil_vit_tiny", 20.0, 256) / "CMU-1-Small-Region.h5").is_file()


@pytest.fixture(params=["spawn", "forkserver"])
def start_method(request):
    """Worker processes started as on macOS (spawn) or Python 3.14 on Linux (forkserver), not forked: a worker
    then holds only what the pickled dataset carries, nothing the parent opened or set up."""
    import multiprocessing

    before = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method(request.param, force=True)
    yield request.param
    multiprocessing.set_start_method(before, force=True)


def test_workers_not_forked_read_the_patches_the_main_process_reads(shared_data, start_method, tmp_path):
    """One loader's workers read slide after slide (each opening the next and keeping it open), as in the main
    process."""
    from lrmil.encoders import create_encoder
    from lrmil.features import encode_level, patch_loader, segment_and_patch

    slides = [shared_data / "slides" / "CMU-1-Small-Region.svs", _tissue_png(tmp_path / "s.png", 90)]
    cfg = ExtractConfig(weights="random", resolution="teacher", num_workers=1, batch_size=4, mpp=0.5)
    grids = [segment_and_patch(slide, cfg.tissue, cfg.patch, cfg.mpp).grid for slide in slides]
    levels = [dataclasses.replace(grid.teacher, coords=grid.teacher.coords[:8]) for grid in grids]
    encoder = create_encoder(cfg.encoder, weights=cfg.weights)
    order = [0, 1, 0]
    with patch_loader(dataclasses.replace(cfg, num_workers=0)) as loader:
        in_process = [encode_level(loader, slides[i], grids[i].mpp, levels[i], encoder, cfg) for i in order]
    with patch_loader(cfg) as loader:
        for i, expected in zip(order, in_process):
            np.testing.assert_array_equal(encode_level(loader, slides[i], grids[i].mpp, levels[i], encoder, cfg),
                                          expected)


def test_a_run_starts_its_patch_workers_once_and_none_outlives_it(tmp_path, monkeypatch):
    """Workers were started for every slide, a torch import each where they are spawned (macOS, Python 3.14 on
    Linux): seconds per slide. The run's workers now read every slide, end with the run, and read what the main
    process reads."""
    import multiprocessing
    from multiprocessing.process import BaseProcess

    from lrmil.features import run_extract

    slides = [_tissue_png(tmp_path / f"s{i}.png", shade) for i, shade in enumerate((170, 90, 130))]
    started, start = [], BaseProcess.start

    def counted_start(process):
        started.append(process.name)
        start(process)

    monkeypatch.setattr(BaseProcess, "start", counted_start)
    cfg = ExtractConfig(resolution="teacher", num_workers=2, batch_size=2, mpp=0.5)  # the bundled weights
    assert run_extract(slides, cfg, tmp_path / "workers")["done"] == 3
    assert len(started) == 2 and multiprocessing.active_children() == []
    assert run_extract(slides, dataclasses.replace(cfg, num_workers=0), tmp_path / "main")["done"] == 3
    for slide in slides:
        workers, main = (read_features(feature_dir(tmp_path / run / "features", "lrmil_vit_tiny", 20.0, 256)
                                       / f"{slide.stem}.h5") for run in ("workers", "main"))
        assert len(workers.features) > cfg.batch_size  # more than one batch: read by the workers
        np.testing.assert_array_equal(workers.features, main.features)


def test_each_row_of_a_feature_file_is_its_patch_encoded(tmp_path):
    """Row i of a feature file is the encoder's features of the grid's patch i, with batches that do not divide the
    grid: a patch left out of its batch is a row of zeros that training takes for tissue."""
    import torch

    from lrmil.encoders import create_encoder, preprocess
    from lrmil.features import run_extract
    from lrmil.slide import open_slide, read_scaled

    slide = _tissue_png(tmp_path / "s.png", 170)
    cfg = ExtractConfig(resolution="teacher", num_workers=0, batch_size=3, mpp=0.5)  # the bundled weights
    assert run_extract([slide], cfg, tmp_path / "out")["done"] == 1
    ff = read_features(feature_dir(tmp_path / "out" / "features", "lrmil_vit_tiny", 20.0, 256) / "s.h5")
    assert len(ff.coords) % cfg.batch_size != 0
    with open_slide(slide, cfg.mpp, override_mpp=True) as reader:
        patches = torch.stack([torch.from_numpy(read_scaled(reader, (int(x), int(y)), ff.patch_size_level0,
                                                            ff.patch_px)) for x, y in ff.coords])
    encoder = create_encoder(cfg.encoder, weights=cfg.weights)
    with torch.inference_mode():
        expected = encoder(preprocess(encoder.cfg, patches)).float().numpy()
    np.testing.assert_allclose(ff.features, expected, rtol=1e-4, atol=1e-4)


def test_a_slides_progress_bar_counts_each_of_its_batches(tmp_path):
    """The bar under 'extract' counts a slide's batches: 5 patches in batches of 2 are 3 and one patch is 1, not a
    total rounded down (2, 0) that the bar runs past."""
    from lrmil.features import patch_loader
    from lrmil.patching import GridLevel

    with patch_loader(ExtractConfig(num_workers=0, batch_size=2)) as loader:
        for patches, batches in ((5, 3), (1, 1), (4, 2)):
            level = GridLevel(np.zeros((patches, 2), np.int64), 256, 256, 20.0, 0)
            loader.batch_sampler.select(tmp_path / "s.png", 0.5, level)
            assert len(loader) == batches == len(list(loader.batch_sampler))


KILLED_AS_WORKERS_START = """
import multiprocessing, os, signal
from lrmil.config import ExtractConfig
from lrmil.features import patch_loader

multiprocessing.set_start_method("spawn", force=True)
with patch_loader(ExtractConfig(num_workers=2)) as loader:
    iter(loader)  # starts the workers, which then import torch for a second or more
    print(*(p.pid for p in multiprocessing.active_children()), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_patch_workers_end_when_their_run_is_killed_while_they_start(tmp_path):
    """A run killed (kill -9, the OOM killer) while its spawned workers imported torch left them waiting for it
    forever, 0.5 GB each; per slide, macOS and Python 3.14 started workers at every slide."""
    with open(tmp_path / "pids", "w") as out:
        subprocess.run([sys.executable, "-c", KILLED_AS_WORKERS_START], cwd=REPO, stdout=out,
                       stderr=subprocess.DEVNULL)
    pids = alive = [int(pid) for pid in (tmp_path / "pids").read_text().split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 120  # a guard against waiting forever: they need their imports' seconds
    try:
        while alive and time.monotonic() < deadline:
            time.sleep(0.5)
            alive = [pid for pid in pids if _running(pid)]
        assert alive == []
    finally:
        for pid in alive:
            os.kill(pid, signal.SIGKILL)


def _tissue_png(path, shade):
    """A 512 px pink square on white; no resolution tags, so extraction needs --mpp."""
    image = np.full((512, 512, 3), 245, np.uint8)
    image[64:448, 64:448] = (200, 110, shade)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def test_a_later_extract_does_not_replace_the_features_of_another_slide_of_the_same_name(tmp_path):
    from lrmil.features import run_extract

    first, second = _tissue_png(tmp_path / "a" / "slide.png", 170), _tissue_png(tmp_path / "b" / "slide.png", 90)
    cfg = ExtractConfig(weights="random", resolution="student", num_workers=0, batch_size=8, mpp=0.5)
    out = tmp_path / "out"
    target = feature_dir(out / "features", "lrmil_vit_tiny", 5.0, 256) / "slide.h5"
    assert run_extract([first], cfg, out)["done"] == 1
    assert run_extract([second], cfg, out)["failed"] == 1
    with open(out / "errors.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["path"] == str(second) and str(first.resolve()) in row["message"] and str(target) in row["message"]
    # a/ in one run and b/ in the next: each was 'slide', as neither run saw the other; given together they are
    # a_slide and b_slide, and renaming either file, all the message said, is not what an archive wants
    assert "give both, or their folders, in one run" in row["message"]
    assert run_extract([first, second], cfg, out)["done"] == 2
    assert read_features(target).source["path"] == str(first.resolve())
    first.unlink()  # moved away: the id is free again
    assert run_extract([second], cfg, out)["done"] == 1
    assert read_features(target).source["path"] == str(second.resolve())


def test_extract_redoes_a_changed_slide_file_and_rejects_another_file_with_its_id_later(tmp_path):
    """Two slides of one name in one batch are each extracted under their folders' names; given alone, each is
    `slide`, and a later run into the same --out refuses the second while the first file holds that id."""
    from lrmil.features import run_extract

    first, second = _tissue_png(tmp_path / "a" / "slide.png", 170), _tissue_png(tmp_path / "b" / "slide.png", 90)
    cfg = ExtractConfig(weights="random", resolution="student", num_workers=0, batch_size=8, mpp=0.5)
    out, features = tmp_path / "out", feature_dir(tmp_path / "out" / "features", "lrmil_vit_tiny", 5.0, 256)
    assert run_extract([first, second], cfg, out)["done"] == 2
    assert sorted(p.name for p in features.glob("*.h5")) == ["a_slide.h5", "b_slide.h5"]
    assert run_extract([first], cfg, out)["done"] == 1
    summary = run_extract([second], cfg, out)
    assert summary["done"] == 0 and summary["failed"] == 1
    with open(out / "errors.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["path"] == str(second) and str(first.resolve()) in row["message"]
    target = features / "slide.h5"
    assert read_features(target).source["path"] == str(first.resolve())
    stamp = target.stat().st_mtime_ns

    assert run_extract([first], cfg, out)["skipped"] == 1  # unchanged: resumed, the file is untouched
    assert target.stat().st_mtime_ns == stamp
    shutil.copyfile(second, first)  # a rescan saved under the same name
    assert run_extract([first], cfg, out)["done"] == 1
    assert target.stat().st_mtime_ns != stamp
    assert not (out / "errors.csv").exists()  # this run failed nothing; the last run's file is gone


def test_patch_and_extract_remove_what_a_killed_run_left_once_it_lay_an_hour(tmp_path):
    """`lrmil patch` and `lrmil extract` into an --out where a kill -9 left half a grid or feature file: it stayed for
    good (only `lrmil predict` swept). A temporary touched half an hour ago may still be another job's, writing
    into the same --out (an extraction split over GPUs): it is kept."""
    import os
    import time

    from lrmil.config import TissueConfig
    from lrmil.features import run_extract, run_patching

    slide = _tissue_png(tmp_path / "slide.png", 170)
    for command in ("patch", "extract"):
        out = tmp_path / command
        left, live = [out / sub / f".slide.h5.{'0' * 11}{i}.tmp" for i, sub in enumerate(("patches", "features"))]
        for path, hours in ((left, 2.0), (live, 0.5)):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"half an HDF5 file")
            os.utime(path, (time.time() - hours * 3600,) * 2)
        if command == "patch":
            assert run_patching([slide], TissueConfig(), PatchConfig(), 0.5, out)["done"] == 1
        else:
            cfg = ExtractConfig(weights="random", resolution="student", num_workers=0, batch_size=8, mpp=0.5)
            assert run_extract([slide], cfg, out)["done"] == 1
        assert not left.exists() and live.exists(), command


def test_patch_says_for_each_path_that_a_coarse_scan_is_enlarged_on(tmp_path, caplog):
    """`lrmil patch` cuts both grids: a 2.5x scan is enlarged on the 5x student path too, not the 20x teacher's
    only; a 10x scan on the teacher's only."""
    from lrmil.config import TissueConfig
    from lrmil.features import run_patching

    slide = _tissue_png(tmp_path / "slide.png", 170)
    for mpp, paths in ((4.0, ["teacher", "student"]), (1.0, ["teacher"]), (0.5, [])):
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert run_patching([slide], TissueConfig(), PatchConfig(), mpp, tmp_path / str(mpp))["done"] == 1
        said = [r.getMessage() for r in caplog.records if "enlarged" in r.getMessage()]
        assert [m.split(" path reads")[0].split(" the ")[-1] for m in said] == paths, said


def _unportable_slides(folder: Path) -> list[Path]:
    """Slides named as ext4 takes and exFAT, NTFS and Windows refuse (a ':'; a device's name)."""
    return [_tissue_png(folder / name, 170) for name in ("scan 12:00.png", "CON.png")]


def test_extract_and_patch_name_their_files_as_an_sd_card_and_windows_take_them(tmp_path):
    """'scan 12:00.svs' and CON.svs got feature files, grids and masks 'scan 12:00.h5', CON.h5, CON.png: an exFAT or
    NTFS --out refused every such slide and Windows could not copy them (this file system takes the names: only they
    are checked here). They are named as `lrmil predict`'s outputs are; the files keep the slide's id."""
    from lrmil.features import run_extract, run_patching

    slides = _unportable_slides(tmp_path / "slides")
    cfg = ExtractConfig(weights="random", resolution="student", num_workers=0, batch_size=8, mpp=0.5)
    assert run_extract(slides, cfg, tmp_path / "out")["done"] == 2
    assert run_patching(slides, cfg.tissue, cfg.patch, 0.5, tmp_path / "grid")["done"] == 2
    features = feature_dir(tmp_path / "out" / "features", "lrmil_vit_tiny", 5.0, 256)
    assert sorted(p.name for p in features.iterdir()) == ["CON_.h5", "scan 12_00.h5"]
    for folder in ("out/masks", "out/patches", "grid/masks", "grid/patches"):
        assert sorted(p.stem for p in (tmp_path / folder).iterdir()) == ["CON_", "scan 12_00"], folder
    assert read_features(features / "scan 12_00.h5").slide_id == "scan 12:00"
    assert run_extract(slides, cfg, tmp_path / "out")["skipped"] == 2


def test_extract_no_resume_encodes_a_slide_again_whose_features_are_current(tmp_path):
    """--no-resume encodes every slide again, its features current or not."""
    from lrmil.features import run_extract

    slides = _unportable_slides(tmp_path / "slides")
    cfg = ExtractConfig(weights="random", resolution="student", num_workers=0, batch_size=8, mpp=0.5)
    assert run_extract(slides, cfg, tmp_path / "out")["done"] == 2
    again = run_extract(slides, dataclasses.replace(cfg, resume=False), tmp_path / "out")
    assert (again["done"], again["skipped"]) == (2, 0)


def test_a_slide_named_in_latin_1_with_a_colon_is_skipped_once_extracted(tmp_path):
    """Its feature file is named as Windows takes it ('_' for ':') and records the id, not UTF-8, escaped: a rerun
    takes the file for the slide's by that id, and does not encode the slide again."""
    from lrmil.features import run_extract

    slide = _tissue_png(tmp_path / "slides" / os.fsdecode(b"scan 12:00 \xe9.png"), 170)
    cfg = ExtractConfig(weights="random", resolution="student", num_workers=0, batch_size=8, mpp=0.5)
    assert run_extract([slide], cfg, tmp_path / "out")["done"] == 1
    assert run_extract([slide], cfg, tmp_path / "out")["skipped"] == 1


def test_a_clam_store_of_slides_named_by_their_raw_id_trains(tmp_path, caplog):
    """Feature files named by the raw id (CLAM's: 'scan 12:00.h5', CON.h5) are found by train; a file under the name
    lrmil gives the id that holds another slide (CON_.h5 of slide CON_) is not CON's."""
    from lrmil.features import run_extract
    from lrmil.mil.bags import load_bags

    slides, out = _unportable_slides(tmp_path / "slides"), tmp_path / "out"
    cfg = ExtractConfig(weights="random", resolution="student", num_workers=0, batch_size=8, mpp=0.5)
    features = feature_dir(out / "features", "lrmil_vit_tiny", 5.0, 256)
    assert run_extract(slides, cfg, out)["done"] == 2
    (features / "CON_.h5").rename(features / "CON.h5")
    (features / "scan 12_00.h5").rename(features / "scan 12:00.h5")

    con = read_features(features / "CON.h5")  # slide CON_'s, of another scan, beside it
    write_features(features / "CON_.h5", dataclasses.replace(con, slide_id="CON_", features=con.features + 1))
    splits = pd.DataFrame({"slide_id": ["scan 12:00", "CON", "CON_"], "label": ["x"] * 3, "fold": [0] * 3})
    caplog.clear()
    bags = load_bags(features, splits, ("x",))
    assert list(bags) == ["scan 12:00", "CON", "CON_"] and not caplog.messages
    np.testing.assert_array_equal(bags["CON"].features, con.features)
    np.testing.assert_array_equal(bags["CON_"].features, con.features + 1)


def test_extract_says_a_coarse_scan_is_enlarged_on_the_path_it_encodes(tmp_path, caplog):
    """`lrmil extract --resolution teacher` of a 10x scan encodes interpolated 20x patches: it says so, as predict
    does; the student path of the same scan reads it reduced, nothing to say."""
    from lrmil.features import run_extract

    slide = _tissue_png(tmp_path / "slide.png", 170)
    for resolution, said in (("teacher", 1), ("student", 0)):
        caplog.clear()
        cfg = ExtractConfig(weights="random", resolution=resolution, num_workers=0, batch_size=8, mpp=1.0)
        with caplog.at_level("WARNING"):
            assert run_extract([slide], cfg, tmp_path / resolution)["done"] == 1
        lines = [r.getMessage() for r in caplog.records if "enlarged 2x" in r.getMessage()]
        assert len(lines) == said and all(f"the 20x the {resolution} path reads" in line for line in lines)


def test_a_clam_feature_file_without_attributes_has_an_unknown_patch_size(tmp_path):
    """CLAM's files hold only features and coords: the level-0 patch size is unknown (0), not a guess."""
    with h5py.File(tmp_path / "clam.h5", "w") as f:
        f["features"] = np.ones((3, 8), np.float32)
        f["coords"] = np.zeros((3, 2), np.int64)
    ff = read_features(tmp_path / "clam.h5")
    assert ff.patch_size_level0 == 0 and ff.features.shape == (3, 8)


def test_extract_and_patch_label_the_same_grid_with_the_same_config_hash(tmp_path):
    """The grid file `lrmil extract` leaves (OUT/patches) says, like `lrmil patch`'s, which grid settings made it:
    its config_hash is that of its stored config, not of the encoding job (which differs with the encoder)."""
    import json

    from lrmil.config import TissueConfig, hash_record
    from lrmil.features import run_extract, run_patching

    slide = _tissue_png(tmp_path / "slide.png", 170)
    run_extract([slide], ExtractConfig(weights="random", resolution="student", num_workers=0, batch_size=8, mpp=0.5),
                tmp_path / "extracted")
    run_patching([slide], TissueConfig(), PatchConfig(), 0.5, tmp_path / "patched")
    attrs = []
    for out in ("extracted", "patched"):
        with h5py.File(tmp_path / out / "patches" / "slide.h5", "r") as f:
            attrs.append(dict(f.attrs))
    for a in attrs:
        assert a["config_hash"] == hash_record(json.loads(a["config"]))
    assert attrs[0]["config_hash"] == attrs[1]["config_hash"]


@pytest.mark.parametrize("resolution", ["teacher", "student"])
def test_features_cut_before_the_ink_rule_are_kept_where_the_grid_is_the_same_and_encoded_again_where_ink_was(
        tmp_path, monkeypatch, resolution):
    """A store extracted before `exclude_ink` (or with other tissue settings) was encoded again in full, though on a
    slide without ink the grid, so the features, are the same: now that slide's features are kept and only its config
    rewritten, and the inked slide, whose grid (a 20x file's patches, a 5x file's children links) changed, is
    encoded again."""
    from lrmil import features

    (tmp_path / "slides").mkdir()
    plain, inked = tmp_path / "slides" / "plain.png", tmp_path / "slides" / "inked.png"
    image = np.full((1024, 1024, 3), 245, np.uint8)  # one 5x patch of 4 x 4 20x patches
    image[64:448, 64:448] = (200, 110, 170)
    Image.fromarray(image).save(plain)
    image[600:1000, 600:1000] = (35, 70, 190)  # a blue pen mark on the glass, in the tissue's 5x patch
    Image.fromarray(image).save(inked)
    before = ExtractConfig(weights="random", resolution=resolution, num_workers=0, batch_size=8, mpp=0.5,
                           tissue=TissueConfig(exclude_ink=False))
    out, now = tmp_path / "out", dataclasses.replace(before, tissue=TissueConfig())
    assert features.run_extract([plain, inked], before, out)["done"] == 2
    folder = feature_dir(out / "features", "lrmil_vit_tiny", *before.patch.level(resolution))
    stored = read_features(folder / "plain.h5")
    encoded, encode_level = [], features.encode_level
    monkeypatch.setattr(features, "encode_level", lambda loader, path, *rest: encoded.append(path.name)
                        or encode_level(loader, path, *rest))
    summary = features.run_extract([plain, inked], now, out)
    assert (summary["done"], summary["kept"], summary["skipped"], encoded) == (1, 1, 0, ["inked.png"])
    kept = read_features(folder / "plain.h5")
    assert np.array_equal(kept.features, stored.features) and np.array_equal(kept.coords, stored.coords)
    assert kept.config_hash == features.job_hash(dataclasses.replace(now, mpp=0.5), features.create_encoder(
        "lrmil_vit_tiny", weights="random").cfg)[1] != stored.config_hash
    assert features.run_extract([plain, inked], now, out)["skipped"] == 2
    assert features.run_extract([plain], dataclasses.replace(now, resume=False), out)["done"] == 1  # encoded again


def test_features_are_kept_only_from_the_same_slide_file_grid_and_settings_but_tissue(tmp_path):
    """`features_on_same_grid`: a rescan under the same name, a grid of the same size moved, another patch size, or a
    change other than to the tissue settings (new encoder weights) gives features that encoding now would not."""
    from lrmil.features import features_on_same_grid
    from lrmil.patching import GridLevel

    record = {"extract": {"tissue": {"exclude_ink": False}, "batch": 1}, "encoder_cfg": {"weights_sha256": "ab"}}
    stored = dataclasses.replace(_file(), config=record)
    path = tmp_path / "s1.h5"
    write_features(path, stored)
    level = GridLevel(stored.coords, stored.patch_size_level0, stored.patch_px, stored.magnification, 0)
    now = {**record, "extract": {**record["extract"], "tissue": {"exclude_ink": True}}}
    kept = features_on_same_grid(path, now, SOURCE, level, stored.children)
    assert kept is not None and np.array_equal(kept, stored.features)
    moved = dataclasses.replace(level, coords=stored.coords + 1)
    other_patch = dataclasses.replace(level, size_level0=2 * level.size_level0)
    for args in ((now, {**SOURCE, "size": 1}, level), (now, SOURCE, moved), (now, SOURCE, other_patch),
                 ({**now, "encoder_cfg": {"weights_sha256": "cd"}}, SOURCE, level)):
        assert features_on_same_grid(path, *args, stored.children) is None


def test_a_header_claiming_rows_the_file_does_not_hold_is_one_line_not_a_memory_error(tmp_path):
    """A 2 kB file whose `features` declared 10**12 x 1024 (a damaged or crafted header) was a MemoryError traceback
    that ended `lrmil train`; rows a CLAM writer grew the dataset by and was killed before filling read as zeros."""
    with h5py.File(tmp_path / "huge.h5", "w") as f:
        f["coords"] = np.zeros((3, 2), np.int64)
        f.create_dataset("features", shape=(10**12, 1024), dtype="f4", chunks=(256, 1024))  # no chunk written
    with pytest.raises(ValueError, match=r"^'features' declares 1000000000000 x 1024 values but the file holds 0 of "
                                         r"its 3906250000 chunks: damaged, or its writing was cut short; extract the "
                                         r"slide again$"):
        read_features(tmp_path / "huge.h5")
    with h5py.File(tmp_path / "cut.h5", "w") as f:  # as CLAM's save_hdf5 appends: resize, then write
        f["coords"] = np.zeros((3, 2), np.int64)
        features = f.create_dataset("features", shape=(0, 8), maxshape=(None, 8), chunks=(1, 8), dtype="f4")
        features.resize((3, 8))
        features[:2] = 1.0
    with pytest.raises(ValueError, match=r"^'features' declares 3 x 8 values but the file holds 2 of its 3 chunks"):
        read_features(tmp_path / "cut.h5")
    with h5py.File(tmp_path / "contiguous.h5", "w") as f:
        f["coords"] = np.zeros((3, 2), np.int64)
        f.create_dataset("features", shape=(10**6, 1024), dtype="f4")  # contiguous, never written
    with pytest.raises(ValueError, match=r"the file holds 0 of its 4096000000 bytes"):
        read_features(tmp_path / "contiguous.h5")


def test_a_feature_file_cut_short_says_so_in_plain_words(tmp_path):
    """A copy stopped midway said "Unable to synchronously open file (truncated file: eof = 6464, sblock->base_addr =
    0, stored_eof = 12928)": HDF5's words for it. Now how much of the file is there, and what to do."""
    path = tmp_path / "s1.h5"
    with h5py.File(path, "w") as f:
        f["coords"] = np.zeros((40, 2), np.int64)
        f["features"] = np.ones((40, 64), np.float32)
    whole = path.read_bytes()
    path.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(OSError, match=rf"^cut short: {len(whole) // 2} of its {len(whole)} bytes \(a copy stopped "
                                      r"midway, or its writing\); copy or extract the slide again$"):
        read_features(path)


def damaged_feature_files(folder: Path, good: Path, dim: int) -> str:
    """Beside a good feature file, `huge.h5` (a header claiming 10**12 rows, none written) and `cut.h5` (the good
    file's first 1000 bytes, a copy stopped midway); returns the cut file's one-line reason."""
    with h5py.File(folder / "huge.h5", "w") as f:
        f["coords"] = np.zeros((3, 2), np.int64)
        f.create_dataset("features", shape=(10**12, dim), dtype="f4", chunks=(256, dim))
    (folder / "cut.h5").write_bytes(good.read_bytes()[:1000])
    return (f"cut short: 1000 of its {good.stat().st_size} bytes (a copy stopped midway, or its writing); copy or "
            "extract the slide again")
