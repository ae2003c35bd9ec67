"""The synthetic LRMIL benchmark: one seed -> data, encoders, four MIL variants, timing, table.

Variants (all k-fold on the same splits, pooled out-of-fold predictions):
  teacher_20x       ABMIL on 20x features of the pre-trained encoder
  student_5x_nokd   ABMIL on 5x features of the same encoder, cross-entropy only
  student_5x_stage2 the same 5x features, stage-2 distillation from the teacher
  student_5x_both   stage-1 (patch-level) distilled 5x encoder, then stage 2; stage 1 is
                    trained per test fold (never on that fold's slides), so every fold
                    of this variant is held out like the others
Timing runs `lrmil predict` end to end (read -> tissue -> patches -> encode -> MIL) on both paths
with the same encoder architecture, on benchmark slides and on one large synthetic slide.
Every step reuses its outputs when they exist, so an interrupted run resumes.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from pathlib import Path

import numpy as np
import torch

from export.atomic import write_json, write_text
from export.jsonconfig import read_json
from lrmil.config import DistillPatchConfig, ExtractConfig, PatchConfig, PretrainConfig, SynthConfig, TissueConfig
from lrmil.mil.config import DEMO_NOTICE, BenchConfig, DistillConfig, MILConfig, PredictConfig

log = logging.getLogger(__name__)
VARIANTS = ("teacher_20x", "student_5x_nokd", "student_5x_stage2", "student_5x_both")
ENCODER = "lrmil_vit_tiny"


def _extract(slides: list[Path], weights: Path, resolution: str, out: Path, cfg: BenchConfig) -> Path:
    from lrmil.features import run_extract
    from lrmil.store import feature_dir

    extract = ExtractConfig(encoder=ENCODER, weights=str(weights), resolution=resolution, device=cfg.device)
    summary = run_extract(slides, extract, out)
    if summary["failed"]:
        raise RuntimeError(f"feature extraction failed for {summary['failed']} slide(s): see {summary['errors_csv']}")
    return feature_dir(out / "features", ENCODER, *PatchConfig().level(resolution))


def _stage1_and_2(splits: Path, slides: list[Path], teacher_encoder: Path, f20: Path, stage2: DistillConfig,
                  out: Path, cfg: BenchConfig) -> tuple[dict, dict]:
    """Variant (4), one test fold at a time: stage 1 on the other folds' slides, weighted by that
    fold's teacher attention; 5x features from that encoder; stage 2 for that fold only.

    Returns the variant's metrics (pooled out-of-fold, like `run_folds`) and stage 1's per fold.
    """
    import pandas as pd

    from lrmil.distill_patch import distill_patch
    from lrmil.mil.distill import distill
    from lrmil.mil.metrics import metrics_from_table, read_predictions, write_predictions
    from lrmil.mil.splits import labels_of, read_splits

    table = read_splits(splits)
    stage1_metrics, predictions = {}, []
    for fold in sorted(table["fold"].unique()):
        encoder = out / "encoders" / f"student_5x_fold{fold}.safetensors"
        if not encoder.is_file():
            stage1 = DistillPatchConfig(teacher_weights=str(teacher_encoder), encoder=ENCODER, test_fold=int(fold),
                                        epochs=cfg.stage1_epochs, device=cfg.device, seed=cfg.seed)
            distill_patch(stage1, slides, encoder, splits,
                          Path(stage2.teacher) / f"fold{fold}" / "model.safetensors", f20)
        stage1_metrics[int(fold)] = read_json(encoder.with_suffix(".json"))["metrics"]
        f5 = _extract(slides, encoder, "student", out / f"student_encoder_fold{fold}", cfg)
        run = out / "runs" / f"student_5x_both_fold{fold}"
        distill(dataclasses.replace(stage2, features=str(f5), out=str(run), folds=(int(fold),)))
        predictions.append(read_predictions(run / "predictions.csv"))
    labels = labels_of(table, splits)
    pooled = pd.concat(predictions, ignore_index=True)
    write_predictions(out / "runs" / "student_5x_both_predictions.csv", pooled)
    metrics = {"pooled": metrics_from_table(pooled, labels),
               "folds": {int(f): metrics_from_table(t, labels) for f, t in pooled.groupby("fold")}}
    return metrics, stage1_metrics


def _timing(bundle: Path, slides: list[Path], out: Path, cfg: BenchConfig) -> dict:
    """Mean end-to-end seconds per slide and per stage of each path (outputs written, not timed)."""
    from lrmil.mil.bundle import load_path
    from lrmil.predict import predict_slide

    result = {}
    for name in ("teacher", "student"):
        model = load_path(bundle, name, cfg.device)
        pcfg = PredictConfig(model=str(bundle), path=name, device=cfg.device)
        records = [predict_slide(s, model, pcfg, out / name) for s in slides]
        stages = records[0]["seconds"].keys()
        result[name] = {"patch_count": float(np.mean([r["patches"] for r in records])),
                        **{k: float(np.mean([r["seconds"][k] for r in records])) for k in stages}}
    result["speedup"] = result["teacher"]["total"] / result["student"]["total"]
    return result


def run_bench(cfg: BenchConfig) -> dict:
    from lrmil.mil.bundle import save_bundle
    from lrmil.mil.distill import distill
    from lrmil.mil.train import train
    from lrmil.pretrain import pretrain
    from lrmil.synth import synthesize

    out = Path(cfg.out)
    if cfg.threads > 0:  # 0: torch's own default, every core
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    clock: dict[str, float] = {}

    def step(name: str, t0: float) -> None:
        clock[name] = round(time.perf_counter() - t0, 1)
        log.info("bench step %s: %.1f s", name, clock[name])

    t0 = time.perf_counter()
    synth = SynthConfig(count=cfg.count, size=cfg.size, seed=cfg.seed, folds=cfg.folds)
    splits = synthesize(out / "data", synth)
    slides = sorted((out / "data" / "slides").glob("*.tiff"))
    step("synth", t0)

    t0 = time.perf_counter()
    teacher_encoder = out / "encoders" / "teacher_20x.safetensors"
    pretrain_metrics = {}
    if not teacher_encoder.is_file():
        pretrain_metrics = pretrain(PretrainConfig(encoder=ENCODER, steps=cfg.pretrain_steps, seed=cfg.seed),
                                    synth, teacher_encoder)
    step("pretrain_encoder", t0)

    t0 = time.perf_counter()
    f20 = _extract(slides, teacher_encoder, "teacher", out / "teacher_encoder", cfg)
    f5 = _extract(slides, teacher_encoder, "student", out / "teacher_encoder", cfg)
    step("extract_20x_and_5x", t0)

    runs = out / "runs"
    mil = MILConfig(splits=str(splits), epochs=cfg.mil_epochs, seed=cfg.seed)
    stage2 = DistillConfig(splits=str(splits), teacher=str(runs / "teacher_20x"), teacher_features=str(f20),
                           epochs=cfg.mil_epochs, seed=cfg.seed)
    metrics = {}
    t0 = time.perf_counter()
    metrics["teacher_20x"] = train(dataclasses.replace(mil, features=str(f20), out=str(runs / "teacher_20x")))
    metrics["student_5x_nokd"] = train(dataclasses.replace(mil, features=str(f5), out=str(runs / "student_5x_nokd")))
    metrics["student_5x_stage2"] = distill(dataclasses.replace(stage2, features=str(f5),
                                                               out=str(runs / "student_5x_stage2")))
    step("mil_teacher_nokd_stage2", t0)

    t0 = time.perf_counter()
    metrics["student_5x_both"], stage1_metrics = _stage1_and_2(splits, slides, teacher_encoder, f20, stage2, out, cfg)
    step("stage1_extract_and_stage2_per_fold", t0)

    bundle = save_bundle(Path(cfg.demo_dir) if cfg.demo_dir else out / "model",
                         (out / "encoders" / "student_5x_fold0.safetensors",
                          runs / "student_5x_both_fold0" / "fold0" / "model.safetensors"),
                         (teacher_encoder, runs / "teacher_20x" / "fold0" / "model.safetensors"),
                         PatchConfig(), TissueConfig(), notice=DEMO_NOTICE)

    t0 = time.perf_counter()
    timing = {"benchmark_slides": _timing(bundle, slides[: cfg.timing_slides], out / "timing", cfg)}
    step("timing_small", t0)
    if cfg.large_size:
        t0 = time.perf_counter()
        large = synthesize(out / "large", SynthConfig(count=1, size=cfg.large_size, seed=cfg.seed + 1, folds=1))
        timing["large_slide"] = _timing(bundle, sorted((large.parent / "slides").glob("*.tiff")),
                                        out / "timing_large", cfg)
        step("timing_large", t0)

    results = {"config": cfg.to_dict(), "metrics": {k: v["pooled"] for k, v in metrics.items()},
               "per_fold": {k: v["folds"] for k, v in metrics.items()}, "timing": timing,
               "pretrain": pretrain_metrics, "stage1": stage1_metrics, "steps_s": clock,
               "total_s": round(time.perf_counter() - started, 1),
               "machine": f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}"}
    write_json(out / "results.json", results)
    write_text(out / "results.md", results_table(results))
    return results


def results_table(results: dict) -> str:
    """The table of bench/README.md's LRMIL benchmark: accuracy of the four variants, then seconds per slide of both
    paths."""
    m = results["metrics"]
    lines = ["| model | features | AUC | accuracy | balanced acc. | weighted F1 |", "|---|---|---|---|---|---|"]
    names = {"teacher_20x": ("teacher", "20x"), "student_5x_nokd": ("student, no KD", "5x"),
             "student_5x_stage2": ("student, stage 2 only", "5x"),
             "student_5x_both": ("student, stage 1 + 2", "5x (stage-1 encoder)")}
    for key in VARIANTS:
        v = m[key]
        lines.append(f"| {names[key][0]} | {names[key][1]} | {v['auc']:.3f} | {v['accuracy']:.3f} | "
                     f"{v['balanced_accuracy']:.3f} | {v['f1_weighted']:.3f} |")
    lines += ["",
              "| slides | path | patches/slide | read s | encode s | tissue+grid+MIL s | total s/slide | speed-up |",
              "|---|---|---|---|---|---|---|---|"]
    for where, t in results["timing"].items():
        for name in ("teacher", "student"):
            p = t[name]
            other = p["tissue"] + p["patches"] + p["mil"]
            speed = f"{t['speedup']:.1f}x" if name == "student" else ""
            lines.append(f"| {where.replace('_', ' ')} | {name} ({'20x' if name == 'teacher' else '5x'}) | "
                         f"{p['patch_count']:.0f} | {p['read']:.2f} | {p['encode']:.2f} | {other:.2f} | "
                         f"{p['total']:.2f} | {speed} |")
    return "\n".join(lines) + "\n"

