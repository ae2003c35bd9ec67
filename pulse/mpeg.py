"""An MP3's length counted from its frames, and a start for libsndfile that states it, where the header is wrong.

libsndfile decodes MP3 with libmpg123 and stops at the length the first frame's Xing/Info tag gives or, with no
tag, at an estimate from the first frame's bitrate. Two MP3s joined end to end (`cat a.mp3 b.mp3`) then read as
the first alone, and a variable-bitrate MP3 without a tag stops wherever the estimate falls: the rest would go
unanalysed without a word. `stated_start` walks the frame headers (no decoding; ID3 tags skipped, as libmpg123
does) and, where their count disagrees with the length libsndfile reports, builds the stream's first bytes again
with a tag that gives the count: `pulse.io` hands libsndfile those bytes and then the file's own frames. Frames
that follow the stream and that libmpg123 would not read with it (MP3s of another rate or channel count joined on)
are counted too, so that what goes unanalysed is said.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # by version bits
_KBPS = {True: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG-1 Layer III
         False: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}  # MPEG-2 and 2.5
# A frame continues the stream if it agrees with the first in version, layer, rate and channels (bit 7: mono or
# dual mono): libmpg123 cannot hand libsndfile a stream whose format changes part way.
_SAME_STREAM = (3 << 19) | (3 << 17) | (3 << 10) | (1 << 7)
RESYNC_BYTES = 1024  # junk between frames skipped in search of the next one (libmpg123's default resync limit)
FIRST_FRAME_BYTES = 1 << 16  # junk before the first frame searched through
TAG_FRAMES = 1  # the Xing/Info flag saying the tag gives the frame count, after it the byte count (flag 2)
TAG_BYTES = 2


def _frame(header: bytes) -> tuple[int, int] | None:
    """(bytes, samples) of the MPEG Layer III frame `header` (4 bytes) starts, None if it starts none."""
    if len(header) < 4:
        return None
    h = int.from_bytes(header[:4], "big")
    version, layer, bitrate, rate = (h >> 19) & 3, (h >> 17) & 3, (h >> 12) & 15, (h >> 10) & 3
    if h >> 21 != 0x7FF or version == 1 or layer != 1 or bitrate in (0, 15) or rate == 3:
        return None
    samples = 1152 if version == 3 else 576
    return samples // 8 * _KBPS[version == 3][bitrate] * 1000 // _RATES[version][rate] + (h >> 9 & 1), samples


def _tag_offset(header: bytes) -> int:
    """Where a Xing/Info tag would start in the frame `header` begins: after the side information."""
    h = int.from_bytes(header[:4], "big")
    mono, mpeg1 = h >> 6 & 3 == 3, h >> 19 & 3 == 3
    return 4 + (0 if h >> 16 & 1 else 2) + ((17 if mono else 32) if mpeg1 else (9 if mono else 17))


def _id3v2_size(head: bytes) -> int:
    """Bytes of the ID3v2 tag `head` (10 bytes) starts, 0 if it starts none."""
    if len(head) < 10 or head[:3] != b"ID3" or any(b & 0x80 for b in head[6:10]):
        return 0
    return 10 + sum(b << 7 * (3 - i) for i, b in enumerate(head[6:10])) + (10 if head[5] & 0x10 else 0)


def _next_frame(f, position: int, size: int, reach: int) -> int | None:
    """The first frame at or after `position` (within `reach` bytes of junk) whose successor is a frame too
    or the end of the file, so that a chance 0xFFF in junk is not taken for one. ID3 tags are stepped over."""
    end = min(size, position + reach)
    while position < end:
        f.seek(position)
        window = f.read(end - position + 4)
        if (tag := _id3v2_size(window[:10])) or window[:3] == b"TAG":
            position += tag or 128
            end = min(size, position + reach)
            continue
        for at in range(len(window) - 3):
            if window[at] == 0xFF and (frame := _frame(window[at:at + 4])):
                f.seek(position + at + frame[0])
                if position + at + frame[0] >= size or _frame(f.read(4)):
                    return position + at
        return None
    return None


def _frames(f, position: int, size: int, stream: int):
    """(offset, bytes) of each whole frame of the stream from `position` on, across junk and tags as libmpg123
    goes; it ends at the file's end, at junk it would not resync past, or where the format changes."""
    while position < size:
        f.seek(position)
        frame = _frame(header := f.read(4))
        if frame is None:
            if (position := _next_frame(f, position, size, RESYNC_BYTES)) is None:
                return
            f.seek(position)
            frame = _frame(header := f.read(4))
        if int.from_bytes(header, "big") & _SAME_STREAM != stream or position + frame[0] > size:
            return
        yield position, frame[0]
        position += frame[0]


