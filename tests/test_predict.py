"""`lrmil predict`: heatmap helpers, the student/teacher paths on real and synthetic slides, errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lrmil.config import PatchConfig, TissueConfig
from lrmil.heatmap import COLOUR_BAR_PX, overlay, percentiles, score_map
from lrmil.mil.bundle import demo_model_dir, load_path
from lrmil.mil.config import DEMO_NOTICE, PredictConfig
from lrmil.mil.metrics import read_predictions
from lrmil.predict import run_predict
from tests.test_slide import dicom_slide


def test_percentiles_and_score_map_place_scores_on_patch_footprints():
    assert percentiles(np.array([0.1, 0.5, 0.2])).tolist() == pytest.approx([1 / 3, 1.0, 2 / 3])
    coords = np.array([[0, 0], [512, 512]])
    grid = score_map(coords, 512, np.array([0.25, 1.0]), dimensions=(1024, 2048), shape=(8, 4))
    assert np.allclose(grid[:2, :2], 0.25) and np.allclose(grid[2:4, 2:4], 1.0)
    assert np.isnan(grid[4:]).all() and np.isnan(grid[0, 2])


def test_overlay_colours_as_matplotlib_blends_in_float_and_holds_bands_not_the_image(monkeypatch):
    """The heatmap's colours went through matplotlib's float64 RGBA for the whole image at once (about 55 bytes a
    pixel: 2.9 GB for an 8192-px heatmap); by rows through the colour table it is the same image, in a few bytes a
    pixel (numpy's allocations are what tracemalloc sees)."""
    import tracemalloc

    from matplotlib import colormaps

    from lrmil import heatmap

    rng = np.random.default_rng(0)
    thumbnail = rng.integers(0, 256, (2048, 2048, 3), np.uint8)
    scores = rng.random((2048, 2048)).astype(np.float32)
    scores[:100], scores[200, :5], scores[300, :5] = np.nan, 0.0, 1.0
    scored = ~np.isnan(scores)[..., None]  # the earlier blend, whole
    colours = (colormaps["inferno"](np.nan_to_num(scores))[..., :3] * 255).astype(np.float32)
    expected = np.where(scored, 0.5 * thumbnail.astype(np.float32) + 0.5 * colours, thumbnail).astype(np.uint8)
    del scored, colours
    tracemalloc.start()
    image = overlay(thumbnail, scores)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(image, expected)
    assert peak < 8 * scores.size  # the image (3 bytes a pixel) and one band's temporaries
    monkeypatch.setattr(heatmap, "OVERLAY_ROWS", 7)  # bands that end mid-image
    np.testing.assert_array_equal(overlay(thumbnail[:50], scores[:50]), expected[:50])


@pytest.fixture(scope="module")
def model_dir(random_lrmil_bundle):
    return random_lrmil_bundle


def _tissue_png(path, size=1024, **save_options):
    """Pink 'tissue' disc on white glass; no resolution tags (unless given), so it needs --mpp."""
    yy, xx = np.mgrid[:size, :size]
    disc = (xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size * 0.4) ** 2
    rng = np.random.default_rng(0)
    image = np.where(disc[..., None], np.array([200, 110, 170]) + rng.integers(-20, 20, (size, size, 3)), 245)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.astype(np.uint8)).save(path, **save_options)
    return path


def test_bundle_round_trip_keeps_configs_and_notice(model_dir):
    model = load_path(model_dir, "teacher")
    assert model.notice == DEMO_NOTICE and model.patch == PatchConfig() and model.mil.cfg.magnification == 20.0
    with pytest.raises(ValueError, match="--path"):
        load_path(model_dir, "both")


def test_bundle_refuses_an_abmil_in_the_other_path_s_slot(model_dir, tmp_path):
    """Both ABMILs take the same encoder's features, so only their magnification tells them apart."""
    from lrmil.mil.bundle import save_bundle

    root = model_dir.parent
    with pytest.raises(ValueError, match="the student slot takes a 5x ABMIL, this one was trained on 20x features"):
        save_bundle(tmp_path / "swapped", (root / "enc.safetensors", root / "teacher.safetensors"),
                    (root / "enc.safetensors", root / "student.safetensors"), PatchConfig(), TissueConfig())


def test_bundle_replaces_a_link_in_its_folder_rather_than_writing_the_file_it_leads_to(tmp_path):
    """Bundling into a model folder someone shared (unpacked from an archive, links and all): a student_mil.safetensors
    linking to a file elsewhere had that file overwritten with the ABMIL's weights."""
    from lrmil.mil.bundle import save_bundle

    demo = demo_model_dir()
    student, teacher = [(demo / f"{name}_encoder.safetensors", demo / f"{name}_mil.safetensors")
                        for name in ("student", "teacher")]
    elsewhere = tmp_path / "notes.txt"
    elsewhere.write_text("kept")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "student_mil.safetensors").symlink_to(elsewhere)
    folder = save_bundle(tmp_path / "model", student, teacher, PatchConfig(), TissueConfig())
    assert elsewhere.read_text() == "kept"
    assert not (folder / "student_mil.safetensors").is_symlink()
    assert load_path(folder, "student").mil.cfg.magnification == 5.0


