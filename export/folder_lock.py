"""One run at a time in an output folder.

Two runs writing into one --out (a cron job started again while the last one is still going, or two jobs of an
array given one results folder) sweep each other's temporaries away as if a killed run had left them, analyse
the same unfinished files twice, and the last to finish writes the run-wide tables of its own recordings only. So
a run holds an advisory lock on `OUT/.run.lock` while it writes, and a second one stops at once with a line
naming the process that holds it. The kernel drops the lock when that process ends, however it ends: a killed
run leaves no lock to clean up, and the run that next holds the folder removes the temporaries it left mid-write.

A folder inside it that holds a lock file of its own (`pulse segments RESULTS --out RESULTS/clips`) is another
run's, which may be writing there now: it is left to the runs into it. Where a run cannot be sure that no other
one writes beside it, it removes only temporaries untouched for KILLED_RUN_IDLE_S: inside another run's folder,
and where there are no such locks (Windows, a network mount without them; runs are not kept apart there).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from export.atomic import sweep_temporaries

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

log = logging.getLogger(__name__)
LOCK_NAME = ".run.lock"
# A temporary unchanged this long is a killed run's: outputs are written in seconds, and a run that may be writing
# beside this one (jobs sharing one --out where it is not held, an extraction split over GPUs) must keep its files.
KILLED_RUN_IDLE_S = 3600.0


class FolderInUse(ValueError):
    """Another run holds the output folder."""


@contextlib.contextmanager
def exclusive(folder: str | os.PathLike, command: str) -> Iterator[None]:
    """Hold `folder` (made if need be) for `command` until the block ends, clear of what a killed run left;
    FolderInUse if another run holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = None if fcntl is None else _open_lock(folder / LOCK_NAME)
    try:
        held = fd is not None and _hold(fd, folder, command)
        inside_another = any((above / LOCK_NAME).exists() for above in folder.resolve().parents)
        sweep_killed_runs(folder, 0.0 if held and not inside_another else KILLED_RUN_IDLE_S)
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _open_lock(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # another user's lock file (umask 022) in a folder both may write: read access will do
        return os.open(path, os.O_RDONLY)


def _hold(fd: int, folder: Path, command: str) -> bool:
    """Lock `fd` and write on it who holds it; False where the file system has no such locks."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another run"
        raise FolderInUse(f"{folder}: {holder} is writing into this folder; wait for it to finish, or give "
                          "this run its own --out") from None
    except OSError:  # a file system without such locks (ENOLCK, EOPNOTSUPP, EINVAL on some mounts): unguarded
        return False
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{command} (pid {os.getpid()} on {socket.gethostname()}, started "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode(), 0)
    except OSError:  # opened read-only: a later run is told "another run" or the last holder that could write
        pass
    return True


def sweep_killed_runs(folder: str | os.PathLike, idle_s: float = KILLED_RUN_IDLE_S) -> None:
    """Remove what a kill -9 mid-write left under `folder` (`.NAME.XXXX.tmp`), untouched for `idle_s`, except in
    folders below that another run holds (by their lock file); each is one line in the log."""
    for tmp in sweep_temporaries(folder, idle_s, others=LOCK_NAME):
        log.info("removed %s left by an interrupted run", tmp)
