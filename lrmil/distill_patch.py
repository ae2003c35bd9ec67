"""Stage 1 of LRMIL: patch-level distillation of the 20x teacher encoder into a 5x student ViT.

The student starts as a copy of the teacher encoder and sees a 5x patch whose 16x16 tokens fall
into 4x4 blocks, one block per 20x child. For every child that is tissue, the mean of its token
block is pulled towards the frozen teacher's feature of that child (token mean at a few chosen
blocks, and the pooled output), and each child's term is weighted by the teacher MIL's
attention, so the student spends its capacity where the slide-level decision is made.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from export.atomic import write_json
from lrmil.config import DistillPatchConfig
from lrmil.encoders import SYNTHETIC_NOTICE, create_encoder, preprocess, save_encoder
from lrmil.errors import leave_out, write_left_out
from lrmil.features import segment_and_patch
from lrmil.patching import PatchGrid
from lrmil.slide import SlideIds, SlideReadError, open_slide, read_scaled

log = logging.getLogger(__name__)

LOSSES = ("cosine", "mse")
STAGE_1_LEFT_OUT = "slide left out of stage 1"  # what the line of a slide stage 1 goes on without says


@dataclass(frozen=True)
class ParentSample:
    """One 5x patch and what its 16 children look like to the teacher."""

    image: np.ndarray  # uint8 [px, px, 3] at 5x
    targets: np.ndarray  # float32 [ratio*ratio, len(layers)+1, D]; zeros for background children
    weights: np.ndarray  # float32 [ratio*ratio]; 0 for background children


def block_means(tokens: torch.Tensor, ratio: int) -> torch.Tensor:
    """[B, H, W, D] token map -> [B, ratio*ratio, D] means of its ratio x ratio blocks (row-major)."""
    b, h, w, d = tokens.shape
    if h % ratio or w % ratio:
        raise ValueError(f"a {h}x{w} token map does not split into {ratio}x{ratio} blocks")
    return tokens.reshape(b, ratio, h // ratio, ratio, w // ratio, d).mean(dim=(2, 4)).reshape(b, ratio * ratio, d)


def teacher_layer_features(teacher: torch.nn.Module, patches: torch.Tensor, layers: tuple[int, ...]) -> torch.Tensor:
    """uint8 20x patches [B, px, px, 3] -> [B, len(layers)+1, D]: token means per layer, then pooled output."""
    maps = teacher.forward_tokens(preprocess(teacher.cfg, patches), layers)
    return torch.stack([m.mean(dim=(1, 2)) for m in maps.layers] + [maps.pooled], dim=1)


def student_layer_features(student: torch.nn.Module, images: torch.Tensor, layers: tuple[int, ...],
                           ratio: int) -> torch.Tensor:
    """uint8 5x patches [B, px, px, 3] -> [B, ratio*ratio, len(layers)+1, D] block means per child."""
    maps = student.forward_tokens(preprocess(student.cfg, images), layers)
    return torch.stack([block_means(m, ratio) for m in maps.layers] + [block_means(maps.final, ratio)], dim=2)


def match_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
               cfg: DistillPatchConfig) -> torch.Tensor:
    """Attention-weighted mean over children of the per-layer mismatch; background children weigh 0."""
    if cfg.loss == "cosine":
        per = 1.0 - F.cosine_similarity(pred, target, dim=-1)
    elif cfg.loss == "mse":
        d = pred.shape[-1]
        per = (F.layer_norm(pred, (d,)) - F.layer_norm(target, (d,))).square().mean(dim=-1)
    else:
        raise ValueError(f"loss must be one of {LOSSES}, got {cfg.loss!r}")
    layer_w = torch.tensor([cfg.layer_weight] * (per.shape[-1] - 1) + [1.0], device=per.device)
    per_child = (per * layer_w).sum(-1) / layer_w.sum()
    return (per_child * weights).sum() / weights.sum().clamp_min(1e-8)


def teacher_attention(teacher_mil: str | Path, features_dir: str | Path, slide_ids: list[str],
                      left_out: list[dict] | None = None) -> dict[str, tuple]:
    """Per slide: (20x coords, attention over those patches) from the frozen teacher MIL. A slide without a 20x
    feature file (extraction failed on it) is left out with one line and appended to `left_out`, as `lrmil train`
    leaves it out."""
    from lrmil.mil.attention import load_mil
    from lrmil.mil.bags import feature_path
    from lrmil.store import missing_feature_file, read_features

    model = load_mil(teacher_mil)
    out = {}
    with torch.inference_mode():
        for sid in slide_ids:
            if not (path := feature_path(features_dir, sid)).is_file():  # one line, not h5py's errno paragraph
                missing, held = missing_feature_file(features_dir, sid)
                reason = (f"no 20x feature file of slide {sid} in --teacher-features{held} (`lrmil extract "
                          "--resolution teacher` failed on it or was not given it)")
                leave_out(left_out, sid, missing, "FileNotFoundError", reason, then=STAGE_1_LEFT_OUT)
                continue
            try:
                ff = read_features(path)
            except (OSError, KeyError, ValueError) as err:  # a damaged file: a traceback ended stage 1
                leave_out(left_out, sid, path, type(err).__name__, f"cannot read features ({err})",
                          then=STAGE_1_LEFT_OUT)
                continue
            out[sid] = (ff.coords, model(torch.from_numpy(ff.features)).attention.numpy())
    return out


def child_weights(grid: PatchGrid, attention: np.ndarray | None) -> np.ndarray:
    """[N_student, ratio*ratio] weights: attention x number of teacher patches (mean 1), 0 for background."""
    valid = grid.children >= 0
    if attention is None:
        return valid.astype(np.float32)
    if len(attention) != len(grid.teacher):
        raise ValueError(f"attention has {len(attention)} entries but the grid has {len(grid.teacher)} 20x patches")
    scaled = np.asarray(attention, np.float32) * len(attention)
    return np.where(valid, scaled[np.maximum(grid.children, 0)], 0.0).astype(np.float32)


def select_parents(weights: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Half the cap by attention mass, the rest at random, so low-attention tissue is seen too."""
    order = np.argsort(-weights.sum(axis=1), kind="stable")
    top = order[:cap // 2]
    rest = rng.permutation(order[cap // 2:])[:cap - len(top)]
    return np.sort(np.concatenate([top, rest]))


@torch.inference_mode()
def collect_samples(path: Path, grid: PatchGrid, weights: np.ndarray, teacher: torch.nn.Module,
                    cfg: DistillPatchConfig, rng: np.random.Generator) -> list[ParentSample]:
    """Read the chosen 5x parents and their 20x children; run the frozen teacher on the children."""
    parents = select_parents(weights, cfg.max_parents_per_slide, rng)
    t, s = grid.teacher, grid.student
    samples = []
    with open_slide(path, grid.mpp, override_mpp=True) as reader:  # the grid's scale
        for p in parents:
            kids = grid.children[p]
            valid = np.flatnonzero(kids >= 0)
            patches = np.stack([read_scaled(reader, tuple(int(v) for v in t.coords[kids[k]]), t.size_level0, t.patch_px)
                                for k in valid])
            feats = teacher_layer_features(teacher, torch.from_numpy(patches).to(cfg.device), cfg.layers)
            feats = feats.float().cpu().numpy()
            targets = np.zeros((len(kids), feats.shape[1], feats.shape[2]), np.float32)
            targets[valid] = feats
            image = read_scaled(reader, tuple(int(v) for v in s.coords[p]), s.size_level0, s.patch_px)
            samples.append(ParentSample(image, targets, weights[p]))
    return samples


def _batches(samples: list[ParentSample], size: int, device: str):
    for i in range(0, len(samples), size):
        chunk = samples[i:i + size]
        yield (torch.from_numpy(np.stack([c.image for c in chunk])).to(device),
               torch.from_numpy(np.stack([c.targets for c in chunk])).to(device),
               torch.from_numpy(np.stack([c.weights for c in chunk])).to(device))


@torch.inference_mode()
def output_cosine(student: torch.nn.Module, samples: list[ParentSample], cfg: DistillPatchConfig) -> float:
    """Attention-weighted cosine between student block means and teacher outputs (the final layer)."""
    total, mass = 0.0, 0.0
    for images, targets, weights in _batches(samples, cfg.batch_size, cfg.device):
        pred = student_layer_features(student, images, cfg.layers, cfg.patch.ratio)[:, :, -1]
        cos = F.cosine_similarity(pred, targets[:, :, -1], dim=-1)
        total += float((cos * weights).sum())
        mass += float(weights.sum())
    return total / max(mass, 1e-8)


def train_student(teacher: torch.nn.Module, train: list[ParentSample], val: list[ParentSample],
                  cfg: DistillPatchConfig) -> tuple[torch.nn.Module, dict]:
    """Copy the teacher, then fit the copy's 5x block means to the teacher's 20x child features."""
    from tqdm import tqdm

    student = copy.deepcopy(teacher).float().train()
    student.cfg = dataclasses.replace(teacher.cfg, magnification=cfg.patch.student_magnification)
    before = output_cosine(student.eval(), val, cfg) if val else float("nan")
    student.train()
    optim = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = max(1, cfg.epochs * -(-len(train) // cfg.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=steps)
    rng, losses = np.random.default_rng(cfg.seed), []
    with tqdm(total=steps, desc="stage-1 distillation", unit="step") as bar:
        for _ in range(cfg.epochs):
            order = [train[i] for i in rng.permutation(len(train))]
            for images, targets, weights in _batches(order, cfg.batch_size, cfg.device):
                predicted = student_layer_features(student, images, cfg.layers, cfg.patch.ratio)
                loss = match_loss(predicted, targets, weights, cfg)
                optim.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
                optim.step()
                sched.step()
                losses.append(loss.item())
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
                bar.update()
    student.eval()
    after = output_cosine(student, val, cfg) if val else float("nan")
    return student, {"val_output_cosine_before": before, "val_output_cosine_after": after,
                     "first_loss": losses[0], "final_loss": float(np.mean(losses[-5:])), "steps": len(losses)}


def _training_slides(slides: list[Path], ids: SlideIds, splits: str | Path | None, test_fold: int) -> list[Path]:
    """With a splits CSV, its slides outside the test fold, as `lrmil train` reads only the CSV's slides: one the CSV
    does not list (a case kept back, or added to the folder since) could be tested on later."""
    if splits is None:
        return slides
    from export.tables import nfc
    from lrmil.mil.splits import read_splits

    table = read_splits(splits, min_folds=1)  # its slide ids as train's: without a slide file suffix or spaces

    def key(slide_id: str) -> str:  # typed by hand, the files' names from a Mac; ids ignore case, as SlideIds's
        return nfc(slide_id).casefold()

    folds = dict(zip(table["slide_id"].map(key), table["fold"]))
    if unlisted := [p for p in slides if key(ids.claim(p)) not in folds]:
        log.warning("%d slide(s) not in %s left out of stage 1, e.g. %s", len(unlisted), splits, unlisted[0])
    return [p for p in slides if folds.get(key(ids.claim(p)), test_fold) != test_fold]


def _teacher_fold(teacher_mil: str | Path) -> int | None:
    """The fold a teacher ABMIL of `lrmil train` was trained for; None for one saved otherwise."""
    from export.artifact import read_weights_metadata

    return read_weights_metadata(teacher_mil, package="lrmil").get("fold")


def _check_held_out(splits: str | Path | None, teacher_mil: str | Path | None) -> None:
    """Without a splits CSV every slide given is distilled on, the test fold's too, and stage 2 is later scored on
    them with this encoder: refused for a fold's teacher (the folds exist), said once otherwise."""
    if splits is not None:
        return
    if teacher_mil is not None and (fold := _teacher_fold(teacher_mil)) is not None:
        raise ValueError(f"{teacher_mil}: the teacher of fold {fold}, and no --splits: stage 1 would distil on fold "
                         f"{fold}'s test slides; give --splits (the CSV it was trained on) and --test-fold {fold}")
    log.warning("no --splits: stage 1 distils on every slide given, test slides too; give --splits to hold "
                "--test-fold out")


def _check_teacher_fold(teacher_mil: str | Path, test_fold: int) -> None:
    """The teacher ABMIL weighting the children must be the one of the fold stage 1 leaves out: another fold's
    was trained on the left-out slides."""
    fold = _teacher_fold(teacher_mil)
    if fold is not None and fold != test_fold:
        raise ValueError(f"{teacher_mil}: the teacher of fold {fold}, "
                         f"trained on the slides of --test-fold {test_fold}; "
                         f"give its fold{test_fold} model, or --test-fold {fold}")


def distill_patch(cfg: DistillPatchConfig, slides: list[Path], out: str | Path, splits: str | Path | None = None,
                  teacher_mil: str | Path | None = None, teacher_features: str | Path | None = None) -> dict:
    """Train the 5x student encoder and save it to `out` (.safetensors); returns metrics.

    Attention weighting needs `teacher_mil` (a saved ABMIL) and `teacher_features` (its 20x
    feature files); without them, or with `attention_weighting` off, every tissue child weighs 1.
    """
    from tqdm import tqdm

    if cfg.loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {cfg.loss!r}")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    teacher = create_encoder(cfg.encoder, weights=cfg.teacher_weights).to(cfg.device).eval()
    if not hasattr(teacher, "forward_tokens"):
        raise ValueError(f"encoder {cfg.encoder} has no token maps; stage 1 needs a ViT such as lrmil_vit_tiny")
    # splits, attention and teacher features are all keyed by slide id, as extract named the features
    ids = SlideIds(slides)
    chosen = _training_slides([Path(p) for p in slides], ids, splits, cfg.test_fold)
    if cfg.attention_weighting and (teacher_mil is None) != (teacher_features is None):
        raise ValueError("attention weighting needs both --teacher-mil and --teacher-features (the ABMIL and the 20x "
                         "features it attends over); give both, or neither, or --no-attention-weighting")
    _check_held_out(splits, teacher_mil)
    use_attention = cfg.attention_weighting and teacher_mil is not None
    if use_attention and splits is not None:
        _check_teacher_fold(teacher_mil, cfg.test_fold)
    chosen_ids = [ids.claim(p) for p in chosen]
    left_out: list[dict] = []
    attention = teacher_attention(teacher_mil, teacher_features, chosen_ids, left_out) if use_attention else {}
    start, samples, used = time.perf_counter(), [], []
    for path, sid in tqdm(list(zip(chosen, chosen_ids)), desc="teacher targets", unit="slide"):
        if use_attention and sid not in attention:  # named by teacher_attention
            continue
        try:  # a slide extraction failed on (corrupt, no scale) is left out, as `lrmil train` leaves it out
            grid = segment_and_patch(path, cfg.tissue, cfg.patch, cfg.mpp, cfg.override_mpp).grid
            coords, attn = attention.get(sid, (grid.teacher.coords, None))
            if not np.array_equal(coords, grid.teacher.coords):
                raise ValueError(f"{path}: the 20x feature file was cut with another grid; give the tissue and "
                                 "patch flags it was extracted with (--mask-mpp, --min-saturation, --keep-ink, "
                                 "--teacher-px, --min-tissue)")
            samples += collect_samples(path, grid, child_weights(grid, attn), teacher, cfg, rng)
        except SlideReadError as exc:
            leave_out(left_out, sid, exc.path, type(exc).__name__, exc.reason, then=STAGE_1_LEFT_OUT)
            continue
        used.append(sid)
    if not samples:
        left_out = f" ({len(chosen) - len(used)} of {len(chosen)} left out above)" if len(used) < len(chosen) else ""
        raise ValueError(f"no tissue patches in the training slides{left_out}; nothing to distil")
    order = rng.permutation(len(samples))
    n_val = int(round(len(samples) * cfg.val_fraction)) if len(samples) > 4 else 0
    val, train = [samples[i] for i in order[:n_val]], [samples[i] for i in order[n_val:]]
    student, metrics = train_student(teacher, train, val, cfg)
    metrics.update({"slides": len(used), "slide_ids": used, "left_out": left_out, "parents": len(samples),
                    "attention_weighting": use_attention, "seconds": time.perf_counter() - start})
    student.cfg = dataclasses.replace(student.cfg, source="lrmil distill-patches",
                                      training_data=f"stage-1 distillation on {len(used)} slides; "
                                                    f"teacher {teacher.cfg.training_data}".strip())
    save_encoder(out, student, student.cfg, extra={"distill_patch": cfg.to_dict(), "metrics": metrics})
    write_json(Path(out).with_suffix(".json"),
               {"config": cfg.to_dict(), "metrics": metrics,
                "notice": SYNTHETIC_NOTICE if "synthetic" in teacher.cfg.training_data else ""})
    write_left_out(errors_file(out), left_out, "distill-patches")
    return metrics


def errors_file(out: str | Path) -> Path:
    """The slides left out of stage 1, beside the weights `out` (enc5.safetensors: enc5.errors.csv)."""
    return Path(out).with_suffix(".errors.csv")
