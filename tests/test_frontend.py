"""The in-model log-mel frontend matches torchaudio, and its fft, conv and folded paths agree.

Tolerances: mel power within 1e-5 of the peak plus 1e-3 relative per bin (float32 FFT vs a
float32 1024-tap DFT convolution); log-mel of the two paths within 0.01 (natural log units,
i.e. 1 %), which is far below the level differences a classifier responds to.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
import torchaudio

from pulse.config import ModelConfig
from pulse.frontend import FRONTEND_MODES, LogMel, tapered_window

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


def test_fft_conv_and_folded_log_mel_agree():
    wave = _test_signal()
    fft, conv, folded = _frontend("fft")(wave), _frontend("conv")(wave), _frontend("folded")(wave)
    assert fft.shape == (2, 1, CFG.n_mels, CFG.sample_rate // CFG.hop_length + 1)
    assert float((fft - conv).abs().max()) < 1e-2 and float((fft - folded).abs().max()) < 1e-2


@pytest.mark.parametrize("samples", [3 * 44100, 44100, 5 * 882 + 700, 5 * 882 + 100])
def test_folded_frames_without_overlap_match_torchaudio(samples):
    """The bundled models' 512-point frames every 882 samples: frames are a reshape of the padded wave,
    whatever the wave's length leaves after the last frame."""
    n_fft, hop = 512, 882
    wave = 0.1 * torch.randn(2, samples, generator=torch.Generator().manual_seed(1))
    reference = torchaudio.transforms.MelSpectrogram(
        CFG.sample_rate, n_fft=n_fft, hop_length=hop, f_min=CFG.f_min, f_max=CFG.f_max, n_mels=CFG.n_mels,
        power=2.0, center=True, pad_mode="reflect", norm=None, mel_scale="htk")(wave)
    folded = LogMel(CFG.sample_rate, n_fft, hop, CFG.n_mels, CFG.f_min, CFG.f_max, mode="folded")
    _assert_mel_close(folded.mel(wave), reference)


def test_frontends_agree_on_real_song(shared_data):
    from pulse.io import read_audio

    path = sorted((shared_data / "audio" / "insectset32").rglob("*.flac"))[0]
    audio = read_audio(path, CFG.sample_rate)[:CFG.window_samples]
    wave = torch.from_numpy(np.ascontiguousarray(audio))[None]
    ref = _reference(wave)
    for mode in FRONTEND_MODES:
        _assert_mel_close(_frontend(mode).mel(wave), ref)
    for mode in ("conv", "folded"):
        assert float((_frontend("fft")(wave) - _frontend(mode)(wave)).abs().max()) < 1e-2


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="frontend mode"):
        _frontend("wavelet")
    with pytest.raises(ValueError, match="even n_fft"):
        LogMel(CFG.sample_rate, 511, 882, CFG.n_mels, CFG.f_min, CFG.f_max, mode="folded")


def test_tapered_window_is_hann_at_one_and_tukey_below():
    assert torch.equal(tapered_window(512, 1.0), torch.hann_window(512, periodic=True))  # old models unchanged
    tukey = tapered_window(512, 0.5)
    np.testing.assert_allclose(tukey.numpy(), scipy.signal.windows.tukey(512, 0.5, sym=False), atol=1e-6)
    assert torch.equal(tukey[1:], tukey[1:].flip(0))  # w[k] = w[n - k]: what the folded path needs
    assert int((tukey == 1).sum()) == 257  # flat from sample 128 to 384: the middle half
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="taper"):
            tapered_window(512, bad)


@pytest.mark.parametrize("mode", FRONTEND_MODES)
def test_tapered_frontend_matches_torchaudio_with_that_window(mode):
    """Frames of 512 every 882 samples, as the bundled models, with a Tukey window in every path."""
    cfg = ModelConfig(n_fft=512, hop_length=882, window_taper=0.5)
    wave = _test_signal()
    reference = torchaudio.transforms.MelSpectrogram(
        cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, f_min=cfg.f_min, f_max=cfg.f_max,
        n_mels=cfg.n_mels, window_fn=lambda n, **_: tapered_window(n, cfg.window_taper), power=2.0, center=True,
        pad_mode="reflect", norm=None, mel_scale="htk")(wave)
    _assert_mel_close(LogMel.for_model(cfg, mode).mel(wave), reference)
    assert not torch.allclose(LogMel.for_model(ModelConfig(n_fft=512, hop_length=882), mode).mel(wave), reference,
                              rtol=1e-2)  # the taper changes what the model sees
