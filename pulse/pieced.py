"""A recording as libsndfile is to see it: pieces of the file, and of what is not in it.

libsndfile reads what a file's header says. Where the header is wrong or the file leaves something out, `pulse.io`
hands it a file-like `Pieced` instead, made of byte strings, runs of the file's own bytes and zeros: a WAV whose
header was never finished (or wrapped past 4 GiB) read raw from its first sample, an MP3 behind a first frame that
states its length (`pulse.mpeg`), an AudioMoth's triggered WAV with the silence it left out put back
(`pulse.audiomoth`), a WAV with the pad bytes its recorder left out put back. The RIFF walk that finds a WAV's
samples (and `pulse.timestamps` its metadata) is here too.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import itertools
import os
import signal
import threading
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import soundfile as sf

from pulse import audiomoth

SAMPLE_BYTES = {"PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}


def riff_chunks(f: BinaryIO) -> Iterator[tuple[bytes, int, int]]:
    """(id, the byte its content starts at, the length its header gives) of each chunk of the RIFF WAVE file open
    as `f`, in file order, past `data` too (recorders write GUANO and LIST chunks after the samples); none for any
    other file. Odd-length chunks are followed by a pad byte, as RIFF has them, which RIFF writes as 0: where a
    chunk id starts instead, the recorder left it out (`unpadded_chunk_ends`). An id that is not four printable
    ASCII characters ends the walk: no chunk is there (the samples of a WAV whose header was never finished, read
    8 zero bytes at a time through a silent night, or whose data size wrapped past 4 GiB). An RF64 file (a WAV
    over 4 GiB, as some recorders and editors write it) gives its data chunk's size in its ds64 chunk
    (0xFFFFFFFF in the data chunk's header), and it is taken from there."""
    f.seek(0)
    head = f.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        return
    position, data_size = 12, None
    while len(chunk := f.read(8)) == 8 and _is_chunk_id(chunk[:4]):
        length = int.from_bytes(chunk[4:], "little")
        if chunk[:4] == b"ds64" and head[:4] == b"RF64" and length >= 16:  # RIFF size, then data size (EBU 3306)
            data_size = int.from_bytes(f.read(16)[8:], "little")
        elif chunk[:4] == b"data" and length == 0xFFFFFFFF and data_size is not None:
            length = data_size
        yield chunk[:4], position + 8, length
        position += 8 + length
        f.seek(position)
        if length % 2 and not _is_chunk_id(f.read(4)):
            position += 1
        f.seek(position)


def _is_chunk_id(name: bytes) -> bool:
    return len(name) == 4 and all(32 <= c < 127 for c in name)


def unpadded_chunk_ends(path: str | Path) -> tuple[int, ...]:
    """Where a RIFF WAVE file's odd-length chunks end that the next chunk follows without a pad byte (some
    recorders leave it out); libsndfile then finds no samples behind them."""
    with open(path, "rb") as f:
        chunks = list(riff_chunks(f))
    return tuple(first + length for (_, first, length), (_, after, _) in zip(chunks, chunks[1:])
                 if length % 2 and after - 8 == first + length)


def padded_pieces(path: str | Path, ends: tuple[int, ...]) -> list[tuple[int, bytes | int]]:
    """`Pieced`'s pieces of a RIFF WAVE file with the pad bytes it left out at `ends` put back, its RIFF size
    counting them."""
    with open(path, "rb") as f:
        f.seek(4)
        riff_size = min(int.from_bytes(f.read(4), "little") + len(ends), 0xFFFFFFFF)
    pieces, done = [(4, 0), (4, riff_size.to_bytes(4, "little"))], 8
    for end in ends:
        pieces += [(end - done, done), (1, b"\0")]
        done = end
    return pieces + [(os.stat(path).st_size - done, done)]


def riff_data_chunk(path: str | Path, size: int) -> tuple[int, int, bool] | None:
    """(the byte its first sample is at, the length its header gives, whether the RIFF size falls short of the
    file) of a RIFF WAVE file's data chunk; None for any other file."""
    with open(path, "rb") as f:
        data = next(((first, length) for name, first, length in riff_chunks(f) if name == b"data"), None)
        if data is None:
            return None
        f.seek(4)
        return (*data, int.from_bytes(f.read(4), "little") + 8 < size)


def wav_data_past_its_header(path: str | Path, size: int, subtype: str) -> int | None:
    """Where the samples start of a RIFF WAV that holds more than its header says (libsndfile reads only what it
    says), to be read to the end of the file; None for any other file. Two such WAVs:
    - a header never finished: written first (RIFF size short of the file, data chunk of 0 bytes) and filled in
      when the file is closed; samples follow it. A finished WAV with an empty data chunk (tags after it, the
      RIFF size covering the file) has none.
    - over 4 GiB: the 32-bit data size wrapped round, the data chunk running to the end of the file."""
    if subtype not in SAMPLE_BYTES or (chunk := riff_data_chunk(path, size)) is None:
        return None
    first, length, riff_short = chunk
    held = size - first
    unfinished = length == 0 and riff_short and held > 0
    wrapped = held >= 1 << 32 and held % (1 << 32) == length
    return first if unfinished or wrapped else None


@contextlib.contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Ctrl-C held back to the end of the block, then raised: libsndfile reading or writing a file object (a `Pieced`
    file, memory) calls back into Python, and a KeyboardInterrupt raised in such a callback is printed by cffi and lost
    ("Exception ignored from cffi callback"), the run going on to its end. Only where Python's own Ctrl-C handler is
    in place (main thread)."""
    if threading.current_thread() is not threading.main_thread() or (
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    pressed = []
    signal.signal(signal.SIGINT, lambda *_: pressed.append(True))
    try:
        yield
    finally:  # also when the block fails (a damaged header): the batch would catch that and go on
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if pressed:
            raise KeyboardInterrupt


class Pieced(io.RawIOBase):
    """A file as libsndfile is to see it, made of pieces, each (length, what): `bytes` of that length, the file's
    own bytes from an offset, or None for zeros. libsndfile reads RAW audio from a file's first byte, an MP3's
    length from its first frame, and the silence an AudioMoth left out is zeros."""

    def __init__(self, path: str | Path, pieces: list[tuple[int, bytes | int | None]]):
        self._file, self._pieces, self._position = open(path, "rb"), pieces, 0
        self._starts = list(itertools.accumulate((length for length, _ in pieces), initial=0))

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            position += self._starts[-1]
        elif whence == io.SEEK_CUR:
            position += self._position
        self._position = max(0, position)
        return self._position

    def tell(self) -> int:
        return self._position

    def readinto(self, buffer) -> int:
        view, count = memoryview(buffer).cast("B"), 0
        while count < len(view) and self._position < self._starts[-1]:
            piece = bisect.bisect_right(self._starts, self._position) - 1
            (length, what), inside = self._pieces[piece], self._position - self._starts[piece]
            n = min(len(view) - count, length - inside)
            if what is None:
                view[count:count + n] = bytes(n)
            elif isinstance(what, bytes):
                view[count:count + n] = what[inside:inside + n]
            else:
                self._file.seek(what + inside)
                if not (n := self._file.readinto(view[count:count + n])):
                    break
            count, self._position = count + n, self._position + n
        return count

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        self._file.close()
        super().close()


class HeldSoundFile(sf.SoundFile):
    """A SoundFile closed with Ctrl-C held (`ctrl_c_held`): soundfile forgets the file libsndfile freed only once
    sf_close has returned, and a Ctrl-C raised as it returned left the freed file to be closed again (by the caller's
    clean-up, or the garbage collector): the run aborted with "double free or corruption". Not held where there is
    nothing to close (the garbage collector closing a file closed before), as a Ctrl-C raised there is lost."""

    def close(self) -> None:
        if not self.closed:
            with ctrl_c_held():
                super().close()


class PiecedSoundFile(HeldSoundFile):
    """A SoundFile read from a `Pieced` file, which it closes with itself: soundfile leaves a file object it is given
    open, and the recording stayed open until the garbage collector came (on Windows, it could not be moved). Its
    header is read, and it is sought and read, with Ctrl-C held (`ctrl_c_held`): `pulse analyze` reads headers in its
    main thread, `pulse segments` and `pulse clips-from-annotations` the clips' audio."""

    def __init__(self, pieced: Pieced, **kwargs):
        self._pieced = pieced
        try:
            with ctrl_c_held():
                super().__init__(pieced, **kwargs)
        except BaseException:  # also Ctrl-C held to the end of the open: the file, if opened, and the pieces
            self.close()
            raise

    def seek(self, frames: int, whence: int = sf.SEEK_SET) -> int:
        with ctrl_c_held():
            return super().seek(frames, whence)

    def read(self, *args, **kwargs) -> np.ndarray:
        with ctrl_c_held():
            return super().read(*args, **kwargs)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._pieced.close()


def raw_pieces(path: str | Path, first: int, frames: int, left_out: np.ndarray) -> list[tuple[int, int | None]]:
    """`Pieced`'s pieces of a WAV read raw from byte `first`: its samples to the end of the file or, given an
    AudioMoth's markers `left_out` (`pulse.audiomoth.left_out`), its `frames` (the night's) to the end of its data
    with the silence each marker stands for in the marker's place (16-bit mono)."""
    if not len(left_out):
        return [(os.stat(path).st_size - first, first)]
    pieces, done = [], 0
    for at, samples in left_out.tolist():
        pieces += [(2 * (at - done), first + 2 * done), (2 * samples, None)]
        done = at + audiomoth.MARKER_SAMPLES
    in_file = frames - int((left_out[:, 1] - audiomoth.MARKER_SAMPLES).sum())
    return pieces + [(2 * (in_file - done), first + 2 * done)]