def test_bundle_refuses_a_5x_encoder_in_the_teacher_slot_and_carries_the_synthetic_notice(tmp_path):
    """The demo model's encoders swapped: each records the magnification it was made for. Bundled again without
    --notice, weights trained on synthetic slides still say so in every prediction."""
    from lrmil.mil.bundle import save_bundle

    demo = demo_model_dir()
    student, teacher = [(demo / f"{name}_encoder.safetensors", demo / f"{name}_mil.safetensors")
                        for name in ("student", "teacher")]
    with pytest.raises(ValueError, match="student_encoder.safetensors: the teacher slot reads 20x patches, and this "
                                         "encoder was distilled for 5x"):
        save_bundle(tmp_path / "swapped", (teacher[0], student[1]), (student[0], teacher[1]), PatchConfig(),
                    TissueConfig())
    again = save_bundle(tmp_path / "again", student, teacher, PatchConfig(), TissueConfig())
    assert "synthetic" in load_path(again, "student").notice


def test_bundle_refuses_encoder_weights_other_than_those_the_abmil_s_features_came_from(model_dir, tmp_path):
    """Features extracted with the bundled default encoder, bundled with the demo model's teacher encoder (same
    architecture, other weights): the model folder was written and its teacher path flipped a slide's label
    (synth_0009: normal out of fold, tumor through the bundle). Refused now, naming the weights to give, and
    nothing is written."""
    import torch

    from export.artifact import sha256
    from lrmil.encoders import bundled_weights, create_encoder, save_encoder
    from lrmil.mil.bundle import save_bundle
    from lrmil.mil.config import ABMILConfig, MILConfig
    from lrmil.mil.train import train
    from lrmil.store import FeatureFile, write_features

    default = bundled_weights("lrmil_vit_tiny")
    rng = np.random.default_rng(0)
    for i in range(6):
        write_features(tmp_path / "features" / f"s{i}.h5", FeatureFile(
            np.zeros((3, 2), np.int64), rng.normal(0, 1, (3, 192)).astype(np.float32), np.zeros((3, 0), np.int64),
            256, 256, 20.0, 0.5, encoder="lrmil_vit_tiny", weights_sha256=sha256(default)))
    (tmp_path / "splits.csv").write_text("slide_id,label,fold\n" + "".join(f"s{i},{'ab'[i % 2]},{i % 3}\n"
                                                                         for i in range(6)))
    train(MILConfig(features=str(tmp_path / "features"), splits=str(tmp_path / "splits.csv"), out=str(tmp_path / "run"),
                    folds=(0,), model=ABMILConfig(hidden_dim=8, attn_dim=8), epochs=1))
    torch.manual_seed(1)
    other = create_encoder("lrmil_vit_tiny", weights="random")
    save_encoder(tmp_path / "other.safetensors", other, other.cfg)
    student = (model_dir.parent / "enc.safetensors", model_dir.parent / "student.safetensors")  # weights not recorded
    teacher_mil = tmp_path / "run" / "fold0" / "model.safetensors"
    with pytest.raises(ValueError, match=rf"^{re.escape(str(tmp_path / 'other.safetensors'))}: the teacher ABMIL .*"
                                         rf"was trained on features of encoder weights {sha256(default)[:8]}, this "
                                         rf"file holds {sha256(tmp_path / 'other.safetensors')[:8]}; give "
                                         r"--teacher-encoder the weights its features were extracted with \(those of "
                                         rf"`--weights default`: {re.escape(str(default))}\)$"):
        save_bundle(tmp_path / "model", student, (tmp_path / "other.safetensors", teacher_mil), PatchConfig(),
                    TissueConfig())
    assert not (tmp_path / "model").exists()
    assert load_path(save_bundle(tmp_path / "model", student, (default, teacher_mil), PatchConfig(), TissueConfig()),
                     "teacher").mil.cfg.labels == ("a", "b")


def test_a_training_run_given_as_the_model_says_to_bundle_it(tmp_path):
    """`lrmil train --out runs/teacher`, then `predict --model runs/teacher` (and the lab app's Model field): it was
    'not an LRMIL model folder (no model.json or onnx.json)', which does not say what makes one."""
    from lrmil.mil.attention import ABMIL, save_mil
    from lrmil.mil.config import ABMILConfig

    save_mil(tmp_path / "teacher" / "fold0" / "model.safetensors", ABMIL(ABMILConfig()))
    with pytest.raises(FileNotFoundError, match=rf"^{re.escape(str(tmp_path / 'teacher'))}: a training run, not "
                                                r"a model folder; `lrmil bundle` makes one of a fold's "
                                                r"model.safetensors"):
        load_path(tmp_path / "teacher", "student")


