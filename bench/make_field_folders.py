"""A season of recorder cards copied to a NAS, for measuring `pulse analyze` at scale (bench/README.md, "A season
of cards: 30 000 files").

Writes `--files` short recordings (0.5-3 s, 44.1 kHz 16-bit, cut from the real songs and soundscapes in
../shared/data/audio) into `--sites` x `--deployments` nested folders, named as an AudioMoth names them
(`site03/deploy07/20250707_213000.WAV`), so every site holds the same names; a tenth are `.FLAC`. `--junk` of
them are not audio a recorder could have finished (empty, a header alone, random bytes, a text file): each must be
one line and one errors.csv row. `--long` 10-minute recordings go in `long/`. With `--card-litter`, each site
also gets what a Mac and Windows leave on a FAT card: a 4 KiB AppleDouble `._NAME.WAV` beside every recording,
`.Trashes/`, `.Spotlight-V100/` and `System Volume Information/`.

    python bench/make_field_folders.py --out /tmp/scale/season --files 30000 --junk 1000 --long 3 --card-litter
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SHARED_AUDIO = REPO.parent / "shared" / "data" / "audio"
RATE = 44100


def real_audio() -> np.ndarray:
    """Every song and soundscape in ../shared/data/audio, mono, at 44.1 kHz, end to end."""
    import soxr

    parts = []
    for path in sorted(SHARED_AUDIO.glob("*/**/*.flac")):
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
        parts.append(audio if rate == RATE else soxr.resample(audio, rate, RATE).astype(np.float32))
    return np.concatenate(parts)


def junk(kind: int, rng: np.random.Generator) -> bytes:
    """Bytes no recorder finished: empty, a WAV header with no samples after it, random bytes, a text file."""
    if kind == 0:
        return b""
    if kind == 1:
        return b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x44\xac\x00\x00\x88\x58\x01\x00" \
               b"\x02\x00\x10\x00data\x00\x00\x00\x00"
    if kind == 2:
        return rng.bytes(int(rng.integers(100, 20000)))
    return b"CONFIG.TXT copied with the wrong name\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--files", type=int, default=30000)
    parser.add_argument("--sites", type=int, default=15)
    parser.add_argument("--deployments", type=int, default=20)
    parser.add_argument("--junk", type=int, default=0, help="how many of --files are junk")
    parser.add_argument("--long", type=int, default=0, help="10-minute recordings, besides --files")
    parser.add_argument("--card-litter", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    bed = real_audio()
    folders = [args.out / f"site{s + 1:02d}" / f"deploy{d + 1:02d}"
               for s in range(args.sites) for d in range(args.deployments)]
    junk_at = set(rng.choice(args.files, size=args.junk, replace=False).tolist())
    first_night = dt.datetime(2025, 7, 1, 21, 30)
    for i in range(args.files):
        folder = folders[i % len(folders)]
        night, slot = divmod(i // len(folders), 60)  # 60 recordings a night, one every 10 minutes
        deployment = int(folder.name[-2:])
        start = first_night + dt.timedelta(days=deployment * 7 + night, minutes=10 * slot)
        path = folder / f"{start:%Y%m%d_%H%M%S}{'.FLAC' if i % 10 == 9 else '.WAV'}"
        folder.mkdir(parents=True, exist_ok=True)
        if i in junk_at:
            path.write_bytes(junk(i % 4, rng))
        else:
            n = int(rng.uniform(0.5, 3.0) * RATE)
            at = int(rng.integers(0, len(bed) - n))
            sf.write(path, bed[at:at + n], RATE, subtype="PCM_16", format="FLAC" if path.suffix == ".FLAC" else "WAV")
        if args.card_litter:
            (folder / f"._{path.name}").write_bytes(b"\x00\x05\x16\x07" + bytes(4092))
    for k in range(args.long):
        (args.out / "long").mkdir(parents=True, exist_ok=True)
        n = 600 * RATE
        at = int(rng.integers(0, max(1, len(bed) - n)))
        audio = np.resize(bed[at:], n)
        sf.write(args.out / "long" / f"{first_night + dt.timedelta(days=k):%Y%m%d}_000000.WAV", audio, RATE,
                 subtype="PCM_16")
    if args.card_litter:
        for site in sorted({folder.parent for folder in folders}):
            for litter in (".Trashes", ".Spotlight-V100/Store-V2", "System Volume Information"):
                (site / litter).mkdir(parents=True, exist_ok=True)
            (site / "System Volume Information" / "IndexerVolumeGuid").write_bytes(bytes(76))
            (site / ".Trashes" / "20250601_000000.WAV").write_bytes(bytes(4096))  # deleted on the Mac, still there
    print(f"{args.files} files ({args.junk} junk) in {len(folders)} folders, {args.long} long -> {args.out}")


if __name__ == "__main__":
    main()
