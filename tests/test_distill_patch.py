"""Stage-1 distillation: block geometry, weighted losses, and a tiny end-to-end run on a synthetic slide."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch

from lrmil.config import DistillPatchConfig, PatchConfig, SynthConfig
from lrmil.distill_patch import (ParentSample, block_means, child_weights, distill_patch, match_loss,
                                 select_parents, student_layer_features, teacher_layer_features, train_student)
from lrmil.encoders import create_encoder, load_encoder
from lrmil.patching import make_grid
from tests.test_store import damaged_feature_files

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY_PATCH = PatchConfig(teacher_px=64, student_px=64)  # 4x4 tokens per 5x patch: one token per child


def test_block_means_follow_children_order():
    tokens = torch.zeros(1, 8, 8, 1)
    for dy in range(4):
        for dx in range(4):
            tokens[0, dy * 2:(dy + 1) * 2, dx * 2:(dx + 1) * 2, 0] = dy * 4 + dx
    assert block_means(tokens, 4)[0, :, 0].tolist() == list(range(16))
    with pytest.raises(ValueError, match="blocks"):
        block_means(torch.zeros(1, 6, 6, 1), 4)


def test_children_order_matches_the_grid():
    """Child k of a parent sits at block (k // 4, k % 4): the order block_means produces."""
    grid = make_grid(np.ones((32, 32), bool), (1024, 1024), 0.5, (1.0,), PatchConfig())
    t = grid.teacher.size_level0
    for k, idx in enumerate(grid.children[0]):
        assert tuple(grid.teacher.coords[idx]) == ((k % 4) * t, (k // 4) * t)


def test_match_loss_ignores_background_and_weights_children():
    cfg = DistillPatchConfig(loss="cosine")
    target = torch.randn(2, 16, 2, 8)
    pred = target.clone()
    weights = torch.ones(2, 16)
    assert match_loss(pred, target, weights, cfg).item() == pytest.approx(0.0, abs=1e-6)
    pred[:, 5] = -target[:, 5]  # child 5 is wrong everywhere ...
    weights[:, 5] = 0.0  # ... but it is background
    assert match_loss(pred, target, weights, cfg).item() == pytest.approx(0.0, abs=1e-6)
    weights[:, 5] = 1.0
    low = match_loss(pred, target, weights, cfg).item()
    weights[:, 5] = 10.0  # high attention on the wrong child raises the loss
    assert match_loss(pred, target, weights, cfg).item() > low > 0
    mse = DistillPatchConfig(loss="mse")
    assert match_loss(target * 3.0, target, torch.ones(2, 16), mse).item() == pytest.approx(0.0, abs=1e-4)
    with pytest.raises(ValueError, match="loss"):
        match_loss(pred, target, weights, DistillPatchConfig(loss="l1"))


def test_child_weights_map_attention_to_children():
    mask = np.zeros((64, 64), bool)
    mask[:, :24] = True
    grid = make_grid(mask, (2048, 2048), 0.5, (1.0,), PatchConfig())
    uniform = child_weights(grid, None)
    assert ((uniform > 0) == (grid.children >= 0)).all() and set(np.unique(uniform)) <= {0.0, 1.0}
    attention = np.zeros(len(grid.teacher), np.float32)
    attention[3] = 1.0
    weights = child_weights(grid, attention)
    assert weights.sum() == pytest.approx(len(grid.teacher))  # mean weight 1 over the slide
    parent, child = np.argwhere(grid.children == 3)[0]
    assert weights[parent, child] == weights.max()
    with pytest.raises(ValueError, match="entries"):
        child_weights(grid, attention[:-1])


def test_select_parents_keeps_the_most_attended():
    weights = np.zeros((10, 16), np.float32)
    weights[7] = 5.0
    weights[2] = 3.0
    chosen = select_parents(weights, 4, np.random.default_rng(0))
    assert len(chosen) == 4 and {7, 2} <= set(chosen.tolist())
    assert len(select_parents(weights, 40, np.random.default_rng(0))) == 10


def _samples(teacher, n=6, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        kids = torch.from_numpy(rng.integers(0, 256, (16, 64, 64, 3), dtype=np.uint8))
        with torch.inference_mode():
            targets = teacher_layer_features(teacher, kids, (1,)).numpy()
        out.append(ParentSample(image, targets, np.ones(16, np.float32)))
    return out


def test_student_layer_features_shape_and_training_reduces_the_loss():
    teacher = create_encoder("lrmil_vit_tiny", weights="random")
    teacher.cfg = dataclasses.replace(teacher.cfg, patch_px=64)
    cfg = DistillPatchConfig(layers=(1,), epochs=8, batch_size=4, lr=1e-3, patch=TINY_PATCH)
    samples = _samples(teacher, n=4)
    with torch.inference_mode():
        feats = student_layer_features(teacher, torch.from_numpy(np.stack([s.image for s in samples])), (1,), 4)
    assert feats.shape == (4, 16, 2, 192)
    student, metrics = train_student(teacher, samples, samples[:2], cfg)
    assert metrics["final_loss"] < 0.5 * metrics["first_loss"]
    assert metrics["val_output_cosine_after"] > metrics["val_output_cosine_before"]
    assert student.cfg.magnification == 5.0 and teacher.cfg.magnification == 20.0
    assert all(p.requires_grad for p in teacher.parameters())  # the teacher object itself is untouched
    assert not any(torch.equal(a, b) for a, b in zip(student.parameters(), teacher.parameters()))


def test_distill_patch_end_to_end_on_a_synthetic_slide(tmp_path):
    from lrmil.synth import make_spec, write_slide

    synth = SynthConfig(size=512, tile=256)
    write_slide(tmp_path / "synth_0000.tiff", make_spec(synth, 0, 1), synth)
    teacher_file = tmp_path / "teacher.safetensors"
    from lrmil.encoders import save_encoder

    teacher = create_encoder("lrmil_vit_tiny", weights="random")
    save_encoder(teacher_file, teacher, dataclasses.replace(teacher.cfg, patch_px=64, training_data="synthetic test"))
    cfg = DistillPatchConfig(teacher_weights=str(teacher_file), max_parents_per_slide=3, epochs=1, batch_size=2,
                             patch=TINY_PATCH, val_fraction=0.0)
    splits = tmp_path / "labels.csv"
    splits.write_text("slide_id,label,fold\nsynth_0000,1,1\nother,0,0\n")
    metrics = distill_patch(cfg, [tmp_path / "synth_0000.tiff"], tmp_path / "student.safetensors", splits=splits)
    assert metrics["slides"] == 1 and metrics["parents"] == 3 and not metrics["attention_weighting"]
    student = load_encoder(tmp_path / "student.safetensors")
    assert student.cfg.magnification == 5.0 and "stage-1" in student.cfg.training_data
    assert (tmp_path / "student.json").is_file()
    # the test fold is never used for stage 1
    splits.write_text("slide_id,label,fold\nsynth_0000,1,0\n")
    with pytest.raises(ValueError, match="nothing to distil"):
        distill_patch(cfg, [tmp_path / "synth_0000.tiff"], tmp_path / "s2.safetensors", splits=splits)


def test_attention_weighting_needs_both_the_teacher_mil_and_its_features(tmp_path):
    """One of the two alone was dropped without a word: children then all weighed 1."""
    slide = tmp_path / "slide.png"  # never read: the options are refused first
    for given in ({"teacher_mil": tmp_path / "mil.safetensors"}, {"teacher_features": tmp_path / "features"}):
        with pytest.raises(ValueError, match="needs both --teacher-mil and --teacher-features"):
            distill_patch(DistillPatchConfig(), [slide], tmp_path / "student.safetensors", **given)


def test_the_teacher_weighting_the_children_must_be_that_of_the_fold_left_out(tmp_path):
    """Another fold's teacher ABMIL was trained on the slides stage 1 leaves out for testing."""
    from lrmil.mil.attention import ABMIL, save_mil
    from lrmil.mil.config import ABMILConfig

    save_mil(tmp_path / "fold2.safetensors", ABMIL(ABMILConfig()), {"fold": 2})
    splits = tmp_path / "splits.csv"
    splits.write_text("slide_id,label,fold\na,0,0\nb,1,1\nc,0,2\n")
    with pytest.raises(ValueError, match="fold2.safetensors: the teacher of fold 2, trained on the slides of "
                                         "--test-fold 0; give its fold0 model, or --test-fold 2"):
        distill_patch(DistillPatchConfig(test_fold=0), [tmp_path / "a.png"], tmp_path / "student.safetensors",
                      splits=splits, teacher_mil=tmp_path / "fold2.safetensors", teacher_features=tmp_path)


NO_SPLITS = "no --splits: stage 1 distils on every slide given, test slides too; give --splits to hold --test-fold out"


def test_stage1_without_splits_is_refused_for_a_fold_teacher_and_warned_about_otherwise(tmp_path, caplog):
    """Without --splits the 5x student was distilled on every slide, the test fold's too, without a word: stage 2
    was then scored on slides the encoder had learnt from."""
    from lrmil.mil.attention import ABMIL, save_mil
    from lrmil.mil.config import ABMILConfig

    save_mil(tmp_path / "fold1.safetensors", ABMIL(ABMILConfig()), {"fold": 1})
    with pytest.raises(ValueError, match=f"^{re.escape(str(tmp_path / 'fold1.safetensors'))}: the teacher of fold 1, "
                                         r"and no --splits: stage 1 would distil on fold 1's test slides; give "
                                         r"--splits \(the CSV it was trained on\) and --test-fold 1$"):
        distill_patch(DistillPatchConfig(), [tmp_path / "a.png"], tmp_path / "student.safetensors",
                      teacher_mil=tmp_path / "fold1.safetensors", teacher_features=tmp_path)
    assert not (tmp_path / "student.safetensors").exists() and not caplog.messages


def test_stage1_reads_only_the_slides_the_splits_list(tmp_path, caplog):
    """Slides in the folder that the CSV does not list (kept back for a later test, or added since) were distilled
    on, where `lrmil train` reads only the CSV's slides."""
    from pathlib import Path

    from lrmil.distill_patch import _training_slides
    from lrmil.slide import SlideIds

    path = tmp_path / "splits.csv"
    path.write_text("slide_id,label,fold\na,x,0\nb,y,1\nc,x,2\n")
    slides = [Path(f"/s/{name}.svs") for name in "abcde"]
    assert _training_slides(slides, SlideIds(slides), path, test_fold=0) == slides[1:3]
    assert caplog.messages == [f"2 slide(s) not in {path} left out of stage 1, e.g. /s/d.svs"]


def test_stage1_leaves_out_the_test_fold_when_the_splits_name_slides_by_file(tmp_path):
    """A splits CSV listing 'a.svs' (CLAM, TRIDENT) held out nothing: stage 1 trained on the test fold's slides."""
    from pathlib import Path

    from lrmil.distill_patch import _training_slides
    from lrmil.slide import SlideIds

    path = tmp_path / "splits.csv"
    path.write_text("slide_id,label,fold\na.svs,x,0\nb.svs,y,1\n c.svs ,x,2\n")
    slides = [Path("/s/a.svs"), Path("/s/b.svs"), Path("/s/c.svs")]
    assert _training_slides(slides, SlideIds(slides), path, test_fold=0) == slides[1:]


def test_stage1_keys_splits_and_teacher_features_of_slides_of_one_name_by_their_folders(tmp_path, caplog):
    """2023/S1/HE.svs and 2024/S1/HE.svs are extracted as 2023_S1_HE and 2024_S1_HE: stage 1 holds out and looks up
    the teacher's features of each under that id, as the splits CSV and --teacher-features name them."""
    from lrmil.distill_patch import _training_slides, distill_patch
    from lrmil.mil.attention import ABMIL, save_mil
    from lrmil.mil.config import ABMILConfig
    from lrmil.slide import SlideIds

    slides = [tmp_path / "2023" / "S1" / "HE.svs", tmp_path / "2024" / "S1" / "HE.svs"]
    splits = tmp_path / "splits.csv"
    splits.write_text("slide_id,label,fold\n2023_S1_HE,0,0\n2024_S1_HE,1,1\n")
    assert _training_slides(slides, SlideIds(slides), splits, test_fold=0) == slides[1:]
    save_mil(tmp_path / "fold0.safetensors", ABMIL(ABMILConfig()), {"fold": 0})
    (tmp_path / "features").mkdir()
    with pytest.raises(ValueError, match=r"no tissue patches in the training slides \(1 of 1 left out above\)"):
        distill_patch(DistillPatchConfig(test_fold=0), slides, tmp_path / "student.safetensors", splits=splits,
                      teacher_mil=tmp_path / "fold0.safetensors", teacher_features=tmp_path / "features")
    assert caplog.messages[0].startswith(f"{tmp_path / 'features' / '2024_S1_HE.h5'}: no 20x feature file of slide "
                                         "2024_S1_HE in --teacher-features")


def test_a_slide_extraction_failed_on_is_left_out_of_stage_1_in_one_line_and_the_rest_distilled(tmp_path, caplog):
    """A corrupt slide, or one without a scale, in the archive folder has no 20x feature file: stage 1 stopped there
    (h5py's '[Errno 2] Unable to synchronously open file ...', then one line naming the file), where `lrmil train`
    leaves such a slide out with one line; without attention weighting it stopped at the unreadable slide."""
    from lrmil.encoders import save_encoder
    from lrmil.mil.attention import ABMIL, save_mil
    from lrmil.mil.config import ABMILConfig
    from lrmil.synth import make_spec, write_slide

    synth = SynthConfig(size=512, tile=256)
    write_slide(tmp_path / "synth_0000.tiff", make_spec(synth, 0, 1), synth)
    (tmp_path / "broken.svs").write_bytes(np.random.default_rng(0).bytes(1024))
    teacher = create_encoder("lrmil_vit_tiny", weights="random")
    save_encoder(tmp_path / "teacher.safetensors", teacher,
                 dataclasses.replace(teacher.cfg, patch_px=64, training_data="synthetic test"))
    cfg = DistillPatchConfig(teacher_weights=str(tmp_path / "teacher.safetensors"), max_parents_per_slide=3, epochs=1,
                             batch_size=2, patch=TINY_PATCH, val_fraction=0.0)
    slides = [tmp_path / "broken.svs", tmp_path / "synth_0000.tiff"]
    metrics = distill_patch(cfg, slides, tmp_path / "student.safetensors")
    assert metrics["slide_ids"] == ["synth_0000"] and metrics["parents"] == 3
    assert caplog.messages == [NO_SPLITS, f"{tmp_path / 'broken.svs'}: neither OpenSlide nor PIL can read it (corrupt "
                               "or unsupported format); slide left out of stage 1"]
    reason = "neither OpenSlide nor PIL can read it (corrupt or unsupported format)"
    assert metrics["left_out"] == [{"slide_id": "broken", "path": str(tmp_path / "broken.svs"),
                                    "error_type": "SlideReadError", "reason": reason}]
    assert json.loads((tmp_path / "student.json").read_text())["metrics"]["left_out"] == metrics["left_out"]
    assert (tmp_path / "student.errors.csv").read_text() == (
        "path,stage,error_type,message\n"
        f"{tmp_path / 'broken.svs'},distill-patches,SlideReadError,broken: {reason}\n")
    caplog.clear()
    save_mil(tmp_path / "mil.safetensors", ABMIL(ABMILConfig()))
    (tmp_path / "features").mkdir()
    with pytest.raises(ValueError, match=r"no tissue patches in the training slides \(2 of 2 left out above\)"):
        distill_patch(cfg, slides, tmp_path / "s2.safetensors", teacher_mil=tmp_path / "mil.safetensors",
                      teacher_features=tmp_path / "features")
    assert caplog.messages == [NO_SPLITS] + [f"{tmp_path / 'features' / name}.h5: no 20x feature file of slide "
                                             f"{name} in --teacher-features (`lrmil extract --resolution teacher` "
                                             "failed on it or was not given it); slide left out of stage 1"
                                             for name in ("broken", "synth_0000")]


def test_a_damaged_teacher_feature_file_is_left_out_of_stage_1_in_one_line(tmp_path, caplog):
    """A 20x file whose header claimed 10**12 rows ended `lrmil distill-patches` with a MemoryError traceback, and a
    file cut short with h5py's OSError one, where a missing file is left out in one line."""
    from lrmil.distill_patch import teacher_attention
    from lrmil.mil.attention import ABMIL, save_mil
    from lrmil.mil.config import ABMILConfig
    from lrmil.store import FeatureFile, write_features

    save_mil(tmp_path / "mil.safetensors", ABMIL(ABMILConfig(in_dim=8)))
    (features := tmp_path / "features").mkdir()
    write_features(features / "good.h5", FeatureFile(np.zeros((3, 2), np.int64), np.ones((3, 8), np.float32),
                                                     np.zeros((3, 0), np.int64), 256, 256, 20.0, 0.5))
    cut_reason = damaged_feature_files(features, features / "good.h5", 8)
    attention = teacher_attention(tmp_path / "mil.safetensors", features, ["good", "huge", "cut"])
    assert list(attention) == ["good"] and attention["good"][1].shape == (3,)
    assert caplog.messages[0] == (f"{features / 'huge.h5'}: cannot read features ('features' declares 1000000000000 x "
                                  "8 values but the file holds 0 of its 3906250000 chunks: damaged, or its writing "
                                  "was cut short; extract the slide again); slide left out of stage 1")
    assert caplog.messages[1] == (f"{features / 'cut.h5'}: cannot read features ({cut_reason}); slide left out of "
                                  "stage 1")


def test_stage1_leaves_out_a_test_slide_typed_by_hand_whose_file_was_named_on_a_mac(tmp_path):
    """'é' typed into the splits CSV is one character (NFC), in a file name copied from a Mac two (NFD): the held-out
    slide was not recognised and stage 1 trained on it."""
    import unicodedata
    from pathlib import Path

    from lrmil.distill_patch import _training_slides
    from lrmil.slide import SlideIds

    path = tmp_path / "splits.csv"
    path.write_text(unicodedata.normalize("NFC", "slide_id,label,fold\nbiopsie_é,x,0\nb,y,1\n"), encoding="utf-8")
    slides = [Path(unicodedata.normalize("NFD", "/s/biopsie_é.svs")), Path("/s/b.svs")]
    assert _training_slides(slides, SlideIds(slides), path, test_fold=0) == slides[1:]


def test_stage1_leaves_out_a_test_slide_the_splits_name_in_another_case(tmp_path):
    """'case7' in the splits CSV for Case7.svs: the held-out slide was 'not in' the CSV, and the slide the CSV puts in
    a training fold in another case was left out of stage 1."""
    from pathlib import Path

    from lrmil.distill_patch import _training_slides
    from lrmil.slide import SlideIds

    path = tmp_path / "splits.csv"
    path.write_text("slide_id,label,fold\ncase7,x,0\nCASE8,y,1\n")
    slides = [Path("/s/Case7.svs"), Path("/s/case8.svs")]
    assert _training_slides(slides, SlideIds(slides), path, test_fold=0) == slides[1:]


def test_a_slide_without_teacher_features_beside_another_s_of_its_file_name_names_the_file_it_would_have(tmp_path,
                                                                                                        caplog):
    """CON, never extracted at 20x, beside CON_.h5 of slide CON_ (the name CON's file gets): the line named CON.h5, a
    name no run writes now, as `lrmil train`'s did; it names CON_.h5 and says whose it is."""
    from lrmil.distill_patch import teacher_attention
    from lrmil.mil.attention import ABMIL, save_mil
    from lrmil.mil.config import ABMILConfig
    from lrmil.store import FeatureFile, write_features

    save_mil(tmp_path / "mil.safetensors", ABMIL(ABMILConfig()))
    (tmp_path / "features").mkdir()
    write_features(tmp_path / "features" / "CON_.h5", FeatureFile(
        np.zeros((2, 2), np.int64), np.ones((2, ABMILConfig().in_dim), np.float32), np.zeros((2, 0), np.int64), 256,
        256, 20.0, 0.5, slide_id="CON_"))
    assert list(teacher_attention(tmp_path / "mil.safetensors", tmp_path / "features", ["CON", "CON_"])) == ["CON_"]
    assert caplog.messages == [f"{tmp_path / 'features' / 'CON_.h5'}: no 20x feature file of slide CON in "
                               "--teacher-features (that file holds slide CON_'s) (`lrmil extract --resolution "
                               "teacher` failed on it or was not given it); slide left out of stage 1"]
