"""Stage-2 distillation: each loss term on hand-made bags, and train -> distill through the store."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from lrmil.mil.attention import ABMIL, load_mil
from lrmil.mil.bags import Bag
from lrmil.mil.config import ABMILConfig, DistillConfig, MILConfig
from lrmil.mil.distill import TeacherTarget, distill, stage2_bag_loss
from lrmil.mil.losses import attention_kd, logit_kd, parent_attention, stage2_loss, topk_instance
from lrmil.mil.train import train

DIM = 6


def test_parent_attention_sums_children_and_skips_background():
    child = torch.tensor([0.1, 0.2, 0.3, 0.4])
    children = torch.tensor([[0, 1, -1, -1], [2, -1, -1, -1], [-1, -1, -1, -1]])
    parents = parent_attention(child, children)
    assert torch.allclose(parents, torch.tensor([0.3, 0.3, 0.0]) / 0.6)  # child 3 has no parent
    assert torch.allclose(parents.sum(), torch.tensor(1.0))


def test_logit_and_attention_kd_are_zero_only_at_agreement():
    logits = torch.tensor([1.0, -1.0])
    assert logit_kd(logits, logits, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert logit_kd(logits, -logits, 2.0).item() > 0.1
    a = torch.tensor([0.5, 0.25, 0.25])
    assert attention_kd(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert attention_kd(a, torch.tensor([0.1, 0.1, 0.8])).item() > 0.1


def test_topk_instance_classifies_the_top_ranked_instances():
    model = ABMIL(ABMILConfig(in_dim=DIM, hidden_dim=8, drop_rate=0.0)).eval()
    out = model(torch.randn(5, DIM))
    ranking = torch.tensor([0.0, 0.9, 0.1, 0.8, 0.0])
    expected = torch.nn.functional.cross_entropy(model.forward_head(out.instances[[1, 3]]), torch.tensor([1, 1]))
    assert topk_instance(model, out, torch.tensor(1), ranking, k=2).item() == pytest.approx(expected.item())


def test_each_term_switches_off_and_all_off_is_an_error():
    model = ABMIL(ABMILConfig(in_dim=DIM, hidden_dim=8)).eval()
    out = model(torch.randn(4, DIM))
    args = (model, out, torch.tensor(0), torch.tensor([0.3, 0.1]), torch.full((4,), 0.25))
    _, terms = stage2_loss(*args, DistillConfig())
    assert set(terms) == {"ce", "logits", "attention", "topk"}
    _, terms = stage2_loss(*args, DistillConfig(w_logits=0.0, w_topk=0.0))
    assert set(terms) == {"ce", "attention"}
    with pytest.raises(ValueError, match="switched off"):
        stage2_loss(*args, DistillConfig(w_ce=0.0, w_logits=0.0, w_attention=0.0, w_topk=0.0))


def _pair(slide: int, label: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(20x features [32, D], 5x features [2, D], children [2, 16]): positives hide signal in 4 children
    of parent 0; the 5x parent sees only their mean, diluted by 12 normal siblings (the 5x blur)."""
    teacher = rng.normal(0, 0.5, (32, DIM)).astype(np.float32)
    if label:
        teacher[:4, 0] += 3.0
    children = np.arange(32).reshape(2, 16)
    children[1, 12:] = -1  # background children
    student = teacher[children.clip(0)].mean(1) + rng.normal(0, 0.2, (2, DIM)).astype(np.float32)
    return teacher, student, children


def test_attention_term_alone_pulls_student_attention_to_the_teacher():
    torch.manual_seed(0)
    bags = [Bag(f"s{i}", i % 2, 0, torch.randn(8, DIM), torch.arange(8)[:, None]) for i in range(6)]
    # A teacher that attends to the patches with a high feature 0 (a peaked, learnable target).
    targets = {b.slide_id: TeacherTarget(torch.zeros(2), torch.softmax(4 * b.features[:, 0], 0)) for b in bags}
    loss = stage2_bag_loss(targets, DistillConfig(w_ce=0.0, w_logits=0.0, w_topk=0.0))
    student = ABMIL(ABMILConfig(in_dim=DIM, hidden_dim=8, drop_rate=0.0))
    opt = torch.optim.Adam(student.parameters(), lr=3e-2)

    def gap():
        with torch.no_grad():
            return sum(loss(student, b).item() for b in bags)

    before = gap()
    for _ in range(12):
        for b in bags:
            opt.zero_grad()
            loss(student, b).backward()
            opt.step()
    assert gap() < 0.3 * before


