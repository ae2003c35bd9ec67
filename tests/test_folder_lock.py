"""One run at a time in an output folder (export/folder_lock.py), and what a run may sweep there."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from export import folder_lock
from export.folder_lock import LOCK_NAME, FolderInUse, exclusive

REPO = Path(__file__).resolve().parents[1]
HOLD = """
import sys
from pathlib import Path
from export.folder_lock import exclusive
with exclusive(sys.argv[1], sys.argv[2]):
    for name in sys.argv[3:]:  # what it is writing now
        Path(sys.argv[1], name).parent.mkdir(parents=True, exist_ok=True)
        Path(sys.argv[1], name).write_bytes(b"half written")
    print("held", flush=True)
    sys.stdin.read()  # until killed
"""


class Holder:
    """Another process that holds `folder` for `command`, in the middle of writing `writing`."""

    def __init__(self, folder: Path, command: str, *writing: str, prefix: tuple[str, ...] = ()):
        self.proc = subprocess.Popen([*prefix, sys.executable, "-c", HOLD, str(folder), command, *writing],
                                     cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": str(REPO)})

    def __enter__(self):
        assert self.proc.stdout.readline().strip() == "held"
        return self.proc

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def aged(path: Path, hours: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"left by a killed run")
    then = time.time() - hours * 3600
    os.utime(path, (then, then))
    return path


def test_a_run_into_a_results_folder_leaves_the_clips_another_run_is_cutting_inside_it(tmp_path):
    """`pulse segments RESULTS --out RESULTS/clips` cutting while `pulse analyze` starts again into RESULTS: the
    analysis swept the clips run's temporaries as a killed run's, and that run's next rename found no file."""
    results = tmp_path / "results"
    in_flight = "clips/.c_0001.wav.0123456789ab.tmp"
    with Holder(results / "clips", "pulse segments", Path(in_flight).name):
        killed = aged(results / "AM01" / ".a.csv.0123456789ab.tmp", hours=0)  # the analysis's own, killed last time
        with exclusive(results, "pulse analyze"):
            pass
        assert (results / in_flight).exists() and not killed.exists()


def test_a_run_into_a_folder_inside_another_runs_keeps_that_runs_fresh_temporaries(tmp_path):
    """The other way round: RESULTS/clips, where the analysis into RESULTS writes the tables of an input folder
    named clips, is given to `pulse segments`: it cannot tell the analysis's files from a killed run's until they
    have lain untouched for an hour."""
    results = tmp_path / "results"
    in_flight = "clips/.x.pulse.selection.table.txt.0123456789ab.tmp"
    with Holder(results, "pulse analyze", in_flight):
        old = aged(results / "clips" / ".c_0001.wav.0123456789ab.tmp", hours=2)
        with exclusive(results / "clips", "pulse segments"):
            pass
        assert (results / in_flight).exists() and not old.exists()


def test_where_there_are_no_locks_only_temporaries_idle_for_an_hour_are_swept(tmp_path, monkeypatch):
    """A network mount that refuses advisory locks: two runs there are not kept apart, so a fresh temporary may be
    the other run's, mid-write (it was swept, and that run's rename found no file); an old one is a killed run's."""
    def refused(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(folder_lock.fcntl, "flock", refused)
    out = tmp_path / "out"
    fresh, old = aged(out / ".a.csv.0123456789ab.tmp", hours=0), aged(out / ".b.csv.0123456789ab.tmp", hours=2)
    half = aged(out / ".c.csv.0123456789ab.tmp", hours=0.5)
    with exclusive(out, "pulse analyze"):
        with exclusive(out, "pulse analyze"):  # a second run: not refused, and it keeps the first's files
            pass
    assert fresh.exists() and half.exists() and not old.exists()


def test_a_refused_run_names_the_run_holding_the_folder_and_nothing_an_earlier_one_wrote(tmp_path):
    """The lock file keeps the last holder's line; a shorter one written over it left the end of the longer one."""
    out = tmp_path / "out"
    with exclusive(out, "pulse teacher-cache with a long name"):
        pass
    with Holder(out, "pulse analyze") as holder:
        with pytest.raises(FolderInUse) as refused:
            with exclusive(out, "pulse segments"):
                pass
    message = str(refused.value)
    assert message.startswith(f"{out}: pulse analyze (pid {holder.pid} on ") and message.count("(pid") == 1
    assert "\n" not in message and "long name" not in message


def test_a_lock_file_another_user_left_does_not_stop_a_run_that_may_write_the_folder(tmp_path):
    """A shared results folder both users may write: the first user's .run.lock (0644 under umask 022) stopped the
    second user's run with "Permission denied", where it wrote its outputs before the lock existed. The lock works
    on a read-only file too: a run beside it is still refused."""
    out = tmp_path / "out"
    out.mkdir()
    lock = out / LOCK_NAME
    lock.write_bytes(b"")
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:  # root writes any file: drop that right, as another user has it not
        if not shutil.which("setpriv"):
            pytest.skip("needs setpriv to run without root's file access")
        os.chown(lock, 65534, 65534)
        prefix = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner")
    lock.chmod(0o444 if os.geteuid() else 0o644)
    with Holder(out, "pulse analyze", "table.csv", prefix=prefix):
        assert (out / "table.csv").exists()
        with pytest.raises(FolderInUse, match=f"{out}: another run is writing into this folder"):
            with exclusive(out, "pulse segments"):
                pass


def test_a_folder_below_another_runs_folder_is_left_to_that_run_too(tmp_path):
    """Only the other run's folder itself was passed over: its subfolders (clips/Gryllus_campestris/) were still
    swept, their half-written clips removed under that run."""
    results = tmp_path / "results"
    (results / "clips").mkdir(parents=True)
    (results / "clips" / LOCK_NAME).write_text("")
    theirs = results / "clips" / "Gryllus_campestris" / ".c1.wav.0123456789ab.tmp"
    theirs.parent.mkdir()
    theirs.write_bytes(b"half written")
    with exclusive(results, "pulse analyze"):
        pass
    assert theirs.exists()
