"""Supervised training on weak (clip-level) labels: `pulse train --config CONFIG --out RUN_DIR`.

Each step draws K windows from each of B clips (mixed with backgrounds, see data.py), runs the
window-level model on SpecAugmented log-mels, pools window logits into clip logits and
minimises the weighted sum of the enabled loss terms (losses.py): the weak-label BCE of the clip
logits (weight 1), plus lambda_byol x BYOL (byol.py) and lambda_kd x BirdNET distillation
(distill_birdnet.py), each of which draws its own batch, and lambda_ensemble / lambda_shift
terms that read this batch's window logits. After every epoch the model is
validated on 3 s excerpts mixed into held-out soundscapes; the best one is kept as
RUN_DIR/model.safetensors and the full state as RUN_DIR/checkpoint.safetensors, from which a
killed run resumes exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import subprocess
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

import pulse
from export.artifact import load_weights, read_weights_metadata, save_weights
from export.atomic import write_json
from export.backends.torch_backend import torch_device
from export.jsonconfig import read_json
from pulse.config import ModelConfig, TrainConfig
from pulse.evaluate import detection_auc, evaluate, prepare, selection_score, window_f1
from pulse.manifest import NON_EVENT_FOLDERS
from pulse.models import MODELS, create_model
from pulse.plots import save_png, training_figure
from pulse.train.augment import slow_down, spec_augment, spectral_tilt
from pulse.train.checkpoint import load_checkpoint, save_checkpoint
from pulse.train.data import BatchSampler, load_backgrounds, load_clips, speed_variants
from pulse.train.distill_birdnet import student_model_config
from pulse.train.losses import StepOutputs, build_loss_terms
from pulse.train.pooling import POOLING, create_pooling
from pulse.train.shift_consistency import advanced, sub_frame_offsets

log = logging.getLogger(__name__)

CONFIG_FILE, CHECKPOINT_FILE = "config.json", "checkpoint.safetensors"
MODEL_FILE, HISTORY_FILE = "model.safetensors", "history.json"
CURVES_FILE = "training.png"  # history.json drawn: losses and validation per epoch


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 1% of the peak."""
    total = cfg.epochs * cfg.steps_per_epoch
    warmup = max(1, int(cfg.warmup_frac * total))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