# One level-0 frame for both files: two 1024-px parents side by side, child k of parent p at its block place.
GRID_COORDS = {"f5": np.array([[0, 0], [1024, 0]]),
               "f20": np.array([[p * 1024 + k % 4 * 256, k // 4 * 256] for p in range(2) for k in range(16)])}


@pytest.fixture()
def feature_folders(tmp_path):
    from lrmil.store import FeatureFile, write_features

    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        label = i % 2
        teacher, student, children = _pair(i, label, rng)
        for name, feats, links, mag, px in (("f20", teacher, np.zeros((32, 0), np.int64), 20.0, 256),
                                            ("f5", student, children, 5.0, 1024)):
            coords = GRID_COORDS[name]
            write_features(tmp_path / name / f"slide{i}.h5",
                           FeatureFile(coords, feats, links, px, 256, mag, 0.5, encoder="toy", slide_id=f"slide{i}"))
        rows.append((f"slide{i}", ["benign", "tumour"][label], i % 3))
    pd.DataFrame(rows, columns=["slide_id", "label", "fold"]).to_csv(tmp_path / "splits.csv", index=False)
    return tmp_path


def test_train_then_distill_writes_models_predictions_and_resumes(feature_folders, monkeypatch):
    root = feature_folders
    model = ABMILConfig(hidden_dim=8, attn_dim=8, drop_rate=0.0)
    teacher_cfg = MILConfig(features=str(root / "f20"), splits=str(root / "splits.csv"), out=str(root / "teacher"),
                            model=model, epochs=4, patience=4, lr=1e-2)
    metrics = train(teacher_cfg)
    assert metrics["pooled"]["slides"] == 12 and set(metrics["folds"]) == {0, 1, 2}
    teacher = load_mil(root / "teacher" / "fold0" / "model.safetensors")
    assert teacher.cfg.labels == ("benign", "tumour")
    assert teacher.cfg.in_dim == DIM and teacher.cfg.magnification == 20.0

    student_cfg = DistillConfig(features=str(root / "f5"), teacher_features=str(root / "f20"),
                                teacher=str(root / "teacher"), splits=str(root / "splits.csv"),
                                out=str(root / "student"), model=model,
                                epochs=4, patience=4, lr=1e-2, topk=1)
    distill(student_cfg)
    student_model = root / "student" / "fold1" / "model.safetensors"
    assert load_mil(student_model).cfg.magnification == 5.0
    table = pd.read_csv(root / "student" / "predictions.csv")
    assert sorted(table["slide_id"]) == sorted(f"slide{i}" for i in range(12))
    assert np.allclose(table[["p_benign", "p_tumour"]].sum(axis=1), 1.0, atol=1e-5)
    assert json.loads((root / "student" / "config.json").read_text())["config"]["w_attention"] == 1.0

    stamp = student_model.stat().st_mtime_ns
    distill(student_cfg)  # same config: folds are reloaded, not retrained
    assert student_model.stat().st_mtime_ns == stamp
    distill(dataclasses.replace(student_cfg, w_topk=0.0))  # changed config: retrained
    assert student_model.stat().st_mtime_ns != stamp

    # killed before its first fold finished, a run with other settings has already rewritten config.json:
    # going on with those settings must still retrain the folds an older run saved
    import lrmil.mil.train as mil_train
    stamp, fit = student_model.stat().st_mtime_ns, mil_train.fit
    monkeypatch.setattr(mil_train, "fit", lambda *args, **kwargs: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        distill(dataclasses.replace(student_cfg, lr=5e-3))
    monkeypatch.setattr(mil_train, "fit", fit)
    distill(dataclasses.replace(student_cfg, lr=5e-3))
    assert student_model.stat().st_mtime_ns != stamp

    # 20x features cut from another grid (one patch fewer, so every later index shifts) are refused
    from lrmil.store import read_features, write_features
    for path in (root / "f20").glob("*.h5"):
        ff = read_features(path)
        write_features(root / "f20_other" / path.name, dataclasses.replace(ff, coords=ff.coords[1:],
                                                                          features=ff.features[1:],
                                                                          children=ff.children[1:]))
    with pytest.raises(ValueError, match="children links do not land on the 20x file's patches"):
        distill(dataclasses.replace(student_cfg, teacher_features=str(root / "f20_other"), out=str(root / "s2")))


def test_config_reruns_a_run_into_another_out_and_refuses_flags_it_would_ignore(feature_folders):
    from typer.testing import CliRunner

    from lrmil.cli import app

    root = feature_folders

    def lrmil(*args):
        return CliRunner().invoke(app, [str(a) for a in args])

    small = ("--hidden-dim", 8, "--attn-dim", 8, "--epochs", 2, "--patience", 2, "--threads", 1)
    assert lrmil("train", "--splits", root / "splits.csv", "--out", root / "t").exit_code == 2  # no --features
    first = lrmil("train", "--features", root / "f20", "--splits", root / "splits.csv", "--out", root / "t", *small)
    assert first.exit_code == 0, first.output
    again = lrmil("train", "--config", root / "t" / "config.json", "--out", root / "t2")
    assert again.exit_code == 0, again.output
    settings = [json.loads((root / run / "config.json").read_text())["config"] for run in ("t", "t2")]
    assert settings[1]["out"] == str(root / "t2") and {**settings[1], "out": settings[0]["out"]} == settings[0]
    assert (root / "t2" / "fold0" / "model.safetensors").is_file()
    refused = lrmil("train", "--config", root / "t" / "config.json", "--epochs", 9)
    assert refused.exit_code == 2 and "only --out and --threads go with it, not --epochs" in refused.output
    broken = lrmil("distill", "--config", root / "splits.csv")
    assert broken.exit_code == 2 and "splits.csv: not valid JSON" in broken.output
    record = json.loads((root / "t" / "config.json").read_text())
    record["config"]["epoch"] = record["config"].pop("epochs")  # hand-edited, misspelt: must not train 60 epochs
    (root / "typo.json").write_text(json.dumps(record))
    typo = lrmil("train", "--config", root / "typo.json", "--out", root / "t3")
    assert typo.exit_code == 2 and "typo.json: no setting is called epoch (misspelt?)" in typo.output
    no_fold = lrmil("train", "--features", root / "f20", "--splits", root / "splits.csv", "--out", root / "t4",
                    "--folds", "7", *small)
    assert no_fold.exit_code == 2
    assert "splits.csv: no fold 7 among the slides with features (folds: 0, 1, 2)" in no_fold.output
    missing = lrmil("distill", "--features", root / "f5", "--splits", root / "splits.csv")
    assert missing.exit_code == 2 and "missing --teacher-features, --teacher" in missing.output


def test_resume_follows_the_splits_and_the_teacher_and_folds_run_apart_add_up(feature_folders):
    """A fold model is reused only for the same slides and labels in each role (and, in stage 2, the same teacher
    fold); folds run as separate jobs into one --out add up in predictions.csv; a seed gives the same models."""
    root = feature_folders
    model = ABMILConfig(hidden_dim=8, attn_dim=8, drop_rate=0.0)
    cfg = MILConfig(features=str(root / "f20"), splits=str(root / "splits.csv"), out=str(root / "t"), model=model,
                    epochs=3, patience=3, lr=1e-2)

    def stamps(run: str) -> dict[int, int]:
        files = {fold: root / run / f"fold{fold}" / "model.safetensors" for fold in range(3)}
        return {fold: path.stat().st_mtime_ns for fold, path in files.items() if path.is_file()}

    train(dataclasses.replace(cfg, folds=(0,)))
    train(dataclasses.replace(cfg, folds=(1,)))
    assert set(pd.read_csv(root / "t" / "predictions.csv")["fold"]) == {0, 1}
    apart = stamps("t")
    assert train(cfg)["pooled"]["slides"] == 12
    assert {fold: stamp for fold, stamp in stamps("t").items() if fold < 2} == apart  # only fold 2 was trained
    train(dataclasses.replace(cfg, out=str(root / "t_again")))  # in one job, into another folder
    assert (root / "t" / "predictions.csv").read_bytes() == (root / "t_again" / "predictions.csv").read_bytes()

    student = DistillConfig(features=str(root / "f5"), teacher_features=str(root / "f20"), teacher=str(root / "t"),
                            splits=str(root / "splits.csv"), out=str(root / "s"), model=model, epochs=3, patience=3,
                            lr=1e-2, topk=1)
    distill(student)
    taught = stamps("s")
    distill(student)
    assert stamps("s") == taught
    train(dataclasses.replace(cfg, lr=5e-3))  # the teacher retrained: its students are too
    distill(student)
    assert all(stamps("s")[fold] != taught[fold] for fold in range(3))

    splits = pd.read_csv(root / "splits.csv")
    splits.assign(fold=(splits["fold"] + 1) % 3).to_csv(root / "splits.csv", index=False)  # slides regrouped
    with pytest.raises(ValueError, match="the teacher was trained on other splits than"):
        distill(student)  # its folds saw the new test slides
    before = stamps("t")
    train(dataclasses.replace(cfg, lr=5e-3))
    assert all(stamps("t")[fold] != before[fold] for fold in range(3))
    distill(student)  # the teacher now matches the splits


def test_5x_features_without_children_links_are_named_as_such_not_as_another_grid():
    """CLAM/TRIDENT 5x features have no children: the error said the links 'do not land on the 20x file's patches'."""
    from lrmil.mil.distill import check_children

    teacher = Bag("s", 0, 0, torch.zeros(4, DIM), torch.zeros(4, 0, dtype=torch.long),
                  coords=np.zeros((4, 2), np.int64))
    clam_5x = Bag("s", 0, 0, torch.zeros(1, DIM), torch.zeros(1, 0, dtype=torch.long),
                  coords=np.zeros((1, 2), np.int64))
    with pytest.raises(ValueError,
                       match=r"^s: the 5x feature file has no children links .* `lrmil extract --resolution student`"):
        check_children("s", clam_5x, teacher)


def test_5x_and_20x_folders_without_a_slide_in_common_are_refused_naming_both(feature_folders):
    """No slide with features at both resolutions ended `lrmil distill` in a StopIteration traceback."""
    root = feature_folders
    for i in range(12):
        (root / ("f20" if i < 6 else "f5") / f"slide{i}.h5").unlink()
    cfg = DistillConfig(features=str(root / "f5"), teacher_features=str(root / "f20"), teacher=str(root / "t"),
                        splits=str(root / "splits.csv"), out=str(root / "s"))
    with pytest.raises(ValueError, match=r"f5 \(5x\) and .*f20 \(20x\): no slide of the splits CSV has features in "
                                         r"both \(5x e.g. slide0, 20x e.g. slide6\)"):
        distill(cfg)


def test_a_student_run_into_its_teacher_s_folder_is_refused_before_a_teacher_is_replaced(tmp_path):
    """`distill --out runs/teacher --teacher runs/teacher` wrote the 5x student over fold0/model.safetensors, the
    teacher's, then stopped at pandas' 'No objects to concatenate' (the fold's teacher had changed under it)."""
    from lrmil.mil.attention import save_mil

    teacher = tmp_path / "runs" / "teacher" / "fold0" / "model.safetensors"
    save_mil(teacher, ABMIL(ABMILConfig()), {"fold": 0})
    before = teacher.read_bytes()
    cfg = DistillConfig(features=str(tmp_path / "f5"), teacher_features=str(tmp_path / "f20"),
                        teacher=str(tmp_path / "runs" / "teacher"), splits=str(tmp_path / "splits.csv"),
                        out=str(tmp_path / "runs" / "." / "teacher"))
    with pytest.raises(ValueError, match=r"teacher is the --teacher run: the student's fold models would replace "
                                         r"the teacher's; give the student its own --out$"):
        distill(cfg)
    assert teacher.read_bytes() == before


def test_a_teacher_fold_the_run_lacks_is_named_with_the_folds_it_holds_before_anything_is_written(feature_folders):
    """A teacher trained with --folds 0, a student run for fold 1: it stopped at 'fold1/model.safetensors: file not
    found' after writing config.json into --out."""
    root = feature_folders
    model = ABMILConfig(hidden_dim=8, attn_dim=8, drop_rate=0.0)
    train(MILConfig(features=str(root / "f20"), splits=str(root / "splits.csv"), out=str(root / "teacher"),
                    model=model, epochs=1, folds=(0,)))
    student = DistillConfig(features=str(root / "f5"), teacher_features=str(root / "f20"),
                            teacher=str(root / "teacher"), splits=str(root / "splits.csv"), out=str(root / "student"),
                            model=model, epochs=1)
    for folds, missing in (((1,), "1"), ((), "1, 2")):
        with pytest.raises(FileNotFoundError, match=f"^{re.escape(str(root / 'teacher'))}: no teacher model of "
                                                    rf"fold\(s\) {missing}; the run holds only fold\(s\) 0: give "
                                                    r"--folds among those"):
            distill(dataclasses.replace(student, folds=folds))
    assert not (root / "student").exists()


def test_distill_records_a_slide_without_5x_or_readable_20x_features_and_exits_1(feature_folders):
    """A slide left out for either resolution's feature file was one log line, exit 0, in no file of the run."""
    from typer.testing import CliRunner

    from lrmil.cli import app

    root = feature_folders
    small = ("--hidden-dim", 8, "--attn-dim", 8, "--epochs", 1, "--patience", 1, "--threads", 1, "--folds", 0)
    runner = CliRunner()
    teacher = runner.invoke(app, [str(a) for a in ("train", "--features", root / "f20", "--splits",
                                                   root / "splits.csv", "--out", root / "t", *small)])
    assert teacher.exit_code == 0, teacher.output
    (root / "f5" / "slide3.h5").unlink()
    (root / "f20" / "slide5.h5").write_bytes(b"cut")
    result = runner.invoke(app, [str(a) for a in (
        "distill", "--features", root / "f5", "--teacher-features", root / "f20", "--teacher", root / "t",
        "--splits", root / "splits.csv", "--out", root / "s", *small)])
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout.splitlines()[-1])["failed"] == 2
    left_out = json.loads((root / "s" / "metrics.json").read_text())["left_out"]
    assert [(s["slide_id"], s["path"]) for s in left_out] == [("slide3", str(root / "f5" / "slide3.h5")),
                                                               ("slide5", str(root / "f20" / "slide5.h5"))]
    errors = pd.read_csv(root / "s" / "errors.csv")
    assert list(errors["path"]) == [s["path"] for s in left_out] and set(errors["stage"]) == {"distill"}
