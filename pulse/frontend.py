"""Log-mel frontend that lives inside the model, so deployment needs no audio library.

Three numerically equivalent ways to compute the power spectrogram:
- "fft": `torch.stft`, which exports to the ONNX STFT op; fastest in torch (n_fft log n_fft per frame).
- "conv": a fixed Conv1d whose kernels are the windowed DFT basis; costs n_fft^2 per frame but
  is plain convolution, so it runs in every TensorRT version (STFT exists only from TensorRT 10.5).
- "folded": each frame folded on its centre before two matrix products. The Hann window is
  symmetric, so the cosine part of the DFT needs only x[n] + x[N-n] and the sine part x[n] - x[N-n]:
  half the multiply-adds of "conv", and only the bins the mel bands use. Frames that do not overlap
  (hop_length >= n_fft, as the bundled models' 20 ms hop of 512 points) are a reshape, others a gather.
All three follow `torchaudio.transforms.MelSpectrogram` (centred, reflect padding, periodic Hann,
HTK mel scale, power 2), which the tests check numerically. `taper` < 1 flattens the Hann window
into a Tukey window: with frames shorter than the hop, more of each frame's samples count fully.

`frame_length` > n_fft: frames longer than the DFT, so that frames as long as the hop see every
sample. Each windowed frame is folded onto n_fft points (samples n and n + n_fft added: time
aliasing) before the DFT, which gives the long frame's spectrum at the n_fft-point DFT's
frequencies for one addition per sample (`bench/README.md`, "Seeing every sample"). The "fft"
path then uses `torch.fft.rfft` (exported as the ONNX DFT op), the others keep their shape.
"""

from __future__ import annotations

import math

import torch
import torchaudio
from torch import nn

FRONTEND_MODES = ("fft", "conv", "folded")


def tapered_window(n: int, taper: float) -> torch.Tensor:
    """Periodic Tukey window: raised-cosine ends over `taper` of the frame, flat between; 1 is Hann.

    Symmetric as w[k] = w[n - k], which the folded path relies on.
    """
    if not 0 < taper <= 1:
        raise ValueError(f"window taper must be in (0, 1], got {taper}")
    if taper == 1:
        return torch.hann_window(n, periodic=True)
    k = torch.arange(n, dtype=torch.float64)
    edge = torch.minimum(k, n - k)  # distance from the frame's ends, periodic
    ramp = 0.5 * (1 - torch.cos(2 * math.pi * edge / (taper * n)))
    return torch.where(edge < taper * n / 2, ramp, torch.ones_like(ramp)).float()


