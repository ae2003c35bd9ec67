"""Training data held in memory: decoded clips, background pool, and the batch sampler.

InsectSet32 decodes to ~60 MB of float32, so every clip is decoded once and kept; a batch is
then pure numpy work. A batch is a function of (seed, step) alone, which makes runs
deterministic and lets a resumed run draw exactly the batches the killed run would have drawn.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr
from tqdm import tqdm

from export.tables import listed_file
from pulse.config import TrainConfig
from pulse.discovery import find_audio
from pulse.io import AudioReadError, PartlyDecoded, stream_audio
from pulse.manifest import load_manifest, select_split
from pulse.train.activity import active_frames, singing_level_db, song_crop
from pulse.train.augment import (apply_gain, band_limit, coloured_noise, crop, hard_clip, lowpass, mix_at_snr,
                                 scaled_to_snr, unknown_singer)

NOISE_BANK, NOISE_STREAM = 9, 7_919  # coloured-noise recordings (white to brown); their own random stream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Clip:
    path: str
    audio: np.ndarray  # mono float32 at the model's sample rate
    label: int  # index into ModelConfig.labels


def load_clips(manifest: str, audio_root: str, split: str, labels: tuple[str, ...], sample_rate: int,
               splits: tuple[str, ...] = ()) -> list[Clip]:
    """Decode every clip of `split` of a labelled manifest (validated first)."""
    frame = select_split(load_manifest(manifest, audio_root, labels, splits=splits or (split,)), split)
    index = {name: i for i, name in enumerate(labels)}
    rows = tqdm(frame.itertuples(), total=len(frame), desc=f"decode {split}", leave=False, disable=None)
    decoded = ((row, read_clip(listed_file(audio_root, row.path), sample_rate)) for row in rows)
    return [Clip(row.path, audio, index[row.species]) for row, audio in decoded if audio is not None]


def load_backgrounds(manifest: str, root: str, split: str, sample_rate: int,
                     extra: tuple[str, ...] = ()) -> list[np.ndarray]:
    """Decode the background manifest's `split` plus any extra files or folders."""
    frame = select_split(load_manifest(manifest, root, splits=(split,)), split)
    paths = [listed_file(root, p) for p in frame["path"]] + [p for p, _ in find_audio(list(extra))]
    return [audio for audio in (read_clip(p, sample_rate) for p in paths) if audio is not None]


def read_clip(path: Path, sample_rate: int) -> np.ndarray | None:
    """A whole recording; one that breaks off part way keeps the audio before the break, one with none is
    left out (None). Either is one warning line naming the file, and the rest of the data goes on."""
    blocks = []
    try:
        for block in stream_audio(path, sample_rate, block_s=60.0):
            blocks.append(block)
    except PartlyDecoded as exc:
        log.warning("%s: %s; %.1f s of it used", path, exc.reason, exc.decoded_s)
    except AudioReadError as exc:
        log.warning("%s; left out", exc)
        return None
    if not blocks:
        log.warning("%s: no audio; left out", path)
        return None
    return np.concatenate(blocks)


def speed_variants(pool: list[np.ndarray], speeds: tuple[float, ...], sample_rate: int) -> list[np.ndarray]:
    """Each recording replayed at several speeds (pitch and tempo shift together)."""
    return [x if s == 1.0 else soxr.resample(x, sample_rate * s, sample_rate).astype(np.float32)
            for x in pool for s in speeds]


