"""Stage 2, slide-level distillation (`lrmil distill`): a 5x student ABMIL taught by the 20x teacher.

For each fold the frozen teacher of the same fold (so it never saw the test slides) reads the
20x bag once; its bag logits and its attention, summed over each parent's 16 children, become
the student's targets next to the slide label (see losses.py for the terms).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from export.artifact import sha256
from lrmil.mil.attention import ABMIL, load_mil
from lrmil.mil.bags import Bag, load_bags
from lrmil.mil.config import DistillConfig
from lrmil.mil.losses import parent_attention, stage2_loss
from lrmil.mil.splits import labels_of, read_splits
from lrmil.mil.train import BagLoss, fingerprint, folds_to_run, resolve_model, run_folds
from lrmil.patching import children_line_up


class TeacherTarget(NamedTuple):
    logits: torch.Tensor  # [num_classes]
    parent_attention: torch.Tensor  # [N5], sums to 1


@torch.inference_mode()
def teacher_targets(teacher: ABMIL, teacher_bags: dict[str, Bag], bags: dict[str, Bag]) -> dict[str, TeacherTarget]:
    """The frozen teacher's bag logits and parent-aggregated attention for each student bag."""
    teacher.eval()
    targets = {}
    for slide_id, bag in bags.items():
        out = teacher(teacher_bags[slide_id].features)
        targets[slide_id] = TeacherTarget(out.logits.clone(), parent_attention(out.attention, bag.children))
    return targets


def stage2_bag_loss(targets: dict[str, TeacherTarget], cfg: DistillConfig) -> BagLoss:
    def loss(model: ABMIL, bag: Bag) -> torch.Tensor:
        out = model(bag.features)
        target = targets[bag.slide_id]
        total, _ = stage2_loss(model, out, torch.tensor(bag.label), target.logits, target.parent_attention, cfg)
        return total

    return loss


def check_teacher_splits(cfg: DistillConfig) -> None:
    """The teacher of fold k must have left out the slides this run tests in fold k: a teacher run on other
    splits (its config.json records their hash) was trained on them."""
    import json

    try:
        recorded = json.loads((Path(cfg.teacher) / "config.json").read_text())["splits_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # a teacher folder without a run record: nothing to compare
    if recorded and Path(cfg.splits).is_file() and recorded != sha256(cfg.splits):
        raise ValueError(f"{cfg.teacher}: the teacher was trained on other splits than {cfg.splits}, so its folds "
                         "saw this run's test slides; train it again on these splits")


def teacher_file(teacher: str | Path, fold: int) -> Path:
    return Path(teacher) / f"fold{fold}" / "model.safetensors"


def check_teacher_folds(teacher: str | Path, folds: list[int]) -> None:
    """Each fold run needs the teacher of that fold: one the teacher run lacks (trained with --folds) failed at that
    fold ('fold1/model.safetensors: file not found'), after config.json was written to --out."""
    if not (missing := [fold for fold in folds if not teacher_file(teacher, fold).is_file()]):
        return
    held = sorted(int(path.parent.name[4:]) for path in Path(teacher).glob("fold*/model.safetensors")
                  if path.parent.name[4:].isdigit())
    holds = f"only fold(s) {', '.join(map(str, held))}" if held else "no fold<k>/model.safetensors"
    raise FileNotFoundError(f"{teacher}: no teacher model of fold(s) {', '.join(map(str, missing))}; the run holds "
                            f"{holds}: give --folds among those, or train the teacher's other folds (`lrmil train "
                            "--folds`)")


def check_children(slide_id: str, bag: Bag, teacher_bag: Bag) -> None:
    """Attention distillation maps each 5x patch onto its 20x children, links only `lrmil extract` writes: features
    from CLAM or TRIDENT have none (5x), or sit on another grid (20x)."""
    if bag.children.shape[1] == 0:
        raise ValueError(f"{slide_id}: the 5x feature file has no children links to its 20x patches; distillation "
                         "needs 5x features from `lrmil extract --resolution student` (CLAM and TRIDENT files have "
                         "no such links)")
    if not children_line_up(bag.coords, bag.patch_size_level0, bag.children.numpy(), teacher_bag.coords):
        raise ValueError(f"{slide_id}: the 5x feature file's children links do not land on the 20x file's patches; "
                         "extract both resolutions with `lrmil extract` and the same tissue and patch settings")


def distill(cfg: DistillConfig) -> dict:
    if Path(cfg.out).resolve() == Path(cfg.teacher).resolve():  # each fold's student replaced its teacher
        raise ValueError(f"--out {cfg.out} is the --teacher run: the student's fold models would replace the "
                         "teacher's; give the student its own --out")
    check_teacher_splits(cfg)
    splits = read_splits(cfg.splits)
    labels = labels_of(splits, cfg.splits)
    left_out: list[dict] = []  # each resolution's: a slide without 20x features is left out as one without 5x
    bags = load_bags(cfg.features, splits, labels, left_out)
    teacher_bags = load_bags(cfg.teacher_features, splits, labels, left_out)
    if not (both := {s: b for s, b in bags.items() if s in teacher_bags}):
        raise ValueError(f"{cfg.features} (5x) and {cfg.teacher_features} (20x): no slide of the splits CSV has "
                         f"features in both (5x e.g. {next(iter(bags))}, 20x e.g. {next(iter(teacher_bags))}); give "
                         "the two extractions of the same slides")
    bags = both
    for slide_id, bag in bags.items():
        check_children(slide_id, bag, teacher_bags[slide_id])
    model_cfg = resolve_model(cfg.model, labels, next(iter(bags.values())))
    check_teacher_folds(cfg.teacher, folds_to_run(cfg, splits, bags)[1])

    def fold_loss(fold: int) -> BagLoss:
        teacher = load_mil(teacher_file(cfg.teacher, fold))
        if teacher.cfg.labels != labels:
            raise ValueError(f"{cfg.teacher}: teacher labels {teacher.cfg.labels} differ from the splits' {labels}")
        return stage2_bag_loss(teacher_targets(teacher, teacher_bags, bags), cfg)

    def teacher_weights(fold: int) -> dict:
        """A retrained teacher fold retrains the student's."""
        path = teacher_file(cfg.teacher, fold)
        return {"teacher_sha256": sha256(path) if path.is_file() else ""}

    return run_folds(cfg, bags, splits, labels, fold_loss, model_cfg, fingerprint({**teacher_bags, **{
        f"{s}@5x": b for s, b in bags.items()}}), teacher_weights, left_out, stage="distill")
