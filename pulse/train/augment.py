"""Augmentations: waveform functions (numpy, one window each) and SpecAugment (torch, a batch).

Field recordings are noisy, quiet and off-centre where library clips are clean, loud and
centred; each function here closes one of those gaps. All take an explicit random generator so
a run is reproducible from its seed and step.
"""

from __future__ import annotations

import math

import numpy as np
import soxr
import torch
from scipy.signal import butter, sosfilt

EPS = 1e-12


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + EPS))


def crop(clip: np.ndarray, length: int, rng: np.random.Generator, loop: bool) -> np.ndarray:
    """A random `length`-sample excerpt; shorter clips are looped or zero-padded at a random offset."""
    if len(clip) >= length:
        start = int(rng.integers(0, len(clip) - length + 1))
        return clip[start:start + length].copy()
    if loop:
        reps = -(-length // len(clip)) + 1
        tiled = np.tile(clip, reps)
        start = int(rng.integers(0, len(clip)))
        return tiled[start:start + length].copy()
    out = np.zeros(length, np.float32)
    start = int(rng.integers(0, length - len(clip) + 1))
    out[start:start + len(clip)] = clip
    return out


def scaled_to_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`noise` scaled so that 20 log10(rms(signal) / rms(noise)) equals `snr_db`."""
    return rms(signal) / (rms(noise) * 10.0 ** (snr_db / 20.0)) * noise


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """signal + noise scaled to `snr_db` below it."""
    return (signal + scaled_to_snr(signal, noise, snr_db)).astype(np.float32)


def apply_gain(x: np.ndarray, gain_db: float) -> np.ndarray:
    """Scale to a peak of 1 then by `gain_db`: spans the levels of quiet and loud recorders."""
    peak = float(np.max(np.abs(x))) + EPS
    return (x * (10.0 ** (gain_db / 20.0) / peak)).astype(np.float32)


def lowpass(x: np.ndarray, cutoff_hz: float, sample_rate: int) -> np.ndarray:
    """Second-order Butterworth low-pass: high frequencies fade with distance and vegetation."""
    sos = butter(2, min(cutoff_hz, 0.45 * sample_rate), fs=sample_rate, output="sos")
    return sosfilt(sos, x).astype(np.float32)


def band_limit(x: np.ndarray, recorder_rate: int, sample_rate: int) -> np.ndarray:
    """The window as a recorder running at `recorder_rate` would have captured it: nothing above its
    Nyquist frequency, in song and background alike (22.05-32 kHz recorders, MP3 archives)."""
    band_limited = soxr.resample(soxr.resample(x, sample_rate, recorder_rate), recorder_rate, sample_rate)
    return band_limited[: len(x)].astype(np.float32)


def hard_clip(x: np.ndarray, level_db: float) -> np.ndarray:
    """Flatten every peak above `level_db` below the window's own peak, as an overdriven recorder does."""
    level = (float(np.max(np.abs(x))) + EPS) * 10.0 ** (level_db / 20.0)
    return np.clip(x, -level, level).astype(np.float32)


def coloured_noise(length: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise with power ~ 1/f^exponent (0 white, 1 pink, 2 brown): wind, rain and recorder hiss."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    freqs = np.fft.rfftfreq(length)
    freqs[0] = freqs[1]
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2.0), n=length)
    return (noise / (rms(noise))).astype(np.float32)


