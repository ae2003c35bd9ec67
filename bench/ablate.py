"""Which parts of PULSE's multitask training help? Supervised vs +BYOL vs +KD vs +BYOL+KD.

Every variant trains with the same seed, steps and batch (BYOL and KD add their own batches on
top), in two regimes: all labelled training recordings, and 3 labelled recordings per species
(the rest of the training audio stays in the unlabelled pool, labels removed). Each final model
is scored by pulse.evaluate on the validation split clean and mixed into held-out soundscapes
at +10/0/-10 dB, next to the baseline BirdNET-Analyzer users have: a linear probe on BirdNET
embeddings trained on the same labelled windows. Every variant starts from the recipe in --config
(the bundled model's, by default) at a smaller budget. Last, `pulse analyze` runs the bundled
student and BirdNET over the same recording on the same CPU for throughput. Needs the teacher caches:
    pulse teacher-cache --out runs/teacher/insectset32
    pulse teacher-cache --manifest data_manifests/backgrounds.csv --audio-root ../shared/data/audio/backgrounds \
        --out runs/teacher/backgrounds
    python bench/ablate.py --out runs/ablate
Resumable: finished runs are skipped, a killed one continues from its checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import pandas as pd

from export.atomic import atomic_path, write_json, write_text
from pulse.config import EvalConfig, TrainConfig

# name -> (lambda_byol, lambda_kd, schedule, kd_probe_weight); the default run trains the first four.
VARIANTS = {"supervised": (0.0, 0.0, "joint", 0.0), "byol": (1.0, 0.0, "joint", 0.0), "kd": (0.0, 1.0, "joint", 0.0),
            "byol_kd": (1.0, 1.0, "joint", 0.0), "byol_kd_pretrain": (1.0, 1.0, "pretrain_finetune", 0.0),
            "byol_small": (0.1, 0.0, "joint", 0.0), "kd_probe": (0.0, 1.0, "joint", 1.0)}
METRICS = (("F1", lambda c: c["window"]["macro_f1"]), ("mAP", lambda c: c["window"]["mAP"]),
           ("det AUC", lambda c: c["detection_auc"]))


def low_label_manifest(manifest: str, per_species: int, seed: int, out: Path) -> str:
    """A copy of `manifest` keeping `per_species` random training recordings of each species."""
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    train = frame[frame["split"] == "train"]
    kept = pd.concat([g.sample(n=min(per_species, len(g)), random_state=seed) for _, g in train.groupby("species")])
    subset = pd.concat([kept, frame[frame["split"] != "train"]]).sort_index()
    path = out / f"manifest_{per_species}_per_species.csv"
    with atomic_path(path) as tmp:
        subset.to_csv(tmp, index=False)
    return str(path)


def train_variant(cfg: TrainConfig, out: Path) -> dict:
    """Train (or finish, or skip) one run; return its final validation report."""
    from pulse.train.weak_labels import train

    train(cfg, out, resume=True)
    return json.loads((out / "validation.json").read_text())


def probe_report(manifest: str, cfg: EvalConfig, labels: tuple[str, ...], caches: tuple[str, str],
                 threads: int) -> dict:
    """Fit the BirdNET-embedding probe on the regime's labelled windows + training backgrounds; evaluate it."""
    from pulse.evaluate import evaluate, prepare
    from pulse.teacher.probe import BirdNETProbe, fit_on_caches

    probe = BirdNETProbe(fit_on_caches(manifest, cfg.background_manifest, labels, caches), threads)
    data = prepare(dataclasses.replace(cfg, manifest=manifest), labels, probe.sample_rate, probe.window_s)
    report = evaluate(probe, data, cfg, labels)
    probe.close()
    return report


def throughput(student: Path, songs: list[Path], soundscapes: list[Path], out: Path, seconds: float,
               threads: int) -> dict:
    """x real time of `pulse analyze` end to end on one long pseudo-field recording (validation songs
    in held-out soundscapes): the student exported to ONNX, as deployed (a `pulse export` folder is timed
    as it is), then BirdNET (LiteRT), same file, same CPU, the same number of model threads, each run
    twice and the faster run kept."""
    from export.bundle import export_bundle
    from pulse.analyze import analyze
    from pulse.config import ExportConfig, InferConfig
    from pulse.unlabelled import make_pseudo_field

    recording = out / f"audio_{seconds:g}s"
    if not (recording / "manifest.csv").exists():
        make_pseudo_field(songs, soundscapes, recording, 1, seconds, 44100, 6.0, (-5.0, 15.0), seed=1)
    artefact = student if student.is_dir() else out / "student_artefact"
    if not student.is_dir():
        export_bundle(student, artefact, ExportConfig(calibration=tuple(map(str, songs[:4]))))
    files = sorted(recording.glob("*.flac"))
    result = {}
    for name, model in (("student", str(artefact)), ("birdnet", "birdnet")):
        runs = [analyze(files, out / name, InferConfig(model=model, formats=("csv",), resume=False,
                                                       threads=threads)).to_dict() for _ in range(2)]
        result[name] = max(runs, key=lambda r: r["x_realtime"])
    result["threads"] = threads
    result["speedup"] = round(result["student"]["x_realtime"] / max(result["birdnet"]["x_realtime"], 1e-9), 2)
    return result


