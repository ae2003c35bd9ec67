"""Raven tables made over a sequence of recordings (a card's files opened in Raven Pro as one): Begin and End Time
count from the sequence's start, File Offset (s) is the time in the Begin File. `pulse assess` and `pulse
clips-from-annotations` put each box in its own recording; pulse's `raven_combined` table reads back as it was written.

End to end on real audio: a 60 s soundscape with InsectSet32 songs at known times, cut into three 20 s files as an
AudioMoth cuts a night."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from pulse.assess import read_annotations
from pulse.cli import app
from tests.test_annotation_clips import RATE, SONGS, rms

pytestmark = pytest.mark.usefixtures("torch_one_thread")

FILES = ("20250601_210000.WAV", "20250601_210020.WAV", "20250601_210040.WAV")
# (species, begin in the sequence, seconds); the last runs on from the first file into the second
PLACED = [("Gryllus campestris", 5.0, 2.0), ("Tettigonia viridissima", 24.0, 3.0), ("Gryllus campestris", 52.0, 2.0),
          ("Tettigonia viridissima", 18.5, 3.0)]


@pytest.fixture(scope="module")
def card(shared_data, tmp_path_factory):
    """The three files, the songs placed, and the table Raven saves over the sequence (each box once
    per view; Begin Path, File Offset (s), Begin File and End File beside the sequence's times)."""
    root = tmp_path_factory.mktemp("sequence")
    audio = shared_data / "audio"
    night = np.concatenate([sf.read(audio / "backgrounds" / name, dtype="float32")[0] for name in (
        "MAAD_spinetail_Colombia.flac", "OSS_great_plains_toad.flac")])
    night = np.resize(night, 60 * RATE) * (0.01 / rms(night))
    songs = {}
    for species, begin, seconds in PLACED:
        source = sf.read(audio / "insectset32" / SONGS[species], dtype="float32")[0]
        song = source[int(0.5 * RATE):int((0.5 + seconds) * RATE)]
        songs[begin] = song * (0.1 / rms(song))
        night[int(begin * RATE):int(begin * RATE) + len(song)] += songs[begin]
    (root / "card").mkdir()
    for i, name in enumerate(FILES):
        sf.write(root / "card" / name, night[i * 20 * RATE:(i + 1) * 20 * RATE], RATE, subtype="PCM_16")
    lines = ["Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tBegin Path\t"
             "File Offset (s)\tBegin File\tEnd File\tDelta Time (s)\tSpecies"]
    for n, (species, begin, seconds) in enumerate(PLACED, 1):
        first, last = FILES[int(begin // 20)], FILES[int((begin + seconds) // 20)]
        lines += [f"{n}\t{view}\t1\t{begin:.6f}\t{begin + seconds:.6f}\t500.0\t20000.0\t{root / 'card' / first}\t"
                  f"{begin % 20:.6f}\t{first}\t{last}\t{seconds:.6f}\t{species}"
                  for view in ("Waveform 1", "Spectrogram 1")]
    (root / "tables").mkdir()
    (root / "tables" / "night.Table.1.selections.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root, songs


def test_clips_of_a_sequence_table_are_cut_from_the_file_each_box_begins_in(card, tmp_path):
    """Until 2026-12-07 the boxes of the second and third files were 'begins after the recording's end'."""
    root, songs = card
    result = CliRunner().invoke(app, ["clips-from-annotations", str(root / "tables"), "--audio", str(root / "card"),
                                      "--out", str(tmp_path / "clips")])
    assert result.exit_code == 0, result.output
    clips = sorted(p.relative_to(tmp_path / "clips").as_posix() for p in (tmp_path / "clips").rglob("*.flac"))
    assert clips == ["Gryllus_campestris/20250601_210000_5-7s.flac",
                     "Gryllus_campestris/20250601_210040_12-14s.flac",
                     "Tettigonia_viridissima/20250601_210000_18.5-20s.flac",  # up to its file's end
                     "Tettigonia_viridissima/20250601_210020_0-1.5s.flac",  # and on from the next one's start
                     "Tettigonia_viridissima/20250601_210020_4-7s.flac"]
    written = np.concatenate([sf.read(root / "card" / name, dtype="float32")[0] for name in FILES])
    # until 2026-12-07 the box's part in the second file was not cut, and was Background with --background
    rest = sf.read(tmp_path / "clips" / clips.pop(3), dtype="float32")[0]
    np.testing.assert_array_equal(rest, written[20 * RATE:23 * RATE])
    assert np.corrcoef(rest[:round(1.5 * RATE)], songs[18.5][round(1.5 * RATE):])[0, 1] > 0.95
    # 3 s at least, kept inside its file: the box at 18.5-20 s is the first file's last 3 s
    for clip, (_, begin, _), start in zip(clips, sorted(PLACED), (4.5, 51.5, 17.0, 24.0)):
        audio = sf.read(tmp_path / "clips" / clip, dtype="float32")[0]
        np.testing.assert_array_equal(audio, written[round(start * RATE):round(start * RATE) + len(audio)])
        song = songs[begin][:len(audio) - round((begin - start) * RATE)]
        at = round((begin - start) * RATE)
        assert np.corrcoef(audio[at:at + len(song)], song)[0, 1] > 0.99


def test_assess_scores_each_box_in_its_file_and_reads_pulses_combined_table_back(card, tmp_path):
    root, _ = card
    runner = CliRunner()
    run = runner.invoke(app, ["analyze", str(root / "card"), "--out", str(tmp_path / "run"),
                              "--format", "csv,scores,raven_combined"])
    assert run.exit_code == 0, run.output
    result = runner.invoke(app, ["assess", str(root / "tables"), "--results", str(tmp_path / "run"),
                                 "--out", str(tmp_path / "assessment")])
    assert result.exit_code == 0, result.output
    metrics = pd.read_csv(tmp_path / "assessment" / "assessment.csv").set_index("code")
    # windows overlapping each box in its own file, the one running on into the second file in both (18-20 s, then
    # 0-1.5 s: until 2026-12-07 only the first); until 2026-12-07 the second and third files' boxes overlapped none
    assert metrics.loc[["GRYCAM", "TETVIR"], ["boxes", "positive_windows"]].values.tolist() == [[2, 3], [2, 4]]

    # pulse's own sequence table, as Raven Pro opens it over its .list.txt, reads back as the run's detections
    shutil.copy(tmp_path / "run" / "combined.selection.table.txt", tmp_path / "reviewed.txt")
    boxes = read_annotations([tmp_path / "reviewed.txt"], None).boxes
    detections = pd.read_csv(tmp_path / "run" / "detections.csv")
    assert len(detections["File"].unique()) == 3
    assert boxes[["begin_s", "end_s"]].values.tolist() == detections[["Start (s)", "End (s)"]].values.tolist()
    assert [b.rsplit("/", 1)[1] for b in boxes["recording"]] == \
        [f.rsplit("/", 1)[1].lower().removesuffix(".wav") for f in detections["File"]]


def test_a_sequence_table_without_a_column_naming_each_boxs_file_is_a_line(tmp_path):
    """Its boxes would go to the recording the table is named after, at their times in other files."""
    (tmp_path / "night.Table.1.selections.txt").write_text(
        "Selection\tView\tBegin Time (s)\tEnd Time (s)\tFile Offset (s)\tSpecies\n"
        "1\tSpectrogram 1\t5.0\t7.0\t5.0\tx\n2\tSpectrogram 1\t24.0\t27.0\t4.0\ty\n", encoding="utf-8")
    (tmp_path / "one.Table.1.selections.txt").write_text(  # one file's table with the column: as before
        "Selection\tView\tBegin Time (s)\tEnd Time (s)\tFile Offset (s)\tSpecies\n1\tSpectrogram 1\t5.0\t7.0\t5.0\tx\n",
        encoding="utf-8")
    found = read_annotations([tmp_path], None)
    assert found.boxes.drop(columns="runs_on").values.tolist() == [["one", 5.0, 7.0, "x"]]
    assert found.problems == [f"{tmp_path / 'night.Table.1.selections.txt'}: a table over a sequence of files (File "
                              "Offset (s) is not Begin Time (s)) without a Begin File or Begin Path column naming "
                              "each box's file; left out"]
