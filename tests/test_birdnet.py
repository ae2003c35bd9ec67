"""BirdNET teacher (LiteRT), its output cache and its Predictor backend, on real recordings."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from pulse.teacher import birdnet
from pulse.config import TeacherCacheConfig
from pulse.io import read_audio
from pulse.teacher.cache import Moments, build_cache, entry_path, load_cache, open_cache
from pulse.windows import WindowSpec
from tests.test_journal import replace_keeping_size_and_time

MANIFEST = Path(__file__).resolve().parents[1] / "data_manifests" / "insectset32.csv"


@pytest.fixture(scope="module")
def teacher():
    model = birdnet.BirdNET(threads=1)
    yield model
    model.close()


@pytest.fixture(scope="module")
def short_clips(shared_data):
    """The three shortest labelled recordings (real audio, about 1 s each)."""
    frame = pd.read_csv(MANIFEST).sort_values("duration_s").head(3)
    return [shared_data / "audio" / "insectset32" / p for p in frame["path"]]


def first_window(path) -> np.ndarray:
    """The first 3 s of a recording at 48 kHz, zero-padded, as a [1, 144000] batch."""
    audio = read_audio(path, birdnet.SAMPLE_RATE)[:birdnet.WINDOW_SAMPLES]
    return np.pad(audio, (0, birdnet.WINDOW_SAMPLES - len(audio)))[None]


class CountingTeacher:
    """Wraps the real teacher and counts the windows it is asked to score."""

    def __init__(self, teacher):
        self.teacher, self.windows = teacher, 0

    def predict(self, batch):
        self.windows += len(batch)
        return self.teacher.predict(batch)


def test_labels_and_orthoptera_classes():
    labels = birdnet.load_labels()
    assert len(labels) == 6522 and all("_" in label for label in labels)
    ortho = [labels[i] for i in birdnet.orthoptera_indices(labels)]
    assert len(ortho) == 41
    assert "Gryllus pennsylvanicus_Fall Field Cricket" in ortho and "Oecanthus fultoni_Snowy Tree Cricket" in ortho
    assert not any("Warbler" in label or "Frog" in label for label in ortho)


def test_real_clip_outputs_and_batch_invariance(teacher, short_clips):
    windows = np.concatenate([first_window(p) for p in short_clips] * 2)[:4]
    assert windows.shape == (4, birdnet.WINDOW_SAMPLES) and np.abs(windows).max() > 0
    four = teacher.predict(windows)
    assert four.logits.shape == (4, 6522) and four.embedding.shape == (4, birdnet.EMBED_DIM)
    assert np.isfinite(four.logits).all() and np.isfinite(four.embedding).all()
    assert four.embedding.std() > 0 and (four.embedding >= 0).all()  # average of ReLU outputs
    one = teacher.predict(windows[1:2])
    np.testing.assert_allclose(one.logits[0], four.logits[1], atol=1e-3)
    np.testing.assert_allclose(one.embedding[0], four.embedding[1], atol=1e-4)
    assert not np.allclose(four.embedding[0], four.embedding[1])  # different clips, different embeddings


def test_exposed_output_is_the_pooled_tensor(teacher, short_clips):
    """The patched graph's extra output equals the GAP tensor read without XNNPACK."""
    window = first_window(short_clips[0])
    reference = birdnet.BirdNET(threads=1, mode="no_delegates")
    expected = reference.predict(window)
    got = teacher.predict(window)
    np.testing.assert_allclose(got.embedding, expected.embedding, atol=1e-4)
    np.testing.assert_allclose(got.logits, expected.logits, atol=1e-3)