class LogMel(nn.Module):
    """Waveform [B, N] -> log-mel [B, 1, n_mels, frames]."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int,
                 f_min: float, f_max: float, mode: str = "fft", eps: float = 1e-6, taper: float = 1.0,
                 frame_length: int = 0):
        super().__init__()
        if mode not in FRONTEND_MODES:
            raise ValueError(f"frontend mode must be one of {FRONTEND_MODES}, got {mode!r}")
        if mode == "folded" and n_fft % 2:
            raise ValueError(f"the folded frontend needs an even n_fft, got {n_fft}")
        frame_length = frame_length or n_fft
        if frame_length < n_fft:
            raise ValueError(f"frame_length must be 0 (n_fft) or at least n_fft ({n_fft}), got {frame_length}")
        self.n_fft, self.hop_length, self.mode, self.eps = n_fft, hop_length, mode, eps
        self.frame_length = frame_length
        n_bins = n_fft // 2 + 1
        window = tapered_window(frame_length, taper)
        self.register_buffer("window", window, persistent=False)
        fbank = torchaudio.functional.melscale_fbanks(
            n_bins, f_min, min(f_max, sample_rate / 2), n_mels, sample_rate, norm=None, mel_scale="htk")
        self.register_buffer("mel_fbank", fbank, persistent=False)  # [n_bins, n_mels]
        # Windowed DFT basis over the whole frame: the conv path's kernels (cosine then sine).
        t = torch.arange(frame_length, dtype=torch.float64)
        k = torch.arange(n_bins, dtype=torch.float64)[:, None]
        angle = 2 * math.pi * k * t / n_fft
        cosine, sine = torch.cos(angle) * window.double(), -torch.sin(angle) * window.double()  # [n_bins, frame]
        self.register_buffer("dft_basis", torch.cat([cosine, sine]).float()[:, None, :],
                             persistent=False)  # [2*n_bins, 1, frame_length]
        # Folded path: [x[0], x[n] + x[N-n] for n = 1..N/2-1, x[N/2]] and [x[n] - x[N-n]] -> the used bins.
        # The window is in the basis when it spans the DFT (symmetric, so folding keeps it); a longer
        # frame is windowed and folded onto N points first, and the basis is the plain DFT's.
        if self.folds_frames:
            cosine, sine = torch.cos(angle[:, :n_fft]), -torch.sin(angle[:, :n_fft])
        half, used = n_fft // 2, fbank.abs().sum(dim=1) > 0
        self.register_buffer("even_basis", cosine[used, :half + 1].T.float().contiguous(),
                             persistent=False)  # [N/2+1, used]
        self.register_buffer("odd_basis", sine[used, 1:half].T.float().contiguous(), persistent=False)  # [N/2-1, used]
        self.register_buffer("folded_fbank", fbank[used], persistent=False)  # [used, n_mels]

    @property
    def folds_frames(self) -> bool:
        """Frames longer than the DFT, folded onto it."""
        return self.frame_length > self.n_fft

    @classmethod
    def for_model(cls, cfg, mode: str = "fft") -> "LogMel":
        """The frontend a `pulse.config.ModelConfig` describes."""
        return cls(cfg.sample_rate, cfg.n_fft, cfg.hop_length, cfg.n_mels, cfg.f_min, cfg.f_max, mode=mode,
                   taper=cfg.window_taper, frame_length=cfg.frame_length)

    def power_spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        """|STFT|^2 as [B, n_bins, frames]."""
        if self.mode == "fft" and self.folds_frames:
            spec = torch.fft.rfft(self.folded_frames(wave), n=self.n_fft)
            return (spec.real.square() + spec.imag.square()).transpose(1, 2)
        if self.mode == "fft":
            spec = torch.stft(wave, self.n_fft, self.hop_length, window=self.window, center=True,
                              pad_mode="reflect", return_complex=True)
            return spec.real.square() + spec.imag.square()
        half = self.frame_length // 2
        padded = nn.functional.pad(wave[:, None, :], (half, half), mode="reflect")
        parts = nn.functional.conv1d(padded, self.dft_basis, stride=self.hop_length)
        real, imag = parts.chunk(2, dim=1)
        return real.square() + imag.square()

    def framed(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, frames, >= frame_length]: row f starts with frame f of torch.stft(center=True)."""
        n, hop, half = self.frame_length, self.hop_length, self.frame_length // 2
        frames = wave.shape[1] // hop + 1
        if hop < n:  # overlapping frames: gathered
            padded = nn.functional.pad(wave, (half, half), mode="reflect")
            return padded[:, torch.arange(frames)[:, None] * hop + torch.arange(n)]
        end = frames * hop  # the padded wave cut or extended to whole hops, so that rows are a reshape
        # One reflect pad: the centre padding, and whatever lies past the last frame (never inside one).
        padded = nn.functional.pad(wave, (half, max(half, end - wave.shape[1] - half)), mode="reflect")
        if padded.shape[1] > end:
            padded = padded[:, :end]
        return padded.reshape(wave.shape[0], frames, hop)

    def folded_frames(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, frames, n_fft]: each frame windowed, then folded onto n_fft points (samples n + j n_fft summed)."""
        length, n = self.frame_length, self.n_fft
        rows = self.framed(wave)[..., :length] * self.window
        folds = -(-length // n)
        rows = nn.functional.pad(rows, (0, folds * n - length))
        return rows.reshape(*rows.shape[:2], folds, n).sum(dim=2)

    def folded_power(self, wave: torch.Tensor) -> torch.Tensor:
        """|STFT|^2 of the bins the mel bands use, as [B, frames, used bins]."""
        n, half = self.n_fft, self.n_fft // 2
        rows = self.folded_frames(wave) if self.folds_frames else self.framed(wave)
        head, tail = rows[..., 1:half], rows[..., half + 1:n].flip(-1)  # x[n] and x[N-n], n = 1..N/2-1
        even = torch.cat([rows[..., :1], head + tail, rows[..., half:half + 1]], dim=-1)
        return torch.matmul(even, self.even_basis).square() + torch.matmul(head - tail, self.odd_basis).square()

    def mel(self, wave: torch.Tensor) -> torch.Tensor:
        """Mel power [B, n_mels, frames] (what torchaudio's MelSpectrogram returns)."""
        if self.mode == "folded":
            return torch.matmul(self.folded_power(wave), self.folded_fbank).transpose(1, 2)
        return torch.matmul(self.power_spectrogram(wave).transpose(1, 2), self.mel_fbank).transpose(1, 2)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.log(self.mel(wave) + self.eps)[:, None]
