"""k-fold ABMIL training with early stopping on validation AUC (`lrmil train`).

`fit` and `run_folds` are shared with stage 2 (distill.py): only the per-bag loss differs, so
the teacher, the student without KD and the distilled student are trained by the same loop.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lrmil.config import hash_record
from lrmil.mil.attention import ABMIL, load_mil, save_mil
from lrmil.mil.bags import Bag, load_bags
from lrmil.mil.config import ABMILConfig, MILConfig
from lrmil.mil.metrics import metrics_from_table, predictions_table, slide_metrics, write_predictions
from lrmil.mil.splits import fold_roles, labels_of, read_splits

log = logging.getLogger(__name__)

BagLoss = Callable[[ABMIL, Bag], torch.Tensor]


def ce_loss(model: ABMIL, bag: Bag) -> torch.Tensor:
    return F.cross_entropy(model(bag.features).logits[None], torch.tensor([bag.label]))


@torch.inference_mode()
def predict_bags(model: ABMIL, bags: list[Bag]) -> np.ndarray:
    """[len(bags), num_classes] probabilities."""
    model.eval()
    return np.stack([torch.softmax(model(b.features).logits, -1).numpy() for b in bags])


def _score(model: ABMIL, bags: list[Bag]) -> tuple[float, float]:
    """Validation score to maximise: AUC first, then lower CE breaks ties (AUC saturates on small sets)."""
    probs = predict_bags(model, bags)
    y = np.array([b.label for b in bags])
    value = slide_metrics(y, probs)["auc"]
    nll = float(-np.log(probs[np.arange(len(y)), y].clip(1e-7)).mean())
    return (0.0 if math.isnan(value) else value), -nll


def fit(model: ABMIL, train: list[Bag], val: list[Bag], loss_fn: BagLoss, cfg, desc: str = "fit") -> ABMIL:
    """Train one bag at a time with AdamW; return the model at its best validation score."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best, best_state, stale = (-math.inf, -math.inf), copy.deepcopy(model.state_dict()), 0
    bar = tqdm(range(cfg.epochs), desc=desc, leave=False, disable=None)  # terminals only
    for _ in bar:
        model.train()
        for i in rng.permutation(len(train)):
            loss = loss_fn(model, train[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
        score = _score(model, val)
        bar.set_postfix(val_auc=f"{score[0]:.3f}", val_nll=f"{-score[1]:.3f}")
        if score > best:
            best, best_state, stale = score, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    model.load_state_dict(best_state)
    return model.eval()


def resolve_model(model: ABMILConfig, labels: tuple[str, ...], bag: Bag) -> ABMILConfig:
    """The model config with what the data decides: feature size, labels, magnification, encoder."""
    import dataclasses

    return dataclasses.replace(model, in_dim=bag.features.shape[1], labels=labels,
                               magnification=bag.magnification or model.magnification,
                               encoder=bag.encoder or model.encoder)


def fingerprint(bags: dict[str, Bag]) -> str:
    """Hash of every bag's features: a resumed run never reuses models trained on other features."""
    import hashlib

    digest = hashlib.sha256()
    for slide_id in sorted(bags):
        digest.update(slide_id.encode())
        digest.update(bags[slide_id].features.numpy().tobytes())
    return digest.hexdigest()[:16]


def run_folds(cfg, bags: dict[str, Bag], splits: pd.DataFrame, labels: tuple[str, ...],
              fold_loss: Callable[[int], BagLoss], model_cfg: ABMILConfig, data_hash: str,
              fold_inputs: Callable[[int], dict] = lambda fold: {}, left_out: list[dict] = (),
              stage: str = "train") -> dict:
    """Train one model per test fold; write fold<k>/model.safetensors, predictions.csv, metrics.json.

    A fold whose model was saved with the same key is reloaded, not retrained: the same config (but for which
    folds this call runs), the same data, the same slides and labels in each role, and what `fold_inputs` adds
    (stage 2: the teacher fold's weights). Each model carries its key, so a run killed after config.json changed
    never reloads an older run's fold. predictions.csv and metrics.json cover every fold of the folder whose
    model is current, so folds run as separate jobs into one --out add up. The slides `load_bags` left out are
    listed in metrics.json ("left_out") and errors.csv, as `lrmil extract` and `predict` list their failed slides.
    """
    from export.atomic import write_json
    from lrmil.batch import ERRORS_FILE
    from lrmil.errors import write_left_out

    out = Path(cfg.out)
    record = {**run_record(cfg), "data_hash": data_hash}
    run = {name: value for name, value in record["config"].items() if name != "folds"}
    splits = splits[splits["slide_id"].isin(bags)]
    every_fold, folds = folds_to_run(cfg, splits, bags)
    write_json(out / "config.json", record)
    write_left_out(out / ERRORS_FILE, left_out, stage)  # a rerun that reads every slide leaves none

    weights_sha256 = next(iter(bags.values())).weights_sha256  # one for every bag (load_bags): `bundle` checks it

    def key(fold: int, roles: dict[str, list[str]]) -> dict:
        slides = {role: [[s, int(bags[s].label)] for s in ids] for role, ids in roles.items()}
        return {"run": run, "data_hash": data_hash, "roles_sha256": hash_record(slides), **fold_inputs(fold)}

    for fold in tqdm(folds, desc="folds"):
        roles = fold_roles(splits, fold)
        warn_untrained_labels(fold, roles, bags, labels)
        path = out / f"fold{fold}" / "model.safetensors"
        if not saved_with(path, key(fold, roles)):
            torch.manual_seed(cfg.seed)  # the initial weights too: torch's own seed differs in every process
            model = fit(ABMIL(model_cfg), [bags[s] for s in roles["train"]], [bags[s] for s in roles["val"]],
                        fold_loss(fold), cfg, desc=f"fold {fold}")
            save_mil(path, model, {"fold": fold, **key(fold, roles), "features_weights_sha256": weights_sha256})
    tables = []
    for fold in every_fold:  # this call's folds and those earlier calls left current
        roles = fold_roles(splits, fold)
        path = out / f"fold{fold}" / "model.safetensors"
        if saved_with(path, key(fold, roles)):
            test = [bags[s] for s in roles["test"]]
            tables.append(predictions_table([b.slide_id for b in test], np.array([b.label for b in test]),
                                            predict_bags(load_mil(path), test), labels, [fold] * len(test)))
    table = pd.concat(tables, ignore_index=True)
    write_predictions(out / "predictions.csv", table)
    per_fold = {int(f): metrics_from_table(t, labels) for f, t in table.groupby("fold")}
    metrics = _without_nan({"pooled": metrics_from_table(table, labels), "folds": per_fold, "left_out": list(left_out)})
    write_json(out / "metrics.json", metrics)
    return metrics


def folds_to_run(cfg, splits: pd.DataFrame, bags: dict[str, Bag]) -> tuple[list[int], list[int]]:
    """Every fold of the slides with features, and those this call trains (`cfg.folds`, else all)."""
    every_fold = [int(f) for f in sorted(splits.loc[splits["slide_id"].isin(bags), "fold"].unique())]
    if len(every_fold) < 3:  # fold_roles would leave no training fold: models as initialised, scored as trained
        raise ValueError(f"{cfg.splits}: the slides with features are all in fold(s) "
                         f"{', '.join(map(str, every_fold))}; training needs slides in at least 3 folds (test, "
                         "validation, train): extract the slides skipped above, or move slides to other folds")
    folds = [int(f) for f in cfg.folds] or every_fold
    if unknown := sorted(set(folds) - set(every_fold)):
        raise ValueError(f"{cfg.splits}: no fold {', '.join(map(str, unknown))} among the slides with features "
                         f"(folds: {', '.join(map(str, every_fold))})")
    return every_fold, folds


def warn_untrained_labels(fold: int, roles: dict[str, list[str]], bags: dict[str, Bag],
                          labels: tuple[str, ...]) -> None:
    """A class whose slides all sit in a fold's test and validation folds is never trained on there: the model
    cannot predict it, and a run finishes without saying so."""
    trained = {labels[bags[s].label] for s in roles["train"]}
    for name in labels:
        if name not in trained:
            log.warning("fold %d: no training slide is labelled %r (its slides are all in this fold's test or "
                        "validation fold), so this fold's model never predicts it; spread each label over the folds",
                        fold, name)


def _without_nan(value):
    """NaN (AUC of a fold with one class) as None: JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    return None if isinstance(value, float) and math.isnan(value) else value


def saved_with(path: Path, key: dict) -> bool:
    """True when the fold model at `path` exists and its metadata holds `key` (config and data hash)."""
    from export.artifact import read_weights_metadata

    if not path.is_file():
        return False
    metadata = read_weights_metadata(path, package="lrmil")
    return all(metadata.get(name) == value for name, value in key.items())


def run_record(cfg) -> dict:
    """What config.json holds: the resolved config, package version, git sha and the splits' hash."""
    import subprocess
    from importlib.metadata import version

    from export.artifact import sha256

    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return {"config": json.loads(json.dumps(cfg.to_dict(), default=str)), "version": version("pulse-lrmil"),
            "git_sha": sha, "splits_sha256": sha256(cfg.splits) if Path(cfg.splits).is_file() else ""}


def train(cfg: MILConfig) -> dict:
    """Teacher (20x features) or student without KD (5x features): cross-entropy only."""
    splits = read_splits(cfg.splits)
    labels = labels_of(splits, cfg.splits)
    left_out: list[dict] = []
    bags = load_bags(cfg.features, splits, labels, left_out)
    model_cfg = resolve_model(cfg.model, labels, next(iter(bags.values())))
    return run_folds(cfg, bags, splits, labels, lambda fold: ce_loss, model_cfg, fingerprint(bags), left_out=left_out)
