"""`pulse segments`: clips of a run's detections, cut from the recordings at their own rate, to verify by ear."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import PurePath

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from pulse.analyze import analyze
from pulse.cli import app
from pulse.config import InferConfig, SegmentConfig
from pulse.embeddings import embed
from pulse import segments
from pulse.io import open_audio
from pulse.segments import choose, extract_segments
from tests.test_analyze import as_an_older_pulse, level_meter_onnx, song, time_expanded
from tests.test_io import rot, unfinished, without_length
from tests.test_journal import replace_keeping_size_and_time

RATE = 48000


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return level_meter_onnx(tmp_path_factory.mktemp("model") / "meter.onnx")


@pytest.fixture
def run(tmp_path, model):
    """A stereo 48 kHz night with song at 0-6 s and 12-15 s, analysed with the level meter into `out`."""
    left = np.r_[song(6.0, RATE), np.zeros(6 * RATE, np.float32), song(3.0, RATE), np.zeros(3 * RATE, np.float32)]
    sf.write(tmp_path / "night.wav", np.stack([left, 0.5 * left], axis=1), RATE, subtype="FLOAT")
    analyze([tmp_path / "night.wav"], tmp_path / "out", InferConfig(model=str(model), min_conf=0.5))
    return tmp_path


def test_clips_are_the_recordings_own_audio_per_species(run):
    detections = pd.read_csv(run / "out" / "detections.csv")
    summary = extract_segments(run / "out", run / "clips", SegmentConfig(seq_length=4.0))
    assert (summary.clips_written, summary.files_failed) == (len(detections), 0)
    recording, _ = sf.read(run / "night.wav", dtype="float32", always_2d=True)
    species = sorted(detections["Scientific name"].unique())
    assert sorted(p.name for p in (run / "clips").iterdir() if p.is_dir()) == species
    assert set(detections["Start (s)"]) == {0.0, 3.0, 12.0}  # the song's windows, none of the silence
    columns = ["Start (s)", "End (s)", "Scientific name", "Confidence"]
    for begin, end, label, confidence in detections[columns].itertuples(index=False):
        (clip,) = (run / "clips" / label).glob(f"{confidence:.3f}_night_{begin:g}s.wav")
        audio, rate = sf.read(clip, dtype="float32", always_2d=True)
        # 3 s windows widened to 4 s around their middle, but never before the recording's start.
        start = max(0.0, (begin + end) / 2 - 2.0)
        assert (rate, audio.shape) == (RATE, (4 * RATE, 2))  # its rate and both channels
        expected = recording[int(start * RATE):int(start * RATE) + 4 * RATE]
        np.testing.assert_allclose(audio, expected, atol=1 / 2**15)  # 16-bit WAV


def test_a_clip_at_the_end_of_a_flac_without_its_length_is_cut(tmp_path, model):
    """The last window of a FLAC whose header lacks its length reaches where decoding stops, which a plain
    read cannot (libsndfile reads it, then soundfile's seek to that end fails)."""
    recording = song(7.5, RATE)
    sf.write(tmp_path / "pipe.flac", recording, RATE)
    without_length(tmp_path / "pipe.flac")
    analyze([tmp_path / "pipe.flac"], tmp_path / "out", InferConfig(model=str(model), min_conf=0.5))
    detections = pd.read_csv(tmp_path / "out" / "detections.csv")
    assert detections["End (s)"].max() == pytest.approx(7.5)
    summary = extract_segments(tmp_path / "out", tmp_path / "clips", SegmentConfig(seq_length=3.0))
    assert (summary.clips_written, summary.clips_failed) == (len(detections), 0)
    last = sorted((tmp_path / "clips").rglob("*_pipe_6s.wav"))  # the last window, of each species found in it
    assert len(last) == (detections["Start (s)"] == 6.0).sum() > 0
    for clip in last:  # 3 s up to the end (the window's 1.5 s widened to --seq-length, back from the end)
        np.testing.assert_allclose(sf.read(clip, dtype="float32")[0], recording[int(4.5 * RATE):], atol=1 / 2**15)


def test_clips_of_one_recording_are_cut_from_one_open_file(tmp_path, model, monkeypatch):
    """In a FLAC without its length a seek in a newly opened file decodes from the start (a 600 s one: 27 s for
    204 clips, 1.1 s from one open file), so clips are cut in recording order from one open file, backwards
    too where widened clips overlap, and it is opened again only after a clip reaching the end."""
    recording = song(30.0, RATE)
    sf.write(tmp_path / "pipe.flac", recording, RATE)
    without_length(tmp_path / "pipe.flac")
    analyze([tmp_path / "pipe.flac"], tmp_path / "out", InferConfig(model=str(model), min_conf=0.5, overlap=1.5))
    opened = []
    monkeypatch.setattr(segments, "open_audio", lambda *args: opened.append(args) or open_audio(*args))
    summary = extract_segments(tmp_path / "out", tmp_path / "clips", SegmentConfig(seq_length=4.0))
    detections = pd.read_csv(tmp_path / "out" / "detections.csv")
    assert summary.clips_written == len(detections) > 10 and summary.clips_failed == 0
    at_the_end = (detections["End (s)"] == 30.0).sum()
    assert len(opened) == at_the_end  # the first open, then one after each clip reaching the end but the last
    columns = ["Start (s)", "End (s)", "Scientific name", "Confidence"]
    for begin, end, label, confidence in detections[columns].itertuples(index=False):
        (clip,) = (tmp_path / "clips" / label).glob(f"{confidence:.3f}_pipe_{begin:g}s.wav")
        start = int(round(min(max(0.0, (begin + end) / 2 - 2.0), 26.0) * RATE))
        np.testing.assert_allclose(sf.read(clip, dtype="float32")[0], recording[start:start + 4 * RATE], atol=1 / 2**15)


def test_clips_of_a_wav_whose_header_was_never_finished_are_its_audio(tmp_path, model):
    recording = np.r_[np.zeros(3 * RATE, np.float32), song(3.0, RATE)]
    sf.write(tmp_path / "night.wav", recording, RATE, subtype="FLOAT")
    unfinished(tmp_path / "night.wav")
    analyze([tmp_path / "night.wav"], tmp_path / "out", InferConfig(model=str(model), min_conf=0.5))
    summary = extract_segments(tmp_path / "out", tmp_path / "clips", SegmentConfig(seq_length=3.0))
    clips = sorted((tmp_path / "clips").rglob("*_night_3s.wav"))
    assert summary.clips_written == len(clips) > 0 and summary.clips_failed == 0
    for clip in clips:
        np.testing.assert_array_equal(sf.read(clip, dtype="float32")[0], recording[3 * RATE:])


def test_plots_are_the_clips_spectrograms_and_are_added_to_an_earlier_runs_clips(run):
    from PIL import Image

    first = extract_segments(run / "out", run / "clips", SegmentConfig(seq_length=4.0))
    assert first.plots_written == 0 and not list((run / "clips").rglob("*.png"))
    again = extract_segments(run / "out", run / "clips", SegmentConfig(seq_length=4.0), plots=True)
    assert (again.clips_written, again.clips_kept, again.plots_written) == (0, first.clips_written, first.clips_written)
    clips = sorted((run / "clips").rglob("*.wav"))
    assert sorted(p.with_suffix(".wav") for p in (run / "clips").rglob("*.png")) == clips
    with Image.open(clips[0].with_suffix(".png")) as image:
        assert image.size == (1000, 360)
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 10  # a drawn spectrogram, not a blank canvas
    third = extract_segments(run / "out", run / "clips", SegmentConfig(seq_length=4.0), plots=True)
    assert (third.clips_kept, third.plots_written) == (first.clips_written, 0)  # all there: nothing redone


def test_a_plots_box_spans_the_models_band_as_the_raven_table_does(tmp_path, model, monkeypatch):
    """On a 192 kHz (ultrasonic AudioMoth) recording the box spanned the clip's whole 0-96 kHz, as if the model had
    used the ultrasound; it hears its band only, which the run's Raven table gives as Low and High Freq."""
    from pulse import plots

    sf.write(tmp_path / "moth.wav", song(6.0, 192_000), 192_000)
    analyze([tmp_path / "moth.wav"], tmp_path / "out", InferConfig(model=str(model), min_conf=0.5))
    boxes = []
    drawn = plots.spectrogram_figure
    monkeypatch.setattr(plots, "spectrogram_figure", lambda audio, rate, box, *args: boxes.append(box) or drawn(
        audio, rate, box, *args))
    summary = extract_segments(tmp_path / "out", tmp_path / "clips", SegmentConfig(seq_length=3.0), plots=True)
    raven = pd.read_csv(tmp_path / "out" / "moth.pulse.selection.table.txt", sep="\t")
    assert summary.plots_written == len(boxes) == len(raven) > 0
    assert {(b["low_hz"].item(), b["high_hz"].item()) for b in boxes} == {(500.0, 22050.0)} == set(
        zip(raven["Low Freq (Hz)"], raven["High Freq (Hz)"]))


def test_a_plots_box_stops_at_the_clips_nyquist_frequency(tmp_path, monkeypatch):
    """A 32 kHz recording holds nothing above 16 kHz: its box stops there, not at the band top of 22.05 kHz."""
    from pulse import plots
    from pulse.segments import clip_plot

    boxes = []
    monkeypatch.setattr(plots, "save_png", lambda *args: None)
    monkeypatch.setattr(plots, "spectrogram_figure", lambda audio, rate, box, *args: boxes.append(box))
    d = {"file": "night.wav", "start_s": 1.0, "end_s": 4.0, "label": "Gryllus campestris",
         "common_name": "Field Cricket", "score": 0.9}
    clip_plot(np.zeros((32000 * 4, 1), np.float32), 32000, 0.5, d, tmp_path / "clip.png", (500.0, 22050.0))
    (box,) = boxes
    assert (box["low_hz"].item(), box["high_hz"].item(), box["start_s"].item()) == (500.0, 16000.0, 0.5)


def test_a_recording_replaced_since_the_run_is_not_cut(run, model, caplog):
    """Another card's recording copied over the analysed one (same name, size and times): its clips would be of
    other audio under the first recording's detections, so they are refused, with a line saying why."""
    audio, _ = sf.read(run / "night.wav", dtype="float32", always_2d=True)
    replace = run / "other.wav"
    sf.write(replace, audio[::-1], RATE, subtype="FLOAT")
    replace_keeping_size_and_time(run / "night.wav", replace.read_bytes())
    with caplog.at_level(logging.WARNING):
        summary = extract_segments(run / "out", run / "clips", SegmentConfig())
    assert (summary.clips_written, summary.files_failed) == (0, 1)
    assert "changed since it was analysed" in caplog.text
    errors = pd.read_csv(run / "clips" / "errors.csv")
    assert list(errors["stage"]) == ["open"] and "run `pulse analyze` on it again" in errors["message"][0]
    analyze([run / "night.wav"], run / "out", InferConfig(model=str(model), min_conf=0.5))  # analysed anew
    assert extract_segments(run / "out", run / "clips2", SegmentConfig()).clips_written > 0


def test_a_recording_pulse_now_reads_otherwise_is_not_cut_at_its_earlier_readings_times(tmp_path, model, monkeypatch,
                                                                                       caplog):
    """A time-expansion WAV (GUANO TE: 10) analysed before TE was read has its detections at that reading's times,
    ten times too late: clips were cut at them from the recording as read now, other audio or "after the
    recording's end". It is refused in one line until analysed again; the recordings beside it are cut (an MP3, whose
    samples but not times changed since, too; and one whose last 1.5 s the run's --min-len 2 left out)."""
    (tmp_path / "in").mkdir()
    time_expanded(tmp_path / "in" / "bat.wav", 6.0)
    sf.write(tmp_path / "in" / "plain.wav", song(4.5, RATE), RATE)
    sf.write(tmp_path / "in" / "lossy.mp3", song(4.0, RATE), RATE)
    cfg = InferConfig(model=str(model), min_conf=0.5, min_len=2.0)
    with as_an_older_pulse(monkeypatch):
        analyze([tmp_path / "in"], tmp_path / "out", cfg)
    with caplog.at_level(logging.WARNING):
        summary = extract_segments(tmp_path / "out", tmp_path / "clips", SegmentConfig())
    assert (summary.files_failed, summary.clips_failed) == (1, 0) and summary.clips_written > 0
    assert f"{tmp_path / 'in' / 'bat.wav'}: read otherwise by this version of pulse" in caplog.text
    errors = pd.read_csv(tmp_path / "clips" / "errors.csv")
    assert list(errors["path"]) == [str(tmp_path / "in" / "bat.wav")] and list(errors["stage"]) == ["open"]
    analyze([tmp_path / "in"], tmp_path / "out", cfg)  # analysed anew
    again = extract_segments(tmp_path / "out", tmp_path / "clips2", SegmentConfig())
    assert (again.files_failed, again.clips_failed) == (0, 0) and again.clips_written > summary.clips_written


def test_a_min_conf_below_the_analysis_own_is_said_to_cut_nothing_more(run, caplog):
    """The run kept only detections at 0.5 or above: asking for clips from 0.2 gets no more of them, and says so
    rather than leaving a user to think the quieter detections were drawn from too."""
    with caplog.at_level(logging.WARNING):
        lower = extract_segments(run / "out", run / "low", SegmentConfig(min_conf=0.2))
    assert "--min-conf 0.2 is below the 0.5 the analysis kept detections at" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        same = extract_segments(run / "out", run / "same", SegmentConfig(min_conf=0.5))
    assert lower.clips_written == same.clips_written > 0 and "below the" not in caplog.text
    with caplog.at_level(logging.WARNING):  # not given: the default is no request to warn about
        extract_segments(run / "out", run / "default", SegmentConfig())
    assert "below the" not in caplog.text



def test_clips_are_cut_beside_a_config_json_that_is_not_pulse_analyzes(tmp_path):
    """A results folder whose config.json another tool wrote (a list, or other meanings of its keys): the clips
    are cut all the same, from the table's absolute recording paths, and no setting is read from it."""
    sf.write(tmp_path / "night.wav", song(6.0, RATE), RATE)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "detections.csv").write_text(
        "Start (s),End (s),Scientific name,Common name,Confidence,File\n"
        f"0.0,3.0,Gryllus campestris,Field Cricket,0.9,{tmp_path / 'night.wav'}\n", encoding="utf-8")
    for i, foreign in enumerate(([{"working_dir": "/elsewhere"}], {"working_dir": 1, "config": ["min_conf", 0.9]},
                                 {"model_metadata": {"f_min": "low"}}, {"model_metadata": {"f_min": None}})):
        (tmp_path / "results" / "config.json").write_text(json.dumps(foreign), encoding="utf-8")
        assert extract_segments(tmp_path / "results", tmp_path / f"clips{i}", SegmentConfig()).clips_written == 1

