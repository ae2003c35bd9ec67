"""How much of the audio do the frontend's frames see, and what would longer frames cost in pitch?

The bundled models frame 44.1 kHz audio with 512-sample Hann frames every 882 samples: 42 % of the
samples fall between frames. A frame as long as the hop (882) would see every sample, and need not cost
a bigger DFT: the spectrum of an 882-sample windowed frame at the 512-point DFT's frequencies is the
512-point DFT of the frame folded onto itself (time aliasing: samples n and n + 512 added), one
addition per sample more. The price is frequency resolution: a pure tone between two DFT bins loses
some of its band energy ("tone ripple"). This script measures both sides for a few windows, on the
model's own mel bands, with no training:

- tone ripple: the summed mel energy of a pure tone swept over two bins near 4 kHz, worst against best;
- click coverage: a 2 ms noise burst placed at every 7th sample offset within one hop; the share of
  offsets at which the mel energy it leaves is within 6 dB (and 10 dB) of the best offset's.

    python bench/frame_coverage.py --json bench/results/frame_coverage.json
"""

from __future__ import annotations

import argparse

import numpy as np
import torchaudio
from scipy.signal.windows import hann, tukey

from export.atomic import write_json

RATE, N_FFT, HOP = 44100, 512, 882
WINDOWS = {  # name: analysis window (its length is the frame length; frames longer than the hop overlap)
    "hann 512 (bundled)": hann(512, sym=False),
    "hann 882, folded to 512": hann(882, sym=False),
    "tukey 0.75 882, folded to 512": tukey(882, 0.75, sym=False),
    "tukey 0.5 882, folded to 512": tukey(882, 0.5, sym=False),
    "hann 1024, folded to 512": hann(1024, sym=False),
}


def mel_energy(wave: np.ndarray, window: np.ndarray, fbank: np.ndarray) -> np.ndarray:
    """[frames, mels] mel power of frames every HOP samples, each folded to N_FFT points before the DFT."""
    length = len(window)
    frames = np.stack([wave[s:s + length] for s in range(0, len(wave) - length, HOP)]) * window
    folds = -(-length // N_FFT)
    padded = np.zeros((len(frames), folds * N_FFT))
    padded[:, :length] = frames
    folded = padded.reshape(len(frames), folds, N_FFT).sum(axis=1)
    return np.abs(np.fft.rfft(folded, n=N_FFT)) ** 2 @ fbank


def measure(window: np.ndarray, fbank: np.ndarray) -> dict:
    t = np.arange(RATE) / RATE
    tones = [mel_energy(np.sin(2 * np.pi * f * t), window, fbank).sum(axis=1).mean()
             for f in np.linspace(4000, 4000 + 2 * RATE / N_FFT, 41)]
    burst = np.random.default_rng(0).standard_normal(88)
    clicks = []
    for offset in range(0, HOP, 7):
        wave = np.zeros(RATE)
        wave[5 * HOP + offset:5 * HOP + offset + len(burst)] = burst
        clicks.append(mel_energy(wave, window, fbank).sum())
    clicks_db = 10 * np.log10(np.maximum(np.array(clicks), 1e-30) / max(clicks))
    return {"frame_length": len(window), "tone_ripple_db": round(float(10 * np.log10(min(tones) / max(tones))), 2),
            "click_within_6db": round(float(np.mean(clicks_db > -6)), 2),
            "click_within_10db": round(float(np.mean(clicks_db > -10)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    fbank = torchaudio.functional.melscale_fbanks(N_FFT // 2 + 1, 1000.0, RATE / 2, 64, RATE, norm=None,
                                                  mel_scale="htk").numpy()
    results = {name: measure(window, fbank) for name, window in WINDOWS.items()}
    print("| frames | tone ripple (dB) | 2 ms click within 6 dB / 10 dB of its best |\n|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['tone_ripple_db']:.2f} | {r['click_within_6db']:.0%} / {r['click_within_10db']:.0%} |")
    if args.json:
        write_json(args.json, {"sample_rate": RATE, "n_fft": N_FFT, "hop_length": HOP, "results": results})


if __name__ == "__main__":
    main()
