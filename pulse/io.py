"""Decode recordings to mono float32 at the model's rate, streaming block by block.

A field recording can last days, so nothing here holds a whole file: `stream_audio` reads a
bounded block, mixes or picks a channel, resamples with a *streaming* soxr resampler (no
artefacts at block edges) and yields it. Every way a file can be bad ends in one
`AudioReadError(path, reason)`, which the batch loop records and moves past; its subclass `PartlyDecoded`
comes after the audio that could be read, which is analysed. A header that does not give the length (a FLAC from
a pipe) or was never finished (a WAV whose recorder stopped before closing it) is read to where the audio ends,
with a warning in `AudioInfo`; so is an MP3 whose header understates its length (`pulse.mpeg`). An AudioMoth's
triggered WAV is read with the quiet stretches it left out put back as silence (`pulse.audiomoth`).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import itertools
import os
import re
import stat
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import soundfile as sf

from export.files import unread_reason
from pulse import audiomoth
from pulse.mpeg import stated_start
from pulse.pieced import (SAMPLE_BYTES, HeldSoundFile, Pieced, PiecedSoundFile, padded_pieces, raw_pieces,
                          riff_data_chunk, unpadded_chunk_ends, wav_data_past_its_header)
from pulse.timestamps import time_expansion

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".w64", ".rf64", ".caf")
# Recordings a folder may hold that libsndfile cannot decode: each is one failed file that says how to convert
# it, never passed over in silence (a phone's .m4a folder would otherwise be "no audio files found").
UNDECODABLE_SUFFIXES = {
    ".m4a": "AAC (M4A) audio", ".aac": "AAC audio", ".wma": "Windows Media audio",
    ".wac": "Wildlife Acoustics' compressed WAC", ".w4v": "Wildlife Acoustics' compressed W4V",
}
# up to a bat detector's 500 kHz (a Pettersson D1000X's, the GUANO specification's example), which records
# bush-crickets' ultrasound too
MIN_RATE, MAX_RATE = 8_000, 500_000
# Upper bound on samples (all channels) held per block, whatever the rate and channel count:
# keeps a 384 kHz 8-channel file inside the same memory budget as a 44.1 kHz mono one.
MAX_BLOCK_SAMPLES = 1 << 24
PCM16_SCALE = np.float32(1 / 32768)  # libsndfile's 16-bit -> float scale (its default normalisation)
UNKNOWN_FRAMES = 2**63 - 1  # libsndfile's length of a FLAC whose header lacks its sample count
COUNT_BLOCK = 1 << 18  # frames decoded at a time to count such a FLAC's length
# how long a file is not examined once for all after it changed: FAT keeps times to 2 s, NTFS to the clock's tick
# (~16 ms), so it could change again, as many bytes, and os.stat would not tell
RECENT_NS = 2 * 10**9
_SEEK_FAILED = 39  # libsndfile's "Internal psf_fseek() failed"; a FLAC that stops decoding gives 158 or 161
SALVAGE_STEP = 4096  # frames read at a time in a block that broke off, to keep the audio before the break
# libsndfile notes a WAV whose header promises more data than the file holds as "data : N (should be M)".
_SHORT_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


class AudioReadError(Exception):
    """A recording that cannot be analysed; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


class PartlyDecoded(AudioReadError):
    """Raised after the last good block was yielded: the recording breaks off (corrupt or cut short) part way."""

    def __init__(self, path: str | Path, reason: str, decoded_s: float):
        super().__init__(path, reason)
        self.decoded_s = decoded_s  # the audio before the break, which was yielded

    @property
    def note(self) -> str:
        """What `pulse analyze` and the field app say of such a file."""
        return f"{self.reason}; the audio before it was analysed"


class DamagedStretches(PartlyDecoded):
    """Raised after the whole of a FLAC was yielded, the stretches that did not decode as silence."""

    @property
    def note(self) -> str:
        return f"{self.reason} (silence in their place); the audio around them was analysed"


