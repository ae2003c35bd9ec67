"""Distillation from BirdNET, as a loss term of the multitask loop, from cached teacher outputs.

Three signals (the third optional), all read from `pulse teacher-cache` so training never runs the teacher:
- embedding: a linear projection of the student embedding is matched to BirdNET's 1024-d
  embedding (cosine, or MSE on standardised teacher embeddings). Each student window is centred on
  a cached teacher window, and its target is the mean of the teacher windows whose centres fall
  inside it, else the one nearest its centre (`align_teacher`): at the cache's 1 s hop a 3 s
  student window averages its own teacher window and the two 1 s either side (fewer at a file's
  ends), not that one window alone; logit and probe targets are averaged the same way;
- logits: an auxiliary head predicts BirdNET's Orthoptera classes (pulse.teacher.birdnet
  .ORTHOPTERA_GENERA: North American congeners and look-alikes of the 9 species), matched to the
  teacher's temperature-softened sigmoids (binary KD, scaled by T^2 as in Hinton et al. 2015);
- species scores (optional, `kd_probe_weight`): the student's own head is matched to what a
  BirdNET-embedding probe (what BirdNET-Analyzer's custom classifier would say) scores each
  labelled window, the probe cross-fitted so that it never heard the window's recording.
The student sees each window mixed with background audio half the time while the teacher saw it
clean, so distillation also teaches robustness to noise. A student distilled from BirdNET
inherits BirdNET's licence, CC BY-NC-SA 4.0.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from export.console import first_three
from export.jsonconfig import read_json
from export.tables import listed_file
from pulse.config import ModelConfig, SemiConfig, TrainConfig
from pulse.teacher import birdnet
from pulse.train.augment import mix_at_snr
from pulse.train.distill_ensemble import teacher_licenses
from pulse.train.losses import LOSS_TERMS, LossTerm, StepOutputs, schedule_span

if TYPE_CHECKING:
    from pulse.teacher.cache import StoredEntry

log = logging.getLogger(__name__)
STREAM = 130_363  # distillation draws its windows from its own random stream


def embedding_distillation_loss(projected: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """Distance between projected student embeddings [B, D] and teacher embeddings [B, D]."""
    if kind == "cosine":
        return (1.0 - nn.functional.cosine_similarity(projected, teacher, dim=-1)).mean()
    if kind == "mse":
        return nn.functional.mse_loss(projected, teacher)
    raise ValueError(f"kd_loss must be cosine or mse, got {kind!r}")


def logit_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Binary KD: BCE of student logits / T against sigmoid(teacher logits / T), times T^2."""
    soft = torch.sigmoid(teacher / temperature)
    loss = nn.functional.binary_cross_entropy_with_logits(student / temperature, soft)
    return loss * temperature ** 2


def soft_target_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE against soft targets [B, C]; rows of NaN (windows without a target) are left out."""
    known = ~torch.isnan(targets).any(dim=1)
    if not known.any():
        return logits.sum() * 0.0
    return nn.functional.binary_cross_entropy_with_logits(logits[known], targets[known])


def teacher_rows(starts_s: np.ndarray, start_s: float, window_s: float,
                 teacher_window_s: float = birdnet.WINDOW_S) -> np.ndarray:
    """The teacher windows the student window [start_s, start_s + window_s) learns from: those whose centres lie
    inside it, or the one whose centre is nearest the student window's centre when none does (student windows
    shorter than the hop)."""
    centres = starts_s + teacher_window_s / 2
    inside = np.flatnonzero((centres >= start_s) & (centres < start_s + window_s))
    if len(inside):
        return inside
    return np.array([np.argmin(np.abs(centres - (start_s + window_s / 2)))])


def align_teacher(starts_s: np.ndarray, values: np.ndarray, start_s: float, window_s: float,
                  teacher_window_s: float = birdnet.WINDOW_S) -> np.ndarray:
    """Teacher outputs for the student window [start_s, start_s + window_s): the mean over its `teacher_rows`."""
    return values[teacher_rows(starts_s, start_s, window_s, teacher_window_s)].mean(axis=0)


@dataclass(frozen=True)
class TeacherWindow:
    path: Path  # the audio file
    file: int  # index into KnowledgeBank.entries
    start_s: float  # where the student window starts


class TeacherWindows(Sequence):
    """A bank's student windows, kept as an entry and a start each: 8 bytes a window, where a TeacherWindow object
    each took about 250 (bench/README.md)."""

    def __init__(self, paths: list[Path], file: np.ndarray, start_s: np.ndarray):
        self.paths, self.file, self.start_s = paths, file, start_s

    def __len__(self) -> int:
        return len(self.file)

    def __getitem__(self, i: int) -> TeacherWindow:
        return TeacherWindow(self.paths[self.file[i]], int(self.file[i]), float(self.start_s[i]))


def embedding_moments(entries: list[StoredEntry]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std [1024] of every teacher embedding, merged from each entry's stored moments (Chan et al. 1979):
    a big pool's embeddings do not fit in memory, and reading them all took minutes at each training start
    (bench/README.md)."""
    from tqdm import tqdm

    from pulse.teacher.cache import Moments, StoredEntry, in_threads

    total = Moments(0, np.zeros(birdnet.EMBED_DIM), np.zeros(birdnet.EMBED_DIM))
    stored_moments = in_threads(StoredEntry.embedding_moments, entries)
    for stored in tqdm(stored_moments, total=len(entries), desc="teacher embeddings", unit="file", leave=False,
                       disable=None):
        total = total.merge(stored)
    return total.mean.astype(np.float32), np.sqrt(total.m2 / total.count).astype(np.float32)


