"""`pulse assess`: per-species metrics of a run's scores against Raven selection tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pulse.assess import (assess, pr_figure, read_annotations, read_scores, recording_key, run_assessment,
                          species_metrics, window_labels)
from pulse.cli import app
from pulse.config import AssessConfig
from pulse.schema import LabelSet

EXAMPLES = Path(__file__).resolve().parents[1] / "pulse" / "assets" / "examples"
LABELS = LabelSet(("Gryllus campestris", "Tettigonia viridissima"), ("Field Cricket", "Great Green Bush-cricket"),
                  ("GRYCAM", "TETVIR"))
HEADER = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\t{species}\n"


def _table(path: Path, rows: list[tuple], species: str = "Species") -> Path:
    """A Raven selection table: each box listed once per view, as Raven saves it."""
    lines = [HEADER.format(species=species)]
    for n, (begin, end, name) in enumerate(rows, 1):
        lines += [f"{n}\t{view}\t1\t{begin}\t{end}\t500\t20000\t{name}\n" for view in ("Waveform 1", "Spectrogram 1")]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def _scores(windows: dict[str, list[tuple[float, float]]]) -> pd.DataFrame:
    """A scores.csv table: Gryllus scores 0.9 exactly in the windows listed for each file, 0.1 elsewhere;
    Tettigonia 0.5 everywhere."""
    rows = []
    for file, positives in windows.items():
        for start in np.arange(0.0, 30.0, 3.0):
            rows.append((file, start, start + 3, 0.9 if (start, start + 3) in positives else 0.1, 0.5))
    return pd.DataFrame(rows, columns=["file", "start_s", "end_s", *LABELS.labels])


def test_a_box_counts_from_the_overlap_threshold_or_half_a_short_box():
    starts, ends = np.array([0.0, 3.0, 6.0]), np.array([3.0, 6.0, 9.0])
    boxes = pd.DataFrame({"begin_s": [2.0, 2.01, 2.8, 5.5], "end_s": [7.0, 7.0, 3.4, 5.9]})
    got = window_labels(starts, ends, boxes, min_overlap_s=1.0)
    assert got[:, 0].tolist() == [True, True, True]  # 1.0 s in the first window: just enough
    assert got[:, 1].tolist() == [False, True, True]  # 0.99 s: just under
    assert got[:, 2].tolist() == [False, True, False]  # a 0.6 s chirp across a boundary: where 0.4 s of it is
    assert got[:, 3].tolist() == [False, True, False]  # a 0.4 s chirp wholly inside one window


def test_perfect_separation_gives_ap_one_and_no_positives_gives_nan_with_a_reason():
    positive = np.array([True, True, False, False, False])
    perfect = species_metrics(positive, np.array([0.9, 0.3, 0.2, 0.1, 0.0]), min_conf=0.25)
    assert perfect["average_precision"] == 1 and perfect["roc_auc"] == 1 and perfect["recall"] == 1
    assert (perfect["tp"], perfect["fp"], perfect["fn"]) == (2, 0, 0)
    at_half = species_metrics(positive, np.array([0.9, 0.3, 0.6, 0.1, 0.0]), min_conf=0.5)
    assert (at_half["precision"], at_half["recall"], at_half["f1"]) == (0.5, 0.5, 0.5)
    none = species_metrics(np.zeros(5, bool), np.array([0.9, 0.3, 0.2, 0.1, 0.0]), min_conf=0.25)
    assert none["precision"] == 0  # one false alarm is still a precision
    assert all(np.isnan(none[k]) for k in ("recall", "f1", "average_precision", "roc_auc"))
    assert "no window annotated" in none["note"]


def test_raven_tables_in_any_species_column_and_the_bad_ones_are_lines(tmp_path):
    _table(tmp_path / "site1.Table.1.selections.txt", [(3, 9, "Gryllus campestris"), (12, 14, "Homo sapiens")])
    _table(tmp_path / "site2.BirdNET.selection.table.txt", [(0, 6, "Great Green Bush-cricket")], "Common Name")
    _table(tmp_path / "site3.txt", [(0, 3, "gryllus_campestris"), (3, 6, "TETVIR")], "Annotation")
    _table(tmp_path / "site4.Table.1.selections.txt", [])  # annotated: nothing of the model's species in it
    (tmp_path / "notes.txt").write_text("Begin Time (s)\tEnd Time (s)\tComment\n1\t2\twind\n", encoding="utf-8")
    found = read_annotations([tmp_path], LABELS)
    assert found.recordings == {"site1", "site2", "site3", "site4"}
    assert found.boxes.drop(columns="runs_on").values.tolist() == [
        ["site1", 3.0, 9.0, "Gryllus campestris"], ["site2", 0.0, 6.0, "Tettigonia viridissima"],
        ["site3", 0.0, 3.0, "Gryllus campestris"], ["site3", 3.0, 6.0, "Tettigonia viridissima"]]
    assert found.problems == [
        f"{tmp_path / 'notes.txt'}: not a selection table (no a species column; a species column is one of Species, "
        "Annotation, Label, Class, Species Code, Scientific Name, Common Name)",
        f"{tmp_path / 'site1.Table.1.selections.txt'}: 1 box(es) of 'Homo sapiens', a species the model does not know "
        "(line 4); left out"]


def test_only_annotated_recordings_are_assessed_and_one_not_analysed_is_listed(tmp_path):
    _table(tmp_path / "a.Table.1.selections.txt", [(3, 9, "Gryllus campestris")])
    _table(tmp_path / "b.Table.1.selections.txt", [])
    _table(tmp_path / "lost.Table.1.selections.txt", [(0, 3, "Gryllus campestris")])
    scores = _scores({"x/a.wav": [(3.0, 6.0), (6.0, 9.0)], "x/b.wav": [], "x/unannotated.wav": [(0.0, 3.0)]})
    metrics, truth, problems = assess(scores, LABELS, read_annotations([tmp_path], LABELS), AssessConfig())
    assert problems == ["lost: annotated but not in the run's scores.csv (not analysed?); left out"]
    assert sorted(set(truth["file"])) == ["x/a.wav", "x/b.wav"]  # not x/unannotated.wav: nobody said what is in it
    gryllus, tettigonia, macro = metrics.to_dict("records")
    assert (gryllus["windows"], gryllus["positive_windows"], gryllus["boxes"]) == (20, 2, 1)
    assert gryllus["average_precision"] == 1 and gryllus["f1"] == 1
    assert tettigonia["positive_windows"] == 0 and np.isnan(tettigonia["average_precision"])
    assert tettigonia["fp"] == 20  # scored 0.5 everywhere: every window a false alarm
    assert macro["species"].startswith("macro (1 species") and macro["average_precision"] == 1
    figure = pr_figure(scores.loc[truth.index], truth, metrics, 0.25)
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == ["GRYCAM AP 1.00"]  # no empty curve


def test_assess_cli_on_the_example_recordings(tmp_path):
    runner = CliRunner()
    run = runner.invoke(app, ["analyze", str(EXAMPLES), "--out", str(tmp_path / "run"), "--format", "csv"])
    assert run.exit_code == 0, run.output
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    _table(annotations / "Gryllus_campestris_dat003-004.Table.1.selections.txt", [(0, 7.3, "GRYCAM")], "Species Code")
    _table(annotations / "background_bird_chorus_0-10s.Table.1.selections.txt", [])
    _table(annotations / "not_recorded.Table.1.selections.txt", [(0, 5, "GRYCAM")], "Species Code")
    args = ["assess", str(annotations), "--results", str(tmp_path / "run"), "--out", str(tmp_path / "assessment")]
    no_scores = runner.invoke(app, args)
    assert no_scores.exit_code == 2 and "--format including scores" in no_scores.output
    rerun = runner.invoke(app, ["analyze", str(EXAMPLES), "--out", str(tmp_path / "run"), "--format", "csv,scores"])
    assert rerun.exit_code == 0, rerun.output
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output  # the recording annotated but not analysed
    assert "not_recorded: annotated but not in the run's scores.csv" in result.output
    metrics = pd.read_csv(tmp_path / "assessment" / "assessment.csv").set_index("code")
    gryllus = metrics.loc["GRYCAM"]
    assert (gryllus["windows"], gryllus["positive_windows"]) == (7, 3)  # 3 windows of the cricket, 4 of birds
    assert gryllus["average_precision"] == pytest.approx(1.0)  # the bundled model separates this one
    assert (tmp_path / "assessment" / "precision_recall.png").stat().st_size > 0
    assert (tmp_path / "assessment" / "problems.txt").read_text().count("\n") == 1


def test_read_scores_takes_the_species_names_from_the_runs_config(tmp_path):
    _scores({"a.wav": []}).to_csv(tmp_path / "scores.csv", index=False)
    assert read_scores(tmp_path)[1].codes == ("GRYCAM", "TETVIR")  # derived from the labels without a config.json
    assert read_scores(tmp_path / "scores.csv")[1].codes == ("GRYCAM", "TETVIR")  # the file itself, as --results
    assert recording_key("C:\\Data\\Card 2\\Site1.WAV") == recording_key("site1.wav") == "site1"  # Raven on Windows
    (tmp_path / "scores.csv").write_text("file,start\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a `pulse analyze` scores.csv"):
        read_scores(tmp_path)


def test_a_table_of_several_recordings_and_a_name_two_recordings_share(tmp_path):
    rows = ("Selection\tBegin File\tBegin Time (s)\tEnd Time (s)\tSpecies Code\n"
            "1\ta.wav\t0\t6\tGRYCAM\n2\tb.wav\t0\t3\tGRYCAM\n")
    (tmp_path / "combined.txt").write_text(rows, encoding="utf-8")
    found = read_annotations([tmp_path], LABELS)
    assert found.recordings == {"a", "b"} and found.boxes["recording"].tolist() == ["a", "b"]
    scores = _scores({"card1/a.wav": [], "card1/b.wav": [], "card2/b.wav": []})
    metrics, truth, problems = assess(scores, LABELS, found, AssessConfig())
    assert problems == ["b: annotated, and 2 analysed recordings share that name (card1/b.wav, card2/b.wav); left out"]
    assert set(truth["file"]) == {"card1/a.wav"} and metrics.loc[0, "positive_windows"] == 2


def test_birdnet_scientific_common_names_empty_cells_and_boxes_without_length(tmp_path):
    """BirdNET's 'Scientific_Common' labels are the model's species; a Begin File cell left empty means the table's
    own recording; a box that does not end after it begins, or has no species, is a line, however many."""
    rows = ("Selection\tBegin File\tBegin Time (s)\tEnd Time (s)\tSpecies\n"
            "1\t\t0\t3\tGryllus campestris_Field Cricket\n2\t\t4\t4\tGRYCAM\n"
            + "".join(f"{n}\tb.wav\t{n}\t{n + 1}\t\n" for n in range(3, 9)))
    (tmp_path / "site5.txt").write_text(rows, encoding="utf-8")
    found = read_annotations([tmp_path], LABELS)
    assert found.boxes.drop(columns="runs_on").values.tolist() == [["site5", 0.0, 3.0, "Gryllus campestris"]]
    assert found.recordings == {"site5", "b"}
    assert found.problems == [
        f"{tmp_path / 'site5.txt'}, line 3: ends at 4 s, not after it begins (4 s)",
        f"{tmp_path / 'site5.txt'}: 6 box(es) of '(no species)', a species the model does not know "
        "(lines 4, 5, 6, 7, 8, ...); left out"]


def test_an_empty_table_naming_recordings_per_row_annotates_its_own(tmp_path):
    (tmp_path / "site6.Table.1.selections.txt").write_text(
        "Selection\tBegin File\tBegin Time (s)\tEnd Time (s)\tSpecies\n", encoding="utf-8")
    assert read_annotations([tmp_path], LABELS).recordings == {"site6"}


def test_a_window_at_min_conf_is_a_detection_and_an_overlap_in_float_arithmetic_counts():
    """`pulse analyze` reports a window scoring min-conf; 3 - 2.2 is 0.7999999999999998 in floats, an overlap of
    0.8 s all the same."""
    at = species_metrics(np.array([True, False]), np.array([0.25, 0.1]), min_conf=0.25)
    assert (at["tp"], at["fp"], at["fn"]) == (1, 0, 0)
    boxes = pd.DataFrame({"begin_s": [2.2], "end_s": [7.0]})
    assert window_labels(np.array([0.0]), np.array([3.0]), boxes, min_overlap_s=0.8).tolist() == [[True]]


def test_no_detection_leaves_precision_undefined_and_every_window_annotated_auc():
    quiet = species_metrics(np.array([True, False]), np.array([0.1, 0.1]), min_conf=0.25)
    assert np.isnan(quiet["precision"]) and quiet["recall"] == 0 and quiet["f1"] == 0
    everywhere = species_metrics(np.array([True, True]), np.array([0.9, 0.1]), min_conf=0.25)
    assert np.isnan(everywhere["roc_auc"]) and everywhere["note"] == "every window annotated with it: ROC AUC undefined"
    assert everywhere["average_precision"] == 1


def test_read_scores_takes_the_labels_from_the_scores_where_config_json_is_another_models(tmp_path):
    _scores({"a.wav": []}).to_csv(tmp_path / "scores.csv", index=False)
    for config in ({"model_metadata": {"labels": ["Other species"]}}, {"model": "no metadata"}):
        (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
        assert read_scores(tmp_path)[1].labels == LABELS.labels
    (tmp_path / "scores.csv").write_text("file,start_s,end_s\na.wav,0,3\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a `pulse analyze` scores.csv"):
        read_scores(tmp_path)


def test_assess_with_no_annotated_recording_in_the_scores_is_an_error_naming_the_first_problem(tmp_path):
    _scores({"a.wav": []}).to_csv(tmp_path / "scores.csv", index=False)
    _table(tmp_path / "elsewhere.Table.1.selections.txt", [(0, 3, "GRYCAM")])
    with pytest.raises(ValueError, match=r"no annotated recording is in .* \(1 problem\(s\); first: elsewhere: "
                                         r"annotated but not in"):
        run_assessment([tmp_path / "elsewhere.Table.1.selections.txt"], tmp_path, tmp_path / "out", AssessConfig())
    assert not (tmp_path / "out").exists()


def test_tables_of_several_recordings_pasted_together_keep_each_recordings_boxes(tmp_path):
    """Each recording's boxes numbered from 1, each listed once per view: the second recording's boxes were dropped
    as repeats of the first's, silently."""
    rows = ("Selection\tView\tBegin File\tBegin Time (s)\tEnd Time (s)\tSpecies Code\n"
            + "".join(f"1\t{view}\t{file}\t0\t3\t{code}\n" for file, code in (("a.wav", "GRYCAM"), ("b.wav", "TETVIR"))
                      for view in ("Waveform 1", "Spectrogram 1")))
    (tmp_path / "pasted.txt").write_text(rows, encoding="utf-8")
    found = read_annotations([tmp_path], LABELS)
    assert found.boxes.drop(columns="runs_on").values.tolist() == [["a", 0.0, 3.0, "Gryllus campestris"],
                                           ["b", 0.0, 3.0, "Tettigonia viridissima"]]


