"""The in-model log-mel frontend matches torchaudio, and its fft and conv paths agree.

Tolerances: mel power within 1e-5 of the peak plus 1e-3 relative per bin (float32 FFT vs a
float32 1024-tap DFT convolution); log-mel of the two paths within 0.01 (natural log units,
i.e. 1 %), which is far below the level differences a classifier responds to.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio

from pulse.config import ModelConfig
from pulse.frontend import FRONTEND_MODES, LogMel

CFG = ModelConfig()


def _frontend(mode: str) -> LogMel:
    return LogMel(CFG.sample_rate, CFG.n_fft, CFG.hop_length, CFG.n_mels, CFG.f_min, CFG.f_max, mode=mode)


def _reference(wave: torch.Tensor) -> torch.Tensor:
    return torchaudio.transforms.MelSpectrogram(
        CFG.sample_rate, n_fft=CFG.n_fft, hop_length=CFG.hop_length, f_min=CFG.f_min, f_max=CFG.f_max,
        n_mels=CFG.n_mels, power=2.0, center=True, pad_mode="reflect", norm=None, mel_scale="htk")(wave)


def _test_signal() -> torch.Tensor:
    """Noise and a 1-9 kHz sweep: energy in every mel band, 1 s each."""
    gen = torch.Generator().manual_seed(0)
    t = torch.arange(CFG.sample_rate) / CFG.sample_rate
    sweep = 0.5 * torch.sin(2 * torch.pi * (1000 + 4000 * t) * t)
    return torch.stack([0.1 * torch.randn(CFG.sample_rate, generator=gen), sweep])


def _assert_mel_close(mel: torch.Tensor, ref: torch.Tensor) -> None:
    assert mel.shape == ref.shape
    torch.testing.assert_close(mel, ref, rtol=1e-3, atol=1e-5 * float(ref.abs().max()))


@pytest.mark.parametrize("mode", FRONTEND_MODES)
def test_mel_matches_torchaudio(mode):
    wave = _test_signal()
    _assert_mel_close(_frontend(mode).mel(wave), _reference(wave))


def test_fft_and_conv_log_mel_agree():
    wave = _test_signal()
    fft, conv = _frontend("fft")(wave), _frontend("conv")(wave)
    assert fft.shape == (2, 1, CFG.n_mels, CFG.sample_rate // CFG.hop_length + 1)
    assert float((fft - conv).abs().max()) < 1e-2


def test_frontends_agree_on_real_song(shared_data):
    from pulse.io import read_audio

    path = sorted((shared_data / "audio" / "insectset32").rglob("*.flac"))[0]
    audio = read_audio(path, CFG.sample_rate)[:CFG.window_samples]
    wave = torch.from_numpy(np.ascontiguousarray(audio))[None]
    ref = _reference(wave)
    for mode in FRONTEND_MODES:
        _assert_mel_close(_frontend(mode).mel(wave), ref)
    assert float((_frontend("fft")(wave) - _frontend("conv")(wave)).abs().max()) < 1e-2


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="frontend mode"):
        _frontend("wavelet")
