"""The resume journal: what a killed, repeated or differently configured run finds of earlier runs' files."""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import pytest

from pulse.journal import Journal


def scores(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"starts_s": np.arange(3.0), "ends_s": np.arange(3.0) + 3,
            "scores": rng.uniform(0, 1, (3, 9)).astype(np.float32), "sample_rate": np.int64(44100)}


DECODING = {"sample_rate": 44100, "channels": 1, "frames": 132300}  # as `pulse.analyze.decoding` says it
MADE_WITH = {"model": "m", "settings": {}}  # as `export.made_with.made_with` gives it


def writer(root, fingerprint: str, scores_key: str = "") -> Journal:
    """A journal as `pulse analyze` opens it to save records: with the readable parts of its fingerprint."""
    return Journal(root, fingerprint, scores_key, made_with=MADE_WITH)


def recordings(tmp_path, n: int) -> list:
    paths = [tmp_path / f"r{i}.wav" for i in range(n)]
    for i, path in enumerate(paths):
        path.write_bytes(b"x" * (i + 1))
    return paths


def replace_keeping_size_and_time(path, data: bytes) -> None:
    """Another recording copied over `path` as `cp -p` leaves it: same name, size and modification time (two
    AudioMoths deployed together), only the change time tells."""
    before = path.stat()
    assert len(data) == before.st_size and path.read_bytes() != data
    for _ in range(100):  # the kernel's clock for file times is coarse (a tick, up to 10 ms)
        path.write_bytes(data)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        if path.stat().st_ctime_ns != before.st_ctime_ns:
            return
        time.sleep(0.01)
    raise AssertionError(f"{path}: its change time did not move")


def save_all(root, fingerprint: str, paths, outputs=None) -> None:
    journal = writer(root, fingerprint)
    for i, path in enumerate(paths):
        journal.save(path, outputs[i] if outputs else path.stem, "", DECODING, **scores(i))
    journal.close()


def done(root, fingerprint: str, paths) -> list[bool]:
    journal = Journal(root, fingerprint)
    return [journal.done(p, p.stem) for p in paths]


def test_saved_files_are_found_by_a_later_run(tmp_path):
    paths = recordings(tmp_path, 3)
    save_all(tmp_path / "j", "a", paths[:2])
    later = Journal(tmp_path / "j", "a")
    assert [later.done(p, p.stem) for p in paths] == [True, True, False]
    for key, value in scores(1).items():
        loaded = later.load(paths[1])[key]
        np.testing.assert_array_equal(loaded, value)
        assert loaded.dtype == value.dtype and loaded.shape == np.shape(value)
    assert later.load(paths[2]) is None
    assert done(tmp_path / "j", "b", paths[:1]) == [False]  # other settings: analysed again
    paths[0].write_bytes(b"changed")
    assert done(tmp_path / "j", "a", paths[:1]) == [False]  # a changed recording too
    save_all(tmp_path / "j", "a", paths[1:2])
    replace_keeping_size_and_time(paths[1], b"yz")
    assert done(tmp_path / "j", "a", paths[1:2]) == [False]  # and another one of the same name, size and time
    assert Journal(tmp_path / "j", "a").load(paths[1]) is None
    later = Journal(tmp_path / "j", "")  # what `pulse segments` asks, whatever the settings
    assert [later.replaced(p) for p in paths] == [True, True, False]  # the third was never journalled
    paths[1].unlink()
    assert not Journal(tmp_path / "j", "").replaced(paths[1])  # gone: not "replaced"


def test_scores_under_other_output_settings_load_only_with_the_same_scores_key(tmp_path):
    """Another --min-conf: not done, but its scores can make the new tables; another model or overlap: neither."""
    paths = recordings(tmp_path, 1)
    first = writer(tmp_path / "j", "thr0.25", "model-a")
    first.save(paths[0], "r0", "", DECODING, **scores(0))
    first.close()
    rethreshold = Journal(tmp_path / "j", "thr0.9", scores_key="model-a")
    assert not rethreshold.done(paths[0], "r0") and rethreshold.load(paths[0]) is None
    np.testing.assert_array_equal(rethreshold.load(paths[0], any_outputs=True)["scores"], scores(0)["scores"])
    assert Journal(tmp_path / "j", "thr0.9", scores_key="model-b").load(paths[0], any_outputs=True) is None
    assert Journal(tmp_path / "j", "thr0.9").load(paths[0], any_outputs=True) is None  # no key: no match