def test_student_and_teacher_paths_on_an_image_and_the_missing_mpp_error(model_dir, tmp_path):
    slide = _tissue_png(tmp_path / "disc.png")
    out = tmp_path / "out"
    summary = run_predict([slide], PredictConfig(model=str(model_dir)), out / "nompp")
    assert summary["done"] == 0 and summary["failed"] == 1
    row = next(csv.DictReader(open(out / "nompp" / "errors.csv")))
    assert "--mpp" in row["message"] and row["path"].endswith("disc.png")

    student = run_predict([slide], PredictConfig(model=str(model_dir), mpp=0.5), out / "s")
    teacher = run_predict([slide], PredictConfig(model=str(model_dir), mpp=0.5, path="teacher"), out / "t")
    assert student["done"] == teacher["done"] == 1
    s = json.loads((out / "s" / "disc.json").read_text())
    t = json.loads((out / "t" / "disc.json").read_text())
    assert s["magnification"] == 5.0 and t["magnification"] == 20.0
    assert 0 < s["patches"] <= 1 and 1 < t["patches"] <= 16  # one 5x patch covers 16 20x patches
    assert s["notice"] == DEMO_NOTICE and s["mpp_source"] == "--mpp"
    assert sum(s["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert set(s["seconds"]) == {"tissue", "patches", "read", "encode", "mil", "total"}
    assert Image.open(out / "s" / "disc_heatmap.png").size[0] == 1024 + COLOUR_BAR_PX  # the slide, then its scale
    assert (out / "t" / "disc_topk.png").is_file()
    mask = np.asarray(Image.open(out / "s" / s["mask"]))  # the thumbnail, the tissue found drawn on it
    assert s["mask"] == "disc_mask.png" and mask.ndim == 3 and mask.shape[2] == 3 and mask.std() > 0


def test_real_slides_cmu_works_no_mpp_needs_the_flag_and_broken_is_reported(model_dir, shared_data, tmp_path):
    slides = shared_data / "slides"
    batch = [slides / "broken.svs", slides / "CMU-1-Small-Region.svs", slides / "TCGA-CR-7395-01A-01-TS1-no-mpp.svs"]
    summary = run_predict(batch, PredictConfig(model=str(model_dir)), tmp_path / "a")
    assert summary["done"] == 1 and summary["failed"] == 2
    errors = {row["path"].rsplit("/", 1)[-1]: row["message"]
              for row in csv.DictReader(open(tmp_path / "a" / "errors.csv"))}
    assert "--mpp" in errors["TCGA-CR-7395-01A-01-TS1-no-mpp.svs"]
    assert "broken.svs" in errors
    record = json.loads((tmp_path / "a" / "CMU-1-Small-Region.json").read_text())
    assert record["mpp"] == pytest.approx(0.499, abs=1e-3) and record["patches"] >= 1
    assert (tmp_path / "a" / "CMU-1-Small-Region_heatmap.png").is_file()
    # every patch's attention on the slide's level-0 frame, for QuPath: squares inside the slide, the top one
    # where SLIDE.json puts it
    collection = json.loads((tmp_path / "a" / record["geojson"]).read_text())
    features = collection["features"]
    assert collection["type"] == "FeatureCollection" and len(features) == record["patches"]
    attention = [f["properties"]["measurements"]["attention"] for f in features]
    assert sum(attention) == pytest.approx(1.0, abs=1e-4)  # softmax over the slide's patches
    for f in features:
        (ring,) = f["geometry"]["coordinates"]
        xs, ys = [x for x, _ in ring], [y for _, y in ring]
        assert ring[0] == ring[-1] and 0 <= min(xs) < max(xs) <= 2220 and 0 <= min(ys) < max(ys) <= 2967
    best = features[int(np.argmax(attention))]["geometry"]["coordinates"][0][0]
    assert best == [record["top_patches"][0]["x"], record["top_patches"][0]["y"]]

    fixed = run_predict([batch[2]], PredictConfig(model=str(model_dir), mpp=0.5), tmp_path / "b")
    assert fixed["done"] == 1
    assert json.loads((tmp_path / "b" / "TCGA-CR-7395-01A-01-TS1-no-mpp.json").read_text())["mpp_source"] == "--mpp"


def test_cli_predict_reports_failures_and_the_demo_notice(model_dir, tmp_path):
    from typer.testing import CliRunner

    from lrmil.cli import app

    slide = _tissue_png(tmp_path / "disc.png", size=512)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["predict", str(slide), str(tmp_path / "missing.svs"), "--model", str(model_dir),
                                      "--out", str(out), "--mpp", "0.5"])
    assert result.exit_code == 1, result.output  # the batch ran, but a slide failed
    summary = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))
    assert summary["done"] == 1 and summary["failed"] == 1
    assert f"1 slide(s) failed: see {out / 'errors.csv'}" in result.stderr
    assert DEMO_NOTICE in result.output and "missing.svs" in (out / "errors.csv").read_text()

    again = CliRunner().invoke(app, ["predict", str(slide), "--model", str(model_dir), "--out", str(out),
                                     "--mpp", "0.5"])
    assert again.exit_code == 0, again.output
    assert not (out / "errors.csv").exists()  # the rerun failed nothing: no stale failures left behind


def test_mpp_fills_in_missing_metadata_unless_override_is_asked_for(model_dir, tmp_path):
    tagged = _tissue_png(tmp_path / "tagged.tif", resolution_unit=3, resolution=20000.0)  # 0.5 um/px in its tags
    untagged = _tissue_png(tmp_path / "untagged.png")
    run_predict([tagged, untagged], PredictConfig(model=str(model_dir), mpp=1.0), tmp_path / "fallback")
    records = {name: json.loads((tmp_path / "fallback" / f"{name}.json").read_text())
               for name in ("tagged", "untagged")}
    assert (records["tagged"]["mpp"], records["tagged"]["mpp_source"]) == (pytest.approx(0.5), "metadata")
    assert (records["untagged"]["mpp"], records["untagged"]["mpp_source"]) == (1.0, "--mpp")

    run_predict([tagged], PredictConfig(model=str(model_dir), mpp=1.0, override_mpp=True), tmp_path / "forced")
    forced = json.loads((tmp_path / "forced" / "tagged.json").read_text())
    assert (forced["mpp"], forced["mpp_source"]) == (1.0, "--mpp")
    assert forced["patches"] > records["tagged"]["patches"]  # coarser pixels: more 5x patches on the same disc
    table = read_predictions(tmp_path / "fallback" / "predictions.csv").set_index("slide_id")
    assert list(table.loc[["tagged", "untagged"], "mpp_source"]) == ["metadata", "--mpp"]  # the run shows in the table
    assert set(table["path"]) == {"student"} and set(table["model"]) == {str(model_dir)}


