"""The numbers docs/pulse.md gives for MP3 lengths (`pulse.mpeg`) and AudioMoth triggered files (`pulse.audiomoth`).

- `untagged_vbr_s`: what libsndfile alone reads of a 5 s VBR MP3 without its length tag (the tests' swelling
  tone in noise, `tests/test_mpeg.py`), estimated from the first frame's bitrate.
- `count_vs_decode`: the time `stated_start` takes to walk an MP3's frame headers, as a share of libsndfile's time
  to decode it (10 minutes at each rate; the best of 3 of each).
- `join_late_s`: how late the second of two joined MP3s (`cat a.mp3 b.mp3`, and both without their tags) starts,
  against its own start read alone: the first's padding and the second's delay (and its Info frame, read as
  silence) stay between them. The worst of first files 1 s long plus 0..1151 samples (48 lengths).
- `marker_search_s`: `audiomoth.left_out` over 10 minutes of 48 kHz sound (a tone in noise) and of very quiet
  audio (+-2), from the page cache (the best of 5).

    python bench/bench_mp3_audiomoth.py --out bench/results/mp3_audiomoth.json
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pulse import audiomoth  # noqa: E402
from pulse.io import read_audio  # noqa: E402
from pulse.pieced import riff_data_chunk  # noqa: E402
from pulse.mpeg import _frame, stated_start  # noqa: E402


def song(seconds: float, rate: int, freq: float, seed: int) -> np.ndarray:
    """`tests/test_mpeg.py`'s: a tone over noise whose level swells and fades (a VBR encoder's bitrate varies)."""
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return ((0.2 * np.sin(2 * np.pi * freq * t) + 0.1 * noise) * (1 + np.sin(2 * np.pi * 0.7 * t))).astype(np.float32)


def without_tag(data: bytes) -> bytes:
    return data[_frame(data[:4])[0]:]


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def untagged_vbr_s(folder: Path) -> float:
    sf.write(folder / "tagged.mp3", song(5.0, 44100, 3000, 0), 44100, format="MP3")
    (folder / "untagged.mp3").write_bytes(without_tag((folder / "tagged.mp3").read_bytes()))
    return round(sf.info(str(folder / "untagged.mp3")).duration, 2)


def count_vs_decode(folder: Path) -> dict:
    out = {}
    for rate, channels in ((44100, 1), (44100, 2), (48000, 1), (22050, 1)):
        path = folder / f"long_{rate}_{channels}.mp3"
        sf.write(path, np.repeat(np.tile(song(60.0, rate, 3000, 0), 10)[:, None], channels, axis=1), rate,
                 format="MP3")
        frames = sf.info(str(path)).frames

        def decode():
            with sf.SoundFile(str(path)) as f:
                while len(f.read(1 << 18, dtype="float32")):
                    pass

        count_s, decode_s = best(lambda: stated_start(path, frames), 3), best(decode, 3)
        out[f"{rate} Hz x{channels}"] = {"count_s": round(count_s, 4), "decode_s": round(decode_s, 4),
                                         "share": round(count_s / decode_s, 3)}
    return out


def join_late_s(folder: Path) -> dict:
    def onset(x: np.ndarray) -> int:
        return int(np.flatnonzero(np.abs(x) > 0.05)[0])

    out = {}
    for rate in (44100, 8000):
        late = {"tagged": 0, "untagged": 0}
        b = np.zeros(rate, np.float32)
        b[rate // 2:] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(rate - rate // 2) / rate)
        sf.write(folder / "b.mp3", b, rate, format="MP3")
        alone = onset(read_audio(folder / "b.mp3", rate))
        for first in np.linspace(rate, rate + 1151, 48).astype(int):
            a = (0.01 * np.random.default_rng(1).standard_normal(first)).astype(np.float32)
            sf.write(folder / "a.mp3", a, rate, format="MP3")
            parts = [(folder / name).read_bytes() for name in ("a.mp3", "b.mp3")]
            for how, joined in (("tagged", parts[0] + parts[1]),
                                ("untagged", without_tag(parts[0]) + without_tag(parts[1]))):
                (folder / "joined.mp3").write_bytes(joined)
                audio = read_audio(folder / "joined.mp3", rate)
                late[how] = max(late[how], onset(audio[first + 100:]) + 100 - alone)
        out[f"{rate} Hz"] = {how: round(samples / rate, 3) for how, samples in late.items()}
    return out


def marker_search_s(folder: Path) -> dict:
    rate, out = 48000, {}
    t = np.arange(600 * rate) / rate
    rng = np.random.default_rng(0)
    for name, data in (("sound", (8000 * np.sin(2 * np.pi * 3000 * t) + 300 * rng.standard_normal(len(t)))),
                       ("very quiet", rng.integers(-2, 3, len(t)))):
        samples = data.astype("<i2").tobytes()
        body = (b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16)
                + b"data" + struct.pack("<I", len(samples)) + samples)
        path = folder / f"{name}T.WAV"
        path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
        first = riff_data_chunk(path, path.stat().st_size)[0]
        out[name] = round(best(lambda: audiomoth.left_out(path, first, len(t)), 5), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        result = {"date": time.strftime("%Y-%m-%d"), "untagged_vbr_s": untagged_vbr_s(folder),
                  "count_vs_decode": count_vs_decode(folder), "join_late_s": join_late_s(folder),
                  "marker_search_s": marker_search_s(folder)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