@dataclass(frozen=True)
class AudioInfo:
    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    # listed in errors.csv and analysed all the same: a WAV cut short by a flat battery (what is there is analysed),
    # an MP3 whose header misstated its length (read whole: `whole`)
    warning: str = ""
    counted: bool = False  # a FLAC without its length in the header: `frames` is what decodes, counted
    # a WAV read raw, (its first sample's byte, subtype): a header never finished or over 4 GiB, to the end of the
    # file; an AudioMoth's triggered WAV, to the end of its data with `left_out`'s silence put back
    raw_data: tuple[int, str] = ()
    # an MP3 whose header misstates its length, read from (head, offset): `pulse.mpeg.Start`'s first bytes to read
    # and the file offset to go on from
    stated: tuple[bytes, int] = ()
    # a WAV whose recorder left out the pad byte after odd-length chunks before its samples, which libsndfile then
    # does not find: where those chunks end, each read with a pad byte put back
    pads: tuple[int, ...] = ()
    whole: bool = False  # its warning is no loss: all it holds is read (an MP3 whose header misstated its length)
    # an AudioMoth's triggered WAV: `pulse.audiomoth.left_out`'s markers
    left_out: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 2), np.int64), compare=False)

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def audio_info(path: str | Path) -> AudioInfo:
    """Open the header and check it: format known, rate in range, not empty, not truncated. Once per version of a
    file (the file itself, its size and its modification and change times) that has not changed in the last
    RECENT_NS: training reads thousands of windows from each, and an MP3's frames or a FLAC's length may have to be
    counted."""
    try:
        status = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise AudioReadError(path, unread_reason(path)) from None
    except OSError as exc:
        raise AudioReadError(path, f"cannot read it ({exc.strerror})") from None
    if stat.S_ISDIR(status.st_mode):  # one that cannot be listed, met in a folder given
        raise AudioReadError(path, unread_reason(path))
    if not stat.S_ISREG(status.st_mode):
        raise AudioReadError(path, "not a regular file")
    if status.st_size == 0:
        raise AudioReadError(path, "empty file (0 bytes)")
    if what := UNDECODABLE_SUFFIXES.get(Path(path).suffix.lower()):
        how = ("with Wildlife Acoustics' Kaleidoscope" if "Wildlife" in what
               else f"(e.g. ffmpeg -i {Path(path).name} {Path(path).stem}.flac)")
        raise AudioReadError(path, f"{what} cannot be decoded here: convert it to WAV or FLAC {how}")
    if (version := file_version(status)) is None:
        return _examined.__wrapped__(str(path), status.st_size, ())
    return _examined(str(path), status.st_size, version)


def file_version(status: os.stat_result) -> tuple[int, int, int, int, int] | None:
    """What a file's examined header is kept under: the file, not its name alone (a relative name is another file
    after a chdir), its size, and its modification and change times (a copy that keeps the size and modification
    time of the file it replaces, cp -p or rsync -t, does not keep the change time). None for a file changed in the
    last RECENT_NS, which may change again within the same time stamp: it is examined each time."""
    if abs(time.time_ns() - max(status.st_mtime_ns, status.st_ctime_ns)) < RECENT_NS:
        return None
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns


