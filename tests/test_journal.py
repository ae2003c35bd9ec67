"""The resume journal: what a killed or repeated run finds of the files an earlier run finished."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pulse.journal import Journal


def scores(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"starts_s": np.arange(3.0), "ends_s": np.arange(3.0) + 3,
            "scores": rng.uniform(0, 1, (3, 9)).astype(np.float32), "sample_rate": np.int64(44100)}


def recordings(tmp_path, n: int) -> list:
    paths = [tmp_path / f"r{i}.wav" for i in range(n)]
    for i, path in enumerate(paths):
        path.write_bytes(b"x" * (i + 1))
    return paths


def test_saved_files_are_found_by_a_later_run(tmp_path):
    paths = recordings(tmp_path, 3)
    journal = Journal(tmp_path / "journal", "settings-a")
    for i, path in enumerate(paths[:2]):
        journal.save(path, **scores(i))
    journal.close()
    later = Journal(tmp_path / "journal", "settings-a")
    assert [later.done(p) for p in paths] == [True, True, False]
    for key, value in scores(1).items():
        np.testing.assert_array_equal(later.load(paths[1])[key], value)
    assert later.load(paths[2]) is None
    assert not Journal(tmp_path / "journal", "settings-b").done(paths[0])  # other settings: analysed again
    paths[0].write_bytes(b"changed")
    assert not Journal(tmp_path / "journal", "settings-a").done(paths[0])  # a changed recording too


def test_a_record_cut_short_by_a_kill_is_ignored_and_the_rest_kept(tmp_path):
    paths = recordings(tmp_path, 4)
    first = Journal(tmp_path / "journal", "s")
    first.save(paths[0], **scores(0))
    first.close()
    second = Journal(tmp_path / "journal", "s")
    for i in (1, 2):
        second.save(paths[i], **scores(i))
    second.close()
    log = sorted((tmp_path / "journal").glob("*.log"))[-1]  # the second run's (named by start time)
    os.truncate(log, log.stat().st_size - 10)  # killed while writing the record for paths[2]
    resumed = Journal(tmp_path / "journal", "s")
    assert [resumed.done(p) for p in paths] == [True, True, False, False]
    resumed.save(paths[2], **scores(2))  # a new run goes on in a log of its own
    resumed.close()
    again = Journal(tmp_path / "journal", "s")
    assert [again.done(p) for p in paths] == [True, True, True, False]
    np.testing.assert_array_equal(again.load(paths[2])["scores"], scores(2)["scores"])


class _DiskFullOnce:
    """A log file that writes half of the next record, then fails as a full disk does."""

    def __init__(self, log):
        self.log, self.failed = log, False

    def write(self, data: bytes) -> int:
        if not self.failed:
            self.failed = True
            self.log.write(data[: len(data) // 2])
            self.log.flush()
            raise OSError(28, "No space left on device")
        return self.log.write(data)

    def __getattr__(self, name):
        return getattr(self.log, name)


def test_a_record_cut_short_by_a_full_disk_does_not_hide_later_files(tmp_path):
    paths = recordings(tmp_path, 3)
    journal = Journal(tmp_path / "journal", "s")
    journal.save(paths[0], **scores(0))
    journal._log = _DiskFullOnce(journal._log)
    with pytest.raises(OSError, match="No space"):
        journal.save(paths[1], **scores(1))
    journal.save(paths[2], **scores(2))  # space freed: goes on in a fresh log, after no half record
    journal.close()
    assert [Journal(tmp_path / "journal", "s").done(p) for p in paths] == [True, False, True]