def test_tables_named_as_pulse_analyze_writes_them_are_said_to_score_the_run_against_itself(tmp_path, caplog):
    """The run's own Raven tables given as annotations (its --out folder, by mistake) gave 1.0 everywhere without a
    word; corrected by hand they are annotations like any other, so they are assessed, with one line."""
    _scores({"a.wav": [(0.0, 3.0)]}).to_csv(tmp_path / "scores.csv", index=False)
    own = _table(tmp_path / "a.pulse.selection.table.txt", [(0, 3, "GRYCAM")], "Species Code")
    plain = _table(tmp_path / "a.Table.1.selections.txt", [(0, 3, "GRYCAM")], "Species Code")
    run_assessment([plain], tmp_path, tmp_path / "out", AssessConfig())
    assert "pulse analyze" not in caplog.text
    run_assessment([own], tmp_path, tmp_path / "out", AssessConfig())
    assert f"1 of the tables are named as `pulse analyze` writes them (e.g. {own})" in caplog.text


def test_recordings_of_one_name_on_two_cards_go_with_their_tables_by_folder_or_begin_path(tmp_path):
    """AudioMoth names every file by its start time, so two sites' cards hold the same names: all such recordings
    were left out as sharing a name, even where the tables' folders or a Begin Path said which is which; tables given
    one by one (a shell's `annotations/*/*.txt`) were, until 2026-12-07, though their folders say it too."""
    cards = tmp_path / "cards"
    for site, example in (("site1", "Gryllus_campestris_dat003-004"), ("site2", "background_bird_chorus_0-10s")):
        (cards / site).mkdir(parents=True)
        (cards / site / "20250701_213000.flac").write_bytes((EXAMPLES / f"{example}.flac").read_bytes())
    runner = CliRunner()
    run = runner.invoke(app, ["analyze", str(cards), "--out", str(tmp_path / "run"), "--format", "scores"])
    assert run.exit_code == 0, run.output
    by_folder = tmp_path / "annotations"
    (by_folder / "site1").mkdir(parents=True)
    (by_folder / "site2").mkdir()
    _table(by_folder / "site1" / "20250701_213000.Table.1.selections.txt", [(0, 7.3, "GRYCAM")], "Species Code")
    _table(by_folder / "site2" / "20250701_213000.Table.1.selections.txt", [])
    by_path = tmp_path / "combined.txt"  # Raven on the field laptop: the cards under another drive and folder
    by_path.write_text("Selection\tBegin Path\tBegin Time (s)\tEnd Time (s)\tSpecies Code\n"
                       "1\tE:\\Cards\\Site1\\20250701_213000.WAV\t0\t7.3\tGRYCAM\n"
                       "1\tE:\\Cards\\Site2\\20250701_213000.WAV\t0\t0.5\tTETVIR\n", encoding="utf-8")
    one_by_one = sorted(by_folder.glob("*/*.txt"))
    for n, (annotations, tetvir_windows) in enumerate((([by_folder], 0), (one_by_one, 0), ([by_path], 1))):
        out = tmp_path / f"assessed_{n}"
        result = runner.invoke(app, ["assess", *map(str, annotations), "--results", str(tmp_path / "run"), "--out",
                                     str(out)])
        assert result.exit_code == 0, result.output
        metrics = pd.read_csv(out / "assessment.csv").set_index("code")
        gryllus = metrics.loc["GRYCAM"]
        assert (gryllus["windows"], gryllus["positive_windows"]) == (7, 3)  # the cricket's 3 windows, the birds' 4
        assert gryllus["average_precision"] == pytest.approx(1.0)  # its box on the cricket, not on the birds
        assert metrics.loc["TETVIR", "positive_windows"] == tetvir_windows  # the first window of site2's birds