@functools.lru_cache(maxsize=4096)  # AudioReadError is raised, never cached: a file that was bad is examined anew
def _examined(path: str, size: int, version: tuple[int, ...]) -> AudioInfo:
    """`audio_info` of a regular, non-empty file of a format libsndfile may know; `version` keys the cache only."""
    try:
        try:
            info, extra, subtype = _header(path)
        except (sf.LibsndfileError, RuntimeError):
            if not (pads := unpadded_chunk_ends(path)):
                raise
            info, extra, subtype = _header(path, pads)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioReadError(path, f"not readable as audio ({libsndfile_reason(exc)})") from exc
    # a time-expansion bat detector's WAV plays TE times slower than recorded: read at the rate it was recorded at,
    # its songs at their pitch and its times real
    expanded = ""  # a player shows the header's rate: an expanded one out of range says where it came from
    if info.format in ("WAV", "WAVEX", "RF64") and (expansion := time_expansion(path)) != 1:
        expanded = f" (its header's {info.sample_rate} Hz times its GUANO time expansion, TE: {expansion:g})"
        info = dataclasses.replace(info, sample_rate=round(info.sample_rate * expansion))
    if not MIN_RATE <= info.sample_rate <= MAX_RATE:
        raise AudioReadError(path, f"sample rate {info.sample_rate} Hz{expanded} is outside {MIN_RATE}-{MAX_RATE} Hz")
    # before the truncation check, so that a cut-short triggered file's note gives the night's seconds
    if info.format == "WAV" and subtype == "PCM_16" and info.channels == 1 and audiomoth.is_triggered(extra):
        first = riff_data_chunk(path, size)[0]
        if len(left_out := audiomoth.left_out(path, first, info.frames)):
            restored = int((left_out[:, 1] - audiomoth.MARKER_SAMPLES).sum())
            info = dataclasses.replace(info, frames=info.frames + restored, raw_data=(first, subtype),
                                       left_out=left_out)
    short = _SHORT_DATA.search(extra)
    # 0xFFFFFFFF bytes: "to the end of the file", what ffmpeg writes to a pipe puts there
    if short and int(short.group(2)) < int(short.group(1)) != 0xFFFFFFFF and info.frames > 0:
        info = dataclasses.replace(info, warning=f"truncated: header promises {short.group(1)} data bytes, file holds "
                                                 f"{short.group(2)}; the {info.duration_s:.2f} s present were analysed")
    if "lacks an end-of-stream" in extra:
        raise AudioReadError(path, "truncated: the Ogg stream stops before its end-of-stream page")
    if info.format == "FLAC" and info.frames == UNKNOWN_FRAMES:
        frames, stopped = _decodable_frames(path)
        seconds = frames / info.sample_rate
        info = dataclasses.replace(info, frames=frames, counted=True, warning=(
            f"the FLAC header does not give its length (a stream, or a recorder that stopped before closing the "
            f"file): the {seconds:.2f} s that decode were analysed" if not stopped else
            f"the FLAC header does not give its length, and decoding stops at {seconds:.2f} s (cut short or "
            f"damaged there: {stopped}): the audio before it was analysed"))
    if info.format in ("WAV", "WAVEX") and (info.frames == 0 or size > 1 << 32) and (
            first := wav_data_past_its_header(path, size, subtype)):
        frames = (size - first) // (info.channels * SAMPLE_BYTES[subtype])
        seconds = frames / info.sample_rate
        info = dataclasses.replace(info, frames=frames, raw_data=(first, subtype), warning=(
            f"the WAV header was never finished (written to a pipe, or by a recorder that stopped before closing "
            f"the file): the {seconds:.2f} s its data holds were analysed" if info.frames == 0 else
            f"over 4 GiB, more than a WAV header can say (its data size wrapped round to "
            f"{info.duration_s:.2f} s): the {seconds:.2f} s to the end of the file were analysed"))
    try:
        start = stated_start(path, info.frames) if info.format == "MP3" else None
    except OSError as exc:
        raise AudioReadError(path, f"cannot read it ({exc.strerror})") from None
    if start and start.head:
        stated = (start.head, start.offset)
        with open_audio(path, 0, dataclasses.replace(info, stated=stated)) as f:
            seconds = f.frames / info.sample_rate
        why = ("MP3s joined end to end, or a variable bitrate without a length tag" if f.frames > info.frames else
               "a variable bitrate without a length tag, estimated from its first frame")
        info = dataclasses.replace(info, frames=f.frames, stated=stated, whole=True, warning=(
            f"the MP3 header gives {info.duration_s:.2f} s but its frames hold {seconds:.2f} s ({why}): all "
            f"{seconds:.2f} s were analysed"))
    if start and start.rest_s:
        info = dataclasses.replace(info, whole=False, warning=(
            f"{start.rest_s:.2f} s of MP3 frames follow its first {info.duration_s:.2f} s that cannot be read with "
            f"them (MP3s of different sample rates or channel counts joined end to end, or over 1 KiB of other bytes "
            f"between them): only the first {info.duration_s:.2f} s were analysed"))
    if info.frames <= 0:
        raise AudioReadError(path, "zero-length recording (no samples)")
    return info


def _header(path: str, pads: tuple[int, ...] = ()) -> tuple[AudioInfo, str, str]:
    """The recording's AudioInfo as its header gives it, libsndfile's notes on the header and the subtype; `pads`:
    `AudioInfo.pads`."""
    with _whole_file(path, pads) as f:
        return AudioInfo(str(path), f.samplerate, f.channels, f.frames, f.format, pads=pads), f.extra_info, f.subtype


def _whole_file(path: str | Path, pads: tuple[int, ...]) -> sf.SoundFile:
    """The recording open as libsndfile reads it, with the pad bytes at `pads` put back."""
    if pads:
        return PiecedSoundFile(Pieced(path, padded_pieces(path, pads)))
    return HeldSoundFile(sndfile_name(path))


