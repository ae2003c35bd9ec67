"""How much of BirdNET's embedding does a distilled student reproduce on recordings it never heard?

Window F1 on 67 excerpts moves by whole excerpts; this asks the distillation term directly. For a
training run (its checkpoint holds the last epoch's student and the KD projection), the projected
student embedding is compared with BirdNET's embedding of the same 3 s: on the training windows
distillation was fitted on, and on the validation excerpts (clean, as `pulse evaluate` cuts them).
Reported: mean cosine; the same after subtracting the training windows' mean teacher embedding
("centred", since BirdNET's post-ReLU embeddings all point roughly one way: the mean alone gets a
raw cosine of about 0.73 on the excerpts); and the window macro-F1 of the BirdNET probe (as
`bench/ablate.py` fits it) read off the projection instead of BirdNET's embedding. Projections are
first put where BirdNET's embeddings live: scaled to their mean norm after a cosine loss (which
leaves the length free), de-standardised after the "mse" loss (which matched standardised ones).

    python bench/kd_fidelity.py --run default=runs/default_s2 --run views=runs/views_s2 --json runs/kd_fidelity.json

Needs the teacher caches of `bench/ablate.py`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score

from export.artifact import load_weights
from export.atomic import write_json
from pulse.config import EvalConfig
from pulse.evaluate import prepare
from pulse.models import load_model

EXCLUDED = "data_manifests/insectset32_validation_silent_excerpts.csv"


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def in_teacher_space(projected: np.ndarray, kd_loss: str, bank, norm: float) -> np.ndarray:
    """Projections as BirdNET embeddings. The "mse" loss matched standardised teacher embeddings: the
    standardisation is undone. A cosine loss leaves their length free: scaled to `norm`, the teacher's mean."""
    if kd_loss == "mse":
        return projected * bank.embedding_std + bank.embedding_mean
    return projected / np.linalg.norm(projected, axis=1, keepdims=True) * norm


def projector(run: str) -> tuple[torch.nn.Module, torch.nn.Linear]:
    """The last epoch's student (not the shipped EMA weights) and the projection trained with it."""
    tensors, _ = load_weights(f"{run}/checkpoint.safetensors")
    model = load_model(f"{run}/model.safetensors")
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    weight = tensors["loss.kd.project.weight"]
    project = torch.nn.Linear(weight.shape[1], weight.shape[0])
    project.load_state_dict({"weight": weight, "bias": tensors["loss.kd.project.bias"]})
    return model.eval(), project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="NAME=RUN_DIR of a run with lambda_kd > 0")
    parser.add_argument("--caches", default="runs/teacher/insectset32,runs/teacher/backgrounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="runs/kd_fidelity.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from pulse.teacher import birdnet
    from pulse.teacher.probe import fit_on_caches
    from pulse.train.distill_birdnet import KnowledgeBank
    from pulse.io import read_span

    caches = tuple(args.caches.split(","))
    cfg = replace(EvalConfig(), exclude_excerpts=EXCLUDED)
    bank = KnowledgeBank(caches, "train", 3.0)
    train_teacher = np.stack([bank.targets(w)[0] for w in bank.windows])
    train_waves = np.stack([read_span(w.path, w.start_s, 3.0, 44100) for w in bank.windows])
    mean = bank.embedding_mean
    teacher = birdnet.BirdNET(threads=args.threads)
    names = tuple(load_model(args.run[0].split("=", 1)[1] + "/model.safetensors").cfg.labels)
    teacher_data = prepare(cfg, names, birdnet.SAMPLE_RATE, birdnet.WINDOW_S)
    val_teacher = np.concatenate([teacher.predict(teacher_data.windows[i:i + 32]).embedding
                                  for i in range(0, len(teacher_data.windows), 32)])
    teacher.close()

    probe = fit_on_caches(cfg.manifest, cfg.background_manifest, names, caches)
    results = {"caches": caches, "n_train_windows": len(bank.windows), "runs": {},
               "baseline_val_cosine_to_train_mean": round(float(cosine(val_teacher, mean[None]).mean()), 4)}
    print(f"training-mean embedding: cosine {results['baseline_val_cosine_to_train_mean']:.3f} on the excerpts")
    for name, run in (r.split("=", 1) for r in args.run):
        model, project = projector(run)
        data = prepare(cfg, names, model.cfg.sample_rate, model.cfg.window_s)
        if model.cfg.labels != names or not np.array_equal(data.clip_ids, teacher_data.clip_ids):
            raise RuntimeError("the teacher's excerpts do not line up with the student's")
        with torch.no_grad():
            val = torch.cat([project(model.forward_features(torch.from_numpy(data.windows[i:i + 32])))
                             for i in range(0, len(data.windows), 32)]).numpy()
            train = torch.cat([project(model.forward_features(torch.from_numpy(train_waves[i:i + 32])))
                               for i in range(0, len(train_waves), 32)]).numpy()
        kd_loss = json.loads((Path(run) / "config.json").read_text())["semi"]["kd_loss"]
        norm = float(np.linalg.norm(train_teacher, axis=1).mean())
        train, val = (in_teacher_space(x, kd_loss, bank, norm) for x in (train, val))
        on_projection = probe.predict_proba(val)
        present = np.unique(data.labels)
        row = {"train_cosine": cosine(train, train_teacher).mean(), "val_cosine": cosine(val, val_teacher).mean(),
               "train_cosine_centred": cosine(train - mean, train_teacher - mean).mean(),
               "val_cosine_centred": cosine(val - mean, val_teacher - mean).mean(),
               "probe_on_projection_f1": f1_score(data.labels, on_projection.argmax(1), labels=present,
                                                  average="macro"),
               "probe_on_birdnet_f1": f1_score(data.labels, probe.predict_proba(val_teacher).argmax(1), labels=present,
                                               average="macro")}
        results["runs"][name] = {"run": run, "kd_loss": kd_loss, **{k: round(float(v), 4) for k, v in row.items()}}
        print(f"{name:12s} " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()))
    write_json(args.json, results)


if __name__ == "__main__":
    main()
