"""Table contracts, detection thresholds and every output format's exact layout."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from export.atomic import write_text
from pulse.detect import detect, detections_from_arrays, merge_consecutive, merge_consecutive_table
from pulse.schema import DETECTION_COLUMNS, LabelSet, SchemaError, detection_channel, scores_frame, validate_scores
from pulse.writers import WRITERS, output_path

LABELS = LabelSet(("Gryllus campestris", "Tettigonia viridissima"), ("Field Cricket", "Great Green Bush-cricket"),
                  ("GRYCAM", "TETVIR"))
RAVEN_HEADER = ("Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\t"
                "Common Name\tSpecies Code\tConfidence\tBegin Path\tFile Offset (s)")


@pytest.fixture
def scores() -> pd.DataFrame:
    return scores_frame("rec/a.wav", np.array([0.0, 3.0, 6.0]), np.array([3.0, 6.0, 7.5]),
                        np.array([[0.9, 0.1], [0.2, 0.3], [0.25, 0.6]]), LABELS.labels)


def test_detect_thresholds_and_orders(scores):
    table = detect(scores, LABELS, min_conf=0.25, low_hz=500, high_hz=4000)
    assert tuple(table.columns) == DETECTION_COLUMNS
    assert list(zip(table.start_s, table.label, table.score.round(2))) == [
        (0.0, "Gryllus campestris", 0.9), (3.0, "Tettigonia viridissima", 0.3),
        (6.0, "Tettigonia viridissima", 0.6), (6.0, "Gryllus campestris", 0.25)]
    assert table.end_s.tolist() == [3.0, 6.0, 7.5, 7.5]
    assert set(table.code) == {"GRYCAM", "TETVIR"} and (table.high_hz == 4000).all()
    assert detect(scores, LABELS, min_conf=0.95, low_hz=500, high_hz=4000).empty


def test_schema_rejects_broken_tables(scores):
    with pytest.raises(SchemaError, match="within"):
        validate_scores(scores * 2)
    with pytest.raises(SchemaError, match="index"):
        validate_scores(scores.reset_index())
    with pytest.raises(SchemaError, match="high_hz"):
        detect(scores, LABELS, 0.25, 4000, 500)
    with pytest.raises(SchemaError, match="labels"):
        detect(scores, LabelSet(("x", "y"), ("x", "y"), ("X", "Y")), 0.25, 500, 4000)
    values, files = scores.to_numpy(), np.full(3, "rec/a.wav", dtype=object)
    with pytest.raises(SchemaError, match="end_s > start_s"):  # a window ending where it starts
        detections_from_arrays(files, np.zeros(3), np.zeros(3), values, LABELS, 0.25, 500, 4000)
    with pytest.raises(SchemaError, match="within"):  # a model that put out NaN
        detections_from_arrays(files, np.zeros(3), np.ones(3), values * np.nan, LABELS, 0.25, 500, 4000)
    with pytest.raises(SchemaError, match="3 labels"):
        three = LabelSet(("x",) * 3, ("x",) * 3, ("X",) * 3)
        detections_from_arrays(files, np.zeros(3), np.ones(3), values, three, 0.25, 500, 4000)


def test_detections_from_arrays_is_detect_of_the_table(scores):
    index = scores.index
    from_arrays = detections_from_arrays(index.get_level_values("file").to_numpy(object), np.array([0.0, 3.0, 6.0]),
                                 np.array([3.0, 6.0, 7.5]), scores.to_numpy(), LABELS, 0.25, 500, 4000, channel=2)
    assert tuple(from_arrays) == DETECTION_COLUMNS
    pd.testing.assert_frame_equal(pd.DataFrame(from_arrays), detect(scores, LABELS, 0.25, 500, 4000, channel=2))


def test_merge_consecutive_joins_a_species_touching_windows_of_one_file_only():
    starts = np.array([0.0, 3.0, 6.0, 9.0, 15.0, 0.0, 1.5, 2.0])
    rows = {"file": np.array(["a.wav"] * 5 + ["b.wav"] * 3, dtype=object), "channel": np.ones(8, int),
            "start_s": starts, "end_s": starts + 3, "low_hz": np.full(8, 500.0), "high_hz": np.full(8, 4000.0),
            "label": np.array(["G"] * 4 + ["G", "G", "T", "G"], dtype=object),
            "common_name": np.array(["g"] * 4 + ["g", "g", "t", "g"], dtype=object),
            "code": np.array(["GG"] * 4 + ["GG", "GG", "TT", "GG"], dtype=object),
            "score": np.array([0.5, 0.9, 0.3, 0.7, 0.8, 0.6, 0.4, 0.2])}
    merged = merge_consecutive(rows)
    assert tuple(merged) == DETECTION_COLUMNS
    # a.wav: 0-12 s is one run of touching windows (a gap before 15 s); b.wav: 0-3 and 2-5 overlap, while the
    # other species' window between them is its own row.
    assert list(zip(merged["file"], merged["code"], merged["start_s"], merged["end_s"])) == [
        ("a.wav", "GG", 0.0, 12.0), ("a.wav", "GG", 15.0, 18.0), ("b.wav", "GG", 0.0, 5.0), ("b.wav", "TT", 1.5, 4.5)]
    assert merged["score"].tolist() == pytest.approx([(0.9 + 0.7 + 0.5) / 3, 0.8, 0.4, 0.4])
    capped = merge_consecutive(rows, max_windows=3)
    assert list(zip(capped["start_s"][:3], capped["end_s"][:3])) == [(0.0, 9.0), (9.0, 12.0), (15.0, 18.0)]
    assert merge_consecutive(rows, max_windows=1)["start_s"].tolist() == sorted(starts[:5].tolist()) + [0, 1.5, 2]
    with pytest.raises(ValueError, match="at least 1"):
        merge_consecutive(rows, max_windows=0)


def test_merge_consecutive_measures_a_run_to_its_latest_end():
    """A run reaches as far as the latest end of its rows, not the last row's: a short row inside a long one
    (tables merged before, or cut at a file's end) does not break the run before a row that touches the long one."""
    starts, ends = np.array([0.0, 3.0, 8.0]), np.array([9.0, 6.0, 11.0])
    rows = {"file": np.array(["a.wav"] * 3, dtype=object), "channel": np.ones(3, int), "start_s": starts,
            "end_s": ends, "low_hz": np.full(3, 500.0), "high_hz": np.full(3, 4000.0),
            "label": np.array(["G"] * 3, dtype=object), "common_name": np.array(["g"] * 3, dtype=object),
            "code": np.array(["GG"] * 3, dtype=object), "score": np.array([0.5, 0.6, 0.7])}
    merged = merge_consecutive(rows)
    assert list(zip(merged["start_s"], merged["end_s"])) == [(0.0, 11.0)]


def test_merge_consecutive_table_merges_a_detections_table_as_merge_consecutive_does(scores):
    merged = merge_consecutive_table(detect(scores, LABELS, 0.25, 500, 4000), max_windows=2)
    assert list(zip(merged.code, merged.start_s, merged.end_s)) == [("GRYCAM", 0.0, 3.0), ("TETVIR", 3.0, 7.5),
                                                                     ("GRYCAM", 6.0, 7.5)]
    assert merged.score.round(2).tolist() == [0.9, 0.45, 0.25]


def test_label_set_from_metadata_falls_back():
    labels = LabelSet.from_metadata({"labels": ["Gryllus campestris"]})
    assert labels.common_names == ("Gryllus campestris",) and labels.codes == ("GRYCAM",)


def test_registry_and_paths():
    assert WRITERS.list() == ["audacity", "csv", "kaleidoscope", "raven", "raven_combined", "scores"]
    out = Path("out")
    assert output_path(WRITERS.create("raven"), out, Path("site1/a.wav")) == out / "site1/a.pulse.selection.table.txt"
    assert output_path(WRITERS.create("audacity"), out, Path("a.flac")) == out / "a.pulse.results.txt"
    assert output_path(WRITERS.create("csv"), out) == out / "detections.csv"
    assert output_path(WRITERS.create("scores"), out) == out / "scores.csv"
    assert output_path(WRITERS.create("kaleidoscope"), out) == out / "kaleidoscope.csv"
    assert output_path(WRITERS.create("raven_combined"), out) == out / "combined.selection.table.txt"


def test_raven_table_exact(tmp_path, scores):
    path = tmp_path / "a.pulse.selection.table.txt"
    WRITERS.create("raven").write(detect(scores, LABELS, 0.25, 500, 22050), path)
    lines = path.read_text().splitlines()
    assert lines[0] == RAVEN_HEADER
    assert lines[1] == ("1\tSpectrogram 1\t1\t0.0\t3.0\t500.0\t22050.0\tField Cricket\tGRYCAM\t0.9000\t"
                        f"{os.path.abspath('rec/a.wav')}\t0.0")  # absolute: Raven opens the recording from it
    assert lines[4].split("\t")[:5] == ["4", "Spectrogram 1", "1", "6.0", "7.5"]
    # times to the millisecond, as the tables are everywhere: a file ending at 7.4567 s ends its last box at 7.457
    odd = scores_frame("rec/a.wav", np.array([0.0, 1.125]), np.array([3.0, 7.4567]), np.array([[0.9, 0.1]] * 2),
                       LABELS.labels)
    WRITERS.create("raven").write(detect(odd, LABELS, 0.5, 500, 22050), tmp_path / "odd.txt")
    assert [line.split("\t")[3:5] for line in (tmp_path / "odd.txt").read_text().splitlines()[1:]] == [
        ["0.0", "3.0"], ["1.125", "7.457"]]
    assert len(lines) == 5 and all(len(line.split("\t")) == 12 for line in lines)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # atomic writes keep the usual permissions
    empty = tmp_path / "none.txt"
    WRITERS.create("raven").write(detect(scores, LABELS, 0.99, 500, 22050), empty)
    assert empty.read_text() == RAVEN_HEADER + "\n"
    # --channel 1 (0-based) analysed the second channel: Raven, counting from 1, must open channel 2
    WRITERS.create("raven").write(detect(scores, LABELS, 0.25, 500, 22050, detection_channel(1)), path)
    assert [line.split("\t")[2] for line in path.read_text().splitlines()[1:]] == ["2"] * 4


def test_a_raven_table_of_whole_seconds_reads_as_decimal_numbers(tmp_path, scores):
    """crowsetta's Raven reader (crowsetta.formats.bbox.Raven, 5.1) refused a table whose times or frequencies were
    all whole ("0", "3", "1000": pandas reads integers; its schema wants floats): each is written with a decimal point,
    as Raven writes them."""
    whole = scores_frame("rec/a.wav", np.array([0.0, 3.0]), np.array([3.0, 6.0]), np.array([[0.9, 0.1]] * 2),
                         LABELS.labels)
    path = tmp_path / "a.pulse.selection.table.txt"
    WRITERS.create("raven").write(detect(whole, LABELS, 0.5, 1000, 22050), path)
    numbers = ["Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)", "File Offset (s)"]
    table = pd.read_csv(path, sep="\t")
    assert [str(table[c].dtype) for c in numbers] == ["float64"] * 5
    assert table[numbers].values.tolist() == [[0.0, 3.0, 1000.0, 22050.0, 0.0], [3.0, 6.0, 1000.0, 22050.0, 3.0]]


def test_a_tab_or_line_break_in_a_file_name_leaves_the_raven_table_one_row_per_selection(tmp_path, scores):
    """Raven's tables have no quoting: a recording named with a tab (or a line break, which Linux allows) gave its rows
    13 cells, or split each in two, and Raven read the Begin Path's pieces as other columns. They are escaped."""
    odd = scores.rename(index={"rec/a.wav": "/cards/site 1\tnorth/night\n2.wav"}, level="file")
    path = tmp_path / "odd.pulse.selection.table.txt"
    WRITERS.create("raven").write(detect(odd, LABELS, 0.25, 500, 22050), path)
    table = pd.read_csv(path, sep="\t", quoting=3)  # csv.QUOTE_NONE, as Raven reads it
    assert len(table) == 4 and list(table.columns) == RAVEN_HEADER.split("\t")
    assert set(table["Begin Path"]) == {"/cards/site 1\\tnorth/night\\n2.wav"}


def test_atomic_write_makes_its_folder_and_leaves_nothing_when_it_fails(tmp_path):
    write_text(tmp_path / "site1" / "night1" / "a.txt", "x\n")
    assert (tmp_path / "site1" / "night1" / "a.txt").read_text() == "x\n"
    (tmp_path / "taken").mkdir()
    with pytest.raises(IsADirectoryError):  # the rename onto a folder fails after the data is written
        write_text(tmp_path / "taken", "y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site1", "taken"]  # no temporary file left


def _through_atomic_path(path, data):
    from export.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


@pytest.mark.parametrize("writer, call", [("write_bytes", "open"), ("atomic_path", "open"), ("atomic_path", "close")])
def test_ctrl_c_as_a_temporary_is_made_leaves_none(tmp_path, monkeypatch, writer, call):
    """Python raises a Ctrl-C that comes during a system call as the call returns: one that came while the temporary
    was made (os.open), or closed for atomic_path's caller to open by name (os.close), left it behind, the writer's
    clean-up not yet in place (4 of 90 `pulse segments` runs interrupted under load, bench/ctrl_c_stress.py)."""
    from export import atomic

    real = getattr(os, call)

    def then_ctrl_c(*args):
        fd = real(*args)
        monkeypatch.setattr(os, call, real)
        if call == "open":  # lost, as in the run
            os.close(fd)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, call, then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        (atomic.write_bytes if writer == "write_bytes" else _through_atomic_path)(tmp_path / "clip.wav", b"x")
    assert list(tmp_path.iterdir()) == []


def test_csv_audacity_scores_layouts(tmp_path, scores):
    table = detect(scores, LABELS, 0.5, 500, 22050)
    WRITERS.create("csv").write(table, tmp_path / "detections.csv")
    csv = pd.read_csv(tmp_path / "detections.csv")
    assert list(csv.columns) == ["Start (s)", "End (s)", "Scientific name", "Common name", "Confidence", "File"]
    assert csv["Scientific name"].tolist() == ["Gryllus campestris", "Tettigonia viridissima"]
    WRITERS.create("audacity").write(table, tmp_path / "a.txt")
    assert (tmp_path / "a.txt").read_text() == (
        "0.000\t3.000\tGryllus campestris, Field Cricket\t0.9000\n"
        "6.000\t7.500\tTettigonia viridissima, Great Green Bush-cricket\t0.6000\n")
    WRITERS.create("scores").write(scores, tmp_path / "scores.csv")
    back = pd.read_csv(tmp_path / "scores.csv")
    assert list(back.columns) == ["file", "start_s", "end_s", *LABELS.labels]
    np.testing.assert_allclose(back[list(LABELS.labels)].to_numpy(), scores.to_numpy(), atol=1e-5)


def test_audacity_labels_name_one_class_per_species(tmp_path, scores):
    """Audacity, and crowsetta, opensoundscape and scikit-maad after it, take the third cell as the label: with the
    score in it (`Field Cricket, 0.9000`) each detection was a class of its own. As in BirdNET-Analyzer's files, the
    label names the species and the confidence is a fourth cell (Audacity ignores it)."""
    table = detect(scores, LABELS, 0.2, 500, 22050)
    WRITERS.create("audacity").write(table, tmp_path / "a.txt")
    back = pd.read_csv(tmp_path / "a.txt", sep="\t", header=None)
    assert back[2].value_counts().to_dict() == {"Gryllus campestris, Field Cricket": 3,
                                                "Tettigonia viridissima, Great Green Bush-cricket": 2}
    np.testing.assert_allclose(back[3], table["score"], atol=1e-4)
    unnamed = LabelSet(LABELS.labels, LABELS.labels, LABELS.codes)  # a model without common names
    WRITERS.create("audacity").write(detect(scores, unnamed, 0.2, 500, 22050), tmp_path / "b.txt")
    assert set(pd.read_csv(tmp_path / "b.txt", sep="\t", header=None)[2]) == set(LABELS.labels)


def test_detections_csv_is_what_pandas_wrote(tmp_path, scores):
    """Written with the csv module (so `pulse analyze` needs no pandas), byte for byte pandas' to_csv."""
    from pulse.writers.detections_csv import CSV_COLUMNS

    odd = scores.rename(index={"rec/a.wav": 'site, "north"/a\nb.wav'}, level="file")
    for table in (detect(odd, LABELS, 0.25, 500, 22050), detect(odd, LABELS, 0.99, 500, 22050)):  # some, none
        WRITERS.create("csv").write(table, tmp_path / "detections.csv")
        pandas_csv = table[list(CSV_COLUMNS)].rename(columns=CSV_COLUMNS).to_csv(index=False, float_format="%.4f")
        assert (tmp_path / "detections.csv").read_text() == pandas_csv


def test_analyze_starts_without_pandas(tmp_path):
    """pandas costs ~0.3 s of every command's start; the default formats never import it."""
    code = ("import sys; from pulse.analyze import analyze; from pulse.config import InferConfig; "
            f"analyze([{str(tmp_path / 'in')!r}], {str(tmp_path / 'out')!r}, InferConfig()); "
            "print('pandas' in sys.modules)")
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "a.wav", np.zeros(44100 * 3, np.float32), 44100)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"
    assert (tmp_path / "out" / "detections.csv").read_text().startswith("Start (s),End (s)")