@pytest.mark.skipif(os.name != "posix", reason="a name that is not UTF-8 is a POSIX file system's")
def test_cache_of_a_recording_whose_name_is_not_utf8_is_found_again(teacher, short_clips, tmp_path):
    """Its manifest (make-manifest writes the Latin-1 byte as \\udcXX) is read back to the name: the index keeps it
    so, each rerun finds its entry, and training looks it up by the manifest's path."""
    root = tmp_path / "audio"
    root.mkdir()
    shutil.copy(short_clips[0], os.fsencode(root) + b"/caf\xe9.flac")
    (tmp_path / "m.csv").write_text("path,split\ncaf\\udce9.flac,train\n", encoding="utf-8")
    cfg = TeacherCacheConfig(manifest=str(tmp_path / "m.csv"), audio_root=str(root), out=str(tmp_path / "cache"))
    counting = CountingTeacher(teacher)
    assert list(build_cache(cfg, counting)["path"]) == ["caf\udce9.flac"] and counting.windows == 1
    build_cache(cfg, counting)
    assert counting.windows == 1 and list(load_cache(cfg.out)) == ["caf\udce9.flac"]


def test_wrong_input_shape_is_rejected(teacher):
    with pytest.raises(ValueError, match="144000"):
        teacher.predict(np.zeros((2, 44100), np.float32))


def test_cache_is_resumable_keyed_by_content_and_skips_bad_files(teacher, short_clips, tmp_path):
    root = tmp_path / "audio"
    root.mkdir()
    for i, clip in enumerate(short_clips[:2]):
        shutil.copy(clip, root / f"clip{i}.flac")
    (root / "broken.wav").write_bytes(b"not audio at all")
    pd.DataFrame({"path": ["clip0.flac", "clip1.flac", "broken.wav", "D:\\clips\\clip0.flac"]}).to_csv(
        tmp_path / "m.csv", index=False)
    cfg = TeacherCacheConfig(manifest=str(tmp_path / "m.csv"), audio_root=str(root), out=str(tmp_path / "cache"))
    counting = CountingTeacher(teacher)
    index = build_cache(cfg, counting)
    assert list(index["path"]) == ["clip0.flac", "clip1.flac"] and counting.windows == 2
    sha0, first_sha = index.set_index("path").loc[["clip0.flac", "clip1.flac"], "sha256"]
    errors = pd.read_csv(tmp_path / "cache" / "errors.csv")
    assert list(errors["path"]) == ["broken.wav", "D:\\clips\\clip0.flac"]
    assert errors["message"][1].startswith("missing file; a Windows path with a drive or share, which is not here")
    cache = load_cache(cfg.out)
    direct = teacher.predict(first_window(root / "clip0.flac"))
    np.testing.assert_allclose(cache["clip0.flac"].embedding, direct.embedding, atol=1e-5)

    build_cache(cfg, counting)  # nothing changed: nothing recomputed
    assert counting.windows == 2
    audio, sr = sf.read(root / "clip1.flac")
    sf.write(root / "clip1.flac", np.concatenate([audio, audio, audio, audio]), sr)  # several windows long now
    spec = WindowSpec.from_seconds(birdnet.WINDOW_S, birdnet.WINDOW_S - cfg.hop_s, birdnet.SAMPLE_RATE)
    expected = spec.count(len(read_audio(root / "clip1.flac", birdnet.SAMPLE_RATE)))
    index = build_cache(cfg, counting)
    assert expected > 1 and counting.windows == 2 + expected  # only the changed file is recomputed
    row = index.set_index("path").loc["clip1.flac"]
    assert row["windows"] == expected and row["sha256"] != first_sha
    assert load_cache(cfg.out)["clip1.flac"].embedding.shape == (expected, birdnet.EMBED_DIM)
    entry = open_cache(cfg.out)["clip1.flac"]  # with its embedding's moments, which training standardises by
    stored, of_rows = entry.embedding_moments(), Moments.of(entry.embedding.read())
    assert stored.count == expected
    np.testing.assert_allclose(stored.mean, of_rows.mean, rtol=1e-9)
    np.testing.assert_allclose(stored.m2, of_rows.m2, rtol=1e-9)
    other = bytearray((root / "clip0.flac").read_bytes())
    other[30] ^= 0xFF  # in the STREAMINFO's MD5: another file, of the same size, that decodes all the same
    replace_keeping_size_and_time(root / "clip0.flac", bytes(other))
    index = build_cache(cfg, counting)  # hashed again, so its entry is another file's
    assert counting.windows == 2 + expected + 1 and index.set_index("path").loc["clip0.flac", "sha256"] != sha0

    from typer.testing import CliRunner

    from pulse.cli import app
    result = CliRunner().invoke(app, ["teacher-cache", "--manifest", cfg.manifest, "--audio-root", cfg.audio_root,
                                      "--out", cfg.out, "--threads", "1"])
    assert result.exit_code == 1 and f"2 file(s) failed: see {Path(cfg.out) / 'errors.csv'}" in result.output
    # another hop into the same folder would reuse every entry under the new setting: refused
    other_hop = CliRunner().invoke(app, ["teacher-cache", "--manifest", cfg.manifest, "--audio-root", cfg.audio_root,
                                         "--out", cfg.out, "--hop-s", "0.5"])
    assert other_hop.exit_code == 2 and "holds teacher outputs made with other settings (hop_s 1.0 -> 0.5)" in \
        other_hop.output
    (tmp_path / "nopath.csv").write_text("file\nclip0.flac\n")
    no_path = CliRunner().invoke(app, ["teacher-cache", "--manifest", str(tmp_path / "nopath.csv"), "--out",
                                       str(tmp_path / "c2")])
    assert no_path.exit_code == 2 and "nopath.csv: no path column" in no_path.output