def test_a_slide_scanned_coarser_than_the_path_reads_is_said_to_be_enlarged(model_dir, tmp_path, caplog):
    """A 10x scan on the 20x teacher path: its patches are enlarged 2x, interpolated pixels in place of the detail
    the encoder learned from; that was silent."""
    slide = _tissue_png(tmp_path / "disc.png")
    with caplog.at_level("WARNING"):
        run_predict([slide], PredictConfig(model=str(model_dir), mpp=1.0, path="teacher"), tmp_path / "t")
        run_predict([slide], PredictConfig(model=str(model_dir), mpp=1.0), tmp_path / "s")
        run_predict([slide], PredictConfig(model=str(model_dir), mpp=0.5, path="teacher"), tmp_path / "n")  # 20x
    teacher, student, native = (json.loads((tmp_path / p / "disc.json").read_text()) for p in ("t", "s", "n"))
    assert teacher["enlargement"] == 2.0 and student["enlargement"] == 0.5  # 5x from a 10x scan: reduced
    assert native["enlargement"] == 1.0  # read as scanned: nothing to say
    (said,) = [r.getMessage() for r in caplog.records if "enlarged" in r.getMessage()]  # the teacher's only
    assert said.startswith(f"{slide}: scanned at 10x (1 um/px), coarser than the 20x the teacher path reads")


def test_a_slide_of_few_patches_is_said_to_rest_on_them_and_the_table_counts_them(model_dir, tmp_path, caplog):
    """A tiny biopsy (a disc of 410 um: one 5x patch) was predicted from that patch without a word; the teacher
    path reads 12 20x patches of it, and the same disc scanned at 2 um/px 16 5x patches: nothing to say."""
    slide = _tissue_png(tmp_path / "disc.png")
    with caplog.at_level("WARNING"):
        run_predict([slide], PredictConfig(model=str(model_dir), mpp=0.5), tmp_path / "s")
        run_predict([slide], PredictConfig(model=str(model_dir), mpp=0.5, path="teacher"), tmp_path / "t")
        run_predict([slide], PredictConfig(model=str(model_dir), mpp=2.0), tmp_path / "coarse")
    said = [r.getMessage() for r in caplog.records if "rests on" in r.getMessage()]
    assert said == [f"{slide}: only 1 patch of tissue at 5x; the prediction rests on it"]
    patches = {run: read_predictions(tmp_path / run / "predictions.csv")["patches"].tolist()
               for run in ("s", "t", "coarse")}
    assert patches == {"s": [1], "t": [12], "coarse": [16]}


def test_slides_of_one_name_in_case_folders_are_each_predicted_under_their_folders_names(model_dir, tmp_path, caplog):
    """An archive by year and case (2023/S1/disc.png, 2024/S1/disc.png): every slide after the first of a name
    failed ('slide id is already used'), and predictions.csv held ids alone. Each is now predicted, its id with as
    many of its folders' names as tell it apart (a NAS share may not tell disc from Disc), its file in the table;
    a rerun given more folders leaves out of the table the earlier prediction under the shorter name."""
    archive, out = tmp_path / "archive", tmp_path / "out"
    slides = [_tissue_png(archive / rel, 512) for rel in ("2023/S1/disc.png", "2024/S1/disc.png", "2024/S2/Disc.png")]
    cfg = PredictConfig(model=str(model_dir), mpp=0.5)
    assert run_predict(slides[:1], cfg, out)["done"] == 1 and (out / "disc.json").is_file()  # 2023 alone first
    summary = run_predict(slides, cfg, out)
    assert (summary["done"], summary["failed"]) == (3, 0)
    table = read_predictions(out / "predictions.csv")
    assert list(zip(table["slide_id"], table["slide"])) == [
        ("2023_S1_disc", str(slides[0])), ("2024_S1_disc", str(slides[1])), ("S2_Disc", str(slides[2]))]
    assert f"{out / 'disc.json'}: left out of predictions.csv, an earlier prediction of {slides[0]}" in caplog.text
    assert json.loads((out / "2024_S1_disc.json").read_text())["heatmap"] == "2024_S1_disc_heatmap.png"
    assert run_predict(slides, cfg, out)["skipped"] == 3  # the same batch again: nothing redone


