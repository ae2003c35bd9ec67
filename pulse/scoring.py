"""Decoding threads feed one model: windows from any file packed into full batches (`pulse analyze`).

Decoder threads stream each file through io -> windows and queue chunks of windows, a few batches at most
(`_WindowBudget`), so memory stays flat however long a recording is; the calling thread packs them, from any
file, into full batches for the one Predictor, and hands each file to `write` as its last window is scored.
A bad file becomes one line on the console and one row of `summary.errors`; the others go on.
"""

from __future__ import annotations

import logging
import queue
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable

import numpy as np

from export.atomic import error_line, fails_for_folder
from export.predictor import Predictor, usable_cores
from export.progress import progress
from pulse.io import AudioReadError, PartlyDecoded, audio_info, stream_audio
from pulse.schema import SchemaError, check_score_values
from pulse.windows import cut_too_short, frame_windows, refuse_truncated

if TYPE_CHECKING:
    from pulse.analyze import InFlight, Run, Summary

log = logging.getLogger(__name__)

BATCH_WAIT_S = 0.05  # how long less than a quarter batch waits for more windows (3 s clips: 1 window a file)


def score_files(todo: list[InFlight], predictor: Predictor, run: Run, summary: Summary,
                write: Callable[[InFlight, Run], None]) -> None:
    """Decode in threads, score in full batches here, finish each file as its last window is scored."""
    cfg = run.cfg
    workers = decoding_threads(cfg.workers)
    tasks: queue.Queue = queue.Queue()
    for i in range(len(todo)):
        tasks.put(i)
    for _ in range(workers):
        tasks.put(None)
    chunks: queue.Queue = queue.Queue()
    budget = _WindowBudget(2 * workers * cfg.batch_size)  # one batch being scored, the next filling
    stop = threading.Event()
    # Several decoding threads also share out the blocks of a long FLAC: one file would otherwise be one thread.
    pool = ThreadPoolExecutor(workers, thread_name_prefix="decode") if workers > 1 else None
    threads = [threading.Thread(target=_decode_worker, args=(todo, tasks, chunks, budget, run, stop, pool),
                                daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    pending: list[tuple[int, np.ndarray, np.ndarray]] = []  # (file, start samples, windows), oldest first
    opened = {"files": 0, "windows": 0}  # files whose length is known (or that failed before it was), their windows

    def estimate_total() -> None:
        """The bar's total: the windows of the files opened so far, and as many a file on average for the rest,
        so that the share done and the time left mean something before every header has been read."""
        rest = len(todo) - opened["files"]
        bar.total = opened["windows"] + (round(rest * opened["windows"] / opened["files"]) if opened["files"] else 0)

    def fail(i: int, stage: str, exc: BaseException, trace: str = "") -> None:
        f = todo[i]
        if f.failed:
            return
        f.failed, f.starts, f.scores = True, [], []
        if f.info is None:  # failed before its length was known: it adds no windows
            opened["files"] += 1
            estimate_total()
        if stage == "write" and isinstance(exc, OSError):  # not os.replace's "[Errno 21] ...: 'X' -> 'X'"
            reason = error_line(exc)
        else:
            reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        summary.errors.append((str(f.path), stage, type(exc).__name__, reason))
        summary.files_failed += 1
        if cfg.strict:  # the CLI says it, once
            raise exc
        log.warning("%s: %s%s", f.path, "" if stage == "read" else f"{stage} failed: ", reason)
        log.debug("%s", trace or "".join(traceback.format_exception(exc)))

    def partly_readable(i: int, message: str) -> None:
        """Analysed as far as it goes: listed in errors.csv, not counted as failed."""
        todo[i].note = message
        summary.errors.append((str(todo[i].path), "read", "PartlyReadable", message))
        log.warning("%s: %s", todo[i].path, message)

    def finish(i: int) -> None:
        f = todo[i]
        if f.failed:
            return
        try:
            write(f, run)
        except Exception as exc:
            if fails_for_folder(exc):  # --out is full or read-only: the run stops, not each file after it fails
                raise
            fail(i, "write", exc)
            return
        summary.files_done += 1
        if f.again:
            summary.redone[f.again] += 1
        summary.audio_s += f.duration_s
        f.starts, f.scores = [], []
        bar.set_description(f"{summary.files_done + summary.files_failed}/{len(todo)} files", refresh=False)

    def score(final: bool) -> None:
        while pending and (final or sum(len(p[1]) for p in pending) >= cfg.batch_size):
            take, room = [], cfg.batch_size
            while pending and room:
                i, starts, wins = pending.pop(0)
                if len(starts) > room:
                    pending.insert(0, (i, starts[room:], wins[room:]))
                    starts, wins = starts[:room], wins[:room]
                take.append((i, starts, wins))
                room -= len(starts)
            try:
                scores = predictor.predict(np.concatenate([w for _, _, w in take]))["scores"]
            except Exception as exc:  # a model failure costs the files in this batch, not the run
                scores = None
                for i, _, _ in take:
                    fail(i, "model", exc)
            budget.give(sum(len(starts) for _, starts, _ in take))
            row = 0
            for i, starts, _ in take:
                f = todo[i]
                if scores is not None and not f.failed:
                    part = scores[row:row + len(starts)]
                    try:  # a broken model's NaN would otherwise reach scores.csv unremarked
                        check_score_values(part)
                        f.starts.append(starts)
                        f.scores.append(part)
                    except SchemaError as exc:
                        fail(i, "model", exc)
                row += len(starts)
                f.pending -= len(starts)
                bar.update(len(starts))
                if f.ended and not f.pending:
                    finish(i)

    running = len(threads)
    try:
        with progress(total=0, unit="win", desc=f"0/{len(todo)} files") as bar:  # redrawn as windows are scored
            while running:
                try:  # windows are waiting: give the decoders a moment to add to them before scoring a small batch
                    item = chunks.get(timeout=BATCH_WAIT_S if pending else None)
                except queue.Empty:
                    score(final=True)
                    continue
                kind, i = item[0], (item[1] if len(item) > 1 else -1)
                if kind == "done":
                    running -= 1
                elif kind == "start":
                    todo[i].info = item[2]
                    if item[2].warning:
                        partly_readable(i, item[2].warning)
                    run.note_rate(todo[i].path, item[2].sample_rate)
                    run.note_mixed(todo[i].path, item[2].channels)
                    opened["files"] += 1
                    opened["windows"] += run.spec.count(int(item[2].duration_s * run.spec.sample_rate))
                    estimate_total()
                elif kind == "windows":
                    todo[i].pending += len(item[2])
                    pending.append((i, item[2], item[3]))
                elif kind == "partial":  # the windows before the break were queued; an "end" follows
                    todo[i].analysed_s = item[2].decoded_s
                    partly_readable(i, item[2].note)
                elif kind == "end":
                    todo[i].ended = True
                    if not todo[i].pending:
                        finish(i)
                else:  # "error": drop what is queued for this file and report it
                    budget.give(sum(len(p[1]) for p in pending if p[0] == i))
                    pending[:] = [p for p in pending if p[0] != i]
                    fail(i, "read" if hasattr(item[2], "reason") else "decode", item[2], item[3])
                # Full batches as they fill; a part-full one when nothing more is queued (so that the model does not
                # wait on the decoders), unless it is under a quarter batch: then the timed get above waits a moment.
                score(final=running == 0 or (chunks.empty() and budget.waiting >= cfg.batch_size // 4))
    finally:  # also on Ctrl-C: no decoder may still be inside libsndfile or soxr when the interpreter exits
        stop.set()
        for t in threads:
            t.join()
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def decoding_threads(workers: int) -> int:
    """`--workers 0`: one decoding thread per two cores. Decoding a FLAC costs about as much CPU as the default
    model (2026-12-06, one core: 1.7 ms to decode and frame a 3 s clip, 1.5 ms to score a window), threads decode
    in parallel (libsndfile releases the GIL) and share out a long FLAC's blocks, and fewer threads would cap a
    model that spreads over many cores. On two cores that is one thread, which measured fastest there."""
    if workers:
        return workers
    return max(1, usable_cores() // 2)


class _WindowBudget:
    """How many decoded windows may wait for the model: memory stays flat however long the files, and
    decoders run ahead by many short clips (one window each) or a few chunks of a long recording."""

    def __init__(self, limit: int):
        self.limit, self.waiting = limit, 0
        self.changed = threading.Condition()

    def take(self, n: int, stop: threading.Event) -> bool:
        """Wait until `n` more windows fit (a chunk always fits an empty budget); False if the run stops first."""
        with self.changed:
            while self.waiting and self.waiting + n > self.limit:
                if stop.is_set():
                    return False
                self.changed.wait(0.1)
            self.waiting += n
        return True

    def give(self, n: int) -> None:
        with self.changed:
            self.waiting -= n
            self.changed.notify_all()


def _decode_worker(todo: list[InFlight], tasks: queue.Queue, chunks: queue.Queue, budget: _WindowBudget, run: Run,
                   stop: threading.Event, pool: ThreadPoolExecutor | None) -> None:
    """Stream files into window chunks until told to stop; errors travel as items, never kill the thread."""
    def put(item) -> bool:
        """Queue an item, waiting for room first if it carries windows; False once the run has stopped."""
        if item[0] == "windows" and not budget.take(len(item[2]), stop):
            return False
        chunks.put(item)
        return not stop.is_set()

    while not stop.is_set() and (i := tasks.get()) is not None:
        path = todo[i].path
        try:
            info = audio_info(path)
            refuse_truncated(path, info, run.spec)
            if not put(("start", i, info)):
                return
            blocks = stream_audio(path, run.spec.sample_rate, run.cfg.block_s, run.cfg.channel, info=info, pool=pool,
                                  ahead=decoding_threads(run.cfg.workers))
            for starts, wins in frame_windows(blocks, run.spec, max_windows=run.cfg.batch_size):
                if not put(("windows", i, starts, wins)):
                    return
            put(("end", i))
        except PartlyDecoded as exc:
            if short := cut_too_short(exc.decoded_s, exc.reason, run.spec):  # its queued window is dropped too
                put(("error", i, AudioReadError(path, short), ""))
            elif put(("partial", i, exc)):
                put(("end", i))
        except Exception as exc:
            put(("error", i, exc, traceback.format_exc()))
    put(("done",))