def stream_audio(path: str | Path, sample_rate: int, block_s: float, channel: int | None = None,
                 info: AudioInfo | None = None, pool: Executor | None = None, ahead: int = 0) -> Iterator[np.ndarray]:
    """Yield mono float32 blocks at `sample_rate`; `channel` picks one (0-based), None mixes all.

    Given a thread `pool`, a long FLAC has `ahead` blocks decoding on its threads at once (`_decode_ahead`). A
    recording that breaks off raises PartlyDecoded after its last good block; a FLAC damaged mid-file is yielded
    whole, silence for the stretches that did not decode, and then raises DamagedStretches naming them."""
    import soxr

    info = info or audio_info(path)
    if channel is not None and not 0 <= channel < info.channels:
        raise AudioReadError(path, f"channel {channel} requested but the file has {info.channels} channel(s)")
    block = max(1, min(int(block_s * info.sample_rate), MAX_BLOCK_SAMPLES // info.channels))
    resampler = None if info.sample_rate == sample_rate else soxr.ResampleStream(
        info.sample_rate, sample_rate, 1, dtype="float32", quality="HQ")
    gaps: list[tuple[int, int]] = []  # damaged stretches of a FLAC, yielded as silence
    # not a counted FLAC: without its length in the header, libFLAC seeks by decoding from the start
    if pool is not None and ahead > 1 and info.format == "FLAC" and info.frames > 2 * block and not info.counted:
        # the blocks decoding ahead hold at most MAX_BLOCK_SAMPLES samples together (two blocks at least)
        ahead = min(ahead, max(2, MAX_BLOCK_SAMPLES // (block * info.channels)))
        blocks = _decode_ahead(path, info, block, pool, ahead, gaps)
    else:
        blocks = _decode(path, info, block, 0, gaps)
    done = 0
    try:
        for data in blocks:
            if not np.isfinite(data).all():
                bad = done + int(np.flatnonzero(~np.isfinite(data).all(axis=1))[0])
                raise AudioReadError(path, f"NaN/Inf sample at {bad / info.sample_rate:.3f} s")
            done += len(data)
            if channel is None and info.channels > 1:
                mono = data.mean(axis=1)
            else:  # a mono file's mean is its samples, at a tenth of a 3 s clip's decoding time
                mono = data[:, channel or 0]
            if resampler is not None:
                mono = resampler.resample_chunk(np.ascontiguousarray(mono))
            if len(mono):
                yield np.ascontiguousarray(mono, dtype=np.float32)
        if resampler is not None and len(tail := resampler.resample_chunk(np.zeros(0, np.float32), last=True)):
            yield tail
    except (sf.LibsndfileError, RuntimeError) as exc:
        reason = f"corrupt or truncated after {done / info.sample_rate:.2f} s ({libsndfile_reason(exc)})"
        if done:
            raise PartlyDecoded(path, reason, done / info.sample_rate) from exc
        raise AudioReadError(path, reason) from exc
    if done == 0:
        raise AudioReadError(path, "zero-length recording (no decodable samples)")
    # An MP3 without a length tag has its length estimated from its bitrate (`pulse.mpeg` corrects it beyond a
    # frame): allow that slack, not lost data.
    if done < info.frames - max(2048, info.frames // 20):
        raise PartlyDecoded(path, f"truncated: header promises {info.duration_s:.2f} s, "
                                  f"only {done / info.sample_rate:.2f} s decodable", done / info.sample_rate)
    if gaps:
        stretches = [f"{a / info.sample_rate:.2f}-{b / info.sample_rate:.2f} s" for a, b in gaps]
        more = f" and {len(stretches) - 3} more" if len(stretches) > 3 else ""
        raise DamagedStretches(path, f"damaged at {', '.join(stretches[:3])}{more}", done / info.sample_rate)


def _decode(path: str | Path, info: AudioInfo, block: int, start: int,
            gaps: list[tuple[int, int]]) -> Iterator[np.ndarray]:
    """Frames from `start` to the end, `block` at a time (never empty). A block that fails to decode is read
    again in small steps from a fresh handle (a FLAC handle cannot seek after a failed read), so that the audio
    before the damage is kept. A FLAC, which seeks to the exact sample, then goes on where it decodes again: the
    damaged stretch is yielded as silence and added to `gaps` (first, end frame). Damage with nothing readable
    after it (a file cut short), or in another format, is raised."""
    position, step = start, block
    f = open_audio(path, position, info)
    read = frames_reader(info, f.subtype)
    try:
        while True:
            try:
                # on from where the file stands, but an MP3 from before it (`read_frames`); a FLAC without its
                # length cannot even say where it stands once at its end
                data = read_frames(f, info, position, step) if info.format == "MP3" else read(f, step)
            except (sf.LibsndfileError, RuntimeError):
                if not f.seekable():
                    raise
                if step > SALVAGE_STEP:  # a failed read returns nothing of its block
                    step = SALVAGE_STEP
                elif info.format != "FLAC" or (
                        resume := _decodes_again(path, position, info.frames)) is None:
                    raise
                else:
                    gaps.append((position, resume))
                    for first in range(position, resume, block):
                        yield np.zeros((min(block, resume - first), info.channels), np.float32)
                    position, step = resume, block
                f.close()
                f = open_audio(path, position, info)
                continue
            position += len(data)
            if len(data):
                yield data
            if len(data) < step:
                return
    finally:
        f.close()


def frames_reader(info: AudioInfo, subtype: str) -> Callable[[sf.SoundFile, int], np.ndarray]:
    """How to read the recording `info` describes (`subtype`: its SoundFile's): a function of an open SoundFile
    and a frame count that gives float32 [frames, channels] from its position, fewer at the end."""
    if info.counted:
        return _reader_to_what_decodes
    return _pcm16_reader if subtype == "PCM_16" and info.format != "FLAC" else _float_reader


def read_frames(f: sf.SoundFile, info: AudioInfo, first: int, count: int) -> np.ndarray:
    """Frames [first, first + count) of the open recording `info` describes, as `frames_reader` gives them, wherever
    `f` stood (it is sought to `first`, or before it). libsndfile 1.2.2's MP3 decoder (libmpg123) starts again a
    few frames before a seek's target with an empty bit reservoir, and soundfile seeks after every read: a frame
    whose data began up to 511 bytes (MPEG-1; 255 in MPEG-2/2.5) further back came out silent or garbled (up to
    full scale). An MP3 is read in one go from `_mp3_lead` frames before `first`, which holds those bytes at the
    lowest bitrate (tested, tests/test_mpeg.py)."""
    lead = min(first, _mp3_lead(info)) if info.format == "MP3" else 0
    f.seek(first - lead)
    return frames_reader(info, f.subtype)(f, lead + count)[lead:]


def _mp3_lead(info: AudioInfo) -> int:
    """Frames decoded before the first one wanted in an MP3: those of enough MPEG frames at the lowest bitrate (32
    kbps in MPEG-1, 8 in MPEG-2/2.5) to carry the bit reservoir's reach past their header and side information,
    and two more for the decoder's overlap (0.22-0.26 s of MPEG-1; 0.47-0.62 s of mono and up to 2.1 s of stereo
    MPEG-2, which decodes at some 2000 times real time here)."""
    mpeg1 = info.sample_rate >= 32000
    samples = 1152 if mpeg1 else 576
    smallest = samples // 8 * (32000 if mpeg1 else 8000) // info.sample_rate  # bytes
    room = smallest - 4 - ((17, 32) if mpeg1 else (9, 17))[info.channels > 1]
    reach = 511 if mpeg1 else 255
    return (-(-reach // room) + 2) * samples


def _float_reader(f: sf.SoundFile, frames: int) -> np.ndarray:
    return f.read(frames, dtype="float32", always_2d=True)


def _pcm16_reader(f: sf.SoundFile, frames: int) -> np.ndarray:
    """16-bit PCM (an AudioMoth's WAV) read as integers and scaled here: the values of libsndfile's own float
    conversion (x / 32768, exact), in 0.22 instead of 0.36 ms for 3 s at 44.1 kHz (`bench/bench_decoding.py`)."""
    return np.multiply(f.read(frames, dtype="int16", always_2d=True), PCM16_SCALE, dtype=np.float32)


def _reader_to_what_decodes(f: sf.SoundFile, frames: int) -> np.ndarray:
    """Up to `frames`, stopping where decoding stops (`_read_until_stopped`)."""
    return _read_until_stopped(f, frames)[0]


def _read_until_stopped(f: sf.SoundFile, frames: int) -> tuple[np.ndarray, Exception | None]:
    """Up to `frames`, and the error that stopped decoding short of them (None at the end). At a FLAC's end that
    its header does not give, libsndfile reads the last frames, then soundfile's seek to that end fails
    (error 39): the frames read are kept (the buffer is NaN first; a FLAC's samples never are)."""
    out = np.full((frames, f.channels), np.nan, np.float32)
    try:
        return f.read(frames, dtype="float32", always_2d=True, out=out), None
    except (sf.LibsndfileError, RuntimeError) as exc:
        unread = np.isnan(out).any(axis=1)
        at_the_end = getattr(exc, "code", None) == _SEEK_FAILED
        return out[:int(np.argmax(unread)) if unread.any() else frames], None if at_the_end else exc


def _decodable_frames(path: str) -> tuple[int, str]:
    """The length of a FLAC whose header does not give it, by decoding it once (seeks cannot find its end), and
    why decoding stopped short of the stream's end ("" if it did not). Damage in such a file ends it: finding
    where decoding resumes would take a seek per probe, and each seek decodes from the start."""
    frames = 0
    with HeldSoundFile(sndfile_name(path)) as f:
        while True:
            block, stopped = _read_until_stopped(f, COUNT_BLOCK)
            frames += len(block)
            if stopped is not None:  # the reason only (kept in a cached AudioInfo, an exception would hold buffers)
                return frames, libsndfile_reason(stopped)
            if len(block) < COUNT_BLOCK:
                return frames, ""


def sndfile_name(path: str | Path) -> str | bytes:
    """The name as libsndfile is given it: on POSIX its bytes, as a name need not be UTF-8 there (a Latin-1 name
    unzipped from an old Windows archive), which soundfile would fail to encode."""
    return os.fsencode(path) if os.name == "posix" else str(path)


def open_audio(path: str | Path, position: int = 0, info: AudioInfo | None = None) -> sf.SoundFile:
    """The recording open at frame `position`; given its `info`, a WAV whose header was never finished is read raw
    from its first sample, an AudioMoth's triggered WAV with the silence it left out put back, an MP3 whose
    header misstates its length from a first frame that states it, and a WAV with the pad bytes its recorder left
    out put back."""
    if info is not None and info.raw_data:
        first, subtype = info.raw_data
        f = PiecedSoundFile(Pieced(path, raw_pieces(path, first, info.frames, info.left_out)),
                            samplerate=info.sample_rate, channels=info.channels, format="RAW", subtype=subtype,
                            endian="LITTLE")
    elif info is not None and info.stated:
        head, offset = info.stated
        f = PiecedSoundFile(Pieced(path, [(len(head), head), (os.stat(path).st_size - offset, offset)]))
    else:
        f = _whole_file(path, info.pads if info is not None else ())
    if position:
        try:
            f.seek(position)
        except Exception:
            f.close()
            raise
    return f


def _decodes_again(path: str | Path, position: int, frames: int) -> int | None:
    """The first frame after damage at `position` (to within SALVAGE_STEP) from which a FLAC decodes again, or
    None: probes at doubling distances, then halves the last step (a few dozen opens, whatever the file's length)."""
    def decodes(at: int) -> bool:
        try:
            with open_audio(path, at) as f:
                return len(_float_reader(f, SALVAGE_STEP)) > 0
        except (sf.LibsndfileError, RuntimeError):
            return False

    bad, distance = position, SALVAGE_STEP
    while not decodes(position + distance):
        bad, distance = position + distance, 2 * distance
        if position + distance >= frames:
            return None
    good = position + distance
    while good - bad > SALVAGE_STEP:
        middle = (bad + good) // 2
        bad, good = (bad, middle) if decodes(middle) else (middle, good)
    return good


def _decode_ahead(path: str | Path, info: AudioInfo, block: int, pool: Executor, ahead: int,
                  gaps: list[tuple[int, int]]) -> Iterator[np.ndarray]:
    """`_decode` for a long FLAC with its whole blocks decoded on `ahead` pool threads at once, yielded in order.

    libFLAC decodes on one thread (~2000x real time on this project's CPU), which would cap a model spread
    over many cores; FLAC seeks to the exact sample, and each block opens its own handle, so the samples are
    those of one reader (tested). The tail, and a block that fails or comes short, go to `_decode` with all that
    follows, so a file that breaks off is salvaged and reported as by one reader."""
    def read(start: int) -> np.ndarray:
        with open_audio(path, start) as f:
            return _float_reader(f, block)

    starts = iter(range(0, info.frames - block + 1, block))
    queued = collections.deque((s, pool.submit(read, s)) for s in itertools.islice(starts, ahead))
    end = 0
    try:
        while queued:
            start, future = queued.popleft()
            try:
                data = future.result()
            except (sf.LibsndfileError, RuntimeError):
                break
            if len(data) < block:
                break
            if (s := next(starts, None)) is not None:
                queued.append((s, pool.submit(read, s)))
            end = start + block
            yield data
    finally:
        for _, future in queued:
            future.cancel()
    yield from _decode(path, info, block, end, gaps)


def readable_parts(path: str | Path, info: AudioInfo, first: int, last: int) -> list[tuple[int, np.ndarray]]:
    """The parts of frames [first, last) that decode, each as (its first frame, its frames as `frames_reader`
    gives them), for a span a plain read failed on: as `stream_audio` reads it, the audio before the damage and, in a
    FLAC, from where decoding resumes, also where the span starts inside the damage (a FLAC cannot seek there)."""
    gaps: list[tuple[int, int]] = []
    start = first
    try:
        open_audio(path, first, info).close()
    except (sf.LibsndfileError, RuntimeError):
        if info.format != "FLAC" or (start := _decodes_again(path, first, info.frames)) is None or start >= last:
            return []
        gaps.append((first, start))
    blocks, count = [], 0
    decoded = _decode(path, info, last - start, start, gaps)
    try:
        with contextlib.closing(decoded):
            for data in decoded:
                blocks.append(data)
                if (count := count + len(data)) >= last - start:
                    break
    except (sf.LibsndfileError, RuntimeError):  # nothing decodes after it: the audio before
        pass
    audio = np.concatenate(blocks)[:last - start] if blocks else np.zeros((0, info.channels), np.float32)
    end, parts, at = start + len(audio), [], start
    for gap_first, gap_end in [*gaps, (end, end)]:
        if min(gap_first, end) > at:
            parts.append((at, audio[at - start:min(gap_first, end) - start]))
        at = max(at, gap_end)
    return parts


def read_audio(path: str | Path, sample_rate: int, channel: int | None = None, block_s: float = 60.0) -> np.ndarray:
    """The whole recording as one mono float32 array (for short clips; the batch loop streams)."""
    blocks = list(stream_audio(path, sample_rate, block_s, channel))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def read_span(path: str | Path, start_s: float, duration_s: float, sample_rate: int,
              info: AudioInfo | None = None) -> np.ndarray:
    """`duration_s` of mono audio from `start_s`, resampled to `sample_rate`, zero-padded before the start (a
    negative `start_s`: a window longer than the teacher's, centred on its first one) and past the end. `info`:
    the file's header as examined already (None: examined here). A span the file cannot give (damaged or cut short
    past its header, or gone since it was examined) raises AudioReadError, said as `pulse analyze` says it."""
    import soxr

    length = int(round(duration_s * sample_rate))
    lead = min(max(int(round(-start_s * sample_rate)), 0), length)  # samples of silence before the recording
    # a WAV whose header was never finished, a FLAC without its length: read as analysed
    info = info or audio_info(path)
    native = info.sample_rate
    first = min(max(int(round(start_s * native)), 0), info.frames)
    count = min(int(np.ceil((duration_s - lead / sample_rate) * native)) + 1, info.frames - first)
    data = np.zeros((0, info.channels), np.float32)
    if count > 0:
        try:
            with open_audio(path, 0, info) as f:
                data = read_frames(f, info, first, count)
        except (sf.LibsndfileError, RuntimeError) as exc:  # not "Error : flac decoder lost sync."
            if not os.path.isfile(path):
                raise AudioReadError(path, unread_reason(path)) from exc
            raise AudioReadError(path, f"corrupt or truncated in {first / native:.2f}-{(first + count) / native:.2f} s "
                                       f"({libsndfile_reason(exc)})") from exc
    mono = data.mean(axis=1)
    if native != sample_rate and len(mono):
        mono = soxr.resample(mono, native, sample_rate).astype(np.float32)
    out = np.zeros(length, np.float32)
    kept = mono[:length - lead]
    out[lead:lead + len(kept)] = kept
    return out


def libsndfile_reason(exc: Exception) -> str:
    """What libsndfile says of a failed open or read, without its "Error : " prefix and full stop."""
    text = str(exc).strip().rstrip(".")
    text = text.split(": ", 1)[-1] if text.startswith("Error") else text
    # libsndfile says this of an existing file its MP3 decoder found no stream in (callers checked is_file).
    return "format not recognised" if "not a regular file" in text else text
