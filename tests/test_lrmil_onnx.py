"""`lrmil export`: ONNX graphs of a model folder's paths, checked against PyTorch, run by `lrmil predict`."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from export.artifact import read_onnx_metadata
from export.parity import Parity
from lrmil.cli import app
from lrmil.encoders import EncoderCfg, normalize
from lrmil.mil.bundle import OnnxPathModel, PathModel, load_path
from lrmil.mil.config import DEMO_NOTICE, PredictConfig
from lrmil.onnx_export import export_model
from lrmil.predict import run_predict

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def onnx_dir(random_lrmil_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("lrmil_onnx")
    export_model(random_lrmil_bundle, out, ("student", "teacher"), count=8, threads=1)
    return out


def test_export_writes_both_paths_checked_against_torch(onnx_dir, random_lrmil_bundle):
    manifest = json.loads((onnx_dir / "onnx.json").read_text())
    source = json.loads((random_lrmil_bundle / "model.json").read_text())
    assert manifest["patch"] == source["patch"] and manifest["tissue"] == source["tissue"]
    assert manifest["notice"] == DEMO_NOTICE
    for name in ("student", "teacher"):
        assert (onnx_dir / manifest[name]["encoder"]).is_file() and (onnx_dir / manifest[name]["mil"]).is_file()
        for check in manifest[name]["parity"]:
            assert check["ok"] and max(check["max_abs_diff"].values()) < 1e-4
        encoder = onnx.load(str(onnx_dir / manifest[name]["encoder"]))  # what a deployment reads from the file alone
        assert "RGB 0-255" in encoder.doc_string and "normalisation is inside the graph" in encoder.doc_string
        assert read_onnx_metadata(onnx_dir / manifest[name]["encoder"])["encoder"]["precision"] == "fp32"
        mil = onnx_dir / manifest[name]["mil"]
        assert "softmax" in onnx.load(str(mil)).doc_string
        # an empty bag answers like a slide, so the file warns a deployment that checks for tissue on its own
        session = ort.InferenceSession(str(mil))
        empty = session.run(None, {"features": np.zeros((0, session.get_inputs()[0].shape[1]), np.float32)})
        assert empty[1].shape == (0,) and abs(empty[0].sum() - 1) < 1e-5
        assert "An empty bag (a slide without tissue) is no error here" in onnx.load(str(mil)).doc_string
    assert not list(onnx_dir.glob(".*"))  # no staged files left behind


def test_onnx_path_matches_torch_at_any_batch_and_bag_size(onnx_dir, random_lrmil_bundle):
    torch_path, onnx_path = load_path(random_lrmil_bundle, "student"), load_path(onnx_dir, "student", threads=1)
    assert isinstance(torch_path, PathModel) and isinstance(onnx_path, OnnxPathModel)
    assert onnx_path.labels == torch_path.labels and onnx_path.patch == torch_path.patch
    rng = np.random.default_rng(1)
    patches = rng.integers(0, 256, (5, 256, 256, 3), dtype=np.uint8)
    for batch in (patches[:1], patches):
        assert np.abs(onnx_path.encode(batch) - torch_path.encode(batch)).max() < 1e-4
    features = rng.normal(size=(50, torch_path.mil.cfg.in_dim)).astype(np.float32)
    for bag in (features[:1], features):  # a one-patch slide and a bigger one than the export example
        (p_onnx, a_onnx), (p_torch, a_torch) = onnx_path.classify(bag), torch_path.classify(bag)
        assert a_onnx.shape == (len(bag),) and abs(a_onnx.sum() - 1) < 1e-5
        assert np.abs(p_onnx - p_torch).max() < 1e-5 and np.abs(a_onnx - a_torch).max() < 1e-5


def test_predict_with_the_onnx_folder_gives_the_torch_answer_on_real_slides(onnx_dir, random_lrmil_bundle,
                                                                            shared_data, tmp_path):
    slides = [shared_data / "slides" / "CMU-1-Small-Region.svs", shared_data / "slides" / "broken.svs"]
    for model, out in ((random_lrmil_bundle, tmp_path / "torch"), (onnx_dir, tmp_path / "onnx")):
        summary = run_predict(slides, PredictConfig(model=str(model)), out)
        assert summary["done"] == 1 and summary["failed"] == 1
    a = json.loads((tmp_path / "torch" / "CMU-1-Small-Region.json").read_text())
    b = json.loads((tmp_path / "onnx" / "CMU-1-Small-Region.json").read_text())
    assert a["label"] == b["label"] and a["patches"] == b["patches"] and b["notice"] == DEMO_NOTICE
    assert max(abs(a["probabilities"][k] - b["probabilities"][k]) for k in a["probabilities"]) < 1e-5
    assert [(t["x"], t["y"]) for t in a["top_patches"]] == [(t["x"], t["y"]) for t in b["top_patches"]]


def test_a_graph_that_drifts_is_never_written(random_lrmil_bundle, tmp_path, monkeypatch):
    def drifted(reference, candidate, batch, tolerance, names, batch_size):
        return Parity(names[0], names[1], {"features": 0.5}, {"features": 1.0}, tolerance)

    monkeypatch.setattr("lrmil.onnx_export.compare", drifted)
    with pytest.raises(RuntimeError, match="drifted"):
        export_model(random_lrmil_bundle, tmp_path, ("student",), count=2, threads=1)
    assert not list(tmp_path.iterdir())


def test_an_export_without_the_asked_path_says_which_it_has(random_lrmil_bundle, tmp_path):
    export_model(random_lrmil_bundle, tmp_path, ("student",), count=2, threads=1)
    with pytest.raises(ValueError, match="no teacher path.*exported: student"):
        load_path(tmp_path, "teacher")
    with pytest.raises(ValueError, match="already an ONNX export"):
        export_model(tmp_path, tmp_path / "again", ("student",), count=2, threads=1)
    export_model(random_lrmil_bundle, tmp_path, ("teacher",), count=2, threads=1)  # the same folder, the other path
    assert load_path(tmp_path, "student").name == "student" and load_path(tmp_path, "teacher").name == "teacher"


def test_cli_refuses_a_bad_path_and_exports_from_real_tissue(random_lrmil_bundle, shared_data, tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["export", "--model", str(random_lrmil_bundle), "--out", str(tmp_path / "a"),
                              "--path", "all"])
    assert bad.exit_code == 2 and "--path must be student, teacher or both" in bad.output
    slide = shared_data / "slides" / "CMU-1-Small-Region.svs"
    ok = runner.invoke(app, ["export", "--model", str(random_lrmil_bundle), "--out", str(tmp_path / "b"),
                             "--slide", str(slide), "--threads", "1"])
    assert ok.exit_code == 0, ok.output
    manifest = json.loads((tmp_path / "b" / "onnx.json").read_text())
    assert manifest["student"]["parity_input"] == [str(slide)] and 0 < manifest["student"]["parity_patches"] <= 32


def test_int8_needs_real_tissue_and_calibrates_apart_from_its_check(random_lrmil_bundle, shared_data, tmp_path,
                                                                   oldest_onnxruntime_reads):
    with pytest.raises(ValueError, match="--int8 calibrates on real tissue"):
        export_model(random_lrmil_bundle, tmp_path / "none", ("student",), int8=True)
    slide = shared_data / "slides" / "CMU-1-Small-Region.svs"
    with pytest.raises(ValueError, match="student grid .* holds 6 tissue patches.*add --slide"):
        export_model(random_lrmil_bundle, tmp_path / "few", ("student",), (slide,), count=8, threads=1, int8=True)
    assert not (tmp_path / "few").exists()
    manifest = export_model(random_lrmil_bundle, tmp_path / "q", ("teacher",), (slide,), count=8, threads=1, int8=True)
    teacher = manifest["teacher"]
    assert teacher["encoder"] == "teacher_encoder.int8.onnx" and teacher["encoder_fp32"] == "teacher_encoder.onnx"
    assert teacher["calibration_patches"] == teacher["parity_patches"] == 8  # 16 patches, dealt alternately
    graphs = sorted((tmp_path / "q").glob("*.onnx"))
    assert len(graphs) == 3 and all(map(oldest_onnxruntime_reads, graphs))
    int8_check = next(c for c in teacher["parity"] if c["candidate"] == teacher["encoder"])
    assert int8_check["ok"] and int8_check["tolerance"] == 0.1 and int8_check["max_abs_diff"]["features"] > 1e-5
    onnx_path, torch_path = load_path(tmp_path / "q", "teacher", threads=1), load_path(random_lrmil_bundle, "teacher")
    patches = np.random.default_rng(2).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    assert onnx_path.encoder.metadata["quantization"] == "int8-static"
    assert np.abs(onnx_path.encode(patches) - torch_path.encode(patches)).max() < 0.1 * max(
        1.0, np.abs(torch_path.encode(patches)).max())


def test_a_float_export_again_removes_the_paths_earlier_int8_encoder(random_lrmil_bundle, shared_data, tmp_path):
    """The INT8 encoder of the old weights stayed beside the new graphs though onnx.json no longer named it;
    files the earlier onnx.json did not list for the path exported again stay."""
    slide = shared_data / "slides" / "CMU-1-Small-Region.svs"
    export_model(random_lrmil_bundle, tmp_path, ("teacher",), (slide,), count=8, threads=1, int8=True)
    (tmp_path / "notes.txt").write_text("the user's")
    runner = CliRunner()
    for path in ("student", "teacher"):  # the student's export leaves the teacher's INT8 encoder listed and in place
        assert (tmp_path / "teacher_encoder.int8.onnx").is_file()
        result = runner.invoke(app, ["export", "--model", str(random_lrmil_bundle), "--out", str(tmp_path),
                                     "--path", path, "--threads", "1"])
        assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "onnx.json").read_text())
    assert manifest["teacher"]["encoder"] == "teacher_encoder.onnx" and "encoder_fp32" not in manifest["teacher"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "onnx.json", "student_encoder.onnx",
                                                          "student_mil.onnx", "teacher_encoder.onnx",
                                                          "teacher_mil.onnx"]
    assert "quantization" not in load_path(tmp_path, "teacher", threads=1).encoder.metadata


def test_cli_bad_slides_model_or_out_are_one_line_and_write_nothing(random_lrmil_bundle, shared_data, tmp_path):
    runner = CliRunner()
    (tmp_path / "taken").write_text("a file")
    cases = [(["--slide", str(shared_data / "slides" / "broken.svs")], "broken.svs: neither OpenSlide nor PIL"),
             (["--slide", str(shared_data / "slides" / "TCGA-CR-7395-01A-01-TS1-no-mpp.svs")], "pass --mpp"),
             (["--model", str(tmp_path)], "not an LRMIL model folder")]
    for extra, message in cases:
        result = runner.invoke(app, ["export", "--model", str(random_lrmil_bundle), "--out", str(tmp_path / "x"),
                                     *extra])
        assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1
        assert not (tmp_path / "x").exists()
    taken = runner.invoke(app, ["export", "--out", str(tmp_path / "taken")])
    assert taken.exit_code == 2 and "--out must be a folder" in taken.output


def test_normalize_leaves_a_float_input_alone():
    patches = torch.full((1, 4, 4, 3), 255.0)
    normalize(EncoderCfg(name="x", embed_dim=8), patches)
    assert patches.max() == 255.0