def test_a_rerun_given_relative_paths_leaves_out_the_earlier_prediction_under_the_shorter_name(model_dir, tmp_path,
                                                                                              monkeypatch):
    """Slides are usually given relative to where lrmil runs (2023/S1/disc.png): the earlier prediction of one under
    its shorter name is told by the file it was made from, not by the path as given, or the table lists that slide
    twice (disc and 2023_S1_disc)."""
    monkeypatch.chdir(tmp_path)
    slides = [_tissue_png(Path(rel), 512) for rel in ("2023/S1/disc.png", "2024/S1/disc.png")]
    cfg = PredictConfig(model=str(model_dir), mpp=0.5)
    run_predict(slides[:1], cfg, "out")
    run_predict(slides, cfg, "out")
    table = read_predictions(Path("out") / "predictions.csv")
    assert list(zip(table["slide_id"], table["slide"])) == [("2023_S1_disc", "2023/S1/disc.png"),
                                                           ("2024_S1_disc", "2024/S1/disc.png")]


def test_a_later_run_does_not_replace_another_slide_of_the_same_name(model_dir, tmp_path):
    """Rerunning into one --out adds slides to its table; a slide of an id another file (still there) holds is
    refused, naming both, and the other's row stays. If that file is gone (moved), the slide is predicted."""
    first, second = _tissue_png(tmp_path / "a" / "disc.png", 512), _tissue_png(tmp_path / "b" / "disc.png", 256)
    out, cfg = tmp_path / "out", PredictConfig(model=str(model_dir), mpp=0.5)
    assert run_predict([first], cfg, out)["done"] == 1
    for resume in (True, False):
        summary = run_predict([second], dataclasses.replace(cfg, resume=resume), out)
        assert (summary["done"], summary["failed"]) == (0, 1)
        row = next(csv.DictReader(open(out / "errors.csv")))
        assert row["path"] == str(second) and str(first.resolve()) in row["message"] and "disc.json" in row["message"]
        assert json.loads((out / "disc.json").read_text())["slide"] == str(first)
        assert list(read_predictions(out / "predictions.csv")["slide_id"]) == ["disc"]
    first.unlink()
    assert run_predict([second], cfg, out)["done"] == 1
    assert json.loads((out / "disc.json").read_text())["slide"] == str(second)


@pytest.mark.skipif(os.name != "posix", reason="a name that is not UTF-8 is a POSIX file system's")
def test_a_slide_name_that_is_not_utf8_is_predicted_and_listed(model_dir, tmp_path):
    slide = _tissue_png(tmp_path / os.fsdecode(b"r\xe9gion.png"), 512)
    assert run_predict([slide], PredictConfig(model=str(model_dir), mpp=0.5), tmp_path / "out")["done"] == 1
    assert list(read_predictions(tmp_path / "out" / "predictions.csv")["slide_id"]) == ["r\\udce9gion"]


def test_slides_named_near_the_file_system_limit_get_outputs_of_their_own(model_dir, tmp_path):
    """A slide named near 255 bytes failed with "File name too long" (its SLIDE_attention.geojson in predict; the
    temporaries of its mask and grid in patch and extract). Those names are now cut short with a hash of the whole id,
    so two long names that begin alike keep their outputs apart, and a rerun finds them."""
    from lrmil.features import run_patching

    slides = [_tissue_png(tmp_path / ("é" * 121 + tail), 512) for tail in ("a.png", "b.png")]  # 247 bytes each
    out, cfg = tmp_path / "out", PredictConfig(model=str(model_dir), mpp=0.5)
    assert run_predict(slides, cfg, out)["done"] == 2
    geojsons = sorted(out.glob("*.geojson"))
    assert len(geojsons) == 2 and all(len(os.fsencode(g.name)) <= 255 for g in geojsons)
    assert run_predict(slides, cfg, out)["skipped"] == 2
    patched = run_patching(slides, TissueConfig(), PatchConfig(), 0.5, tmp_path / "grid")
    assert (patched["done"], patched["failed"]) == (2, 0)


def test_a_slide_named_config_fails_alone_instead_of_overwriting_the_run_s_settings(model_dir, tmp_path):
    """Config.svs wrote its Config.json over the run's config.json (the same file on a NAS share, which ignores case),
    and every rerun predicted it again; it is now one error naming the file, and the batch goes on."""
    slides = [_tissue_png(tmp_path / "Config.png", 512), _tissue_png(tmp_path / "HE.png", 512)]
    out = tmp_path / "out"
    summary = run_predict(slides, PredictConfig(model=str(model_dir), mpp=0.5), out)
    assert (summary["done"], summary["failed"]) == (1, 1)
    assert "model_dir" in json.loads((out / "config.json").read_text())
    row = next(csv.DictReader(open(out / "errors.csv")))
    assert row["path"] == str(slides[0]) and "rename the file" in row["message"]


def test_a_rerun_skips_slides_whose_outputs_are_current_and_redoes_the_rest(model_dir, tmp_path):
    tagged = _tissue_png(tmp_path / "tagged.tif", size=512, resolution_unit=3, resolution=20000.0)  # 0.5 um/px
    untagged = _tissue_png(tmp_path / "untagged.png", size=512)
    out, cfg = tmp_path / "out", PredictConfig(model=str(model_dir), mpp=0.5)

    def run(slides=(tagged, untagged), **changes):
        summary = run_predict(list(slides), dataclasses.replace(cfg, **changes), out)
        return summary["done"], summary["skipped"]

    assert run() == (2, 0)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*") if p.name != "predictions.csv"}
    assert run() == (0, 2)
    assert all((out / name).stat().st_mtime_ns == stamp for name, stamp in stamps.items() if name != "config.json")
    assert len(pd.read_csv(out / "predictions.csv")) == 2
    assert run(mpp=0.25) == (1, 1)  # only the slide the flag applies to: the tagged one keeps its metadata's scale
    assert run(mpp=0.25, override_mpp=True) == (1, 1)  # now the tagged one's scale changed too
    assert run(heatmap_px=256, mpp=0.25, override_mpp=True) == (2, 0)  # a setting that changes the outputs
    (out / "untagged_topk.png").unlink()  # an output gone
    os.utime(tagged, ns=(1, 1))  # another file at the same slide id
    assert run(heatmap_px=256, mpp=0.25, override_mpp=True) == (2, 0)
    assert run(heatmap_px=256, mpp=0.25, override_mpp=True, resume=False) == (2, 0)
    assert run(heatmap_px=256, mpp=0.25, override_mpp=True, batch_size=3) == (0, 2)  # does not change outputs