def test_clips_are_not_cut_into_a_folder_another_run_is_cutting_into(run):
    from export.folder_lock import FolderInUse, exclusive

    with exclusive(run / "clips", "pulse segments"):
        with pytest.raises(FolderInUse, match="pulse segments .* is writing into this folder"):
            extract_segments(run / "out", run / "clips", SegmentConfig())
        assert [p.name for p in (run / "clips").iterdir()] == [".run.lock"]  # not even segments.json
    assert extract_segments(run / "out", run / "clips", SegmentConfig()).clips_written > 0


def test_draw_is_seeded_per_species_and_respects_min_conf():
    rows = [{"label": "A" if i % 2 else "B", "score": i / 20, "file": f"f{i}.wav", "start_s": 0.0, "end_s": 3.0}
            for i in range(20)]
    cfg = SegmentConfig(min_conf=0.3, max_segments=3, seed=1)
    chosen = choose(rows, cfg)
    assert [d["label"] for d in chosen] == ["A"] * 3 + ["B"] * 3 and min(d["score"] for d in chosen) >= 0.3
    assert chosen == choose(rows, cfg) and chosen != choose(rows, SegmentConfig(min_conf=0.3, max_segments=3, seed=2))
    assert len(choose(rows, SegmentConfig(min_conf=0.0, max_segments=100))) == 20