def test_a_cache_run_sweeps_what_a_killed_one_left_and_waits_its_turn(teacher, short_clips, tmp_path):
    """A kill -9 mid-write left its .npz temporary in the cache for good (only `pulse` commands that swept
    their --out removed theirs); sweeping needs one run at a time in the folder, as `pulse analyze` has."""
    from export.folder_lock import FolderInUse, exclusive

    shutil.copy(short_clips[0], tmp_path / "clip0.flac")
    pd.DataFrame({"path": ["clip0.flac"]}).to_csv(tmp_path / "m.csv", index=False)
    cfg = TeacherCacheConfig(manifest=str(tmp_path / "m.csv"), audio_root=str(tmp_path), out=str(tmp_path / "cache"))
    left = tmp_path / "cache" / "ab" / ".abcdef.npz.0123456789ab.tmp"
    with exclusive(cfg.out, "pulse teacher-cache"):  # the holder's entry, half written when it is killed
        left.parent.mkdir(parents=True)
        left.write_bytes(b"half an entry")
        with pytest.raises(FolderInUse, match="is writing into this folder"):
            build_cache(cfg, teacher)
        assert left.exists() and not (tmp_path / "cache" / "index.csv").exists()
    assert len(build_cache(cfg, teacher)) == 1 and not left.exists()


