"""Log-mel frontend that lives inside the model, so deployment needs no audio library.

Two numerically equivalent ways to compute the power spectrogram:
- "fft": `torch.stft`, which exports to the ONNX STFT op; fastest on CPU (n_fft log n_fft per frame).
- "conv": a fixed Conv1d whose kernels are the windowed DFT basis; costs n_fft^2 per frame but
  is plain convolution, so it runs in every TensorRT version (STFT exists only from TensorRT 10.5).
Both follow `torchaudio.transforms.MelSpectrogram` (centred, reflect padding, periodic Hann,
HTK mel scale, power 2), which the tests check numerically.
"""

from __future__ import annotations

import math

import torch
import torchaudio
from torch import nn

FRONTEND_MODES = ("fft", "conv")


class LogMel(nn.Module):
    """Waveform [B, N] -> log-mel [B, 1, n_mels, frames]."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int,
                 f_min: float, f_max: float, mode: str = "fft", eps: float = 1e-6):
        super().__init__()
        if mode not in FRONTEND_MODES:
            raise ValueError(f"frontend mode must be one of {FRONTEND_MODES}, got {mode!r}")
        self.n_fft, self.hop_length, self.mode, self.eps = n_fft, hop_length, mode, eps
        n_bins = n_fft // 2 + 1
        window = torch.hann_window(n_fft, periodic=True)
        self.register_buffer("window", window, persistent=False)
        fbank = torchaudio.functional.melscale_fbanks(
            n_bins, f_min, min(f_max, sample_rate / 2), n_mels, sample_rate, norm=None, mel_scale="htk")
        self.register_buffer("mel_fbank", fbank, persistent=False)  # [n_bins, n_mels]
        # DFT basis for the conv path: real and imaginary kernels, window folded in.
        t = torch.arange(n_fft, dtype=torch.float64)
        k = torch.arange(n_bins, dtype=torch.float64)[:, None]
        angle = 2 * math.pi * k * t / n_fft
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window.double()
        self.register_buffer("dft_basis", basis.float()[:, None, :], persistent=False)  # [2*n_bins, 1, n_fft]

    def power_spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        """|STFT|^2 as [B, n_bins, frames]."""
        if self.mode == "fft":
            spec = torch.stft(wave, self.n_fft, self.hop_length, window=self.window, center=True,
                              pad_mode="reflect", return_complex=True)
            return spec.real.square() + spec.imag.square()
        padded = nn.functional.pad(wave[:, None, :], (self.n_fft // 2, self.n_fft // 2), mode="reflect")
        parts = nn.functional.conv1d(padded, self.dft_basis, stride=self.hop_length)
        real, imag = parts.chunk(2, dim=1)
        return real.square() + imag.square()

    def mel(self, wave: torch.Tensor) -> torch.Tensor:
        """Mel power [B, n_mels, frames] (what torchaudio's MelSpectrogram returns)."""
        return torch.matmul(self.power_spectrogram(wave).transpose(1, 2), self.mel_fbank).transpose(1, 2)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.log(self.mel(wave) + self.eps)[:, None]