def test_a_name_two_folders_share_stays_a_line_where_the_annotation_does_not_say_which(tmp_path):
    """A table given by itself or in a folder of its own, or a Begin Path naming a third folder, says nothing of the
    card; a name only one recording has goes with it whatever the table's folders."""
    (tmp_path / "site1").mkdir()
    (tmp_path / "tables" / "batch7").mkdir(parents=True)
    alone = _table(tmp_path / "site1" / "x.Table.1.selections.txt", [(0, 3, "GRYCAM")], "Species Code")
    _table(tmp_path / "tables" / "batch7" / "y.Table.1.selections.txt", [(0, 3, "GRYCAM")], "Species Code")
    (tmp_path / "site3.txt").write_text("Selection\tBegin Path\tBegin Time (s)\tEnd Time (s)\tSpecies Code\n"
                                        "1\tD:\\site3\\x.WAV\t0\t3\tGRYCAM\n", encoding="utf-8")
    scores = _scores({"card/site1/x.wav": [(0.0, 3.0)], "card/site2/x.wav": [], "card/site2/y.wav": [(0.0, 3.0)]})
    for annotations, key in (([alone], "x"), ([tmp_path / "site1"], "x"), ([tmp_path / "site3.txt"], "d:/site3/x")):
        metrics, truth, problems = assess(scores, LABELS, read_annotations(annotations, LABELS), AssessConfig())
        assert problems == [f"{key}: annotated, and 2 analysed recordings share that name (card/site1/x.wav, "
                            "card/site2/x.wav); left out"]
        assert truth.empty
    batch = read_annotations([tmp_path / "tables"], LABELS)
    assert batch.recordings == {"batch7/y"}  # no recording in a folder batch7: the one named y
    metrics, truth, problems = assess(scores, LABELS, batch, AssessConfig())
    assert problems == [] and set(truth["file"]) == {"card/site2/y.wav"} and metrics.loc[0, "average_precision"] == 1