def test_a_slide_predicted_again_as_its_scale_changed_is_said_so_from_its_record(model_dir, tmp_path):
    """A slide predicted again only as its --mpp changed was in no line (the check reads SLIDE.json, and the scale
    is the slide's): the record says where its scale came from, and the rerun's --mpp tells the new one, unopened."""
    tagged = _tissue_png(tmp_path / "tagged.tif", size=512, resolution_unit=3, resolution=20000.0)  # 0.5 um/px
    untagged = _tissue_png(tmp_path / "untagged.png", size=512)
    out = tmp_path / "out"

    def run(**settings) -> tuple[int, dict]:
        summary = run_predict([tagged, untagged], PredictConfig(model=str(model_dir), **settings), out)
        return summary["done"], summary["redone_because"]

    assert run(mpp=0.5) == (2, {})
    assert run(mpp=0.25) == (1, {"the scale changed (mpp 0.5 -> 0.25)": 1})  # the tagged one keeps its metadata's
    topk = "settings changed (topk 8 -> 4)"
    assert run(mpp=0.25, override_mpp=True, topk=4) == (
        2, {topk: 1, f"{topk} and the scale changed (mpp 0.5 -> 0.25)": 1})
    # after --override-mpp the record does not tell a slide with metadata (back to its scale now) from one without
    # (at --mpp's): neither is said before the work, rather than a wrong scale, and the summary says each, opened
    assert run(mpp=1.0, topk=4) == (2, {"the scale changed (mpp 0.25 -> 0.5)": 1,
                                        "the scale changed (mpp 0.25 -> 1.0)": 1})
    assert run(mpp=0.5, topk=4) == (1, {"the scale changed (mpp 1.0 -> 0.5)": 1})


def test_a_slide_predicted_again_that_fails_is_not_counted_as_redone(model_dir, tmp_path):
    """The slides predicted again as the settings changed were counted before the work: a rerun with --topk 4 and
    no --mpp, the slide without MPP metadata failing, reported it as redone too ('"done": 1, "redone": 2')."""
    tagged = _tissue_png(tmp_path / "tagged.tif", size=512, resolution_unit=3, resolution=20000.0)  # 0.5 um/px
    untagged = _tissue_png(tmp_path / "untagged.png", size=512)
    out = tmp_path / "out"
    assert run_predict([tagged, untagged], PredictConfig(model=str(model_dir), mpp=0.5), out)["done"] == 2
    summary = run_predict([tagged, untagged], PredictConfig(model=str(model_dir), topk=4), out)
    assert (summary["done"], summary["failed"], summary["redone"], summary["redone_because"]) == (
        1, 1, 1, {"settings changed (topk 8 -> 4)": 1})


def test_a_slide_rescanned_at_its_id_is_predicted_anew_not_counted_as_redone(model_dir, tmp_path):
    """A slide predicted again as the model or settings changed is one predicted before from the same file, as the
    line said before the work: a rescan at the same id is new, whatever else changed."""
    tagged = _tissue_png(tmp_path / "tagged.tif", size=512, resolution_unit=3, resolution=20000.0)  # 0.5 um/px
    out = tmp_path / "out"
    assert run_predict([tagged], PredictConfig(model=str(model_dir)), out)["done"] == 1
    os.utime(tagged, ns=(1, 1))  # another file at the same slide id
    summary = run_predict([tagged], PredictConfig(model=str(model_dir), topk=4), out)
    assert (summary["done"], summary["redone"], summary["redone_because"]) == (1, 0, {})