def unknown_singer(length: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A synthetic insect that is none of ours, at unit rms: a tone or a noise band centred at 5-16 kHz
    (above the field and tree crickets' 3-5 kHz carriers), cut into pulses (15-300 a second), singing
    continuously or in chirps. Field recordings hold other singers behind the focal one; the bundled
    backgrounds hold only two cicadas (bench/README.md, "Other singers behind the song")."""
    t = np.arange(length) / sample_rate
    top = min(16000.0, 0.4 * sample_rate)  # a model at 24 kHz hears up to 12 kHz: its singers stay below that
    centre = float(np.exp(rng.uniform(np.log(min(5000.0, top)), np.log(top))))
    if rng.random() < 0.5:
        carrier = np.sin(2 * np.pi * centre * t + rng.uniform(0, 2 * np.pi))
    else:
        half_width = centre * float(rng.uniform(0.05, 0.2))
        sos = butter(4, (centre - half_width, min(centre + half_width, 0.45 * sample_rate)), btype="bandpass",
                     fs=sample_rate, output="sos")
        carrier = sosfilt(sos, rng.standard_normal(length))
    pulse_rate = float(np.exp(rng.uniform(np.log(15.0), np.log(300.0))))
    position = t * pulse_rate + rng.random()  # in pulse periods
    phase, duty = position % 1.0, float(rng.uniform(0.3, 0.8))
    envelope = np.where(phase < duty, np.sin(np.pi * phase / duty) ** 2, 0.0)  # smooth pulses: no clicks
    if rng.random() < 0.5:  # chirps of 0.05-1 s with 0.1-1.5 s gaps, whole pulses only; else a continuous trill
        on_s, off_s = float(rng.uniform(0.05, 1.0)), float(rng.uniform(0.1, 1.5))
        pulse_start_s = np.floor(position) / pulse_rate
        envelope *= (pulse_start_s + rng.uniform(0, on_s + off_s)) % (on_s + off_s) < on_s
    song = carrier * envelope
    return (song / rms(song)).astype(np.float32) if envelope.any() else np.zeros(length, np.float32)


def spectral_tilt(logmel: torch.Tensor, generator: torch.Generator, max_db: float) -> torch.Tensor:
    """A random linear tilt across the mel bands, up to +-`max_db` between the lowest and highest
    band (zero mean): microphones and recorders differ in frequency response. Log-mel is ln(power)."""
    batch, _, n_mels, _ = logmel.shape
    slope_db = (torch.rand(batch, generator=generator) * 2 - 1) * max_db
    ramp = torch.linspace(-0.5, 0.5, n_mels)
    tilt = (slope_db[:, None] * ramp[None]) * (np.log(10.0) / 10.0)  # dB of power -> natural log
    return logmel + tilt.to(logmel).view(batch, 1, n_mels, 1)


def slow_down(logmel: torch.Tensor, generator: torch.Generator, prob: float, slowest: float,
              eligible: torch.Tensor | None = None) -> torch.Tensor:
    """A share `prob` of log-mels played slower with pitch kept: a random span of tempo x T frames is
    stretched to T (tempo log-uniform in [slowest, 1]), as a cool evening slows a grasshopper's syllables
    without moving its broadband stridulation in frequency. `eligible` ([B] bool) limits it to some
    windows; the draws are the same either way."""
    batch, _, n_mels, frames = logmel.shape
    out = logmel.clone()
    for i in range(batch):
        apply = float(torch.rand(1, generator=generator)) < prob
        tempo = math.exp(float(torch.empty(1).uniform_(math.log(slowest), 0.0, generator=generator)))
        span = max(2, int(round(frames * tempo)))
        start = int(torch.randint(0, frames - span + 1, (1,), generator=generator))
        if apply and (eligible is None or bool(eligible[i])):
            out[i] = torch.nn.functional.interpolate(logmel[i:i + 1, :, :, start:start + span], size=(n_mels, frames),
                                                     mode="bilinear", align_corners=False)[0]
    return out


def spec_augment(logmel: torch.Tensor, generator: torch.Generator, freq_masks: int, freq_mask_bins: int,
                 time_masks: int, time_mask_frames: int) -> torch.Tensor:
    """SpecAugment (Park et al. 2019): zero-width to max-width bands set to each example's mean."""
    batch, _, n_mels, frames = logmel.shape
    out = logmel.clone()
    fill = logmel.mean(dim=(1, 2, 3))
    for count, max_width, size, axis in ((freq_masks, freq_mask_bins, n_mels, 2),
                                         (time_masks, time_mask_frames, frames, 3)):
        for _ in range(count):
            width = torch.randint(0, max_width + 1, (batch,), generator=generator)
            start = (torch.rand(batch, generator=generator) * (size - width + 1)).long()
            width, start = width.to(logmel.device), start.to(logmel.device)  # random draws stay on the CPU
            index = torch.arange(size, device=logmel.device)
            mask = (index[None] >= start[:, None]) & (index[None] < (start + width)[:, None])  # [B, size]
            shape = (batch, 1, size, 1) if axis == 2 else (batch, 1, 1, size)
            mask = mask.view(shape)
            out = torch.where(mask, fill.view(batch, 1, 1, 1), out)
    return out