def test_records_of_the_earlier_npz_format_are_not_read(tmp_path):
    """A log from before the raw-array records (an .npz body): its file is analysed again, without an error."""
    import io
    import json
    import zlib

    from pulse.journal import RECORD_HEADER

    paths = recordings(tmp_path, 1)
    stat = paths[0].stat()
    header = {"version": f"{paths[0].resolve()}|{stat.st_size}|{stat.st_mtime_ns}", "path": str(paths[0].resolve()),
              "fingerprint": "a", "output": "r0", "note": ""}
    npz = io.BytesIO()
    np.savez(npz, **scores(0))
    body = json.dumps(header).encode() + b"\0" + npz.getvalue()
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "1-1.log").write_bytes(RECORD_HEADER.pack(len(body), zlib.crc32(body)) + body)
    assert done(tmp_path / "j", "a", paths) == [False]
    save_all(tmp_path / "j", "a", paths)
    assert done(tmp_path / "j", "a", paths) == [True]


def test_only_the_latest_settings_count(tmp_path):
    """Run A, then B (other --min-conf: B's outputs replace A's), then A again: nothing may be skipped."""
    paths = recordings(tmp_path, 2)
    save_all(tmp_path / "j", "a", paths)
    save_all(tmp_path / "j", "b", paths[:1])
    assert done(tmp_path / "j", "a", paths) == [False, True]
    assert Journal(tmp_path / "j", "a").load(paths[0]) is None


def test_an_output_name_written_for_another_recording_is_not_done(tmp_path):
    """Two cards' REC001 into one --out in two runs: the first's Raven table was replaced."""
    card_a, card_b = tmp_path / "A" / "REC001.wav", tmp_path / "B" / "REC001.wav"
    for card in (card_a, card_b):
        card.parent.mkdir()
        card.write_bytes(card.parent.name.encode())
    save_all(tmp_path / "j", "s", [card_a])
    journal = Journal(tmp_path / "j", "s")
    assert journal.earlier_owner(card_b, "REC001") == str(card_a.resolve())
    assert journal.earlier_owner(card_a, "REC001") is None
    save_all(tmp_path / "j", "s", [card_b])
    again = Journal(tmp_path / "j", "s")
    assert not again.done(card_a, "REC001") and again.done(card_b, "REC001")


def test_notes_are_kept_for_resumed_runs(tmp_path):
    (path,) = recordings(tmp_path, 1)
    journal = writer(tmp_path / "j", "s")
    journal.save(path, "r0", "corrupt or truncated after 20.00 s", DECODING, **scores(0))
    journal.close()
    assert Journal(tmp_path / "j", "s").note(path) == "corrupt or truncated after 20.00 s"


@pytest.mark.parametrize("damage", ["cut", "zeros", "garbage"])
def test_a_damaged_tail_is_ignored_and_the_rest_kept(tmp_path, damage):
    """A kill mid-write cuts the last record; a power cut can leave a zero-filled tail, whose crc is valid."""
    paths = recordings(tmp_path, 4)
    save_all(tmp_path / "j", "s", paths[:1])
    save_all(tmp_path / "j", "s", paths[1:3])
    log = sorted((tmp_path / "j").glob("*.log"))[-1]  # the second run's (named by start time)
    if damage == "cut":
        os.truncate(log, log.stat().st_size - 10)  # killed while writing the record for paths[2]
        expected = [True, True, False, False]
    else:
        with open(log, "ab") as f:
            f.write(bytes(4096) if damage == "zeros" else np.random.default_rng(0).bytes(4096))
        expected = [True, True, True, False]
    assert done(tmp_path / "j", "s", paths) == expected
    save_all(tmp_path / "j", "s", paths[3:])  # a new run goes on in a log of its own
    assert done(tmp_path / "j", "s", paths)[3]


def test_an_unreadable_log_is_a_warning_not_a_crash(tmp_path, caplog):
    paths = recordings(tmp_path, 1)
    save_all(tmp_path / "j", "s", paths)
    (tmp_path / "j" / "0-0.log").mkdir()  # reading it fails as a permission error would
    with caplog.at_level(logging.WARNING):
        assert done(tmp_path / "j", "s", paths) == [True]
    assert "cannot read this journal log" in caplog.text