def test_a_model_folder_moved_or_written_anew_predicts_nothing_again_and_other_weights_everything(model_dir,
                                                                                                   tmp_path, caplog,
                                                                                                   monkeypatch):
    """Slides' keys named the model folder by its place and its files' sizes and times: a folder copied elsewhere
    (or reinstalled) had every slide predicted again, to the same outputs. They name its files' bytes (whatever order
    the folder is listed in: ext4's depends on the disk). Slides predicted again as the model or settings changed
    were so with no word why: one line before the work says which files of the model or which settings, and the
    summary counts them."""
    import hashlib
    import logging
    import shutil

    slides = [_tissue_png(tmp_path / f"{name}.png", size=512) for name in ("a", "b")]
    out, mine = tmp_path / "out", Path(shutil.copytree(model_dir, tmp_path / "model"))

    def run(folder: Path) -> tuple[int, int]:
        summary = run_predict(slides, PredictConfig(model=str(folder), mpp=0.5), out)
        return summary["done"], summary["skipped"]

    assert run(mine) == (2, 0)
    for file in mine.iterdir():
        os.utime(file, ns=(1, 1))  # written anew
    assert run(Path(shutil.copytree(mine, tmp_path / "elsewhere"))) == (0, 2)
    with monkeypatch.context() as other_disk:
        listed = Path.iterdir
        other_disk.setattr(Path, "iterdir", lambda folder: reversed(list(listed(folder))))
        assert run(mine) == (0, 2)
    weights = next(mine.glob("*.safetensors"))
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
    data = bytearray(weights.read_bytes())
    data[-4] ^= 1  # the last weight's lowest bit: another model of the same size
    weights.write_bytes(bytes(data))
    with caplog.at_level(logging.INFO, logger="lrmil.predict"):
        summary = run_predict(slides, PredictConfig(model=str(mine), mpp=0.5), out)
    why = f"the model changed ({weights.name} was {digest}..., now {hashlib.sha256(data).hexdigest()[:12]}...)"
    assert (summary["done"], summary["redone"]) == (2, 2)
    assert summary["redone_because"] == {why: 2}
    assert [r.getMessage() for r in caplog.records if "again" in r.getMessage()] == [
        f"2 slide(s) an earlier run into {out} predicted are predicted again: {why}"]
    again = run_predict(slides, PredictConfig(model=str(mine), mpp=0.5, topk=4), out)
    assert (again["redone"], again["redone_because"]) == (2, {"settings changed (topk 8 -> 4)": 2})


CRASH = """
import os, signal, sys
from pathlib import Path
from export.atomic import atomic_path
import lrmil.predict
from lrmil.mil.config import PredictConfig
def half_then_die(path, image):
    with atomic_path(path) as tmp:  # die mid-write of the heatmap, as kill -9 would
        tmp.write_bytes(b"\\x89PNG half")
        os.kill(os.getpid(), signal.SIGKILL)
lrmil.predict.save_png = half_then_die
lrmil.predict.run_predict([Path(sys.argv[1])], PredictConfig(model=sys.argv[2], mpp=0.5), sys.argv[3])
"""


def test_a_run_killed_mid_write_leaves_no_temporary_after_a_later_one(model_dir, tmp_path):
    """kill -9 while a heatmap was written left its .NAME.XXXX.tmp in --out for good (found by killing
    `lrmil predict` on the real slides when a temporary appeared): a later run removes what a killed one left, once
    it has lain untouched for an hour; a fresh one may be another job's in flight (extraction split over GPUs)."""
    slide, out = _tissue_png(tmp_path / "a.png", size=512), tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", CRASH, str(slide), str(model_dir), str(out)], capture_output=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    (left,) = out.glob(".*.tmp")
    assert left.name.startswith(".a_heatmap.png.")
    (out / ".my notes.tmp").write_text("a user's own file")  # not ours: the sweep must leave it
    summary = run_predict([slide], PredictConfig(model=str(model_dir), mpp=0.5), out)
    assert (summary["done"], summary["failed"]) == (1, 0) and left.exists()  # as if another job's, in flight
    hours_ago = left.stat().st_mtime - 2 * 3600
    os.utime(left, (hours_ago, hours_ago))
    assert run_predict([slide], PredictConfig(model=str(model_dir), mpp=0.5), out)["skipped"] == 1
    assert [p.name for p in out.rglob(".*.tmp")] == [".my notes.tmp"]
    assert Image.open(out / "a_heatmap.png").size[0] > 0 and len(pd.read_csv(out / "predictions.csv")) == 1


def test_a_slide_that_now_fails_loses_its_earlier_row_in_predictions_csv(model_dir, tmp_path):
    """A slide file replaced by a broken copy must not keep its old answer in the table labs read."""
    kept, replaced = _tissue_png(tmp_path / "kept.png", 512), _tissue_png(tmp_path / "replaced.png", 512)
    out, cfg = tmp_path / "out", PredictConfig(model=str(model_dir), mpp=0.5)
    run_predict([kept, replaced], cfg, out)
    assert sorted(read_predictions(out / "predictions.csv")["slide_id"]) == ["kept", "replaced"]

    replaced.write_bytes(b"not a slide any more")
    summary = run_predict([kept, replaced], cfg, out)
    assert (summary["skipped"], summary["failed"]) == (1, 1)
    assert list(read_predictions(out / "predictions.csv")["slide_id"]) == ["kept"]
    assert (out / "replaced.json").is_file()  # the earlier record stays on disk, out of the table

    assert run_predict([replaced], cfg, out)["failed"] == 1
    assert list(read_predictions(out / "predictions.csv")["slide_id"]) == ["kept"]  # a slide not in this batch stays
    kept.write_bytes(b"broken too")
    run_predict([kept, replaced], cfg, out)
    assert not (out / "predictions.csv").exists()  # nothing current left to list


def test_predict_without_model_runs_the_bundled_demo_model(tmp_path):
    """What docs/lrmil.md and the lab app's "demo" choice promise: the shipped lrmil/assets/demo_model folder works."""
    from typer.testing import CliRunner

    from lrmil.cli import app

    slide = _tissue_png(tmp_path / "disc.png", size=512)
    result = CliRunner().invoke(app, ["predict", str(slide), "--out", str(tmp_path / "out"), "--mpp", "0.5"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "disc.json").read_text())
    assert record["model"] == "demo" and record["notice"] == DEMO_NOTICE and record["label"] in ("0", "1")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_dir"] == str(demo_model_dir())