class BatchSampler:
    """Draws (windows [B, K, N], targets [B, C]) for one step: clip crops mixed with backgrounds."""

    def __init__(self, clips: list[Clip], backgrounds: list[np.ndarray], cfg: TrainConfig):
        self.clips, self.backgrounds, self.cfg = clips, backgrounds, cfg
        self.num_classes = cfg.model.num_classes
        self.length = cfg.model.window_samples
        self.by_class = [[c for c in clips if c.label == k] for k in range(self.num_classes)]
        self.present = [k for k in range(self.num_classes) if self.by_class[k]]
        if not self.present:
            raise ValueError("no training clips")
        if not backgrounds and (cfg.negative_prob > 0 or cfg.background_prob > 0) and cfg.noise_prob < 1:
            raise ValueError("background mixing is enabled but no background audio was found")
        rate = cfg.model.sample_rate
        # Resampled once: resampling every window at a fresh ratio would cost more than the model step.
        self.songs = {c.path: speed_variants([c.audio], cfg.song_speeds, rate) for c in clips}
        self.activity = {} if cfg.song_crop_prob == 0 else {
            (path, i): active_frames(audio, rate, cfg.model.f_min)
            for path, variants in self.songs.items() for i, audio in enumerate(variants)}
        # Coloured noise is drawn once (an FFT per window would cost more than the model step).
        rng = np.random.default_rng([cfg.seed, NOISE_STREAM])
        self.noise = [coloured_noise(4 * self.length, rng, exponent) for exponent in np.linspace(0.0, 2.0, NOISE_BANK)]

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.cfg.seed, step])
        items = [self._item(rng) for _ in range(self.cfg.batch_size)]
        return np.stack([w for w, _ in items]), np.stack([t for _, t in items])

    def _pick_clip(self, rng: np.random.Generator, exclude: int = -1) -> Clip:
        """A clip in proportion to its length, never of class `exclude`: within a class drawn uniformly
        (class_balance), else among all clips, so a species with more audio is drawn more often."""
        if self.cfg.class_balance:
            classes = [k for k in self.present if k != exclude]
            pool = self.by_class[classes[int(rng.integers(len(classes)))]]
        else:
            pool = [c for c in self.clips if c.label != exclude]
        weights = np.array([len(c.audio) for c in pool], np.float64)
        return pool[int(rng.choice(len(pool), p=weights / weights.sum()))]

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        noise = not self.backgrounds or rng.random() < self.cfg.noise_prob
        pool = self.noise if noise else self.backgrounds
        source = pool[int(rng.integers(len(pool)))]
        return crop(source, self.length, rng, loop=True)

    def _song(self, clip: Clip, rng: np.random.Generator, loop: bool) -> np.ndarray:
        """A window of a clip at a random speed, sometimes centred on song, heard from afar or from an archive."""
        cfg = self.cfg  # draws only for enabled augmentations, so older recipes replay exactly
        variants = self.songs[clip.path]
        i = 0 if cfg.song_speeds == (1.0,) else int(rng.integers(len(variants)))
        audio = variants[i]
        if self.activity and len(audio) >= self.length and rng.random() < cfg.song_crop_prob:
            window = song_crop(audio, self.activity[clip.path, i], self.length, cfg.model.sample_rate, rng)
        else:
            window = crop(audio, self.length, rng, loop)
        if cfg.lowpass_prob > 0 and rng.random() < cfg.lowpass_prob:
            window = lowpass(window, float(np.exp(rng.uniform(*np.log(cfg.lowpass_hz)))), cfg.model.sample_rate)
        if cfg.song_band_limit_prob > 0 and rng.random() < cfg.song_band_limit_prob:
            rate = int(cfg.song_band_limit_rates[int(rng.integers(len(cfg.song_band_limit_rates)))])
            window = band_limit(window, rate, cfg.model.sample_rate)
        return window

    def _item(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.cfg
        k = cfg.windows_per_clip
        target = np.zeros(self.num_classes, np.float32)
        if rng.random() < cfg.negative_prob:
            windows = [self._background(rng) for _ in range(k)]
        else:
            clip = self._pick_clip(rng)
            target[clip.label] = 1.0
            loop = rng.random() < cfg.short_clip_loop_prob
            windows = [self._song(clip, rng, loop) for _ in range(k)]
            if len(self.present) > 1 and rng.random() < cfg.mixup_prob:
                other = self._pick_clip(rng, exclude=clip.label)
                target[other.label] = 1.0
                others = [scaled_to_snr(w, self._song(other, rng, loop), float(rng.uniform(-6, 6))) for w in windows]
                if cfg.mixup_level_targets:
                    self._level_targets(target, clip.label, windows, other.label, others)
                windows = [(w + o).astype(np.float32) for w, o in zip(windows, others)]
            if cfg.unknown_singer_prob > 0 and rng.random() < cfg.unknown_singer_prob:
                snr_db = float(rng.uniform(*cfg.unknown_singer_snr_db))  # one singer behind all k windows
                singer = unknown_singer(k * self.length, cfg.model.sample_rate, rng).reshape(k, self.length)
                windows = [mix_at_snr(w, s, snr_db) for w, s in zip(windows, singer)]
            if rng.random() < cfg.background_prob:
                windows = [mix_at_snr(w, self._background(rng), float(rng.uniform(*cfg.snr_db))) for w in windows]
        windows = self._recorder(windows, rng)
        windows = [apply_gain(w, float(rng.uniform(*cfg.gain_db))) for w in windows]
        return np.stack(windows), target

    def _level_targets(self, target: np.ndarray, label: int, windows: list[np.ndarray], other_label: int,
                       others: list[np.ndarray]) -> None:
        """The quieter of two singers gets its amplitude ratio to the louder as target (6 dB below: 0.5),
        so the model ranks the singer a recordist would name first above one singing behind it."""
        rate, f_min = self.cfg.model.sample_rate, self.cfg.model.f_min
        louder_by_db = (singing_level_db(np.concatenate(windows), rate, f_min)
                        - singing_level_db(np.concatenate(others), rate, f_min))
        target[label] = min(1.0, 10.0 ** (louder_by_db / 20.0))
        target[other_label] = min(1.0, 10.0 ** (-louder_by_db / 20.0))

    def _recorder(self, windows: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        """What the recorder does to the whole scene: a lower sample rate, clipping. One recorder per clip."""
        cfg = self.cfg  # draws only for enabled augmentations, so older recipes replay exactly
        if cfg.band_limit_prob > 0 and rng.random() < cfg.band_limit_prob:
            rate = int(cfg.band_limit_rates[int(rng.integers(len(cfg.band_limit_rates)))])
            windows = [band_limit(w, rate, cfg.model.sample_rate) for w in windows]
        if cfg.clip_prob > 0 and rng.random() < cfg.clip_prob:
            level_db = float(rng.uniform(*cfg.clip_db))
            windows = [hard_clip(w, level_db) for w in windows]
        return windows