def test_a_rerun_keeps_clips_and_a_missing_recording_is_one_line(run, caplog):
    runner = CliRunner()
    first = runner.invoke(app, ["segments", str(run / "out"), "--out", str(run / "clips")])
    assert first.exit_code == 0, first.output
    written = int(first.output.split(" clip(s) written")[0].split()[-1])
    again = runner.invoke(app, ["segments", str(run / "out"), "--out", str(run / "clips")])
    assert again.exit_code == 0 and f"0 clip(s) written, {written} kept" in again.output
    (run / "night.wav").rename(run / "moved.wav")
    with caplog.at_level(logging.WARNING):
        missing = runner.invoke(app, ["segments", str(run / "out"), "--out", str(run / "new_clips")])
    assert missing.exit_code == 1 and "1 recording(s) unreadable" in missing.output
    assert caplog.text.count("night.wav: no such file") == 1  # said once, not once per detection
    (row,) = pd.read_csv(run / "new_clips" / "errors.csv").itertuples()
    assert row.path.endswith("night.wav") and row.message == "no such file or folder"
    bad = runner.invoke(app, ["segments", str(run / "nothing"), "--out", str(run / "c")])
    assert bad.exit_code == 2 and "cannot read the detections" in bad.output and "Traceback" not in bad.output


def test_ctrl_c_says_how_many_clips_are_done_and_a_rerun_cuts_the_rest(run, monkeypatch, caplog):
    """Ctrl-C ended the run in silence (exit 130); now one line says what is done and that the same command goes on."""
    write_bytes, written = segments.write_bytes, []

    def ctrl_c_at_the_second_clip(path, data):
        if written:
            raise KeyboardInterrupt
        written.append(path)
        write_bytes(path, data)

    monkeypatch.setattr(segments, "write_bytes", ctrl_c_at_the_second_clip)
    command = ["segments", str(run / "out"), "--out", str(run / "clips")]
    with caplog.at_level(logging.WARNING):
        assert CliRunner().invoke(app, command).exit_code == 130
    assert (f"interrupted: 1 clip(s) written, 0 kept from an earlier run, in {run / 'clips'}; run the same command "
            "again to cut the rest") in caplog.text
    assert list((run / "clips").rglob("*.wav")) == written
    monkeypatch.undo()
    again = CliRunner().invoke(app, command)
    detections = len(pd.read_csv(run / "out" / "detections.csv"))
    assert again.exit_code == 0 and f"{detections - 1} clip(s) written, 1 kept from an earlier run" in again.output


@pytest.mark.parametrize("suffix, options, said", [
    (".wav", [], "interrupted: 1 clip(s) written"),
    (".png", ["--plots"], "interrupted: 1 clip(s) written, 0 kept from an earlier run, 1 plot(s) written"),
])
def test_ctrl_c_as_a_clip_or_plot_is_moved_into_place_counts_it(run, monkeypatch, caplog, suffix, options, said):
    """Python raises a Ctrl-C that came during a system call as the call returns: one that came while a clip was
    moved into place (os.replace) left it there uncounted, and the line said one clip fewer than were on disk (1 of
    105 runs interrupted under load, bench/ctrl_c_stress.py); so was a plot, and the line did not count plots."""
    import signal

    replace = os.replace

    def ctrl_c_as_it_returns(src, dst):
        replace(src, dst)
        if str(dst).endswith(suffix):
            monkeypatch.setattr(os, "replace", replace)
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(os, "replace", ctrl_c_as_it_returns)
    with caplog.at_level(logging.WARNING):
        command = ["segments", str(run / "out"), "--out", str(run / "clips"), *options]
        assert CliRunner().invoke(app, command).exit_code == 130
    assert said in caplog.text and len(list((run / "clips").rglob(f"*{suffix}"))) == 1