def test_a_dicom_slide_is_predicted_once_by_its_folder_name_and_a_rescan_of_any_instance_redoes_it(model_dir,
                                                                                                    tmp_path):
    """`lrmil predict` on an archive of DICOM slides (a folder of instances each): it used to predict every
    instance, the label too, as a slide named by its file, and two cases' `level0.dcm` clashed."""
    from typer.testing import CliRunner

    from lrmil.cli import app

    archive, out = tmp_path / "archive", tmp_path / "out"
    case7, case8 = dicom_slide(archive / "case7"), dicom_slide(archive / "case8", size=256)

    def predict(*slides):
        result = CliRunner().invoke(app, ["predict", *map(str, slides), "--model", str(model_dir), "--out", str(out),
                                          "--recursive"])
        assert result.exit_code == 0, result.output
        return json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))

    assert predict(archive)["done"] == 2
    assert sorted(p.name for p in out.glob("*.json")) == ["case7.json", "case8.json", "config.json"]
    assert list(read_predictions(out / "predictions.csv")["slide_id"]) == ["case7", "case8"]
    record = json.loads((out / "case7.json").read_text())
    assert record["slide"] == str(case7 / "level0.dcm") and record["source"]["path"] == str(case7.resolve())
    assert (record["mpp"], record["mpp_source"]) == (pytest.approx(0.5), "metadata")  # DICOM PixelSpacing

    assert predict(case7 / "label.dcm")["skipped"] == 1  # an instance named: its slide, already done
    (case8 / "label.dcm").write_bytes((case8 / "label.dcm").read_bytes() + b"\0\0")  # one instance rescanned
    summary = predict(archive)
    assert (summary["done"], summary["skipped"]) == (1, 1)


def test_a_json_file_that_is_not_a_record_does_not_stop_predictions_csv(tmp_path, caplog):
    """An empty notes.json in --out ended `lrmil predict`, every slide done, in 'error: Expecting value: line 1
    column 1 (char 0)' (exit 2), naming no file, and wrote no predictions.csv."""
    from lrmil.predict import prediction_table

    record = {"slide": "/s/a.svs", "slide_id": "a", "label": "1", "patches": 3, "seconds": {"total": 0.5},
              "probabilities": {"0": 0.25, "1": 0.75}}
    (tmp_path / "a.json").write_text(json.dumps(record))
    (tmp_path / "notes.json").write_text("")
    table = prediction_table(tmp_path)
    assert list(table["slide_id"]) == ["a"] and list(table["p_1"]) == [0.75]
    assert f"{tmp_path / 'notes.json'}: left out of predictions.csv, not a prediction record" in caplog.text


def test_a_slide_named_with_a_colon_gets_outputs_an_sd_card_and_windows_take():
    """'scan 12:00.svs' (legal on ext4) had its outputs named 'scan 12:00.json', '..._heatmap.png': a FAT or exFAT
    --out refused them ("Invalid argument") and Windows could not copy them."""
    from lrmil.predict import output_names

    assert output_names("scan 12:00 a|b.") == {
        "mask": "scan 12_00 a_b__mask.png", "heatmap": "scan 12_00 a_b__heatmap.png",
        "topk": "scan 12_00 a_b__topk.png", "geojson": "scan 12_00 a_b__attention.geojson",
        "json": "scan 12_00 a_b_.json"}


def test_a_copy_of_a_slides_record_is_not_listed_twice(model_dir, tmp_path):
    """A SLIDE.json copied beside itself ('a - Copy.json', as Windows names a copy) was a second row of the slide in
    predictions.csv; only the record where lrmil predict writes it is listed."""
    slides = [_tissue_png(tmp_path / name, size=512) for name in ("a.png", "CON.png")]
    out, cfg = tmp_path / "out", PredictConfig(model=str(model_dir), mpp=0.5)
    assert run_predict(slides, cfg, out)["done"] == 2
    (out / "a - Copy.json").write_bytes((out / "a.json").read_bytes())
    (out / "CON.json").write_bytes((out / "CON_.json").read_bytes())
    summary = run_predict(slides, cfg, out)
    assert (summary["done"], summary["skipped"]) == (0, 2)
    assert sorted(pd.read_csv(out / "predictions.csv")["slide_id"]) == ["CON", "a"]


def test_a_slide_named_as_a_windows_device_gets_outputs_windows_can_create():
    """PRN.svs had its record written as PRN.json, which Windows takes for the printer (so too prn.json, COM1.x.json,
    'aux .x.json', CONIN$.json): a slide whose name before its first dot is a device's gets outputs of its name
    followed by '_'."""
    from lrmil.predict import output_names

    assert output_names("PRN") == {"mask": "PRN__mask.png", "heatmap": "PRN__heatmap.png", "topk": "PRN__topk.png",
                                   "geojson": "PRN__attention.geojson", "json": "PRN_.json"}
    assert output_names("com1.x")["json"] == "com1_.x.json"
    assert output_names("aux .x")["json"] == "aux _.x.json"  # Windows drops the space: AUX
    assert output_names("conin$")["json"] == "conin$_.json"  # the console's input, as ntpath.isreserved has it
    assert output_names("CONSOLE")["json"] == "CONSOLE.json"