def test_a_rerun_makes_a_cut_short_or_empty_entry_and_a_damaged_index_anew(teacher, short_clips, tmp_path, caplog):
    """An entry cut short (a full disk, a partial copy) or left empty failed its file on every rerun ('BadZipFile:
    File is not a zip file', 'EOFError: No data left in file') and dropped it from the index; an index.csv cut to
    nothing stopped the run at 'No columns to parse from file', naming no file."""
    for i, clip in enumerate(short_clips[:3]):
        shutil.copy(clip, tmp_path / f"clip{i}.flac")
    pd.DataFrame({"path": [f"clip{i}.flac" for i in range(3)]}).to_csv(tmp_path / "m.csv", index=False)
    cfg = TeacherCacheConfig(manifest=str(tmp_path / "m.csv"), audio_root=str(tmp_path), out=str(tmp_path / "cache"))
    counting = CountingTeacher(teacher)
    cut, empty = (entry_path(Path(cfg.out), digest) for digest in build_cache(cfg, counting)["sha256"][:2])
    whole = load_cache(cfg.out)
    cut.write_bytes(cut.read_bytes()[:1000])
    empty.write_bytes(b"")
    index = build_cache(cfg, counting)
    assert counting.windows == 3 + 2 and list(index["path"]) == ["clip0.flac", "clip1.flac", "clip2.flac"]
    assert f"{cut}: not a whole .npz" in caplog.text and f"{empty}: not a whole .npz" in caplog.text
    np.testing.assert_array_equal(load_cache(cfg.out)["clip0.flac"].embedding, whole["clip0.flac"].embedding)
    assert pd.read_csv(Path(cfg.out) / "errors.csv").empty
    (Path(cfg.out) / "index.csv").write_bytes(b"")
    assert len(build_cache(cfg, counting)) == 3 and counting.windows == 5  # hashed again, no entry made again
    assert f"{Path(cfg.out) / 'index.csv'}: empty" in caplog.text
    (Path(cfg.out) / "index.csv").write_text("name,digest\nclip0.flac,0\n")  # whole, but another tool's table
    assert len(build_cache(cfg, counting)) == 3 and counting.windows == 5
    assert f"{Path(cfg.out) / 'index.csv'}: cut short or not a table pulse teacher-cache wrote" in caplog.text
    caplog.clear()  # an index without a column this pulse writes is another tool's too: hashed again, kept entries
    pd.read_csv(Path(cfg.out) / "index.csv").drop(columns="ctime_ns").to_csv(Path(cfg.out) / "index.csv", index=False)
    assert len(build_cache(cfg, counting)) == 3 and counting.windows == 5
    assert f"{Path(cfg.out) / 'index.csv'}: cut short or not a table pulse teacher-cache wrote" in caplog.text
    stored = dict(np.load(cut))
    np.savez(cut, **{k: stored[k] for k in ("starts_s", "logits", "embedding")})  # no moments: another tool's .npz
    made = counting.windows
    build_cache(cfg, counting)
    assert counting.windows > made and f"{cut}: no embedding_mean, embedding_m2; not an entry" in caplog.text
    assert load_cache(cfg.out)["clip0.flac"].embedding.shape == whole["clip0.flac"].embedding.shape


def test_a_full_cache_disk_stops_the_run_instead_of_failing_each_file(teacher, short_clips, tmp_path, monkeypatch):
    """Each file after a full disk ran BirdNET and then failed as an errors.csv row of its own."""
    import errno

    from export.atomic import OutputUnwritable
    from pulse.teacher import cache

    for i, clip in enumerate(short_clips[:3]):
        shutil.copy(clip, tmp_path / f"clip{i}.flac")
    pd.DataFrame({"path": [f"clip{i}.flac" for i in range(3)]}).to_csv(tmp_path / "m.csv", index=False)
    cfg = TeacherCacheConfig(manifest=str(tmp_path / "m.csv"), audio_root=str(tmp_path), out=str(tmp_path / "cache"))

    def full(target, entry):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache, "_save_entry", full)
    counting = CountingTeacher(teacher)
    with pytest.raises(OutputUnwritable, match="No space left on device; stopped, keeping what was finished"):
        build_cache(cfg, counting)
    assert counting.windows == 1 and not (tmp_path / "cache" / "errors.csv").exists()


def test_birdnet_predictor_backend_restricted_to_species(short_clips):
    from export.predictor import load_predictor

    species = ("Gryllus pennsylvanicus", "Oecanthus fultoni_Snowy Tree Cricket")
    predictor = load_predictor(birdnet.model_path(), species=species, threads=1)
    assert predictor.metadata["labels"] == ["Gryllus pennsylvanicus", "Oecanthus fultoni"]
    assert predictor.metadata["sample_rate"] == 48000 and "NC-SA" in predictor.metadata["license"]
    assert predictor.metadata["f_max"] == 15000  # BirdNET hears up to 15 kHz: 44.1 kHz files hold all of it
    out = predictor.predict(first_window(short_clips[0]))
    assert out["scores"].shape == (1, 2) and ((out["scores"] >= 0) & (out["scores"] <= 1)).all()
    assert out["embedding"].shape == (1, 1024)
    predictor.close()
    with pytest.raises(ValueError, match="Gryllus campestris"):
        load_predictor(birdnet.model_path(), backend="birdnet", species=("Gryllus campestris",))