def test_a_table_written_on_a_mac_names_its_recordings_decomposed_and_still_finds_them(tmp_path):
    """A Mac writes 'ü' as 'u' and a combining mark (NFD); the run's scores.csv names the file composed (NFC)."""
    import unicodedata

    decomposed = unicodedata.normalize("NFD", "Grünland/nacht.wav")
    (tmp_path / "mac.txt").write_text("Selection\tBegin Path\tBegin Time (s)\tEnd Time (s)\tSpecies Code\n"
                                      f"1\t{decomposed}\t0\t3\tGRYCAM\n", encoding="utf-8")
    found = read_annotations([tmp_path / "mac.txt"], LABELS)
    scores = _scores({"karte/Grünland/nacht.wav": [(0.0, 3.0)], "karte/Wald/nacht.wav": []})
    metrics, truth, problems = assess(scores, LABELS, found, AssessConfig())
    assert problems == [] and set(truth["file"]) == {"karte/Grünland/nacht.wav"}
    assert metrics.loc[0, "positive_windows"] == 1


SEQUENCE = "Selection\tView\tBegin Time (s)\tEnd Time (s)\tBegin Path\tFile Offset (s)\tBegin File\tEnd File\tSpecies\n"


def test_a_sequence_tables_files_between_its_first_and_last_box_are_negatives(tmp_path):
    """A listener goes through a sequence's files without song to reach the later ones; until 2026-12-07 they were
    not assessed, and a false alarm in one was not counted (precision 1.0, not 0.8)."""
    (tmp_path / "night.txt").write_text(SEQUENCE + "1\tSpectrogram 1\t3\t9\tcard/b.wav\t3\tb.wav\tb.wav\tGRYCAM\n"
                                        "2\tSpectrogram 1\t63\t69\tcard/d.wav\t3\td.wav\td.wav\tGRYCAM\n",
                                        encoding="utf-8")
    found = read_annotations([tmp_path], LABELS)
    scores = _scores({"card/a.wav": [(0.0, 3.0)], "card/b.wav": [(3.0, 6.0), (6.0, 9.0)], "card/c.wav": [(0.0, 3.0)],
                      "card/d.wav": [(3.0, 6.0), (6.0, 9.0)], "card/e.wav": [], "other/c.wav": [(0.0, 3.0)]})
    metrics, truth, problems = assess(scores, LABELS, found, AssessConfig())
    assert problems == [] and sorted(set(truth["file"])) == ["card/b.wav", "card/c.wav", "card/d.wav"]
    gryllus = metrics.iloc[0]
    assert (gryllus["windows"], gryllus["tp"], gryllus["fp"], gryllus["precision"]) == (30, 4, 1, 0.8)
    assert found.sequences == [{"card/b": 0.0, "card/d": 60.0}]  # each file's start in the sequence