def test_ctrl_c_while_a_clip_is_encoded_stops_the_run(run, monkeypatch):
    """libsndfile writes a clip into memory through callbacks into Python, and a Ctrl-C that came meanwhile was
    raised in one, where cffi prints it and goes on ("Exception ignored from cffi callback"): the run went on to its
    end. Here Ctrl-C comes in the first callback libsndfile makes while writing the first clip."""
    import signal
    import sys

    write = sf.write

    def ctrl_c_at_the_first_callback(frame, event, arg):
        if event == "call" and frame.f_code.co_name.startswith("vio_"):  # soundfile's callbacks for file objects
            sys.setprofile(None)
            signal.raise_signal(signal.SIGINT)

    def ctrl_c_while_writing(*args, **kwargs):
        sys.setprofile(ctrl_c_at_the_first_callback)
        try:
            write(*args, **kwargs)
        finally:
            sys.setprofile(None)

    monkeypatch.setattr(sf, "write", ctrl_c_while_writing)
    result = CliRunner().invoke(app, ["segments", str(run / "out"), "--out", str(run / "clips")])
    assert result.exit_code == 130 and not list((run / "clips").rglob("*.wav"))


@pytest.mark.parametrize("again", [False, True])
def test_ctrl_c_as_a_file_is_closed_stops_the_run_having_closed_it_once(run, monkeypatch, again):
    """soundfile forgets a closed file only once libsndfile's sf_close has returned, and Python raises a Ctrl-C that
    came during the call as it returns: the file, freed, was closed again (by the run's clean-up or the garbage
    collector), and the run aborted with "double free or corruption" (1 of 100 runs interrupted under load,
    bench/ctrl_c_stress.py). Here Ctrl-C comes in the run's first sf_close: of a recording, or `again` of a clip an
    earlier run cut (checked for its length); a second close of a freed file is noted instead of made."""
    import gc
    import signal

    lib, open_files, closed_twice, pressed = sf._snd, set(), [], []

    class Libsndfile:
        def __getattr__(self, name):
            function = getattr(lib, name)
            if not name.startswith("sf_open"):
                return function

            def opened(*args):
                open_files.add(pointer := function(*args))
                return pointer
            return opened

        def sf_close(self, pointer):
            if pointer not in open_files:
                closed_twice.append(pointer)
                return 0
            open_files.remove(pointer)
            error = lib.sf_close(pointer)
            if not pressed:
                pressed.append(signal.raise_signal(signal.SIGINT))
            return error

    command = ["segments", str(run / "out"), "--out", str(run / "clips")]
    if again:
        assert CliRunner().invoke(app, command).exit_code == 0
    monkeypatch.setattr(sf, "_snd", Libsndfile())
    exit_code = CliRunner().invoke(app, command).exit_code
    gc.collect()  # the run's files, as a garbage collector closes them
    assert exit_code == 130 and not closed_twice


def test_ctrl_c_while_a_clip_is_read_through_python_stops_the_run(tmp_path, model, monkeypatch):
    """A WAV whose recorder left out a pad byte is read through a Python file object, whose callbacks libsndfile
    calls, and a Ctrl-C that came while a clip was read was raised in one, printed by cffi and lost: the run went on
    to its end (2 of 100 tries, SIGINT at random times into runs over 300 such files). Here Ctrl-C comes in the first
    callback of the first clip's read."""
    import signal
    import struct
    import sys

    samples = (song(6.0, RATE) * 32767).astype("<i2").tobytes()
    unpadded = b"LIST" + struct.pack("<I", 19) + b"INFOISFT" + struct.pack("<I", 7) + b"Rec1.0\0"
    body = (b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, RATE, 2 * RATE, 2, 16) + unpadded
            + b"data" + struct.pack("<I", len(samples)) + samples)
    (tmp_path / "night.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    analyze([tmp_path / "night.wav"], tmp_path / "out", InferConfig(model=str(model), min_conf=0.5))
    read = segments._Recordings.read

    def ctrl_c_at_the_first_callback(frame, event, arg):
        if event == "call" and frame.f_code.co_name.startswith("vio_"):  # soundfile's callbacks for file objects
            sys.setprofile(None)
            signal.raise_signal(signal.SIGINT)

    def ctrl_c_while_reading(self, first, last):
        sys.setprofile(ctrl_c_at_the_first_callback)
        try:
            return read(self, first, last)
        finally:
            sys.setprofile(None)

    monkeypatch.setattr(segments._Recordings, "read", ctrl_c_while_reading)
    result = CliRunner().invoke(app, ["segments", str(tmp_path / "out"), "--out", str(tmp_path / "clips")])
    assert result.exit_code == 130 and not list((tmp_path / "clips").rglob("*.wav")), result.output


def _write_results(folder, rows) -> None:
    """A detections.csv as `pulse analyze` writes it: (start, end, label, confidence, file) rows."""
    folder.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows, columns=["Start (s)", "End (s)", "Scientific name", "Confidence", "File"])
    table.insert(3, "Common name", table["Scientific name"])
    table.to_csv(folder / "detections.csv", index=False)


def test_names_stay_inside_out_and_apart_and_a_rerun_needs_the_same_settings(tmp_path):
    for card in ("AM01", "AM02"):
        (tmp_path / card).mkdir()
        sf.write(tmp_path / card / "REC001.wav", song(6.0, RATE), RATE, subtype="PCM_24")
    rows = [(0.0, 3.0, label, 0.9, str(tmp_path / card / "REC001.wav"))
            for label in ("../escape", "/tmp/abs", "Gryllus/Acheta") for card in ("AM01", "AM02")]
    _write_results(tmp_path / "run", rows)
    summary = extract_segments(tmp_path / "run", tmp_path / "clips", SegmentConfig(max_segments=1, seed=3))
    assert summary.clips_written == 3
    written = sorted(p.relative_to(tmp_path / "clips").as_posix() for p in (tmp_path / "clips").rglob("*.wav"))
    assert [name.split("/")[0] for name in written] == ["Gryllus_Acheta", "_escape", "_tmp_abs"]
    assert all("REC001_" in name for name in written)  # two cards' REC001: told apart by their path
    assert sf.info(str((tmp_path / "clips").joinpath(written[0]))).subtype == "PCM_24"  # the source's depth
    runner = CliRunner()
    other = runner.invoke(app, ["segments", str(tmp_path / "run"), "--out", str(tmp_path / "clips")])
    assert other.exit_code == 2 and "other settings" in other.output  # one folder, one draw
    (tmp_path / "clips" / "segments.json").write_text('{"results": ')  # cut short: json's message named no file
    broken = runner.invoke(app, ["segments", str(tmp_path / "run"), "--out", str(tmp_path / "clips")])
    assert broken.exit_code == 2 and f"{tmp_path / 'clips' / 'segments.json'}: not valid JSON" in broken.output
    more = extract_segments(tmp_path / "run", tmp_path / "more", SegmentConfig(max_segments=2, seed=3))
    assert {p.name for p in (tmp_path / "more").rglob("*.wav")} >= {p.name for p in (tmp_path / "clips").rglob("*.wav")}
    assert more.clips_written == 6