class Start(NamedTuple):
    """`stated_start`'s answer: `head` and `offset`, the bytes to read first and the file offset to go on from,
    which together are the stream with a first frame that states its frame count (b"" and 0 where libsndfile's
    length is right); `rest_s`, the seconds of MP3 frames after the stream that libsndfile does not read."""
    head: bytes
    offset: int
    rest_s: float


def _count(f, position: int, size: int, stream: int) -> tuple[int, int]:
    """How many of `_frames` there are from `position` on, and the byte after the last (`position` if none)."""
    frames, end = 0, position
    for offset, length in _frames(f, position, size, stream):
        frames, end = frames + 1, offset + length
    return frames, end


def stated_start(path: str | Path, reported: int) -> Start | None:
    """For an MP3 whose frames hold more samples than the `reported` length libsndfile gives (more than the
    encoder's delay and padding), or, with no tag to give it, other than that estimate, a `Start` that states
    its frame count; for one whose stream is followed by frames libmpg123 cannot read with it (MP3s of different
    sample rates or channel counts joined), a `Start` that says how long they last. None otherwise, and for what
    is not a Layer III stream.

    A LAME Info tag keeps its gapless delay and padding; only its frame and byte counts change. A stream
    without a tag gets one in front: a silent frame made from its first frame's header."""
    size = Path(path).stat().st_size
    with open(path, "rb") as f:
        if (first := _next_frame(f, 0, size, FIRST_FRAME_BYTES)) is None:
            return None
        f.seek(first)
        head = f.read(4)
        frame_bytes, samples = _frame(head)
        tag_frame = head + f.read(frame_bytes - 4)
        at = _tag_offset(head)
        tagged = tag_frame[at:at + 4] in (b"Xing", b"Info") and len(tag_frame) >= at + 16
        audio = first + frame_bytes if tagged else first
        frames, end = _count(f, audio, size, int.from_bytes(head, "big") & _SAME_STREAM)
        rest_s = _rest_s(f, end, size)
    counted = frames * samples
    flags = int.from_bytes(tag_frame[at + 4:at + 8], "big") if tagged else 0
    if flags & TAG_FRAMES:  # the tag's own count (some encoders count the tag's frame too): more were joined on
        right = frames <= int.from_bytes(tag_frame[at + 8:at + 12], "big") + 1
    elif tagged:  # libmpg123 gives the tag's length less the encoder's delay and padding, a few frames
        right = counted - reported <= 4 * samples
    else:  # an estimate from the first frame's bitrate, right to within a frame at a constant bitrate
        right = abs(counted - reported) <= samples
    if right:
        # what follows a stream its header says goes on (damage past libmpg123's resync) is read as cut short there
        return Start(b"", 0, rest_s) if rest_s and counted + samples >= reported else None
    if flags & TAG_FRAMES:
        patched = bytearray(tag_frame)
        patched[at + 8:at + 12] = frames.to_bytes(4, "big")
        if flags & TAG_BYTES:  # 32 bits, which a stream joined from days of recordings outgrows
            patched[at + 12:at + 16] = min(end - first, 0xFFFFFFFF).to_bytes(4, "big")
        return Start(bytes(patched), audio, rest_s)
    return Start(_silent_tag_frame(head, frames), audio, rest_s)


def _rest_s(f, end: int, size: int) -> float:
    """Seconds held by the frames after a stream that ends at `end` where libmpg123 stops: streams of another rate
    or channel count, or frames past more junk than it resyncs across (as much as it searches before a first)."""
    seconds = 0.0
    while (position := _next_frame(f, end, size, FIRST_FRAME_BYTES)) is not None:
        f.seek(position)
        h = int.from_bytes(f.read(4), "big")
        frames, end = _count(f, position, size, h & _SAME_STREAM)
        if frames > 2:  # fewer: a chance 0xFFF or two in a tag's bytes (a cover picture)
            seconds += frames * _frame(h.to_bytes(4, "big"))[1] / _RATES[h >> 19 & 3][h >> 10 & 3]
        if end == position:  # a frame cut short by the end of the file
            break
    return seconds


def _silent_tag_frame(header: bytes, frames: int) -> bytes:
    """A frame of `header`'s stream (no CRC, no padding) holding nothing but a Xing tag of `frames` frames; at a
    higher bitrate than `header`'s where that frame is too small to hold it (8 kbps at 24 kHz: 24 bytes, a VBR
    stream's silence), or libmpg123 would not find the tag."""
    h = int.from_bytes(header[:4], "big") | 1 << 16
    h &= ~(1 << 9)
    at = _tag_offset(h.to_bytes(4, "big"))
    while _frame(h.to_bytes(4, "big"))[0] < at + 12:  # "Xing", its flags and the count
        h += 1 << 12  # the next bitrate
    header = h.to_bytes(4, "big")
    frame = bytearray(_frame(header)[0])
    frame[:4] = header
    frame[at:at + 12] = b"Xing" + TAG_FRAMES.to_bytes(4, "big") + frames.to_bytes(4, "big")
    return bytes(frame)
