"""Where in a clip the insect sings: frames well above the clip's own noise floor.

A weak label says a species sings somewhere in a clip, not in every 3 s of it: a Dark
Bush-cricket chirps once every 5-10 s and a Meadow Grasshopper sings in bouts. A random crop of
the silence between chirps still carries the species label and teaches the model that the
recordist's background is the species. The sampler can centre crops on active frames instead.
"""

from __future__ import annotations

import numpy as np

FRAME_S = 0.05  # 50 ms: shorter than any chirp in the nine species
N_FFT = 2048
FLOOR_PERCENTILE = 20  # the clip's background level
MIN_RANGE_DB = 6.0  # a clip this flat is one steady song (or no song): every frame counts as active
LOUD_PERCENTILE = 95  # a singer's level: its loudest 5% of frames


def frame_levels_db(audio: np.ndarray, sample_rate: int, f_min: float) -> np.ndarray:
    """Energy above `f_min` (the model's band) of each `FRAME_S` frame, in dB."""
    hop = int(round(FRAME_S * sample_rate))
    padded = np.pad(audio, (0, max(0, N_FFT - len(audio))))
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::hop] * np.hanning(N_FFT)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    return 10 * np.log10(power[:, int(f_min * N_FFT / sample_rate):].sum(axis=1) + 1e-12)


def active_frames(audio: np.ndarray, sample_rate: int, f_min: float, margin: float = 0.25) -> np.ndarray:
    """Boolean mask over `FRAME_S` frames: band energy above `f_min` at least `margin` of the way
    (in dB) from the clip's floor to its loudest frame."""
    level = frame_levels_db(audio, sample_rate, f_min)
    floor, peak = np.percentile(level, FLOOR_PERCENTILE), level.max()
    if peak - floor < MIN_RANGE_DB:
        return np.ones(len(level), bool)
    return level >= floor + margin * (peak - floor)


def singing_level_db(audio: np.ndarray, sample_rate: int, f_min: float) -> float:
    """How loud a singer is while it sings: its loud frames, not its mean power, so that a chirp
    every few seconds and a continuous trill of the same loudness get the same level."""
    return float(np.percentile(frame_levels_db(audio, sample_rate, f_min), LOUD_PERCENTILE))


def song_crop(audio: np.ndarray, active: np.ndarray, length: int, sample_rate: int,
              rng: np.random.Generator) -> np.ndarray:
    """A `length`-sample crop that contains a randomly chosen active frame (audio >= length)."""
    hop = int(round(FRAME_S * sample_rate))
    centre = min(int(rng.choice(np.flatnonzero(active))) * hop + N_FFT // 2, len(audio) - 1)
    start = int(rng.integers(max(0, centre - length + 1), min(len(audio) - length, centre) + 1))
    return audio[start:start + length].copy()