def test_relative_paths_start_where_analyze_ran_and_a_bad_span_is_one_clip_error(run, monkeypatch, tmp_path_factory):
    detections = pd.read_csv(run / "out" / "detections.csv")
    detections["File"] = "night.wav"  # as given to `pulse analyze` run inside `run`
    late = detections.iloc[:1].assign(**{"Start (s)": 90.0, "End (s)": 93.0, "Confidence": 0.99})
    pd.concat([detections, late]).to_csv(run / "out" / "detections.csv", index=False)
    config = json.loads((run / "out" / "config.json").read_text())
    (run / "out" / "config.json").write_text(json.dumps({**config, "working_dir": str(run)}))
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    summary = extract_segments(run / "out", run / "clips")
    assert (summary.clips_written, summary.clips_failed, summary.files_failed) == (len(detections), 1, 0)
    (row,) = pd.read_csv(run / "clips" / "errors.csv").itertuples()
    assert row.stage == "clip" and "after the recording's end" in row.message


def test_a_long_merged_run_is_cut_to_its_first_minute(tmp_path):
    from pulse.config import MAX_CLIP_S

    sf.write(tmp_path / "long.flac", song(75.0, 8000, freq=1000), 8000)
    _write_results(tmp_path / "run", [(0.0, 75.0, "Gryllus campestris", 0.8, str(tmp_path / "long.flac"))])
    extract_segments(tmp_path / "run", tmp_path / "clips")
    (clip,) = (tmp_path / "clips").rglob("*.wav")
    assert sf.info(str(clip)).duration == pytest.approx(MAX_CLIP_S)


def test_a_clip_the_recordings_end_shortens_is_a_row_saying_which_part_it_is(tmp_path):
    """A recording shorter than --seq-length gives a shorter clip, said nowhere: a listener took it for the clip
    asked for. It is now a row of errors.csv (and counted in the last line), as a clip over a FLAC's damage is."""
    sf.write(tmp_path / "short.wav", song(2.0, RATE), RATE)
    sf.write(tmp_path / "long.wav", song(9.0, RATE), RATE)
    _write_results(tmp_path / "run", [(0.0, 2.0, "A", 0.9, str(tmp_path / "short.wav")),
                                      (3.0, 6.0, "A", 0.8, str(tmp_path / "long.wav"))])
    command = ["segments", str(tmp_path / "run"), "--out", str(tmp_path / "clips"), "--seq-length", "4"]
    for kept in (0, 2):  # and again when a rerun keeps the clips
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 0 and f"{kept} kept from an earlier run" in result.output
        assert "0 clip(s) failed, 1 shortened (errors.csv) -> " in result.output
        (row,) = pd.read_csv(tmp_path / "clips" / "errors.csv").itertuples()
        assert (row.path, row.stage, row.error_type) == (str(tmp_path / "short.wav"), "clip", "Shortened")
        assert row.message == "0-2 s: the recording ends at 2.00 s: the clip is the 0.00-2.00 s before it"
    assert sorted(round(sf.info(str(p)).duration, 3) for p in (tmp_path / "clips").rglob("*.wav")) == [2.0, 4.0]


def test_audio_root_an_excel_table_and_bad_tables_or_out_folders_are_one_line(run, tmp_path_factory):
    moved = tmp_path_factory.mktemp("moved")
    (run / "night.wav").rename(moved / "night.wav")
    detections = pd.read_csv(run / "out" / "detections.csv").assign(File="night.wav")
    excel = run / "excel"
    excel.mkdir()
    (excel / "detections.csv").write_bytes(b"\xef\xbb\xbf" + detections.to_csv(index=False).encode())  # BOM
    summary = extract_segments(excel, run / "clips", SegmentConfig(), audio_root=moved)
    assert (summary.clips_written, summary.files_failed) == (len(detections), 0)
    runner = CliRunner()
    (run / "file").write_text("not a folder")
    for table, out, message in [
            (excel, run / "file", "--out must be a folder"),
            (run / "out" / "errors.csv", run / "c1", "not a `pulse analyze` detections.csv"),
            (run / "out" / "config.json", run / "c2", "not a `pulse analyze` detections.csv")]:
        result = runner.invoke(app, ["segments", str(table), "--out", str(out)])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
    cut_short = excel.parent / "cut_short"
    cut_short.mkdir()
    text = (excel / "detections.csv").read_text(encoding="utf-8-sig")
    (cut_short / "detections.csv").write_text(text[:text.rindex(",")])  # the last row loses its File
    result = runner.invoke(app, ["segments", str(cut_short), "--out", str(run / "c3")])
    assert result.exit_code == 2 and f"line {len(detections) + 1}: no recording" in result.output
    # The analysis rerun into the same folder with another threshold: another table, another --out.
    (excel / "detections.csv").write_text(detections.iloc[:1].to_csv(index=False))
    again = runner.invoke(app, ["segments", str(excel), "--out", str(run / "clips"), "--audio-root", str(moved)])
    assert again.exit_code == 2 and "other results or with other settings" in again.output


@pytest.mark.skipif(os.name != "posix", reason="a name that is not UTF-8 is a POSIX file system's")
def test_a_file_name_that_is_not_utf8_is_analysed_cut_and_embedded(tmp_path, model):
    """A Latin-1 name, as unzipping an old Windows archive leaves it: soundfile could not open it, and its path
    then stopped the run's bookkeeping (exit 2, no errors.csv). Tables write its byte as \\udcXX (still UTF-8),
    and `pulse segments` reads that back to the name."""
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(os.fsencode(folder) + b"/caf\xe9_20250701_213000.wav", song(6.0, RATE), RATE)  # soundfile needs bytes
    sf.write(folder / "ok.wav", song(6.0, RATE), RATE)
    formats = ("csv", "raven", "scores", "audacity", "kaleidoscope")
    summary = analyze([folder], tmp_path / "out", InferConfig(model=str(model), min_conf=0.5, formats=formats))
    assert (summary.files_done, summary.files_failed) == (2, 0)
    for table in ("detections.csv", "scores.csv", "kaleidoscope.csv", "errors.csv"):
        (tmp_path / "out" / table).read_text(encoding="utf-8")  # readable as UTF-8
    detections = pd.read_csv(tmp_path / "out" / "detections.csv")
    assert set(detections["File"].map(lambda f: f.rsplit("/", 1)[-1])) == {"caf\\udce9_20250701_213000.wav", "ok.wav"}
    clips = extract_segments(tmp_path / "out", tmp_path / "clips", SegmentConfig(seq_length=3.0))
    assert (clips.clips_written, clips.files_failed) == (len(detections), 0)
    embedded = embed([folder], tmp_path / "emb", InferConfig(model=str(model)))
    assert (embedded.files_done, embedded.files_failed) == (2, 0)
    assert embed([folder], tmp_path / "emb", InferConfig(model=str(model))).files_skipped == 2