def test_birdnet_threads_default_to_every_core_like_onnxruntime(monkeypatch):
    """LiteRT alone runs one thread; analysing with it on every core keeps the student-vs-BirdNET comparison fair:
    every core this process may use (a container's share), not the host's."""
    from pulse.model_names import open_model

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert open_model("birdnet")._teacher.threads == 3
    assert open_model("birdnet", threads=1)._teacher.threads == 1
    with pytest.raises(ValueError, match="threads must be 0"):
        open_model("birdnet", threads=-1)


def test_a_species_list_saved_by_notepad_reads_as_typed(tmp_path):
    """Notepad's UTF-8 puts a BOM first: the first species was 'not in BirdNET's labels' (shown with an invisible
    character before it); its 'Unicode' (UTF-16) was "'utf-8' codec can't decode byte 0xff", and so its 'UTF-16 BE'."""
    import codecs

    from pulse.model_names import read_species_list

    text = "# crickets\r\nGryllus pennsylvanicus\r\nOecanthus fultoni_Snowy Tree Cricket\r\n"
    for saved in (text.encode("utf-8-sig"), text.encode("utf-16"), codecs.BOM_UTF16_BE + text.encode("utf-16-be")):
        (tmp_path / "list.txt").write_bytes(saved)
        assert read_species_list(tmp_path / "list.txt") == ("Gryllus pennsylvanicus",
                                                            "Oecanthus fultoni_Snowy Tree Cricket")
    (tmp_path / "list.txt").write_bytes("Gryllus pennsylvanicus\r\nGryllus campestris_Grillo campestre \xe0\r\n"
                                        .encode("cp1252"))
    with pytest.raises(ValueError, match=r"list.txt, line 2: not UTF-8 text; save the species list as UTF-8"):
        read_species_list(tmp_path / "list.txt")


def test_analyze_birdnet_with_a_species_list(short_clips, tmp_path, caplog):
    """`pulse analyze --model birdnet --species-list FILE`: scores.csv has exactly the listed columns; a rerun with
    another list says it changed."""
    from typer.testing import CliRunner

    from pulse.cli import app

    (tmp_path / "in").mkdir()
    shutil.copy(short_clips[0], tmp_path / "in" / "clip.flac")
    (tmp_path / "slist.txt").write_text("# crickets\nGryllus pennsylvanicus\n\nOecanthus fultoni_Snowy Tree Cricket\n")
    args = ["analyze", str(tmp_path / "in"), "--model", "birdnet", "--format", "scores,csv"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out"),
                                      "--species-list", str(tmp_path / "slist.txt")])
    assert result.exit_code == 0, result.output
    scores = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert list(scores.columns) == ["file", "start_s", "end_s", "Gryllus pennsylvanicus", "Oecanthus fultoni"]
    assert len(scores) >= 1
    (tmp_path / "one.txt").write_text("Gryllus pennsylvanicus\n")  # another list: the line before the work names it
    with caplog.at_level(logging.INFO, logger="pulse.analyze"):
        CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out"), "--species-list", str(tmp_path / "one.txt")])
    assert f"settings changed (species_list {tmp_path / 'slist.txt'} -> {tmp_path / 'one.txt'})" in caplog.text
    (tmp_path / "empty.txt").write_text("# nothing\n")
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o2"),
                                      "--species-list", str(tmp_path / "empty.txt")])
    assert result.exit_code == 2 and "species list is empty" in result.output
    result = CliRunner().invoke(app, ["analyze", str(tmp_path / "in"), "--out", str(tmp_path / "o3"),
                                      "--species-list", str(tmp_path / "slist.txt")])
    assert result.exit_code == 2 and "applies to --model birdnet only" in result.output


def test_birdnet_refuses_a_device_it_would_not_run_on(tmp_path, short_clips):
    """--device cuda with --model birdnet ran on the CPU and config.json said cuda."""
    from typer.testing import CliRunner

    from pulse.cli import app

    result = CliRunner().invoke(app, ["analyze", str(short_clips[0]), "--out", str(tmp_path / "o"),
                                      "--model", "birdnet", "--device", "cuda"])
    assert result.exit_code == 2 and "BirdNET runs on the CPU here (LiteRT), not on --device cuda" in result.output