def test_a_box_running_on_into_the_next_file_of_a_sequence_is_song_in_both(tmp_path):
    """27-33 s of the sequence: a.wav's last 3 s, then b.wav's first 3 s; until 2026-12-07 b.wav's part was not song,
    its detection a false alarm (precision 0.5, not 1.0)."""
    (tmp_path / "night.txt").write_text(SEQUENCE + "1\tSpectrogram 1\t27\t33\tcard/a.wav\t27\ta.wav\tb.wav\tGRYCAM\n"
                                        "2\tSpectrogram 1\t33\t36\tcard/b.wav\t3\tb.wav\tb.wav\tTETVIR\n",
                                        encoding="utf-8")
    found = read_annotations([tmp_path], LABELS)
    metrics, truth, _ = assess(_scores({"card/a.wav": [(27.0, 30.0)], "card/b.wav": [(0.0, 3.0)]}), LABELS, found,
                               AssessConfig())
    gryllus = metrics.iloc[0]
    assert (gryllus["boxes"], gryllus["positive_windows"], gryllus["tp"], gryllus["fp"]) == (1, 2, 2, 0)
    assert truth.loc[truth["Gryllus campestris"] == 1, ["file", "start_s"]].values.tolist() == [["card/a.wav", 27.0],
                                                                                                 ["card/b.wav", 0.0]]
    assert found.boxes["runs_on"].tolist() == ["card/b", ""]