def settings_key(**settings) -> str:
    """What a cached row or timing was made with: it is reused only when the same settings ask for it."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def table(results: dict) -> str:
    """Markdown: one row per (regime, method); clean/+10/0/-10 dB for each metric."""
    lines = ["| regime | method | " + " | ".join(f"{m} clean / +10 / 0 / -10 dB" for m, _ in METRICS) + " |",
             "|---|---|" + "---|" * len(METRICS)]
    for regime, methods in results.items():
        for method, report in methods.items():
            cells = [" / ".join(f"{get(c):.3f}" for c in report["conditions"].values()) for _, get in METRICS]
            lines.append(f"| {regime} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/ablate"))
    parser.add_argument("--config", type=Path, default=Path("configs/pulse_default.json"),
                        help="recipe every variant starts from (augmentations, frontend, EMA); "
                             "the flags below override it")
    parser.add_argument("--throughput-model", type=Path, default=Path("pulse/assets/default/model.safetensors"),
                        help="student timed against BirdNET: a model.safetensors, exported to ONNX first, or a "
                             "`pulse export` folder, timed as it is (default: the bundled model)")
    parser.add_argument("--steps", type=int, default=100, help="optimiser steps per run (same for every variant)")
    parser.add_argument("--batch-size", type=int, default=16, help="labelled clips per step")
    parser.add_argument("--windows-per-clip", type=int, default=1)
    parser.add_argument("--arch", default="pulse_cnn_xs")
    parser.add_argument("--per-species", type=int, default=3, help="labelled recordings per species, low-label regime")
    parser.add_argument("--regimes", default="low,full", help="'' times the throughput only")
    parser.add_argument("--variants", default="supervised,byol,kd,byol_kd", help=f"any of {', '.join(VARIANTS)}")
    parser.add_argument("--byol-batch", type=int, default=8)
    parser.add_argument("--kd-batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads in training and LiteRT threads of the BirdNET probe (1 is fastest on a "
                             "busy CPU; training reads cached BirdNET outputs), and the model threads of both "
                             "student and BirdNET in the throughput run")
    parser.add_argument("--throughput-s", type=float, default=300.0, help="length of the throughput recording")
    parser.add_argument("--caches", default="runs/teacher/insectset32,runs/teacher/backgrounds")
    args = parser.parse_args()
    from pulse.train.weak_labels import evaluation_config

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    caches = tuple(args.caches.split(","))
    recipe = TrainConfig.load(args.config)
    base = dataclasses.replace(recipe, seed=args.seed, epochs=1, steps_per_epoch=args.steps, batch_size=args.batch_size,
                               windows_per_clip=args.windows_per_clip, threads=args.threads,
                               model=dataclasses.replace(recipe.model, arch=args.arch),
                               semi=dataclasses.replace(recipe.semi, byol_batch=args.byol_batch, kd_batch=args.kd_batch,
                                                        teacher_caches=caches))
    manifests = {"full": base.manifest,
                 "low": low_label_manifest(base.manifest, args.per_species, args.seed, args.out)}
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for regime in filter(None, args.regimes.split(",")):
        rows = results.setdefault(f"{regime}-label", {})
        eval_cfg = evaluation_config(dataclasses.replace(base, manifest=manifests[regime]))  # the students' own
        probe_key = settings_key(manifest=manifests[regime], evaluation=eval_cfg.to_dict(), caches=caches)
        if rows.get("BirdNET probe", {}).get("key") != probe_key:  # kept from an earlier run only if made alike
            rows["BirdNET probe"] = {**probe_report(manifests[regime], eval_cfg, base.model.labels, caches,
                                                    args.threads), "key": probe_key}
        for variant in args.variants.split(","):
            lambda_byol, lambda_kd, schedule, probe = VARIANTS[variant]
            cfg = dataclasses.replace(base, manifest=manifests[regime], lambda_byol=lambda_byol, lambda_kd=lambda_kd,
                                      semi=dataclasses.replace(base.semi, schedule=schedule, kd_probe_weight=probe))
            rows[variant] = train_variant(cfg, args.out / regime / variant)
            write_json(results_path, results)
        write_json(results_path, results)
    frame, bg = pd.read_csv(base.manifest), pd.read_csv(base.background_manifest)
    songs = [Path(base.audio_root) / p for p in frame.loc[frame["split"] == "validation", "path"]]
    soundscapes = [Path(base.background_root) / p for p in bg.loc[bg["split"] == "validation", "path"]]
    speed_path = args.out / "throughput.json"
    model = args.throughput_model
    model_file = (model / "model.onnx" if model.is_dir() else model).stat()
    speed_key = settings_key(model=str(args.throughput_model.resolve()), size=model_file.st_size,
                             mtime_ns=model_file.st_mtime_ns, seconds=args.throughput_s, threads=args.threads)
    if not speed_path.exists() or json.loads(speed_path.read_text()).get("key") != speed_key:
        write_json(speed_path, {**throughput(args.throughput_model, songs, soundscapes, args.out / "throughput",
                                             args.throughput_s, args.threads), "key": speed_key})
    speed = json.loads(speed_path.read_text())
    text = table(results) + (f"\n\nThroughput (`pulse analyze`, the same {args.throughput_s:g} s recording, same CPU, "
                             f"{speed.get('threads', 'default')} model threads each): student "
                             f"{speed['student']['x_realtime']}x real time, BirdNET {speed['birdnet']['x_realtime']}x "
                             f"real time, speed-up {speed['speedup']}x.\n")
    write_text(args.out / "results.md", text)
    print(text)


if __name__ == "__main__":
    main()