def run_record(cfg: TrainConfig, device: torch.device) -> dict:
    """config.json: every setting, plus what else the result depends on (the device changes the
    numerics, not the recipe)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        sha = "unknown"
    manifest = Path(cfg.manifest)
    return {**cfg.to_dict(), "package_version": pulse.__version__,
            "git_sha": sha, "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
            "device": str(device)}


def evaluation_config(cfg: TrainConfig):
    """The per-epoch validation reads the same manifests as training, on the validation splits; evaluation's own
    data settings, where a config sets them otherwise, are not used (and `train` says so)."""
    return dataclasses.replace(cfg.evaluation, manifest=cfg.manifest, audio_root=cfg.audio_root, split=cfg.val_split,
                               background_manifest=cfg.background_manifest, background_root=cfg.background_root)


def unused_evaluation_data(cfg: TrainConfig) -> list[str]:
    """evaluation.* data settings a config sets (away from their defaults) that `evaluation_config` replaces by
    other values, as "key 'value'"."""
    used, default = evaluation_config(cfg), type(cfg.evaluation)()
    return [f"evaluation.{name} {getattr(cfg.evaluation, name)!r}"
            for name in ("manifest", "audio_root", "split", "background_manifest", "background_root")
            if getattr(cfg.evaluation, name) not in (getattr(used, name), getattr(default, name))]


# What the log-mels an encoder reads mean (pulse/frontend.py): the same shapes under other values load silently
FRONTEND = ("sample_rate", "n_fft", "hop_length", "frame_length", "window_taper", "f_min", "f_max")


def check_init_from(cfg: TrainConfig) -> bool:
    """`init_from` is loaded into the config's own model: refuse, before any audio is decoded, a file that is no
    PULSE model (the training checkpoint beside model.safetensors, another package's weights) or one of another
    shape, in one line rather than a traceback listing every tensor; say where its frontend is not the config's
    (it loads, but its encoder learnt other frames or bands). True when its species are the config's, in
    the config's order: only then is its head kept; for species of one's own the encoder and embedding carry over
    and the head starts afresh (its rows would name other species)."""
    theirs, ours = ModelConfig.from_dict(read_weights_metadata(cfg.init_from, package="pulse")), cfg.model
    if differ := _unlike(theirs, ours, ("arch", "band_contrast", "n_mels", "embed_dim")):
        raise ValueError(f"{cfg.init_from}: init_from weights do not fit the config's model: {', '.join(differ)}")
    if differ := _unlike(theirs, ours, FRONTEND):
        log.warning("%s: its frontend is not the config's: %s; its encoder learnt log-mels of other frames or bands "
                    "(set these in the config's model to fine-tune what it learnt)", cfg.init_from, ", ".join(differ))
    if list(theirs.labels) == list(ours.labels):
        return True
    log.info("%s: its species (%d) are not the config's (%d): its encoder and embedding are fine-tuned, the head "
             "starts afresh", cfg.init_from, theirs.num_classes, ours.num_classes)
    return False


def _unlike(theirs: ModelConfig, ours: ModelConfig, names: tuple[str, ...]) -> list[str]:
    """'name theirs (config: ours)' for each of `names` where the two configs differ."""
    return [f"{name} {getattr(theirs, name)!r} (config: {getattr(ours, name)!r})" for name in names
            if getattr(theirs, name) != getattr(ours, name)]


def slowable(targets: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """[B] bool: clips whose song may be slowed down (see TrainConfig.tempo_species), and pure background."""
    if not cfg.tempo_species:
        return torch.ones(len(targets), dtype=torch.bool)
    chosen = torch.tensor([label in cfg.tempo_species for label in cfg.model.labels], device=targets.device)
    return (targets[:, ~chosen] == 0).all(dim=1).cpu()


def augmented(logmel: torch.Tensor, targets: torch.Tensor, windows: int, cfg: TrainConfig,
              generator: torch.Generator) -> torch.Tensor:
    """The log-mel augmentations: spectral tilt, slowing down, SpecAugment."""
    if cfg.tilt_db > 0:
        logmel = spectral_tilt(logmel, generator, cfg.tilt_db)
    if cfg.tempo_prob > 0:
        eligible = slowable(targets, cfg).repeat_interleave(windows)
        logmel = slow_down(logmel, generator, cfg.tempo_prob, cfg.slowest_tempo, eligible)
    return spec_augment(logmel, generator, cfg.freq_masks, cfg.freq_mask_bins, cfg.time_masks, cfg.time_mask_frames)


def step_outputs(model, pooling, waves: torch.Tensor, targets: torch.Tensor, cfg: TrainConfig, step: int,
                 generator: torch.Generator) -> StepOutputs:
    batch, windows, samples = waves.shape
    flat = waves.reshape(batch * windows, samples)
    draws = generator.get_state()
    logmel = augmented(model.frontend(flat), targets, windows, cfg, generator)
    if cfg.lambda_shift <= 0:
        embeddings = model.features_from_logmel(logmel)
        shifted_logits = None
    else:  # the same windows a fraction of a frame later, with the same tilts and masks, in the same batch
        later = advanced(flat, sub_frame_offsets(len(flat), cfg.model.hop_length, generator))
        replay = torch.Generator().set_state(draws)
        shifted = augmented(model.frontend(later), targets, windows, cfg, replay)
        embeddings, shifted_embeddings = model.features_from_logmel(torch.cat([logmel, shifted])).chunk(2)
        shifted_logits = model.forward_head(shifted_embeddings).reshape(batch, windows, -1)
    logits = model.forward_head(embeddings).reshape(batch, windows, -1)
    embeddings = embeddings.reshape(batch, windows, -1)
    return StepOutputs(step, waves, logmel, logits, embeddings, pooling(logits, embeddings), targets, shifted_logits)


def validate(model, data, cfg: TrainConfig, device: torch.device) -> dict:
    model.eval()
    with torch.inference_mode():
        report = evaluate(lambda b: torch.sigmoid(model(torch.from_numpy(b).to(device)).logits).cpu().numpy(), data,
                          evaluation_config(cfg), cfg.model.labels)
    model.train()
    return report


def shipped_model(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside an AveragedModel wrapper (its state dict then matches a plain model's)."""
    return model.module if isinstance(model, AveragedModel) else model


def batches(sampler: BatchSampler, start: int, total: int, workers: int):
    """sampler.batch(step) for each step in [start, total), drawn up to 2 x `workers` steps ahead in
    threads; a batch depends on its step alone, so the stream is the same with or without them."""
    if workers <= 0:
        yield from (sampler.batch(step) for step in range(start, total))
        return
    ahead = 2 * workers
    with ThreadPoolExecutor(workers) as pool:
        pending = deque(pool.submit(sampler.batch, step) for step in range(start, min(total, start + ahead)))
        for step in range(start, total):
            if step + ahead < total:
                pending.append(pool.submit(sampler.batch, step + ahead))
            yield pending.popleft().result()


def epoch_summary(report: dict) -> dict:
    """One history row: window F1 and detection AUC per condition as cut, their means over the
    alignments (`_mean`, where scored) and the selection score."""
    c = report["conditions"]
    row = {f"{name}_f1": round(m["window"]["macro_f1"], 4) for name, m in c.items()} | {
        f"{name}_det_auc": round(m["detection_auc"], 4) for name, m in c.items()}
    for name, m in c.items():
        if "alignment" in m:
            row |= {f"{name}_f1_mean": round(window_f1(m), 4), f"{name}_det_auc_mean": round(detection_auc(m), 4)}
    return row | {"score": round(selection_score(report), 4)}


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = True, device: str = "cpu", workers: int = 0) -> dict:
    """Train (or resume) a run in `out_dir`; returns the best epoch's validation summary (without
    validation: the last epoch's row). `device` and `workers` (batch-drawing threads) change speed,
    not the recipe: they are not part of the config."""
    device = torch_device(device)
    if cfg.val_split and cfg.val_split in cfg.extra_train_splits:
        raise ValueError(f"split {cfg.val_split!r} is both trained on and validated on; set val_split \"\" "
                         "to keep the last epoch instead")
    if unknown := set(cfg.tempo_species) - set(cfg.model.labels):
        raise ValueError(f"tempo_species: {', '.join(sorted(unknown))} not among the model's labels")
    if not Path(cfg.manifest).is_file():
        raise FileNotFoundError(f"{cfg.manifest}: manifest not found (paths in a config are relative to the "
                                f"working directory: {Path.cwd()})")
    MODELS.get(cfg.model.arch), POOLING.get(cfg.pooling)  # an unknown name: a KeyError before any audio is decoded
    keep_head = check_init_from(cfg) if cfg.init_from else False
    if cfg.threads > 0:  # 0: torch's own default, every core
        torch.set_num_threads(cfg.threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = run_record(cfg, device)
    config_path = out / CONFIG_FILE
    if (out / CHECKPOINT_FILE).exists() and resume:  # a run that never trained a step may be set up again
        previous = TrainConfig.load(config_path)
        if previous != cfg:
            raise ValueError(f"{config_path}: this run was started with a different config; use a new --out "
                             "or --no-resume")
        if read_json(config_path).get("manifest_sha256") not in (None, record["manifest_sha256"]):
            log.warning("%s: %s has changed since this run started (recordings added or relabelled?); the steps "
                        "already trained stay as they were: --no-resume (or a new --out) trains on it as it is now",
                        out, cfg.manifest)
        finished = read_weights_metadata(out / CHECKPOINT_FILE)
        if finished["step"] >= cfg.epochs * cfg.steps_per_epoch:  # its record (code, manifest) stays the one it ran
            log.info("%s: finished earlier, nothing to train", out)
            return best_row(finished)
    write_json(config_path, record)

    mc = student_model_config(cfg)  # provenance: a BirdNET-distilled student inherits its licence
    required = tuple(s for s in (cfg.train_split, *cfg.extra_train_splits, cfg.val_split) if s)
    clips = [clip for split in (cfg.train_split, *cfg.extra_train_splits)
             for clip in load_clips(cfg.manifest, cfg.audio_root, split, mc.labels, mc.sample_rate, splits=required)]
    if non_events := [label for label in mc.labels if label.lower() in NON_EVENT_FOLDERS]:
        log.warning("model.labels has %s, BirdNET-Analyzer's name for sounds that are no class: this model would "
                    "report it as a species; leave it out of the labels and the manifest, and train on its "
                    "recordings as background (\"backgrounds\" or \"background_manifest\")", ", ".join(non_events))
    if unheard := [label for i, label in enumerate(mc.labels)
                   if label not in non_events and not any(clip.label == i for clip in clips)]:
        log.warning("%d of the model's %d species have no training recordings (%s): for your own species set "
                    "model.labels, common_names and codes in the config",
                    len(unheard), len(mc.labels), ", ".join(unheard))
    backgrounds = speed_variants(load_backgrounds(cfg.background_manifest, cfg.background_root, cfg.train_split,
                                                  mc.sample_rate, cfg.backgrounds),
                                 cfg.background_speeds, mc.sample_rate)
    sampler = BatchSampler(clips, backgrounds, cfg)
    if cfg.val_split and (unused := unused_evaluation_data(cfg)):
        log.warning("not used: %s; per-epoch validation reads split %r of the training manifests (manifest, "
                    "audio_root, background_manifest, background_root, val_split)", ", ".join(unused), cfg.val_split)
    val_data = prepare(evaluation_config(cfg), mc.labels, mc.sample_rate, mc.window_s) if cfg.val_split else None
    said = {*unheard, *non_events}
    if val_data is not None and (unmeasured := [label for i, label in enumerate(mc.labels)
                                                if label not in said and not (val_data.labels == i).any()]):
        log.warning("%d of the model's species have no validation recording (%s): their scores are not measured, "
                    "and the epoch is chosen without them", len(unmeasured), ", ".join(unmeasured))

    torch.manual_seed(cfg.seed)
    model = create_model(mc).train()
    if cfg.init_from:  # fine-tuning: start from trained weights (the checkpoint, if any, still wins below)
        state = load_weights(cfg.init_from)[0]
        model.load_state_dict(state if keep_head else {**model.state_dict(), **{
            name: tensor for name, tensor in state.items() if not name.startswith("head.")}})
    model.to(device)
    pooling = create_pooling(cfg.pooling, mc.embed_dim, mc.num_classes).to(device)
    terms = build_loss_terms(cfg, model).to(device)
    modules = {"model": model, "pooling": pooling, "loss": terms}
    params = [p for m in modules.values() for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    shipped = model  # what is validated and saved: the weights, or their moving average
    if cfg.ema_decay > 0:
        shipped = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        modules["ema"] = shipped  # checkpointed with the rest: a resumed run continues the same average

    state = {"step": 0, "best_score": -1.0, "history": []}
    checkpoint = out / CHECKPOINT_FILE
    if resume and checkpoint.exists():
        state = load_checkpoint(checkpoint, modules, optimizer)
        log.info("resuming %s at step %d", out, state["step"])

    total = cfg.epochs * cfg.steps_per_epoch
    bar = tqdm(range(state["step"], total), initial=state["step"], total=total, desc="train", dynamic_ncols=True,
               disable=None)  # a log file gets the epoch lines (bar.write), not the bar's carriage returns
    running: dict[str, list[float]] = {}
    for step, (waves, targets) in zip(bar, batches(sampler, state["step"], total, workers)):
        torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout; SpecAugment uses its own generator
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        lr = learning_rate(cfg, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        waves, targets = torch.from_numpy(waves).to(device), torch.from_numpy(targets).to(device)
        outputs = step_outputs(model, pooling, waves, targets, cfg, step, generator)
        weights = {name: term.weight_at(step / total) for name, term in terms.items()}
        losses = {name: term(model, outputs) for name, term in terms.items() if weights[name] > 0}
        loss = sum(weights[name] * value for name, value in losses.items())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        for term in terms.values():
            term.after_step(model)
        if shipped is not model:
            shipped.update_parameters(model)
        for name, value in losses.items():
            running.setdefault(name, []).append(value.item())
        bar.set_postfix({name: f"{v.item():.3f}" for name, v in losses.items()} | {"lr": f"{lr:.1e}"})

        if (step + 1) % cfg.steps_per_epoch == 0 or step + 1 == total:
            report = validate(shipped_model(shipped), val_data, cfg, device) if val_data else None
            row = {"epoch": (step + 1) // cfg.steps_per_epoch, "step": step + 1, "lr": lr,
                   **{f"loss_{n}": round(float(np.mean(v)), 5) for n, v in running.items()},
                   **(epoch_summary(report) if report else {})}
            running = {}
            state["history"].append(row)
            if report is None or row["score"] > state["best_score"]:
                state["best_score"] = row.get("score", -1.0)
                state["best_epoch"] = row["epoch"]
                save_weights(out / MODEL_FILE, shipped_model(shipped).state_dict(), mc.to_dict())
                if report:
                    write_json(out / "validation.json", report)
            state["step"] = step + 1
            write_json(out / HISTORY_FILE, state["history"])
            save_png(training_figure(state["history"], str(out)), out / CURVES_FILE)
            save_checkpoint(checkpoint, modules, optimizer, state)
            bar.write(" ".join(f"{k}={v}" for k, v in row.items()))
    bar.close()
    return best_row(state)


def best_row(state: dict) -> dict:
    """The history row of the epoch whose weights model.safetensors holds."""
    return next((r for r in state["history"] if r["epoch"] == state.get("best_epoch")), {})