def test_kaleidoscope_layout(tmp_path, scores, monkeypatch):
    """BirdNET-Analyzer's Kaleidoscope columns; INDIR/FOLDER/IN FILE split the path as it does, made absolute
    first (a relative input would leave INDIR empty); DATE/TIME/HOUR from an AudioMoth file name."""
    monkeypatch.chdir(tmp_path)
    here, parent = os.getcwd(), os.path.dirname(os.getcwd())
    deep = scores.rename(index={"rec/a.wav": "/data/site1/20250701_235958.WAV"}, level="file")
    table = pd.concat([detect(deep, LABELS, 0.5, 500, 22050), detect(scores, LABELS, 0.5, 500, 22050),
                       detect(scores.rename(index={"rec/a.wav": "b.wav"}, level="file"), LABELS, 0.85, 500, 22050)])
    WRITERS.create("kaleidoscope").write(table, tmp_path / "kaleidoscope.csv")
    lines = (tmp_path / "kaleidoscope.csv").read_text().splitlines()
    assert lines == ["INDIR,FOLDER,IN FILE,OFFSET,DURATION,DATE,TIME,HOUR,scientific_name,common_name,confidence",
                     "/data,site1,20250701_235958.WAV,0.0000,3.0000,2025-07-01,23:59:58,23,Gryllus campestris,"
                     "Field Cricket,0.9000",
                     "/data,site1,20250701_235958.WAV,6.0000,1.5000,2025-07-02,00:00:04,0,Tettigonia viridissima,"
                     "Great Green Bush-cricket,0.6000",
                     f"{here},rec,a.wav,0.0000,3.0000,,,,Gryllus campestris,Field Cricket,0.9000",
                     f"{here},rec,a.wav,6.0000,1.5000,,,,Tettigonia viridissima,Great Green Bush-cricket,0.6000",
                     f"{parent},{os.path.basename(here)},b.wav,0.0000,3.0000,,,,"
                     "Gryllus campestris,Field Cricket,0.9000"]
    WRITERS.create("kaleidoscope").write(table.iloc[:0], tmp_path / "none.csv")
    assert (tmp_path / "none.csv").read_text().splitlines() == lines[:1]