def with_audio(cache_dir: str, root: str, entries: dict[str, StoredEntry]) -> list[tuple[Path, StoredEntry]]:
    """(resolved audio path, entry) of the entries whose recording is there: a missing one's windows would be
    silence distilled towards the teacher's outputs of its song. None there at all is an audio_root moved or a disk
    not mounted, refused rather than distilling from silence for hours."""
    present = {rel: path for rel in entries if (path := listed_file(root, rel)).exists()}
    missing = [rel for rel in entries if rel not in present]
    if missing and not present:
        raise FileNotFoundError(f"{cache_dir}: none of its {len(entries)} recordings is under its audio_root {root}: "
                                f"moved, or a disk not mounted? Mount it, or set audio_root in "
                                f"{Path(cache_dir) / 'config.json'} to where they are now")
    if missing:
        log.warning("%s: %d of its %d recordings are not under %s (%s); distilling from the other %d", cache_dir,
                    len(missing), len(entries), root, first_three(missing), len(present))
    return [(path.resolve(), entries[rel]) for rel, path in present.items()]


def cache_record(cache_dir: str) -> dict:
    """What a teacher cache's config.json records (its manifest and audio_root), or one line saying what to run."""
    config = Path(cache_dir) / "config.json"
    remake = ("run the pulse teacher-cache command that made this cache again, with its --manifest and --audio-root: "
              "it writes config.json anew and keeps every entry")
    if not config.is_file() and (Path(cache_dir) / "index.csv").is_file():  # the default --manifest is InsectSet32's
        raise FileNotFoundError(f"{config}: missing beside its index.csv; {remake}")
    if not config.is_file():
        raise FileNotFoundError(f"{cache_dir}: no teacher cache there; distillation (lambda_kd > 0) reads BirdNET's "
                                "outputs from the folders in the config's semi.teacher_caches: run `pulse "
                                f"teacher-cache --out {cache_dir}` (with --manifest and --audio-root for audio other "
                                "than InsectSet32) first, or list your own caches there")
    try:
        return read_json(config)
    except ValueError as error:
        raise ValueError(f"{error} {remake.capitalize()}") from None


