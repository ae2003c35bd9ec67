"""BirdNET distillation: losses, time alignment, the knowledge bank and the KD loss term."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from torch import nn

from export.artifact import load_weights
from export.console import first_three
from pulse.config import ModelConfig, SemiConfig
from pulse.models import create_model
from pulse.teacher import birdnet
from pulse.teacher.cache import CachedTeacher, Moments, StoredArray, _save_entry, entry_path, open_cache
from pulse.teacher.probe import cross_fitted_scores
from pulse.train.distill_birdnet import (BirdNETDistillation, KnowledgeBank, align_teacher,
                                         embedding_distillation_loss, logit_distillation_loss, soft_target_loss)
from pulse.train.losses import StepOutputs
from pulse.io import read_span

TINY = ModelConfig(arch="pulse_cnn_xs", window_s=1.5, sample_rate=16000, f_max=8000.0, n_mels=32, embed_dim=32)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_embedding_losses():
    x = torch.randn(5, 16)
    assert embedding_distillation_loss(2 * x, x, "cosine").item() == pytest.approx(0.0, abs=1e-6)
    assert embedding_distillation_loss(-x, x, "cosine").item() == pytest.approx(2.0, abs=1e-6)
    assert embedding_distillation_loss(x + 1, x, "mse").item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="cosine or mse"):
        embedding_distillation_loss(x, x, "l1")


def test_logit_kd_is_minimal_where_student_matches_teacher():
    teacher = torch.randn(4, 41) * 4
    student = teacher.clone().requires_grad_(True)
    loss = logit_distillation_loss(student, teacher, temperature=2.0)
    loss.backward()
    assert student.grad.abs().max() < 1e-6  # the optimum: matched logits
    for scale in (0.5, 1.5):
        assert logit_distillation_loss(teacher * scale, teacher, 2.0) > loss
    # A higher temperature softens targets: confident teacher logits give targets nearer 0.5.
    assert torch.sigmoid(teacher / 4).sub(0.5).abs().mean() < torch.sigmoid(teacher).sub(0.5).abs().mean()


def test_align_teacher_in_time():
    starts = np.array([0.0, 1.0, 2.0, 3.0])  # 3 s teacher windows every second; centres 1.5 .. 4.5
    values = np.arange(4, dtype=float)[:, None] * np.ones((1, 2))
    np.testing.assert_allclose(align_teacher(starts, values, 1.0, 3.0), values[1])  # centres 1.5-3.5: mean of 0-2
    np.testing.assert_allclose(align_teacher(starts, values, 2.8, 0.8), values[2])  # holds centre 3.5 only
    np.testing.assert_allclose(align_teacher(starts, values, 2.6, 0.7), values[1])  # no centre: nearest is 2.5
    np.testing.assert_allclose(align_teacher(starts, values, 0.0, 0.5), values[0])  # before every centre
    np.testing.assert_allclose(align_teacher(starts, values, 1.0, 5.0), values[:4].mean(axis=0))  # long window
    # half open: the centre at 3.5 is the next window's, so back-to-back student windows share no teacher window
    np.testing.assert_allclose(align_teacher(starts, values, 0.5, 3.0), values[:2].mean(axis=0))


def write_fake_cache(root, manifest: pd.DataFrame, starts: dict, embeddings=None, seed: int = 0):
    """A cache folder shaped like `pulse teacher-cache` output, over real-format audio files in
    root/audio listed in `manifest`; `starts` maps each cached file to its window starts (s)."""
    audio, cache = root / "audio", root / "cache"
    audio.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in manifest["path"]:
        sf.write(audio / name, (0.1 * rng.standard_normal(int((max(starts[name]) + 3) * 16000))).astype(np.float32),
                 16000)
    manifest.to_csv(root / "m.csv", index=False)
    rows = []
    for i, (name, file_starts) in enumerate(starts.items()):
        digest = f"{i:02d}" + "f" * 62
        target = cache / digest[:2] / f"{digest}.npz"
        target.parent.mkdir(parents=True)
        n = len(file_starts)
        embedding = embeddings[name] if embeddings else np.abs(rng.standard_normal((n, birdnet.EMBED_DIM)))
        entry = CachedTeacher(np.array(file_starts, np.float32), rng.standard_normal((n, 6522)).astype(np.float32),
                              embedding.astype(np.float32))
        _save_entry(target, entry)
        rows.append({"path": name, "sha256": digest, "size": 1, "mtime_ns": 1, "ctime_ns": 1, "windows": n})
    pd.DataFrame(rows).to_csv(cache / "index.csv", index=False)
    (cache / "config.json").write_text(json.dumps({"manifest": str(root / "m.csv"), "audio_root": str(audio)}))
    return cache


def cached(cache, name: str) -> dict:
    """The arrays `pulse teacher-cache` stored for `name`, read whole by numpy."""
    index = pd.read_csv(cache / "index.csv", dtype=str).set_index("path")
    with np.load(entry_path(cache, index.loc[name, "sha256"])) as data:
        return dict(data)


@pytest.fixture()
def fake_cache(tmp_path):
    """Two unlabelled files, one in the train split."""
    manifest = pd.DataFrame({"path": ["a.wav", "val.wav"], "split": ["train", "validation"]})
    return write_fake_cache(tmp_path, manifest, {"a.wav": [0.0, 1.0, 2.0], "val.wav": [0.0, 1.0]})


def test_knowledge_bank_keeps_training_windows_only(fake_cache):
    bank = KnowledgeBank((str(fake_cache),), "train", window_s=1.5)
    assert len(bank.windows) == 3 and all(w.path.name == "a.wav" for w in bank.windows)
    # Student windows are centred on the teacher windows' centres (1.5, 2.5, 3.5 s).
    np.testing.assert_allclose([w.start_s for w in bank.windows], [0.75, 1.75, 2.75])
    embedding, logits = bank.targets(bank.windows[1])
    np.testing.assert_array_equal(embedding, cached(fake_cache, "a.wav")["embedding"][1])
    # only the 41 Orthoptera logits are distilled, of BirdNET's 6522
    np.testing.assert_array_equal(logits, cached(fake_cache, "a.wav")["logits"][1, bank.orthoptera])
    assert logits.shape == (41,)
    with pytest.raises(ValueError, match="no cached teacher windows"):
        KnowledgeBank((str(fake_cache),), "test", window_s=1.5)
    # The bundled recipe distils, so retraining it without a cache must say what to run, and a copy of it for
    # one's own species where to name caches of that audio (the default ones are InsectSet32's).
    with pytest.raises(FileNotFoundError, match=r"no teacher cache there.*semi.teacher_caches.*pulse teacher-cache "
                                                r"--out .*or list your own caches there"):
        KnowledgeBank((str(fake_cache.parent / "missing"),), "train", window_s=1.5)


def test_a_3s_student_window_at_the_1s_hop_learns_the_mean_of_three_teacher_windows(tmp_path):
    """The bundled recipe's case (3 s student, cache hop 1 s): the target of the window centred on teacher
    window k is the mean of windows k-1, k and k+1 (two at a file's ends), not window k alone."""
    manifest = pd.DataFrame({"path": ["a.wav"], "split": ["train"]})
    cache = write_fake_cache(tmp_path, manifest, {"a.wav": [0.0, 1.0, 2.0, 3.0, 4.0]})
    bank = KnowledgeBank((str(cache),), "train", window_s=3.0)
    teacher = cached(cache, "a.wav")["embedding"]
    np.testing.assert_allclose([w.start_s for w in bank.windows], [0.0, 1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(bank.targets(bank.windows[2])[0], teacher[1:4].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(bank.targets(bank.windows[0])[0], teacher[0:2].mean(axis=0), rtol=1e-6)
    assert not np.allclose(bank.targets(bank.windows[2])[0], teacher[2])


def test_at_a_3s_hop_each_3s_student_window_learns_one_teacher_window(tmp_path):
    manifest = pd.DataFrame({"path": ["a.wav"], "split": ["train"]})
    cache = write_fake_cache(tmp_path, manifest, {"a.wav": [0.0, 3.0, 6.0]})
    bank = KnowledgeBank((str(cache),), "train", window_s=3.0)
    for k, window in enumerate(bank.windows):
        np.testing.assert_array_equal(bank.targets(window)[0], cached(cache, "a.wav")["embedding"][k])


def test_targets_and_standardisation_are_those_of_the_whole_cache_in_memory(tmp_path):
    """The bank reads a batch's rows from the cache's files: the same targets as the arrays read whole, and the
    mean and std of every embedding, merged file by file."""
    import pickle

    manifest = pd.DataFrame({"path": ["a.wav", "b.wav", "c.wav"], "split": ["train", "train", "validation"]})
    cache = write_fake_cache(tmp_path, manifest, {"a.wav": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "b.wav": [0.0, 1.5],
                                                  "c.wav": [0.0]})
    arrays = {name: cached(cache, name) for name in ("a.wav", "b.wav")}
    for window_s in (3.0, 1.5, 0.5):
        bank = KnowledgeBank((str(cache),), "train", window_s)
        assert len(bank.windows) == 8
        assert [w.path.name for w in bank.windows] == ["a.wav"] * 6 + ["b.wav"] * 2
        for window in bank.windows:
            teacher = arrays[window.path.name]
            embedding, logits = bank.targets(window)
            np.testing.assert_array_equal(embedding, align_teacher(teacher["starts_s"], teacher["embedding"],
                                                                   window.start_s, window_s))
            np.testing.assert_array_equal(logits, align_teacher(
                teacher["starts_s"], teacher["logits"][:, bank.orthoptera], window.start_s, window_s))
    every = np.concatenate([a["embedding"] for a in arrays.values()])
    np.testing.assert_allclose(bank.embedding_mean, every.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(bank.embedding_std, every.std(axis=0) + 1e-6, rtol=1e-5)
    assert bank.embedding_mean.dtype == bank.embedding_std.dtype == np.float32
    # A worker process (a DataLoader's, spawned) gets the bank pickled: it reads the same targets from the files.
    copy = pickle.loads(pickle.dumps(bank))
    for window in (bank.windows[0], bank.windows[7]):
        for ours, theirs in zip(bank.targets(window), copy.targets(window)):
            np.testing.assert_array_equal(ours, theirs)


def test_the_bank_standardises_by_the_moments_each_entry_stores(tmp_path, monkeypatch):
    """Building the bank read every embedding row of the cache for the mean and std it standardises by (a 300 GB
    pool's 14 GB, minutes at each `pulse train`, bench/README.md): it merges each entry's stored moments now, to
    the same numbers."""
    manifest = pd.DataFrame({"path": ["a.wav", "b.wav", "c.wav"], "split": "train"})
    starts = {"a.wav": [float(s) for s in range(7)], "b.wav": [0.0, 1.0], "c.wav": [0.0]}
    read_shapes = []
    read_rows = StoredArray.rows

    def recorded_rows(array, start, stop):
        read_shapes.append(array.shape)
        return read_rows(array, start, stop)

    monkeypatch.setattr(StoredArray, "rows", recorded_rows)
    cache = write_fake_cache(tmp_path, manifest, starts)
    bank = KnowledgeBank((str(cache),), "train", window_s=3.0)
    assert not [shape for shape in read_shapes if shape[1:] == (1024,)]
    every = np.concatenate([cached(cache, name)["embedding"] for name in starts])
    np.testing.assert_allclose(bank.embedding_mean, every.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(bank.embedding_std, every.std(axis=0) + 1e-6, rtol=1e-5)


def test_moments_of_parts_merge_into_those_of_the_whole():
    rng = np.random.default_rng(0)
    rows = 1000 + rng.standard_normal((9000, 8)) * np.arange(1, 9)  # far from 0: a naive sum of squares would not do
    parts = [Moments.of(part) for part in np.split(rows, [1, 5, 4101])]
    merged = parts[0].merge(parts[1]).merge(parts[2]).merge(parts[3])
    whole = Moments.of(rows)
    assert merged.count == whole.count == 9000
    np.testing.assert_allclose(merged.mean, rows.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(merged.m2, whole.m2, rtol=1e-9)
    np.testing.assert_allclose(merged.m2 / merged.count, rows.var(axis=0), rtol=1e-9)
    embeddings = (1000 + 0.01 * rng.standard_normal((5000, 4))).astype(np.float32)  # as entries store them
    exact = embeddings.astype(np.float64)  # summed in float32, M2 was 1e-3 off
    np.testing.assert_allclose(Moments.of(embeddings).m2, ((exact - exact.mean(axis=0)) ** 2).sum(axis=0), rtol=1e-9)


def test_entries_opened_in_threads_come_back_all_and_in_order_past_one_batch_of_them(monkeypatch):
    """A pool of more entries than are opened at once (ENTRIES_AT_ONCE, 1024) is opened batch after batch, none
    left out."""
    from pulse.teacher import cache

    monkeypatch.setattr(cache, "ENTRIES_AT_ONCE", 3)
    assert list(cache.in_threads(str, list(range(10)))) == [str(i) for i in range(10)]


def test_the_bank_holds_no_teacher_outputs_in_memory(tmp_path):
    """A bank over four times the windows takes about the same memory to build and hold: teacher outputs (4.3 KB a
    window of the 3.4 million of a 300 GB pool) stay on disk. It held every embedding and, while building, every
    entry's 6522 logits."""
    import pickle
    import tracemalloc

    peaks = []
    for files in (6, 24):
        names = [f"f{i:02d}.wav" for i in range(files)]
        cache = write_fake_cache(tmp_path / str(files), pd.DataFrame({"path": names, "split": "train"}),
                                 {name: [float(s) for s in range(20)] for name in names})
        tracemalloc.start()
        bank = KnowledgeBank((str(cache),), "train", window_s=3.0)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert len(bank.windows) == 20 * files
        assert len(pickle.dumps(bank)) < 200 * len(bank.windows)  # an embedding alone is 4 KB
    assert peaks[1] < 2 * peaks[0], peaks


def test_an_entry_cut_short_or_compressed_is_named(fake_cache):
    entry = sorted(fake_cache.glob("*/*.npz"))[0]  # a.wav's
    whole = entry.read_bytes()
    bank = KnowledgeBank((str(fake_cache),), "train", window_s=1.5)
    entry.write_bytes(whole[:len(whole) // 2])  # while training: its index said where the rows lie
    with pytest.raises(OSError, match=f"{entry}: ends before row 3 of 3"):
        bank.targets(bank.windows[2])
    with pytest.raises(ValueError, match=f"{entry}: not a whole .npz .*run pulse teacher-cache .*it makes them anew"):
        KnowledgeBank((str(fake_cache),), "train", window_s=1.5)
    entry.write_bytes(whole)
    arrays = cached(fake_cache, "a.wav")
    np.savez_compressed(entry, **arrays)
    with pytest.raises(ValueError, match=f"{entry}: starts_s.npy is compressed"):
        KnowledgeBank((str(fake_cache),), "train", window_s=1.5)
    np.savez(entry, **{**arrays, "logits": np.asfortranarray(arrays["logits"])})  # rows not whole on disk
    with pytest.raises(ValueError, match=f"{entry}: logits.npy is stored column by column"):
        KnowledgeBank((str(fake_cache),), "train", window_s=1.5)
    np.savez(entry, **{k: v for k, v in arrays.items() if k != "embedding_m2"})  # another tool's .npz
    with pytest.raises(ValueError, match=f"{entry}: no embedding_m2; not an entry this pulse wrote"):
        KnowledgeBank((str(fake_cache),), "train", window_s=1.5)



@pytest.mark.parametrize("damage", [b"(3, 6522 ", b"@@@@@"])  # numpy's TokenError, then its magic-string ValueError
def test_an_entry_whose_header_is_damaged_in_place_is_named(fake_cache, damage):
    """A header damaged with the zip intact (a bad sector, a byte flipped in a copy) escaped as tokenize's TokenError,
    naming no file, and stopped training at once."""
    entry = sorted(fake_cache.glob("*/*.npz"))[0]
    whole = entry.read_bytes()
    at = whole.index(b"(3, 6522)") if damage.startswith(b"(") else whole.index(b"\x93NUMPY")
    entry.write_bytes(whole[:at] + damage + whole[at + len(damage):])
    with pytest.raises(ValueError, match=f"{entry}: .*has a damaged header .*run pulse teacher-cache"):
        KnowledgeBank((str(fake_cache),), "train", window_s=1.5)


@pytest.mark.parametrize("header, says", [({"descr": "|O", "shape": (2,)}, "holds Python objects"),
                                          ({"descr": "<f4", "shape": (2 ** 40,)}, r"claims shape \(1099511627776,\)"),
                                          ({"descr": "<f4", "shape": (8,)}, r"claims shape \(8,\)")])  # 16 B of data
def test_an_entry_of_objects_or_of_more_rows_than_it_holds_is_named(fake_cache, header, says):
    """Rows are read raw into an array of the header's dtype and shape: objects made bytes from a shared cache into
    pointers (a segmentation fault), and a shape past the member's bytes a MemoryError naming no file."""
    entry = sorted(fake_cache.glob("*/*.npz"))[0]
    arrays = cached(fake_cache, "a.wav")
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {**header, "fortran_order": False})
    with zipfile.ZipFile(entry, "w") as archive:  # zeros: null pointers, which numpy takes for None
        archive.writestr("starts_s.npy", member.getvalue() + bytes(16))
        for name in ("logits", "embedding"):
            member = io.BytesIO()
            np.save(member, arrays[name])
            archive.writestr(f"{name}.npy", member.getvalue())
    with pytest.raises(ValueError, match=f"{entry}: starts_s.npy {says}.*; not an entry pulse wrote"):
        open_cache(fake_cache)

def bytes_read() -> int:
    """What this process has read so far (Linux's rchar: from the page cache or the disk)."""
    return next(int(line.split()[1]) for line in Path("/proc/self/io").read_text().splitlines()
                if line.startswith("rchar:"))


@pytest.mark.skipif(not Path("/proc/self/io").is_file(), reason="reads counted by Linux's /proc/self/io")
def test_opening_a_cache_reads_an_entrys_headers_not_blocks_around_them(tmp_path):
    """Training opens every entry at its start: read through a buffered file, opened twice, each of an entry's five
    headers cost an 8 KB read (4 min for the 120,000 entries of a pool of 30 s recordings, bench/README.md)."""
    names = [f"{i}.wav" for i in range(20)]
    cache = write_fake_cache(tmp_path, pd.DataFrame({"path": names, "split": "train"}),
                             {name: [0.0, 1.0] for name in names})
    before = bytes_read()
    entries = open_cache(cache)
    assert (bytes_read() - before) / len(names) < 8192
    assert {entry.logits.shape for entry in entries.values()} == {(2, 6522)}
    assert all(entry.embedding_moments().count == 2 for entry in entries.values())


def test_a_line_naming_broken_entries_names_the_first_three_of_thousands():
    assert first_three(["a", "b", "c"], "; ") == "a; b; c"
    assert first_three([f"e{i}" for i in range(5000)]) == "e0, e1, e2, ..."


def test_training_refuses_a_damaged_cache_at_its_start_counting_and_naming_its_broken_entries(tmp_path):
    """An entry deleted while index.csv listed it stopped training at "[Errno 2] No such file or directory: '...npz'",
    several cut short at the first one only (one rerun each), and an index.csv cut short (a partial copy) trained on
    its rows before the cut, saying nothing."""
    names = ["a.wav", "b.wav", "c.wav", "val.wav"]
    manifest = pd.DataFrame({"path": names, "split": ["train"] * 3 + ["validation"]})
    cache = write_fake_cache(tmp_path, manifest, {name: [0.0, 1.0] for name in names})
    a, b, c, val = (entry_path(cache, digest) for digest in pd.read_csv(cache / "index.csv", dtype=str)["sha256"])
    a.unlink()
    b.write_bytes(b"")
    val.write_bytes(b"")  # not read by a training on the train split: not in its way
    with pytest.raises(ValueError, match=re.escape(f"{cache}: 2 of 3 entries cannot be read ({a}: missing; {b}: not a "
                                                   "whole .npz (File is not a zip file)); run pulse teacher-cache "
                                                   f"--manifest {tmp_path / 'm.csv'} --audio-root {tmp_path / 'audio'} "
                                                   f"--out {cache}: it makes them anew")):
        KnowledgeBank((str(cache),), "train", window_s=1.5)
    index = (cache / "index.csv").read_bytes()
    (cache / "index.csv").write_bytes(index[:-20])
    with pytest.raises(ValueError, match=re.escape(f"{cache / 'index.csv'}: cut short or not a table pulse "
                                                   "teacher-cache wrote; run pulse teacher-cache --manifest")):
        KnowledgeBank((str(cache),), "train", window_s=1.5)


def test_a_cache_whose_audio_or_manifest_moved_is_refused_at_start(tmp_path, caplog):
    """With its audio_root moved (a disk not mounted) training distilled for hours from silence, a warning per file;
    with its manifest moved it said only 'manifest not found', not whose."""
    names = ["a.wav", "b.wav", "val.wav"]
    manifest = pd.DataFrame({"path": names, "split": ["train", "train", "validation"]})
    cache = write_fake_cache(tmp_path, manifest, {name: [0.0, 1.0] for name in names})
    (tmp_path / "audio/b.wav").unlink()
    bank = KnowledgeBank((str(cache),), "train", window_s=1.5)
    assert {w.path.name for w in bank.windows} == {"a.wav"}  # b.wav's windows would be silence: left out
    assert f"{cache}: 1 of its 2 recordings are not under {tmp_path / 'audio'} (b.wav); distilling from the " \
        "other 1" in caplog.text
    (tmp_path / "audio").rename(tmp_path / "moved")
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"{cache}: none of its 2 recordings is under its audio_root {tmp_path / 'audio'}: moved, or a disk not "
            f"mounted? Mount it, or set audio_root in {cache / 'config.json'} to where they are now")):
        KnowledgeBank((str(cache),), "train", window_s=1.5)
    (tmp_path / "m.csv").rename(tmp_path / "m2.csv")
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"{tmp_path / 'm.csv'}: manifest not found; {cache / 'config.json'} names it for the split of each "
            "cached recording: set manifest there to where it is now")):
        KnowledgeBank((str(cache),), "train", window_s=1.5)


def test_a_cache_without_its_config_json_says_to_rerun_its_own_command(fake_cache):
    """Without config.json a whole cache read 'no teacher cache there; run `pulse teacher-cache --out DIR`', a command
    that would fill it with InsectSet32 and index only that; a damaged one said to run nothing."""
    config = fake_cache / "config.json"
    text = config.read_text()
    config.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"{config}: missing beside its index.csv; run the pulse teacher-cache command that made this cache again, "
            "with its --manifest and --audio-root: it writes config.json anew and keeps every entry")):
        KnowledgeBank((str(fake_cache),), "train", window_s=1.5)
    config.write_text(text[:20])
    with pytest.raises(ValueError, match=re.escape("edited by hand? Run the pulse teacher-cache command that made")):
        KnowledgeBank((str(fake_cache),), "train", window_s=1.5)


def test_a_cache_of_part_of_its_manifest_is_said_before_training(tmp_path, caplog):
    """A pulse teacher-cache run stopped early (killed, a day into a big pool) left a cache of the files it reached,
    and training distilled from those alone without a word."""
    manifest = pd.DataFrame({"path": ["a.wav", "b.wav", "c.wav", "val.wav"], "split": ["train"] * 3 + ["validation"]})
    cache = write_fake_cache(tmp_path, manifest, {name: [0.0, 1.0] for name in manifest["path"]})
    index = pd.read_csv(cache / "index.csv")
    index[~index["path"].isin(["b.wav", "c.wav"])].to_csv(cache / "index.csv", index=False)
    KnowledgeBank((str(cache),), "train", window_s=1.5)
    assert f"{cache}: 2 of the 3 'train' recordings of its manifest have no entry there (b.wav, c.wav: not reached " \
        f"by a pulse teacher-cache run stopped early, or failed, see {cache / 'errors.csv'}); distilling from the " \
        f"other 1; pulse teacher-cache --manifest {tmp_path / 'm.csv'} --audio-root {tmp_path / 'audio'} --out " \
        f"{cache} caches what it can of them" in caplog.text


@pytest.mark.parametrize("change", ["cut short", "deleted"])
def test_an_entry_changed_hours_into_training_stops_it_with_one_line(fake_cache, monkeypatch, change):
    """An entry cut short or deleted while training read it ended the run in a traceback, the cut one saying
    'changed since it was opened?' and no more, the deleted one '[Errno 2] No such file or directory'."""
    from typer.testing import CliRunner

    from pulse.cli import app
    from pulse.train import weak_labels

    entry = sorted(fake_cache.glob("*/*.npz"))[0]  # a.wav's

    def train_then_draw(cfg, out, **kw):
        bank = KnowledgeBank((str(fake_cache),), "train", window_s=1.5)
        if change == "cut short":
            entry.write_bytes(entry.read_bytes()[:1000])
        else:
            entry.unlink()
        bank.targets(bank.windows[2])

    monkeypatch.setattr(weak_labels, "train", train_then_draw)
    result = CliRunner().invoke(app, ["train", "--out", str(fake_cache.parent / "run")])
    why = "ends before row 3 of 3, changed since it was opened" if change == "cut short" else \
        "No such file or directory, readable when it was opened"
    assert result.exit_code == 1 and result.output.splitlines() == [
        f"error: {entry}: {why}; pulse teacher-cache --manifest {fake_cache.parent / 'm.csv'} --audio-root "
        f"{fake_cache.parent / 'audio'} --out {fake_cache} makes it anew; training stopped: run the same command "
        "again then to go on from its last checkpoint (each epoch's end)"]


class SilentBackgrounds:
    def window(self, rng):
        return np.zeros(TINY.window_samples, np.float32)


def test_kd_term_reads_aligned_windows_and_trains_the_student(fake_cache):
    torch.manual_seed(0)
    model = create_model(TINY).train()
    bank = KnowledgeBank((str(fake_cache),), "train", TINY.window_s)
    cfg = SemiConfig(kd_batch=4, kd_background_prob=0.0)
    term = BirdNETDistillation(1.0, model, cfg, bank, SilentBackgrounds(), TINY.sample_rate, seed=0)
    waves, embeddings, logits, probe = term.batch(step=3)
    assert waves.shape == (4, TINY.window_samples) and embeddings.shape == (4, 1024) and logits.shape == (4, 41)
    assert probe.shape == (4, 0)  # no probe targets unless kd_probe_weight > 0
    # Each student window is the audio under its teacher window's centre, paired with that window's targets.
    teacher = cached(fake_cache, "a.wav")["embedding"]
    for wave, embedding in zip(waves, embeddings):
        k = int(np.flatnonzero((teacher == embedding).all(axis=1))[0])
        np.testing.assert_allclose(wave, read_span(bank.windows[k].path, bank.windows[k].start_s, TINY.window_s,
                                                   TINY.sample_rate))
    optimizer = torch.optim.Adam(list(model.parameters()) + list(term.parameters()), lr=3e-3)
    out = StepOutputs(0, *([None] * 6))
    losses = []
    for _ in range(15):
        loss = term(model, dataclasses.replace(out, step=0))
        optimizer.zero_grad()
        loss.backward()
        assert model.encoder.stem[0].weight.grad.abs().sum() > 0 and term.project.weight.grad is not None
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_soft_target_loss_leaves_out_windows_without_a_target():
    logits = torch.randn(3, 2, requires_grad=True)
    targets = torch.tensor([[0.9, 0.1], [float("nan"), float("nan")], [0.2, 0.7]])
    expected = nn.functional.binary_cross_entropy_with_logits(logits[[0, 2]], targets[[0, 2]])
    assert soft_target_loss(logits, targets).item() == pytest.approx(expected.item())
    none = soft_target_loss(logits, torch.full((3, 2), float("nan")))
    none.backward()
    assert none.item() == 0.0 and logits.grad.abs().sum() == 0


def cluster(centre: int, n: int, rng) -> np.ndarray:
    """n BirdNET-like embeddings around a centre: high on 20 dims of their own, noise elsewhere."""
    out = np.abs(0.3 * rng.standard_normal((n, birdnet.EMBED_DIM)))
    if centre >= 0:
        out[:, 20 * centre:20 * centre + 20] += 2.0
    return out


def test_probe_targets_come_from_a_probe_that_never_heard_the_recording(tmp_path):
    """A recording labelled A that sounds like B (to BirdNET) gets B's scores: the probe scoring it was
    fitted without it. Only the labels training uses count (not the cache manifest's); audio without
    them gets no target; the backgrounds serve as negatives."""
    rng = np.random.default_rng(1)
    files = {"a1.wav": ("A", 0), "a2.wav": ("A", 0), "odd.wav": ("A", 1), "b1.wav": ("B", 1), "b2.wav": ("B", 1),
             "b3.wav": ("B", 1), "held_back.wav": ("B", 1), "field.wav": ("", 0)}
    starts = {name: [0.0, 1.0, 2.0] for name in files}
    labelled = write_fake_cache(tmp_path / "songs", pd.DataFrame(
        {"path": list(files), "split": "train", "species": [species for species, _ in files.values()]}), starts,
        {name: cluster(centre, 3, rng) for name, (_, centre) in files.items()})
    backgrounds = write_fake_cache(tmp_path / "bg", pd.DataFrame({"path": ["bg.wav"], "split": "train"}),
                                   {"bg.wav": [0.0, 1.0, 2.0, 3.0]}, {"bg.wav": cluster(-1, 4, rng)})
    model_cfg = dataclasses.replace(TINY, labels=("A", "B"), common_names=("A", "B"), codes=("A", "B"))
    bank = KnowledgeBank((str(labelled), str(backgrounds)), "train", model_cfg.window_s)
    audio = (tmp_path / "songs/audio").resolve()
    species = {audio / name: label for name, (label, _) in files.items() if label and name != "held_back.wav"}
    negatives = {(tmp_path / "bg/audio/bg.wav").resolve()}
    scores = dict(zip([*files, "bg.wav"], bank.probe_scores(species, model_cfg.labels, negatives, 5)))
    for name in ("a1.wav", "a2.wav"):
        assert (scores[name].argmax(axis=1) == 0).all()
    assert (scores["odd.wav"].argmax(axis=1) == 1).all() and (scores["odd.wav"][:, 1] > 0.5).all()
    for name in ("held_back.wav", "field.wav", "bg.wav"):
        assert np.isnan(scores[name]).all(), name
    with pytest.raises(ValueError, match="not among the model's labels"):
        bank.probe_scores(species, ("A", "C"), negatives, 5)
    with pytest.raises(ValueError, match="every class in at least two recordings; class 1 is in 1"):
        cross_fitted_scores(np.zeros((4, 8)), np.eye(2)[[0, 0, 0, 1]], np.array([0, 1, 2, 2]), np.zeros((0, 8)))

    # In the KD term the student's own head learns them, time-aligned like the other teacher outputs.
    torch.manual_seed(0)
    model = create_model(model_cfg).train()
    cfg = SemiConfig(kd_batch=6, kd_background_prob=0.0, kd_probe_weight=1.0)
    with pytest.raises(ValueError, match="needs the probe's scores"):
        BirdNETDistillation(1.0, model, cfg, bank, SilentBackgrounds(), model_cfg.sample_rate, seed=0)
    term = BirdNETDistillation(1.0, model, cfg, bank, SilentBackgrounds(), model_cfg.sample_rate, seed=0,
                               probe_scores=list(scores.values()))
    _, embeddings, _, probe = term.batch(step=0)
    assert probe.shape == (6, 2) and np.isfinite(probe).any()
    for embedding, row in zip(embeddings, probe):  # the row of the teacher window the student window sits on
        (file, window), = [(f, w) for f, e in enumerate(bank.entries)
                           for w in np.flatnonzero((e.embedding.read() == embedding).all(axis=1))]
        np.testing.assert_array_equal(row, term.probe_scores[file][window])
    term(model, StepOutputs(0, *([None] * 6))).backward()
    assert model.head[1].weight.grad.abs().sum() > 0


def test_probe_learns_from_the_training_labels_of_the_config(tmp_path):
    from pulse.config import TrainConfig
    from pulse.train.distill_birdnet import training_labels

    pd.DataFrame({"path": ["a.wav", "b.wav", "c.wav", "d.wav"], "split": ["train", "train", "validation", "test"],
                  "species": ["A", "", "B", "B"]}).to_csv(tmp_path / "m.csv", index=False)
    cfg = TrainConfig(manifest=str(tmp_path / "m.csv"), audio_root=str(tmp_path))
    assert training_labels(cfg) == {(tmp_path / "a.wav").resolve(): "A"}
    refit = dataclasses.replace(cfg, extra_train_splits=("validation",))
    assert training_labels(refit) == {(tmp_path / "a.wav").resolve(): "A", (tmp_path / "c.wav").resolve(): "B"}


def test_multitask_run_logs_each_term_and_follows_the_schedule(shared_data, tmp_path):
    """A real tiny run: BYOL + KD (from a real BirdNET cache) pre-train, then weak labels fine-tune."""
    from test_train import REPO, tiny_config

    from pulse.config import TeacherCacheConfig
    from pulse.teacher.cache import build_cache
    from pulse.train import weak_labels

    base = tiny_config(shared_data, tmp_path)
    cache = tmp_path / "teacher"
    build_cache(TeacherCacheConfig(manifest=base.manifest, audio_root=base.audio_root, out=str(cache), threads=1))
    semi = SemiConfig(unlabelled_manifests=(str(REPO / "data_manifests/backgrounds.csv"), base.manifest),
                      unlabelled_roots=(base.background_root, base.audio_root), teacher_caches=(str(cache),),
                      byol_batch=3, byol_hidden=32, byol_dim=16, kd_batch=3, kd_probe_weight=1.0,
                      schedule="pretrain_finetune",
                      pretrain_frac=0.5)
    cfg = dataclasses.replace(base, lambda_byol=1.0, lambda_kd=0.5, lambda_shift=1.0, semi=semi)
    weak_labels.train(cfg, tmp_path / "run")
    history = json.loads((tmp_path / "run/history.json").read_text())
    assert {"loss_byol", "loss_kd"} <= set(history[0]) and not {"loss_bce", "loss_shift"} & set(history[0])
    assert {"loss_bce", "loss_shift"} <= set(history[1]) and "loss_byol" not in history[1]  # head terms: fine-tuning
    assert all(np.isfinite(v) for row in history for k, v in row.items() if k.startswith("loss_"))
    state = load_weights(tmp_path / "run/checkpoint.safetensors")[0]
    assert any(k.startswith("loss.byol.target_model.") for k in state)
    assert any(k.startswith("loss.kd.project.") for k in state)
    assert "NC-SA" in load_weights(tmp_path / "run/model.safetensors")[1]["license"]
    with pytest.raises(ValueError, match="pretrain_finetune"):
        weak_labels.train(dataclasses.replace(base, semi=semi), tmp_path / "bad")


def test_distilled_student_carries_birdnets_licence():
    from pulse.config import TrainConfig
    from pulse.train.distill_birdnet import student_model_config

    plain = TrainConfig()
    assert student_model_config(plain) == plain.model
    distilled = student_model_config(dataclasses.replace(plain, lambda_kd=1.0))
    assert distilled.license.startswith("CC BY-NC-SA 4.0") and "BirdNET" in distilled.attribution
    assert dataclasses.replace(distilled, license=plain.model.license,
                               attribution=plain.model.attribution) == plain.model
    own = dataclasses.replace(plain, lambda_kd=1.0,
                              model=dataclasses.replace(plain.model, attribution="Recordings (c) Me"))
    assert student_model_config(own).attribution.startswith("Recordings (c) Me. Distilled from BirdNET V2.4")
    assert distilled.license == "CC BY-NC-SA 4.0 (weights distilled from BirdNET V2.4); code MIT"  # data: unstated
    # a licence the config gives its own training data is kept beside BirdNET's, not replaced by it
    restricted = dataclasses.replace(own, model=dataclasses.replace(own.model, license="internal use only"))
    assert student_model_config(restricted).license == ("CC BY-NC-SA 4.0 (weights distilled from BirdNET V2.4; "
                                                        "training data: internal use only); code MIT")
