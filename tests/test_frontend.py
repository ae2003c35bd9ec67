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


def _folded_reference(wave: torch.Tensor, n_fft: int, hop: int, frame_length: int) -> np.ndarray:
    """Mel power of frames of `frame_length` every `hop` samples (centred, reflect padding, Hann), each folded
    onto `n_fft` points before an `n_fft`-point FFT: written out in numpy, float64."""
    x = wave.double().numpy()
    padded = np.pad(x, ((0, 0), (frame_length // 2, frame_length // 2)), mode="reflect")
    starts = range(0, x.shape[1] // hop * hop + 1, hop)
    frames = np.stack([padded[:, s:s + frame_length] for s in starts], axis=1)
    frames = frames * scipy.signal.windows.hann(frame_length, sym=False)
    folds = -(-frame_length // n_fft)
    frames = np.concatenate([frames, np.zeros(frames.shape[:2] + (folds * n_fft - frame_length,))], axis=-1)
    power = np.abs(np.fft.rfft(frames.reshape(*frames.shape[:2], folds, n_fft).sum(axis=2), axis=-1)) ** 2
    fbank = torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, CFG.f_min, CFG.f_max, CFG.n_mels, CFG.sample_rate,
                                                  norm=None, mel_scale="htk").double().numpy()
    return (power @ fbank).transpose(0, 2, 1)


@pytest.mark.parametrize("mode", FRONTEND_MODES)
@pytest.mark.parametrize("frame_length", [882, 1024])  # as long as the hop (a reshape), and overlapping (a gather)
def test_frames_longer_than_the_dft_are_folded_onto_it_in_every_path(mode, frame_length):
    wave = _test_signal()
    frontend = LogMel(CFG.sample_rate, 512, 882, CFG.n_mels, CFG.f_min, CFG.f_max, mode=mode, frame_length=frame_length)
    reference = torch.from_numpy(_folded_reference(wave, 512, 882, frame_length)).float()
    _assert_mel_close(frontend.mel(wave), reference)


def test_frames_as_long_as_the_hop_catch_a_short_pulse_wherever_it_falls():
    """A 2 ms noise burst at 63 offsets within one 882-sample hop: with 512-sample frames (42 % of the samples
    lie between frames) it leaves a quarter of its best mel energy or less at 70 % of the offsets; with
    882-sample frames folded onto the same 512-point DFT, at about half of them."""
    burst = 0.5 * torch.randn(88, generator=torch.Generator().manual_seed(0))

    def share_within_6db(frame_length: int) -> float:
        frontend = LogMel(CFG.sample_rate, 512, 882, CFG.n_mels, CFG.f_min, CFG.f_max, mode="folded",
                          frame_length=frame_length)
        waves = torch.zeros(63, 20 * 882)
        for i, offset in enumerate(range(0, 882, 14)):
            waves[i, 10 * 882 + offset:10 * 882 + offset + len(burst)] = burst
        energy = frontend.mel(waves).sum(dim=(1, 2))
        return float((energy > energy.max() / 4).float().mean())

    assert share_within_6db(512) < 0.35 and share_within_6db(882) > 0.45


def test_frames_shorter_than_the_dft_are_rejected():
    with pytest.raises(ValueError, match="frame_length"):
        LogMel(CFG.sample_rate, 512, 882, CFG.n_mels, CFG.f_min, CFG.f_max, frame_length=400)