class KnowledgeBank:
    """Cached teacher outputs of the training audio, and student windows aligned to them. Only each window's
    entry and start and each entry's window starts are held: a batch's teacher outputs are read from the cache's
    files (a 300 GB pool's 3.4 million windows would hold some 15 GB, bench/README.md)."""

    def __init__(self, caches: tuple[str, ...], split: str, window_s: float):
        from pulse.manifest import read_manifest, select_split
        from pulse.teacher.cache import open_cache, rerun_command

        self.window_s = window_s
        self.orthoptera = birdnet.orthoptera_indices(birdnet.load_labels())
        self.entries: list[StoredEntry] = []
        self.paths: list[Path] = []  # each entry's audio file, resolved
        files, starts = [], []
        for cache_dir in caches:
            record = cache_record(cache_dir)
            if not Path(record["manifest"]).is_file():
                raise FileNotFoundError(f"{record['manifest']}: manifest not found; {Path(cache_dir) / 'config.json'} "
                                        "names it for the split of each cached recording: set manifest there to where "
                                        "it is now")
            keep = set(select_split(read_manifest(record["manifest"]), split)["path"])  # never validation audio
            cached = open_cache(cache_dir, keep)
            if uncached := sorted(keep - set(cached)):
                log.warning("%s: %d of the %d %r recordings of its manifest have no entry there (%s: not reached by a "
                            "pulse teacher-cache run stopped early, or failed, see %s); distilling from the other %d; "
                            "%s caches what it can of them", cache_dir, len(uncached), len(keep), split,
                            first_three(uncached),
                            Path(cache_dir) / "errors.csv", len(cached), rerun_command(Path(cache_dir)))
            for path, entry in with_audio(cache_dir, record["audio_root"], cached):
                self.entries.append(entry)
                self.paths.append(path)
                files.append(np.full(len(entry.starts_s), len(self.entries) - 1, np.int32))
                centres = entry.starts_s + birdnet.WINDOW_S / 2
                starts.append(centres - window_s / 2)  # the student window is centred where the teacher window is
        if not any(len(f) for f in files):
            raise ValueError(f"no cached teacher windows for split {split!r} in {', '.join(caches)}")
        self.windows = TeacherWindows(self.paths, np.concatenate(files), np.concatenate(starts))
        mean, std = embedding_moments(self.entries)
        self.embedding_mean, self.embedding_std = mean, std + 1e-6

    def targets(self, item: TeacherWindow) -> tuple[np.ndarray, np.ndarray]:
        """(teacher embedding [1024], teacher Orthoptera logits [K]) aligned to the student window, read from the
        cache: only the Orthoptera logits are distilled, of BirdNET's 6522."""
        entry = self.entries[item.file]
        rows = teacher_rows(entry.starts_s, item.start_s, self.window_s)
        first, stop = rows[0], rows[-1] + 1
        embedding = entry.embedding.rows(first, stop)[rows - first].mean(axis=0)
        logits = entry.logits.rows(first, stop)[rows - first][:, self.orthoptera].mean(axis=0)
        return embedding, logits

    def probe_scores(self, species: dict[Path, str], labels: tuple[str, ...], negatives: set[Path],
                     folds: int) -> list[np.ndarray]:
        """Per entry, cross-fitted BirdNET-probe species scores [windows, C]; NaN where there is no label.

        `species` maps the training labels' audio files (resolved paths) to their species: the labels
        training uses, not the cache's manifest (a low-label run must not see the others). The probe
        learns from those entries, with the entries in `negatives` (the song-free backgrounds) as
        negatives; other audio may hold song and is left out.
        """
        from pulse.teacher.probe import cross_fitted_scores, window_targets

        labelled = [i for i, path in enumerate(self.paths) if path in species]
        unknown = sorted({species[self.paths[i]] for i in labelled} - set(labels))
        if unknown:
            raise ValueError(f"training species {unknown} are not among the model's labels")
        background = [self.entries[i].embedding.read() for i, path in enumerate(self.paths) if path in negatives]
        scores = cross_fitted_scores(
            np.concatenate([self.entries[i].embedding.read() for i in labelled]),
            np.concatenate([window_targets(species[self.paths[i]], len(self.entries[i].starts_s), labels)
                            for i in labelled]),
            np.concatenate([np.full(len(self.entries[i].starts_s), i) for i in labelled]),
            np.concatenate(background) if background else np.zeros((0, birdnet.EMBED_DIM), np.float32), folds)
        out = [np.full((len(e.starts_s), len(labels)), np.nan, np.float32) for e in self.entries]
        bounds = np.cumsum([0] + [len(self.entries[i].starts_s) for i in labelled])
        for i, start, stop in zip(labelled, bounds[:-1], bounds[1:]):
            out[i] = scores[start:stop]
        return out