def test_names_near_the_file_system_limit_get_outputs_clips_and_embeddings_of_their_own(tmp_path, model):
    """A recording named near 255 bytes (the limit of ext4, APFS, exFAT) failed with "File name too long": its Raven
    table and clips in `pulse analyze` and `pulse segments`, and `pulse embeddings` stopped the whole batch there.
    One whose outputs fit but whose temporary (`.NAME.XXXX.tmp`) did not failed too. Such outputs are now cut short
    with a hash of the whole name, so two long names that begin alike keep theirs apart."""
    folder = tmp_path / "in"
    folder.mkdir()
    names = ("ü" * 120 + "_north.wav", "ü" * 120 + "_south.wav", "f" * 220 + ".wav")  # 253 bytes; 224
    for name in names:
        sf.write(folder / name, song(6.0, RATE), RATE)
    cfg = InferConfig(model=str(model), min_conf=0.5, formats=("raven", "audacity", "csv"))
    summary = analyze([folder], tmp_path / "out", cfg)
    assert (summary.files_done, summary.files_failed) == (3, 0)
    tables = sorted((tmp_path / "out").glob("*.pulse.selection.table.txt"))
    assert len(tables) == 3 and all(len(os.fsencode(t.name)) <= 255 for t in tables)
    assert {pd.read_csv(t, sep="\t")["Begin Path"].iloc[0] for t in tables} == {str(folder / n) for n in names}
    assert analyze([folder], tmp_path / "out", cfg).files_skipped == 3  # a rerun finds them
    clips = extract_segments(tmp_path / "out", tmp_path / "clips", SegmentConfig(seq_length=3.0))
    assert (clips.clips_written, clips.files_failed) == (len(pd.read_csv(tmp_path / "out" / "detections.csv")), 0)
    embedded = embed([folder], tmp_path / "emb", InferConfig(model=str(model)))
    assert (embedded.files_done, embedded.files_failed) == (3, 0)
    assert embed([folder], tmp_path / "emb", InferConfig(model=str(model))).files_skipped == 3


def windows_refuses(name: str) -> bool:
    """A name FAT, exFAT and NTFS refuse (Linux's FAT driver: "Invalid argument") or Windows cannot open: one of
    these characters, a dot or space at its end, or a device's name before its first dot (CON.wav, aux.txt)."""
    return (any(c in ':*?"<>|\\' or ord(c) < 32 for c in name) or name.endswith((".", " "))
            or name.partition(".")[0].rstrip(" ").upper() in {"CON", "PRN", "AUX", "NUL", *(
                f"{port}{n}" for port in ("COM", "LPT") for n in "0123456789\u00b9\u00b2\u00b3")})


def test_recordings_named_as_linux_allows_get_outputs_an_sd_card_and_windows_take(tmp_path, model):
    """2025-07-01T21:30:00.wav (a timestamp with colons), what?.wav and Site./a|b.wav are legal on ext4, and their
    Raven tables, embeddings and clips took those names: a FAT or exFAT --out (an SD card, a USB drive) refused each
    ("Invalid argument"), and Windows could not copy the folder. Outputs now write such characters as '_', and names
    that then clash, or clash but for case (REC1.wav, rec1.wav), get outputs of their own."""
    names = ["2025-07-01T21:30:00.wav", "x_1.wav", "x:1.wav", "what?.wav", "Site./a|b.wav", "REC1.wav", "rec1.wav"]
    for name in names:
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / "in" / name, song(3.0, RATE), RATE)
    cfg = InferConfig(model=str(model), min_conf=0.5)
    summary = analyze([tmp_path / "in"], tmp_path / "out", cfg)
    assert (summary.files_done, summary.files_failed) == (7, 0)
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.table.txt")) == [
        f"{stem}.pulse.selection.table.txt" for stem in ("2025-07-01T21_30_00", "REC1_wav_1", "Site_/a_b", "rec1_wav_2",
                                                         "what_", "x_1_wav_1", "x_1_wav_2")]
    detections = pd.read_csv(tmp_path / "out" / "detections.csv")
    assert set(detections["File"]) == {str(tmp_path / "in" / name) for name in names}  # the recordings' own names
    assert analyze([tmp_path / "in"], tmp_path / "out", cfg).files_skipped == 7
    clips = extract_segments(tmp_path / "out", tmp_path / "clips", SegmentConfig(seq_length=3.0))
    assert (clips.clips_written, clips.clips_failed) == (len(detections), 0)
    assert embed([tmp_path / "in"], tmp_path / "emb", InferConfig(model=str(model))).files_done == 7
    for folder in ("out", "clips", "emb"):
        written = [p.relative_to(tmp_path / folder) for p in (tmp_path / folder).rglob("*")]
        assert not [p for p in written if any(map(windows_refuses, p.parts))]
        assert len({p.as_posix().lower() for p in written}) == len(written)  # none share a file on a FAT card


def test_recordings_named_as_windows_devices_get_outputs_windows_can_create(tmp_path, model):
    """CON.wav, nul.wav, aux.WAV, COM1.wav, LPT3.x.wav, COM¹.wav and a folder aux/ had outputs such as
    CON.pulse.selection.table.txt and CON.wav.embeddings.h5: Windows takes a name whose part before the first dot is
    a device's, in any case, for the device, and can neither create nor copy such a file. Their outputs' names now
    follow it with '_' (CON_...), told apart from CON_.wav's as other clashes are, and a rerun finds them; clips,
    named after their score, keep the recording's name."""
    names = ["CON.wav", "nul.wav", "aux.WAV", "COM1.wav", "LPT3.x.wav", "COM\u00b9.wav", "aux/rec.wav", "CON_.wav",
             "CONSOLE.wav"]
    for name in names:
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / "in" / name, song(3.0, RATE), RATE)
    cfg = InferConfig(model=str(model), min_conf=0.5)
    assert analyze([tmp_path / "in"], tmp_path / "out", cfg).files_done == 9
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.table.txt")) == [
        f"{stem}.pulse.selection.table.txt" for stem in ("COM1_", "COM\u00b9_", "CONSOLE", "CON__wav_1", "CON__wav_2",
                                                         "LPT3_.x", "aux_", "aux_/rec", "nul_")]
    assert analyze([tmp_path / "in"], tmp_path / "out", cfg).files_skipped == 9
    clips = extract_segments(tmp_path / "out", tmp_path / "clips", SegmentConfig(seq_length=3.0))
    assert {p.name.split("_", 1)[1] for p in (tmp_path / "clips").rglob("*.wav")} == {
        f"{PurePath(name).stem}_0s.wav" for name in names}
    assert clips.clips_failed == 0
    assert embed([tmp_path / "in"], tmp_path / "emb", InferConfig(model=str(model))).files_done == 9
    assert embed([tmp_path / "in"], tmp_path / "emb", InferConfig(model=str(model))).files_skipped == 9
    for folder in ("out", "clips", "emb"):
        written = [p.relative_to(tmp_path / folder) for p in (tmp_path / folder).rglob("*")]
        assert not [p for p in written if any(map(windows_refuses, p.parts))]
        assert len({p.as_posix().lower() for p in written}) == len(written)