def test_a_read_only_cache_folder_is_one_line_saying_how_to_go_on(teacher, short_clips, tmp_path, monkeypatch):
    """A read-only --out stopped at the lock file with 'error: OUT/.run.lock: Read-only file system', no advice."""
    import errno

    from export import folder_lock
    from export.atomic import OutputUnwritable

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(folder_lock, "_open_lock", read_only)
    shutil.copy(short_clips[0], tmp_path / "clip0.flac")
    pd.DataFrame({"path": ["clip0.flac"]}).to_csv(tmp_path / "m.csv", index=False)
    cfg = TeacherCacheConfig(manifest=str(tmp_path / "m.csv"), audio_root=str(tmp_path), out=str(tmp_path / "cache"))
    with pytest.raises(OutputUnwritable, match="remount it read-write") as stopped:
        build_cache(cfg, teacher)
    assert stopped.value.filename == str(tmp_path / "cache")


def test_an_entry_of_an_earlier_reading_of_the_file_is_computed_again(teacher, tmp_path, monkeypatch):
    """Entries are kept by content, and a GUANO TE WAV's content did not change when pulse came to read its TE
    (2026-12-06): its entry held BirdNET's outputs over 60 s at a tenth of the song's pitch, and a rerun kept them
    for distillation. An entry whose last window is more than a hop from where it would start now is made again; so
    is one whose file read shorter then, an AudioMoth's triggered WAV without the 10 s it left out."""
    import pulse.io
    from tests.test_analyze import as_an_older_pulse, time_expanded
    from tests.test_audiomoth import FIRST, SECOND, audiomoth_wav, burst, marker

    root = tmp_path / "audio"
    root.mkdir()
    time_expanded(root / "bat.wav", 6.0)
    audiomoth_wav(root / "20240701_210000T.WAV",
                  np.concatenate([burst(FIRST, 3000, 1), marker(10 * 48000 // 256), burst(SECOND, 6000, 2)]))
    (tmp_path / "m.csv").write_text("path\nbat.wav\n20240701_210000T.WAV\n")
    cfg = TeacherCacheConfig(manifest=str(tmp_path / "m.csv"), audio_root=str(root), out=str(tmp_path / "cache"))
    counting = CountingTeacher(teacher)
    with as_an_older_pulse(monkeypatch):
        assert list(build_cache(cfg, counting)["windows"]) == [58, 1]  # 60 s and 2 s at a 1 s hop
    pulse.io._examined.cache_clear()
    index = build_cache(cfg, counting)
    assert list(index["windows"]) == [4, 11] and counting.windows == 59 + 15  # 6 s and 12 s: made again
    assert float(load_cache(cfg.out)["bat.wav"].starts_s[-1]) == 3.0
    build_cache(cfg, counting)
    assert counting.windows == 74  # read as cached now: kept


def test_the_cache_run_says_how_far_it_is_through_the_project_progress(teacher, short_clips, tmp_path, monkeypatch,
                                                                       caplog):
    """teacher-cache drew a plain tqdm bar: at a terminal each bad file's line was glued to its end ('3.15file/s]
    .../nope.flac: FileNotFoundError'), in a log file it said nothing until the end. It uses export.progress now,
    which prints log lines above the bar and, off a terminal, writes a progress line now and then."""
    import export.progress

    monkeypatch.setattr(export.progress, "LOG_EVERY_S", 0.0)
    pd.DataFrame({"path": [short_clips[0].name, "nope.flac"]}).to_csv(tmp_path / "m.csv", index=False)
    cfg = TeacherCacheConfig(manifest=str(tmp_path / "m.csv"), audio_root=str(short_clips[0].parent),
                             out=str(tmp_path / "cache"))
    with caplog.at_level(logging.INFO, logger="export.progress"):
        assert len(build_cache(cfg, teacher)) == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "export.progress"]
    assert any(line.startswith("teacher cache: 50% (1 of 2 file)") for line in lines), lines
    assert f"{short_clips[0].parent / 'nope.flac'}: FileNotFoundError: missing file" in caplog.text