class BirdNETDistillation(LossTerm):
    """The KD term: draws its own batch of cached teacher windows each step."""

    def __init__(self, weight: float, model: nn.Module, cfg: SemiConfig, bank: KnowledgeBank, backgrounds,
                 sample_rate: int, seed: int, active: tuple[float, float] = (0.0, 1.0),
                 probe_scores: list[np.ndarray] | None = None):
        super().__init__(weight, active)
        self.cfg, self.bank, self.backgrounds, self.sample_rate, self.seed = cfg, bank, backgrounds, sample_rate, seed
        if cfg.kd_probe_weight > 0 and probe_scores is None:
            raise ValueError("kd_probe_weight > 0 needs the probe's scores (KnowledgeBank.probe_scores)")
        self.probe_scores = probe_scores
        embed_dim = model.embed[0].out_features
        self.project = nn.Linear(embed_dim, birdnet.EMBED_DIM)
        self.logit_head = nn.Linear(embed_dim, len(bank.orthoptera))
        self.register_buffer("teacher_mean", torch.from_numpy(bank.embedding_mean).float())
        self.register_buffer("teacher_std", torch.from_numpy(bank.embedding_std).float())

    def batch(self, step: int) -> tuple[np.ndarray, ...]:
        """(student windows [B, N], teacher embeddings [B, 1024], teacher logits [B, K], probe scores
        [B, C] or [B, 0] without a probe) for `step`."""
        from pulse.unlabelled import read_span_or_silence

        rng = np.random.default_rng([self.seed, STREAM, step])
        waves, embeddings, logits, species = [], [], [], []
        for i in rng.integers(len(self.bank.windows), size=self.cfg.kd_batch):
            item = self.bank.windows[int(i)]
            wave = read_span_or_silence(item.path, item.start_s, self.bank.window_s, self.sample_rate)
            if rng.random() < self.cfg.kd_background_prob and np.abs(wave).max() > 0:
                wave = mix_at_snr(wave, self.backgrounds.window(rng), float(rng.uniform(*self.cfg.kd_snr_db)))
            embedding, logit = self.bank.targets(item)
            waves.append(wave)
            embeddings.append(embedding)
            logits.append(logit)
            species.append(np.zeros(0, np.float32) if self.probe_scores is None else align_teacher(
                self.bank.entries[item.file].starts_s, self.probe_scores[item.file], item.start_s, self.bank.window_s))
        return np.stack(waves), np.stack(embeddings), np.stack(logits), np.stack(species)

    def forward(self, model: nn.Module, out: StepOutputs) -> torch.Tensor:
        device = next(model.parameters()).device
        waves, teacher_embedding, teacher_logits, probe = (torch.from_numpy(a).to(device) for a in self.batch(out.step))
        embedding = model.forward_features(waves)
        target = teacher_embedding
        if self.cfg.kd_loss == "mse":
            target = (teacher_embedding - self.teacher_mean) / self.teacher_std
        loss = embedding_distillation_loss(self.project(embedding), target, self.cfg.kd_loss)
        if self.cfg.kd_logit_weight > 0:
            loss = loss + self.cfg.kd_logit_weight * logit_distillation_loss(
                self.logit_head(embedding), teacher_logits, self.cfg.kd_temperature)
        if self.cfg.kd_probe_weight > 0:
            loss = loss + self.cfg.kd_probe_weight * soft_target_loss(model.forward_head(embedding), probe)
        return loss


def training_labels(cfg: TrainConfig) -> dict[Path, str]:
    """The species of every labelled recording training uses, by resolved audio path."""
    from pulse.manifest import read_manifest

    rows = read_manifest(cfg.manifest)
    rows = rows[rows["split"].isin((cfg.train_split, *cfg.extra_train_splits))]
    return {listed_file(cfg.audio_root, p).resolve(): name for p, name in zip(rows["path"], rows["species"]) if name}


def student_model_config(cfg: TrainConfig) -> ModelConfig:
    """The config saved with the weights: a student distilled from BirdNET, directly or through an
    ensemble teacher that was, carries BirdNET's licence, added to the one the config gives its training data."""
    if cfg.lambda_kd <= 0 and not any("BirdNET" in license for license in teacher_licenses(cfg)):
        return cfg.model
    data = cfg.model.license.strip()
    data = "" if data in ("", ModelConfig().license) else f"; training data: {data}"  # the default says nothing
    return dataclasses.replace(
        cfg.model, license=f"{birdnet.LICENSE} (weights distilled from BirdNET V2.4{data}); code MIT",
        attribution=" ".join(part if part.endswith(".") else f"{part}."  # sentences, whatever the user wrote
                             for part in (cfg.model.attribution.strip(), f"Distilled from {birdnet.ATTRIBUTION}")
                             if part))


@LOSS_TERMS.register("kd")
def kd(cfg: TrainConfig, model: nn.Module) -> LossTerm | None:
    if cfg.lambda_kd <= 0:
        return None
    from pulse.unlabelled import UnlabelledPool

    semi = cfg.semi
    bank = KnowledgeBank(semi.teacher_caches, semi.teacher_split, cfg.model.window_s)
    backgrounds = UnlabelledPool.from_manifests((cfg.background_manifest,), (cfg.background_root,), cfg.train_split,
                                                cfg.model.sample_rate, cfg.model.window_s)
    probe = None
    if semi.kd_probe_weight > 0:
        negatives = {f.path.resolve() for f in backgrounds.files}  # the song-free audio KD already mixes in
        probe = bank.probe_scores(training_labels(cfg), cfg.model.labels, negatives, semi.kd_probe_folds)
    return BirdNETDistillation(cfg.lambda_kd, model, semi, bank, backgrounds, cfg.model.sample_rate, cfg.seed,
                               schedule_span(cfg, supervised=False), probe)