def test_a_folder_that_cannot_take_the_journal_fails_before_any_work(tmp_path):
    (tmp_path / "j").write_text("a file where the journal folder should be")
    with pytest.raises(OSError, match="cannot write the resume journal there"):
        Journal(tmp_path / "j", "s").open()


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
    journal = writer(tmp_path / "j", "s")
    journal.save(paths[0], "r0", "", DECODING, **scores(0))
    journal._log = _DiskFullOnce(journal._log)
    with pytest.raises(OSError, match="No space"):
        journal.save(paths[1], "r1", "", DECODING, **scores(1))
    journal.save(paths[2], "r2", "", DECODING, **scores(2))  # space freed: goes on in a fresh log, after no half record
    journal.close()
    assert done(tmp_path / "j", "s", paths) == [True, False, True]


def test_logs_whose_every_record_was_replaced_are_dropped(tmp_path):
    """Repeated --no-resume runs: each writes every file again; only logs with a live record stay."""
    paths = recordings(tmp_path, 2)
    save_all(tmp_path / "j", "s", paths)
    save_all(tmp_path / "j", "s", paths[:1])  # the first log still holds paths[1]'s latest record
    journal = writer(tmp_path / "j", "s")
    assert journal.done(paths[1], paths[1].stem)  # a run reads the journal before it analyses anything
    journal.save(paths[1], paths[1].stem, "", DECODING, **scores(1))
    journal.save(paths[0], paths[0].stem, "", DECODING, **scores(0))
    assert len(list((tmp_path / "j").glob("*.log"))) == 3
    journal.drop_superseded_logs()
    journal.close()
    assert len(list((tmp_path / "j").glob("*.log"))) == 1  # only this run's
    assert done(tmp_path / "j", "s", paths) == [True, True]


def test_a_log_deleted_by_an_overlapping_run_is_read_again(tmp_path):
    """Run A resumes from log 1; run B (same settings, --no-resume) replaces every record and deletes log 1
    before A writes its tables: A finds the scores in B's log."""
    paths = recordings(tmp_path, 2)
    save_all(tmp_path / "j", "s", paths)
    resuming = Journal(tmp_path / "j", "s")
    assert resuming.done(paths[0], paths[0].stem)
    overlapping = writer(tmp_path / "j", "s")
    assert overlapping.done(paths[0], paths[0].stem)
    for i, path in enumerate(paths):
        overlapping.save(path, path.stem, "", DECODING, **scores(10 + i))
    overlapping.drop_superseded_logs()
    overlapping.close()
    assert len(list((tmp_path / "j").glob("*.log"))) == 1
    np.testing.assert_array_equal(resuming.load(paths[1])["scores"], scores(11)["scores"])


@pytest.mark.parametrize("field", ["changed_ns", "decoding", "made_with", "scores_key"])
def test_a_record_without_a_field_pulse_writes_does_not_count(tmp_path, field):
    """A record lacking a field `save` always writes (one pulse did not write) is no finished record: the recording
    is analysed again, as if never journalled, without an error; the records after it still count."""
    import json
    import zlib

    from pulse.journal import RECORD_HEADER

    paths = recordings(tmp_path, 2)
    save_all(tmp_path / "j", "s", paths)
    (log_path,) = (tmp_path / "j").glob("*.log")
    data = log_path.read_bytes()
    length, _ = RECORD_HEADER.unpack_from(data)
    body, rest = data[RECORD_HEADER.size:RECORD_HEADER.size + length], data[RECORD_HEADER.size + length:]
    end = body.index(b"\0")
    header = json.loads(body[:end])
    del header[field]
    body = json.dumps(header).encode() + body[end:]
    log_path.write_bytes(RECORD_HEADER.pack(len(body), zlib.crc32(body)) + body + rest)
    journal = writer(tmp_path / "j", "s", "s")
    assert not journal.done(paths[0], paths[0].stem) and journal.decoding(paths[0]) is None
    assert journal.load(paths[0], any_outputs=True) is None and journal.why_again(paths[0]) == ""
    assert not journal.replaced(paths[0])
    assert journal.done(paths[1], paths[1].stem) and journal.decoding(paths[1]) == DECODING