def test_recordings_of_one_name_in_folders_named_as_linux_allows_get_folders_an_sd_card_takes(tmp_path, model):
    """Two cards' REC001.WAV given as folders named 'Site:A' and 'Site:B' (legal on ext4) are told apart under their
    folders' names, which a FAT or exFAT --out refused as the recordings' own names were ("Invalid argument")."""
    for site in ("Site:A", "Site:B"):
        (tmp_path / site).mkdir()
        sf.write(tmp_path / site / "REC001.WAV", song(3.0, RATE), RATE)
    inputs, cfg = [tmp_path / "Site:A", tmp_path / "Site:B"], InferConfig(model=str(model))
    assert analyze(inputs, tmp_path / "out", cfg).files_done == 2
    assert embed(inputs, tmp_path / "emb", cfg).files_done == 2
    for folder, suffix in (("out", ".pulse.selection.table.txt"), ("emb", ".WAV.embeddings.h5")):
        assert sorted(p.relative_to(tmp_path / folder).as_posix() for p in (tmp_path / folder).rglob(f"*{suffix}")) == [
            f"Site_A/REC001{suffix}", f"Site_B/REC001{suffix}"]


def test_a_read_only_out_stops_segments_and_embeddings_at_the_lock_in_one_line(run, model, monkeypatch):
    """`pulse segments` and `pulse embeddings` into a read-only --out stopped at the lock file with 'error:
    OUT/.run.lock: Read-only file system' and no advice, as `pulse analyze` once did."""
    import errno

    from export import folder_lock
    from export.atomic import OutputUnwritable

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(folder_lock, "_open_lock", read_only)
    for out, command in ((run / "clips", lambda: extract_segments(run / "out", run / "clips", SegmentConfig())),
                         (run / "emb", lambda: embed([run / "night.wav"], run / "emb", InferConfig(model=str(model))))):
        with pytest.raises(OutputUnwritable, match="remount it read-write") as stopped:
            command()
        assert stopped.value.filename == str(out)


def test_a_table_excel_saved_again_in_a_french_locale_is_cut_and_one_in_its_code_page_is_named(tmp_path, shared_data):
    """Excel in a French or German locale saves ';' between columns and '0,87' for 0.87: segments said "not a `pulse
    analyze` detections.csv (needs the columns ...)" of a table holding every one of them."""
    song = sorted((shared_data / "audio" / "insectset32" / "Gryllus_campestris").glob("*.flac"))[0]
    (tmp_path / "rec.flac").write_bytes(song.read_bytes())
    text = ("Start (s);End (s);Scientific name;Common name;Confidence;File\r\n"
            "0;3;Gryllus campestris;Grillon champêtre;0,87;rec.flac\r\n"
            "1,5;4,5;Gryllus campestris;Grillon champêtre;0,912;rec.flac\r\n")
    for saved, encoding in (("utf8", "utf-8-sig"), ("codepage", "cp1252")):
        (tmp_path / saved).mkdir()
        (tmp_path / saved / "detections.csv").write_bytes(text.encode(encoding))
    summary = extract_segments(tmp_path / "utf8", tmp_path / "clips", SegmentConfig(), audio_root=tmp_path)
    assert summary.clips_written == 2
    clip = tmp_path / "clips" / "Gryllus campestris" / "0.912_rec_1.5s.wav"
    recording, rate = sf.read(tmp_path / "rec.flac", dtype="float32")
    np.testing.assert_allclose(sf.read(clip, dtype="float32")[0], recording[int(1.5 * rate):int(4.5 * rate)],
                               atol=1 / 2**15)
    result = CliRunner().invoke(app, ["segments", str(tmp_path / "codepage"), "--out", str(tmp_path / "c2"),
                                      "--audio-root", str(tmp_path)])
    assert result.exit_code == 2 and result.output.strip() == (
        f"error: {tmp_path / 'codepage' / 'detections.csv'}, line 2: not UTF-8 text; save it as 'CSV UTF-8 (Comma "
        "delimited)' (Excel: Save As)"), result.output


def test_a_clip_or_plot_that_cannot_be_written_is_one_row_and_the_rest_are_cut_but_a_full_out_stops(run, monkeypatch,
                                                                                                    caplog):
    """A folder where one clip (or its plot) goes ended the run ('error: OUT/<species>/<clip>.wav: Is a directory'),
    the clips after it not cut and no errors.csv written; a full --out still stops the run. A clip written whose
    plot failed was counted as written and as failed: its plot is now counted failed, apart."""
    import errno

    from export.atomic import OutputUnwritable

    detections = pd.read_csv(run / "out" / "detections.csv").sort_values("Start (s)")
    names = [f"{label}/{confidence:.3f}_night_{begin:g}s" for begin, label, confidence in
             detections[["Start (s)", "Scientific name", "Confidence"]].itertuples(index=False)]
    (run / "clips" / f"{names[0]}.wav").mkdir(parents=True)
    (run / "clips" / f"{names[-1]}.png").mkdir(parents=True)
    result = CliRunner().invoke(app, ["segments", str(run / "out"), "--out", str(run / "clips"), "--plots"])
    assert result.exit_code == 1 and (f"{len(names) - 1} clip(s) written, 0 kept from an earlier run, {len(names) - 2} "
                                      "plot(s), 1 plot(s) failed, 0 recording(s) unreadable, 1 clip(s) failed -> "
                                      ) in result.output, result.output
    rows = pd.read_csv(run / "clips" / "errors.csv")
    assert rows.stage.tolist() == ["write", "write"] and rows.path.tolist() == [str(run / "night.wav")] * 2
    assert [message.split(" s: ", 1)[1] for message in rows.message] == [  # not "[Errno 21] ...: 'X' -> 'X'"
        f"{run / 'clips' / names[0]}.wav: Is a directory", f"{run / 'clips' / names[-1]}.png: Is a directory"]
    assert f"s: write failed: {run / 'clips' / names[0]}.wav: Is a directory" in caplog.text

    def disk_full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(segments, "write_bytes", disk_full)
    (run / "clips" / f"{names[0]}.wav").rmdir()
    with pytest.raises(OutputUnwritable, match="free some space"):
        extract_segments(run / "out", run / "clips", plots=True)