@pytest.mark.parametrize("name, start", [
    ("20250701_213000.WAV", "2025-07-01 21:30:00"),  # AudioMoth
    ("SMA12345_20250701_213000.wav", "2025-07-01 21:30:00"),  # Song Meter
    ("site3/20250701T213000.flac", "2025-07-01 21:30:00"),
    ("SM3_0+1_20250701$213000.wav", "2025-07-01 21:30:00"),  # Song Meter SM3 with its clock set by GPS
    ("20250701T213000+1000_REC.flac", "2025-07-01 21:30:00"),  # BAR-LT: its local clock, as named
    ("20250701T213000-0330_Site.wav", "2025-07-01 21:30:00"),
    ("20250701_213000_REC [-27.3866 152.8761].flac", "2025-07-01 21:30:00"),  # older BAR-LT firmware
    ("20251301_213000.WAV", None),  # month 13: not a time stamp
    ("REC0001.wav", None),
    ("123420250701_213000.wav", None),  # inside a longer number
])
def test_recording_start_from_the_file_name(name, start):
    from pulse.timestamps import recording_start

    found = recording_start(name)
    assert (found.strftime("%Y-%m-%d %H:%M:%S") if found else None) == start


@pytest.mark.parametrize("name, offset_h", [
    ("20250701T213000+1000_REC.flac", 10.0),  # BAR-LT: its clock's UTC offset, kept for `pulse activity --timezone`
    ("20250701T213000-0330_Site.wav", -3.5),
    ("20250701_213000.WAV", None),  # AudioMoth: its clock, whose zone the name does not say
    ("SM3_0+1_20250701$213000.wav", None),
    ("20250701_213000-0001.WAV", None),  # a counter after the time, no offset
])
def test_stated_start_keeps_the_offset_a_file_name_gives(name, offset_h):
    from pulse.timestamps import stated_start

    found = stated_start(name)
    assert found.replace(tzinfo=None) == datetime(2025, 7, 1, 21, 30)
    assert (found.utcoffset() / timedelta(hours=1) if found.tzinfo else None) == offset_h