def _card(tmp_path: Path, boxes: list[tuple]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Metrics and window labels of card/rec1..rec12.wav (30 s each, Gryllus detected nowhere) against a sequence
    table of Gryllus `boxes`: (begin and end in the sequence, file offset, begin file, end file)."""
    rows = [f"{n}\tSpectrogram 1\t{begin}\t{end}\tcard/{file}\t{offset}\t{file}\t{end_file}\tGRYCAM\n"
            for n, (begin, end, offset, file, end_file) in enumerate(boxes, 1)]
    (tmp_path / "night.txt").write_text(SEQUENCE + "".join(rows), encoding="utf-8")
    scores = _scores({f"card/rec{k}.wav": [] for k in range(1, 13)})
    metrics, truth, problems = assess(scores, LABELS, read_annotations([tmp_path], LABELS), AssessConfig())
    assert problems == []
    return metrics, truth


def _numbers(files) -> list[int]:
    return sorted(int(file[len("card/rec"):-len(".wav")]) for file in set(files))


def test_a_sequences_files_are_in_order_by_number_not_by_name_letter_by_letter(tmp_path):
    """Boxes in rec2.wav and rec10.wav of rec1..rec12, opened in that order: until 2026-12-07 the files between them
    were those whose names sort between letter by letter, rec10, rec11, rec12 and rec2 (40 windows), not rec2 to
    rec10 (90)."""
    metrics, truth = _card(tmp_path, [(33, 39, 3, "rec2.wav", "rec2.wav"), (273, 279, 3, "rec10.wav", "rec10.wav")])
    assert _numbers(truth["file"]) == list(range(2, 11)) and metrics.loc[0, "windows"] == 90


def test_a_sequence_opened_in_another_order_is_in_the_order_of_its_files_starts(tmp_path):
    """The same files opened as listed letter by letter (rec1, rec10, rec11, rec12, rec2, ...): their starts in the
    sequence (Begin Time - File Offset: rec10's 30 s, rec2's 120 s) put rec11 and rec12 between, not rec3 to rec9."""
    _, truth = _card(tmp_path, [(123, 129, 3, "rec2.wav", "rec2.wav"), (33, 39, 3, "rec10.wav", "rec10.wav")])
    assert _numbers(truth["file"]) == [2, 10, 11, 12]


def test_a_box_running_through_several_files_of_a_sequence_is_song_in_each(tmp_path):
    """A box from rec10.wav's 24 s to rec12.wav's 6 s (294-336 s of the sequence): until 2026-12-07 its rest was
    carried into rec12 alone, all 30 s of it song (10 windows), and none of rec11."""
    metrics, truth = _card(tmp_path, [(33, 39, 3, "rec2.wav", "rec2.wav"), (294, 336, 24, "rec10.wav", "rec12.wav")])
    song = truth.loc[truth["Gryllus campestris"] == 1, "file"]
    assert {n: int((song == f"card/rec{n}.wav").sum()) for n in _numbers(song)} == {2: 2, 10: 2, 11: 10, 12: 2}
    assert (metrics.loc[0, "boxes"], metrics.loc[0, "positive_windows"]) == (2, 16)
