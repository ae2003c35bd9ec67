"""One run at a time in an output folder.

Two runs writing into one --out (a cron job started again while the last one is still going, or two jobs of an
array given one results folder) sweep each other's temporaries away as if a killed run had left them, analyse
the same unfinished files twice, and the last to finish writes the run-wide tables of its own recordings only. So
a run holds an advisory lock on `OUT/.run.lock` while it writes, and a second one stops at once with a line
naming the process that holds it. The kernel drops the lock when that process ends, however it ends: a killed
run leaves no lock to clean up, and the run that next holds the folder removes the temporaries it left mid-write.
Where there are no such locks (Windows, a network mount without them), runs are not kept apart, as before.
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


class FolderInUse(ValueError):
    """Another run holds the output folder."""


@contextlib.contextmanager
def exclusive(folder: str | os.PathLike, command: str) -> Iterator[None]:
    """Hold `folder` (made if need be) for `command` until the block ends, clear of what a killed run left;
    FolderInUse if another run holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        _sweep(folder)
        yield
        return
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another run"
            raise FolderInUse(f"{folder}: {holder} is writing into this folder; wait for it to finish, or give "
                              "this run its own --out") from None
        except OSError:  # a file system without such locks (ENOLCK, EOPNOTSUPP, EINVAL on some mounts): unguarded
            pass
        else:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{command} (pid {os.getpid()} on {socket.gethostname()}, started "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode(), 0)
        _sweep(folder)
        yield
    finally:
        os.close(fd)


def _sweep(folder: Path) -> None:
    for tmp in sweep_temporaries(folder):
        log.info("removed %s left by an interrupted run", tmp)