def test_a_failed_atomic_write_names_its_file(tmp_path, monkeypatch):
    """A full disk at the rename or write said '[Errno 28] No space left on device', without the file."""
    import errno

    from export import atomic

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", full)
    with pytest.raises(OSError) as caught:
        atomic.write_bytes(tmp_path / "table.csv", b"x")
    assert caught.value.filename == str(tmp_path / "table.csv") and list(tmp_path.iterdir()) == []


def test_a_table_past_a_fat32_drives_4_gib_is_named_with_the_limit(tmp_path):
    """A run-wide table larger than a file may be (4 GiB on a FAT32 card; here a 4 KiB RLIMIT_FSIZE, which fails
    alike: EFBIG) stopped `pulse analyze` at 'error: [Errno 27] File too large', naming no file. It is written into
    the temporary of another (staged, as the run's tables are): the line names the table and what to do."""
    import contextlib
    import resource

    from export.atomic import atomic_path, error_line

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # Python ignores SIGXFSZ: the write fails instead
    try:
        with pytest.raises(OSError) as raised, contextlib.ExitStack() as staging:
            with atomic_path(staging.enter_context(atomic_path(tmp_path / "scores.csv"))) as tmp:
                pd.DataFrame({"score": np.linspace(0, 1, 5000)}).to_csv(tmp)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert error_line(raised.value) == (f"{tmp_path / 'scores.csv'}: File too large (a FAT32 card or drive holds "
                                        "files up to 4 GiB: write to an exFAT or NTFS one)")
    assert os.listdir(tmp_path) == []