def test_a_run_stopped_by_a_full_out_keeps_the_errors_said_so_far(run, monkeypatch):
    """A full --out stopped the run before errors.csv was written: the recordings said to be unreadable were in
    no file."""
    import errno

    from export.atomic import OutputUnwritable

    detections = pd.read_csv(run / "out" / "detections.csv")
    gone = detections.iloc[:1].assign(File=str(run / "gone.wav"))  # before night.wav in recording order
    pd.concat([detections, gone]).to_csv(run / "out" / "detections.csv", index=False)

    def disk_full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(segments, "write_bytes", disk_full)
    with pytest.raises(OutputUnwritable, match="free some space"):
        extract_segments(run / "out", run / "clips")
    (row,) = pd.read_csv(run / "clips" / "errors.csv").itertuples()
    assert row.path == str(run / "gone.wav") and row.stage == "open"


def test_a_clip_over_the_damage_in_a_flac_is_the_part_that_reads_and_none_where_nothing_does(tmp_path, model,
                                                                                                shared_data):
    """A real FLAC with rotten bytes mid-file: analyze scores the audio around the damage, but a clip over it was
    one row of errors.csv and no audio. Its clip is now the part before or after the damage holding most of the
    detection; a detection with none of it readable is still the row, in the words analyze uses (not libsndfile's
    raw 'Error : flac decoder lost sync.')."""
    song_path = shared_data / "audio" / "insectset32" / "Nemobius_sylvestris" / "Nemobiussylvestris_dat145-001.flac"
    original, rate = sf.read(song_path, dtype="int16")  # 39 s of Wood Cricket, 16-bit
    path = tmp_path / "rot.flac"
    path.write_bytes(song_path.read_bytes())
    rot(path, 20000, at=1 / 2)
    analyze([path], tmp_path / "out", InferConfig(model=str(model), min_conf=0.1))
    (note,) = pd.read_csv(tmp_path / "out" / "errors.csv").message
    damage = [float(t) for t in note.split("damaged at ")[1].split(" s")[0].split("-")]
    detections = pd.read_csv(tmp_path / "out" / "detections.csv")
    over = detections[(detections["Start (s)"] < damage[1]) & (damage[0] < detections["End (s)"])]
    assert len(over) >= 3  # scored around the damage: these clips are the ones to listen to
    cfg = SegmentConfig(max_segments=100, min_conf=0.1)
    summary = extract_segments(tmp_path / "out", tmp_path / "clips", cfg)
    assert (summary.clips_written, summary.clips_failed, summary.clips_shortened) == (len(detections), 0, len(over))
    for start, score in zip(over["Start (s)"], over["Confidence"]):
        (clip,) = (tmp_path / "clips").glob(f"*/{score:.3f}_rot_{start:g}s.wav")
        audio = sf.read(clip, dtype="int16")[0]
        first = int(round(start * rate))  # the part before the damage, up to it (to within a FLAC frame)
        assert damage[0] - 0.1 < start + len(audio) / rate < damage[1]
        np.testing.assert_array_equal(audio, original[first:first + len(audio)])
    # each shortened clip is a row saying which part of the recording it is (it was only a line of the log), also
    # after a rerun that keeps the clips
    for errors in (pd.read_csv(tmp_path / "clips" / "errors.csv"),
                   extract_segments(tmp_path / "out", tmp_path / "clips", cfg)
                   and pd.read_csv(tmp_path / "clips" / "errors.csv")):
        assert len(errors) == len(over) and set(errors.error_type) == {"Shortened"} and set(errors.stage) == {"clip"}
        said = [re.fullmatch(r"([\d.]+)-([\d.]+) s: damaged or cut short here \(.+\): the clip is the "
                             r"([\d.]+)-([\d.]+) s that read", message) for message in errors.message]
        assert sorted((float(m[1]), float(m[2])) for m in said) == sorted(zip(over["Start (s)"], over["End (s)"]))
        for m in said:
            assert float(m[3]) == pytest.approx(float(m[1]), abs=0.01)  # the part before the damage
            for clip in (tmp_path / "clips").glob(f"*/*_rot_{float(m[1]):g}s.wav"):
                assert float(m[4]) - float(m[3]) == pytest.approx(sf.info(str(clip)).duration, abs=0.01)
    # by hand: a detection starting inside the damage (its clip starts where decoding resumes), and one inside it
    _write_results(tmp_path / "hand", [(damage[0] + 0.1, damage[0] + 3.1, "A", 0.9, str(path)),
                                       (damage[0] + 0.1, damage[1] - 0.1, "B", 0.9, str(path))])
    summary = extract_segments(tmp_path / "hand", tmp_path / "hand_clips", SegmentConfig(seq_length=0.1))
    assert (summary.clips_written, summary.clips_failed, summary.clips_shortened) == (1, 1, 1)
    (clip,) = (tmp_path / "hand_clips" / "A").glob("*.wav")
    audio = sf.read(clip, dtype="int16")[0]
    resumed = int(round((damage[0] + 3.1) * rate)) - len(audio)
    assert damage[1] - 0.1 < resumed / rate < damage[1] + 0.1
    np.testing.assert_array_equal(audio, original[resumed:resumed + len(audio)])
    shortened, row = pd.read_csv(tmp_path / "hand_clips" / "errors.csv").itertuples()
    assert shortened.error_type == "Shortened" and shortened.message.endswith(
        f"the clip is the {resumed / rate:.2f}-{(damage[0] + 3.1):.2f} s that read")
    assert row.stage == "clip" and "Error :" not in row.message
    assert re.fullmatch(r"[\d.]+-[\d.]+ s: damaged or cut short here \(.+\): no clip", row.message)


def test_ctrl_c_once_the_folder_is_set_up_or_after_the_last_clip_is_said(run, monkeypatch, caplog, ctrl_c_after):
    """A Ctrl-C raised as segments.json was written (before the first clip) or as errors.csv was (after the last)
    ended the run with exit status 130 and no word (11 of about 730 runs interrupted, bench/ctrl_c_stress.py)."""
    command = ["segments", str(run / "out"), "--out", str(run / "clips")]
    for module_name, stage in (("write_json", "before"), ("write_errors", "after")):
        ctrl_c_after(segments, module_name)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert CliRunner().invoke(app, command).exit_code == 130
        monkeypatch.undo()
        clips = len(list((run / "clips").rglob("*.wav")))
        if stage == "before":
            assert clips == 0 and (f"interrupted: 0 clip(s) written, 0 kept from an earlier run, in {run / 'clips'}; "
                                   "run the same command again to cut the rest") in caplog.text
        else:
            assert clips and (f"interrupted: {clips} clip(s) written, 0 kept from an earlier run, in {run / 'clips'}; "
                              "every clip was tried: run the same command again for the summary") in caplog.text
