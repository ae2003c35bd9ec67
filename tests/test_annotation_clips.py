"""`pulse clips-from-annotations`: Raven boxes of long recordings -> species folders that make-manifest and train take.

End to end on real audio: InsectSet32 songs placed at known times into real soundscapes, as two AudioMoth cards'
recordings of the same name, annotated with Raven tables."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from pulse import annotation_clips
from pulse.annotation_clips import pieces, unboxed
from pulse.cli import app
from tests.test_assess import _table

pytestmark = pytest.mark.usefixtures("torch_one_thread")

RATE = 44100
NIGHT = "20250601_210000"  # AudioMoth names every card's files by their start time
SONGS = {"Gryllus campestris": "Gryllus_campestris/Grylluscampestris_dat008-016.M.flac",
         "Tettigonia viridissima": "Tettigonia_viridissima/Tettigoniaviridissima_200726_0062.M.flac",
         "Chorthippus biguttulus": "Chorthippus_biguttulus/Chorthippusbiguttulus_CHOBIG_20190906_163909.M.flac"}
# (species, begin, seconds of song) per card; boxes are where the song was placed
PLACED = {"site1": [("Gryllus campestris", 5.0, 2.0), ("Tettigonia viridissima", 20.0, 8.0),
                    ("Gryllus campestris", 0.3, 1.0), ("Chorthippus biguttulus", 40.0, 4.0),
                    ("Gryllus campestris", 41.0, 2.0)],
          "site2": [("Gryllus campestris", 10.0, 2.5), ("Tettigonia viridissima", 30.0, 2.0),
                    ("Gryllus campestris", 58.6, 1.0)]}


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x ** 2)))


@pytest.fixture(scope="module")
def field(shared_data, tmp_path_factory):
    """Two cards' 60 s recordings (real backgrounds, 16-bit WAV), their Raven tables (species as annotators write
    them), the songs placed, and a card recording nobody annotated and one that is damaged."""
    root = tmp_path_factory.mktemp("field")
    audio = shared_data / "audio"
    soundscape = np.concatenate([sf.read(audio / "backgrounds" / name, dtype="float32")[0] for name in (
        "MAAD_spinetail_Colombia.flac", "OSS_great_plains_toad.flac", "IS32_Kikihia_muta.flac")])
    soundscape = np.resize(soundscape, 60 * RATE) * (0.01 / rms(soundscape))
    songs = {}
    for site, placed in PLACED.items():
        recording = soundscape.copy() if site == "site1" else soundscape[::-1].copy()
        for species, begin, seconds in placed:
            source = sf.read(audio / "insectset32" / SONGS[species], dtype="float32")[0]
            song = source[int(0.5 * RATE):int((0.5 + seconds) * RATE)]
            song = song * (0.1 / rms(song))
            recording[int(begin * RATE):int(begin * RATE) + len(song)] += song
            songs[site, begin] = song
        (root / "cards" / site).mkdir(parents=True)
        sf.write(root / "cards" / site / f"{NIGHT}.WAV", recording, RATE, subtype="PCM_16")
        (root / "tables" / site).mkdir(parents=True)
        rows = [(begin, begin + seconds, species if site == "site1" else species.replace(" ", "_").lower())
                for species, begin, seconds in placed]
        extra = [(70.0, 72.0, "Gryllus campestris"), (12.0, 13.0, "")] if site == "site1" else []
        _table(root / "tables" / site / f"{NIGHT}.Table.1.selections.txt", rows + extra)
    sf.write(root / "cards" / "site2" / "20250602_210000.WAV", soundscape, RATE, subtype="PCM_16")  # no table
    (root / "cards" / "site1" / "broken.WAV").write_bytes(b"RIFF" + bytes(200))
    _table(root / "tables" / "site1" / "broken.Table.1.selections.txt", [(1.0, 2.0, "Gryllus campestris")])
    return root, songs


def cut(root: Path, out: Path, *flags: str):
    return CliRunner().invoke(app, ["clips-from-annotations", str(root / "tables"), "--audio", str(root / "cards"),
                                    "--out", str(out), *flags])


def test_boxes_become_species_clips_holding_their_song_that_make_manifest_takes(field, tmp_path):
    root, songs = field
    result = cut(root, tmp_path / "clips")
    assert result.exit_code == 1, result.output  # the problems below, each one line; the rest is cut
    problems = (tmp_path / "clips" / "problems.txt").read_text().splitlines()
    assert len(problems) == 5, problems
    for said in ("1 box(es) without a species (line 14); left out", "at 70-72 s begins after the recording's end",
                 "20250602_210000.WAV: no selection table; no clips cut", "broken.WAV",
                 "2 clip(s) of boxes not cut, holding another species' box too (a clip trains one species), e.g. "
                 "Chorthippus biguttulus at 40-44 s with Gryllus campestris"):
        assert sum(said in line for line in problems) == 1, said
    assert list(pd.read_csv(tmp_path / "clips" / "errors.csv")["stage"]) == ["open"]
    clips = sorted(p.relative_to(tmp_path / "clips").as_posix() for p in (tmp_path / "clips").rglob("*.flac"))
    assert clips == ["Gryllus_campestris/site1_20250601_210000_0.3-1.3s.flac",
                     "Gryllus_campestris/site1_20250601_210000_5-7s.flac",
                     "Gryllus_campestris/site2_20250601_210000_10-12.5s.flac",  # 'gryllus_campestris' is the species
                     "Gryllus_campestris/site2_20250601_210000_58.6-59.6s.flac",
                     "Tettigonia_viridissima/site1_20250601_210000_20-28s.flac",
                     "Tettigonia_viridissima/site2_20250601_210000_30-32s.flac"]
    for clip in clips:
        site, times = Path(clip).stem.split("_")[0], Path(clip).stem.rsplit("_", 1)[1]
        begin, end = map(float, times[:-1].split("-"))
        recording = sf.read(root / "cards" / site / f"{NIGHT}.WAV", dtype="float32")[0]
        audio, rate = sf.read(tmp_path / "clips" / clip, dtype="float32")
        assert (rate, sf.info(tmp_path / "clips" / clip).format) == (RATE, "FLAC")
        # 3 s at least: a short box in the 3 s around its middle, kept inside the recording; a longer one whole
        length = max(end - begin, 3.0)
        start = min(max(0.0, (begin + end) / 2 - length / 2), 60.0 - length) if end - begin < 3 else begin
        assert len(audio) == round(length * RATE)
        np.testing.assert_array_equal(audio, recording[round(start * RATE):round(start * RATE) + len(audio)])
        song = songs[site, begin]  # and it holds the song placed there, not the soundscape
        at = round((begin - start) * RATE)
        assert np.corrcoef(audio[at:at + len(song)], song)[0, 1] > 0.99

    made = CliRunner().invoke(app, ["make-manifest", str(tmp_path / "clips"), "--out", str(tmp_path / "m.csv")])
    assert made.exit_code == 0, made.output
    manifest = pd.read_csv(tmp_path / "m.csv")
    assert manifest.groupby("species").size().to_dict() == {"Gryllus campestris": 4, "Tettigonia viridissima": 2}
    checked = CliRunner().invoke(app, ["manifest", str(tmp_path / "m.csv"), "--audio-root", str(tmp_path / "clips")])
    assert checked.exit_code == 0 and "OK, 6 rows" in checked.output, checked.output

    again = cut(root, tmp_path / "clips")  # a rerun keeps what it finds
    assert "0 clip(s) written, 6 kept from an earlier run" in again.output


def test_a_model_trains_on_the_clips(field, shared_data, tmp_path):
    """The tiny smoke run of tests/test_train.py (its two species are those annotated), on the clips' manifest."""
    from pulse.train import weak_labels
    from tests.test_train import tiny_config

    root, _ = field
    cut(root, tmp_path / "clips")
    assert CliRunner().invoke(app, ["make-manifest", str(tmp_path / "clips"), "--out", str(tmp_path / "m.csv")]
                              ).exit_code == 0
    cfg = tiny_config(shared_data, tmp_path, manifest=str(tmp_path / "m.csv"), audio_root=str(tmp_path / "clips"))
    best = weak_labels.train(cfg, tmp_path / "run")
    assert best["epoch"] in (1, 2) and (tmp_path / "run" / "model.safetensors").is_file()


def test_background_is_what_no_box_covers_and_make_manifest_leaves_it_for_backgrounds(field, tmp_path):
    root, _ = field
    assert cut(root, tmp_path / "clips", "--background").exit_code == 1
    tables = {site: pd.read_csv(root / "tables" / site / f"{NIGHT}.Table.1.selections.txt", sep="\t")
              for site in PLACED}
    found = sorted((tmp_path / "clips" / "Background").glob("*.flac"))
    assert {p.name.split("_")[0] for p in found} == {"site1", "site2"}
    for clip in found:
        site, times = clip.stem.split("_")[0], clip.stem.rsplit("_", 1)[1]
        begin, end = map(float, times[:-1].split("-"))
        boxes = tables[site]
        assert end - begin >= 3.0 and sf.info(clip).duration == pytest.approx(end - begin, abs=1e-4)
        assert not ((boxes["Begin Time (s)"] < end) & (boxes["End Time (s)"] > begin)).any()
    made = CliRunner().invoke(app, ["make-manifest", str(tmp_path / "clips"), "--out", str(tmp_path / "m.csv")])
    assert made.exit_code == 0 and "Background: BirdNET-Analyzer's folder of sounds that are no class" in made.output


def test_ctrl_c_leaves_whole_clips_says_how_many_and_a_rerun_cuts_the_rest(field, tmp_path, monkeypatch, caplog):
    """Ctrl-C ended the run in silence (exit 130, nothing said). Now one line says what is done, the clips there are
    whole (interrupted between a clip's write and its rename: no FLAC under its name, no temporary left), and the same
    command cuts the rest without cutting the finished ones again."""
    root, _ = field
    replace, renamed = os.replace, []

    def ctrl_c_at_the_fourth_clip(src, dst):
        if str(dst).endswith(".flac"):
            if len(renamed) == 3:
                raise KeyboardInterrupt
            renamed.append(dst)
        replace(src, dst)

    monkeypatch.setattr(os, "replace", ctrl_c_at_the_fourth_clip)
    out = tmp_path / "clips"
    with caplog.at_level(logging.WARNING):
        stopped = cut(root, out)
    assert stopped.exit_code == 130
    assert (f"interrupted: 3 clip(s) written, 0 kept from an earlier run, in {out}; run the same command again to "
            "cut the rest") in caplog.text
    assert sorted(out.rglob("*.flac")) == sorted(renamed) and not list(out.rglob("*.tmp"))
    assert all(sf.info(clip).duration >= 1.0 for clip in renamed)
    assert (out / "problems.txt").is_file() and (out / "errors.csv").is_file()
    monkeypatch.undo()
    again = cut(root, out)
    assert "3 clip(s) written, 3 kept from an earlier run" in again.output
    assert len(list(out.rglob("*.flac"))) == 6


def test_a_clip_no_longer_given_by_the_tables_is_named(field, tmp_path, caplog):
    root, _ = field
    stale = tmp_path / "clips" / "Gryllus_campestris" / "site1_20250601_210000_33-35s.flac"
    stale.parent.mkdir(parents=True)
    sf.write(stale, np.zeros(3 * RATE), RATE)
    result = cut(root, tmp_path / "clips")
    assert result.exit_code == 1 and "1 clip(s) in" in caplog.text and str(stale) in caplog.text


def test_clips_cut_inside_the_recordings_folder_are_not_taken_for_recordings(field, tmp_path):
    from pulse.discovery import find_audio

    root, _ = field
    shutil.copytree(root / "cards", tmp_path / "cards")
    result = CliRunner().invoke(app, ["clips-from-annotations", str(root / "tables"), "--audio",
                                      str(tmp_path / "cards"), "--out", str(tmp_path / "cards" / "clips")])
    assert "6 clip(s) written" in result.output
    assert len(find_audio([tmp_path / "cards"])) == 4  # the cards' recordings alone, for analyze and make-manifest


def test_long_stretches_are_cut_in_equal_pieces_and_gaps_are_what_no_box_covers():
    assert pieces(0.0, 50.0) == [(0.0, 50.0)]
    assert pieces(10.0, 160.0) == [(10.0, 60.0), (60.0, 110.0), (110.0, 160.0)]
    boxes = pd.DataFrame({"begin_s": [5.0, 6.0, 9.5, 20.0], "end_s": [8.0, 7.0, 12.0, 21.0]})
    assert unboxed(boxes, 30.0) == [(0.0, 5.0), (12.0, 20.0), (21.0, 30.0)]  # 8-9.5 s: under 3 s
    assert unboxed(boxes, 17.0) == [(0.0, 5.0), (12.0, 17.0)]  # a box beyond the end: none after it


def test_a_sequence_tables_box_free_files_between_its_boxes_are_background(tmp_path):
    """`pulse assess` takes the files a sequence table's listener went through between its first and last annotated
    one as negatives; until 2026-12-07 clips-from-annotations said of them "no selection table" and, with
    --background, cut none of them. Files before the first or after the last are not in the sequence, as far as the
    table says."""
    from tests.test_assess import SEQUENCE

    rng = np.random.default_rng(0)
    (tmp_path / "card").mkdir()
    for name in "abcde":
        sf.write(tmp_path / "card" / f"{name}.wav", rng.normal(0, 0.01, 8000 * 10), 8000, subtype="PCM_16")
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "night.txt").write_text(
        SEQUENCE + "1\tSpectrogram 1\t13\t15\tcard/b.wav\t3\tb.wav\tb.wav\tGryllus\n"
        "2\tSpectrogram 1\t33\t35\tcard/d.wav\t3\td.wav\td.wav\tGryllus\n", encoding="utf-8")
    for flags in ((), ("--background",)):
        out = tmp_path / f"clips{len(flags)}"
        result = CliRunner().invoke(app, ["clips-from-annotations", str(tmp_path / "tables"), "--audio",
                                          str(tmp_path / "card"), "--out", str(out), *flags])
        assert result.exit_code == 1, result.output
        problems = (out / "problems.txt").read_text().splitlines()
        assert problems == [f"{tmp_path / 'card' / name}.wav: no selection table; no clips cut" for name in "ae"]
        clips = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.flac"))
        cut_background = ["Background/b_0-3s.flac", "Background/b_5-10s.flac", "Background/c_0-10s.flac",
                          "Background/d_0-3s.flac", "Background/d_5-10s.flac"] if flags else []
        assert clips == cut_background + ["Gryllus/b_3-5s.flac", "Gryllus/d_3-5s.flac"]


def test_a_box_running_through_several_files_is_cut_from_each_in_order_by_number(tmp_path):
    """rec1, rec2, rec3 and rec10 (10 s each) in that order, a box 15-34 s of the sequence from rec2's 5 s to rec10's
    4 s: until 2026-12-07 its rest was cut from rec10 alone, 0-10 s, and rec3 (letter by letter after rec2, the last
    annotated file) was "no selection table"."""
    from tests.test_assess import SEQUENCE

    (tmp_path / "card").mkdir()
    for name in ("rec1", "rec2", "rec3", "rec10"):
        sf.write(tmp_path / "card" / f"{name}.wav", np.random.default_rng(0).normal(0, 0.01, 8000 * 10), 8000)
    (tmp_path / "night.txt").write_text(
        SEQUENCE + "1\tSpectrogram 1\t2\t4\tcard/rec1.wav\t2\trec1.wav\trec1.wav\tGryllus\n"
        "2\tSpectrogram 1\t15\t34\tcard/rec2.wav\t5\trec2.wav\trec10.wav\tGryllus\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["clips-from-annotations", str(tmp_path / "night.txt"), "--audio",
                                      str(tmp_path / "card"), "--out", str(tmp_path / "clips")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "clips" / "Gryllus").glob("*.flac")) == [
        "rec10_0-4s.flac", "rec1_2-4s.flac", "rec2_5-10s.flac", "rec3_0-10s.flac"]


def test_a_clip_a_short_recording_cuts_short_is_counted_in_the_last_line(tmp_path):
    """A box of a recording shorter than the 3 s window is the whole recording, a Shortened row of errors.csv; until
    2026-12-07 the last line did not count it, as `pulse segments`' does, also when a rerun keeps the clip."""
    (tmp_path / "card").mkdir()
    sf.write(tmp_path / "card" / "short.wav", np.random.default_rng(0).normal(0, 0.01, 8000 * 2), 8000)
    (tmp_path / "tables").mkdir()
    _table(tmp_path / "tables" / "short.Table.1.selections.txt", [(0.5, 1.5, "Gryllus campestris")])
    for written, kept in ((1, 0), (0, 1)):
        result = CliRunner().invoke(app, ["clips-from-annotations", str(tmp_path / "tables"), "--audio",
                                          str(tmp_path / "card"), "--out", str(tmp_path / "clips")])
        assert result.exit_code == 0, result.output
        assert (f"{written} clip(s) written, {kept} kept from an earlier run, 0 failed, 1 shortened (errors.csv), of "
                "1 species") in result.output
        (row,) = pd.read_csv(tmp_path / "clips" / "errors.csv").itertuples()
        assert row.error_type == "Shortened" and row.message.endswith("the clip is the 0.00-2.00 s before it")


def test_pulse_analyze_tables_give_folders_of_the_species_scientific_name(tmp_path):
    """A verify-then-retrain loop: `pulse analyze`, the detections checked in Raven, clips cut from those tables.
    They name a species by common name and code, no Species column; until 2026-12-07 the clips went to `CHOBIG/`,
    and make-manifest and training learned species named by code. Other names (a Species column's) are kept."""
    examples = Path(__file__).parents[1] / "pulse" / "assets" / "examples"
    (tmp_path / "card").mkdir()
    for name in ("Chorthippus_biguttulus_Take22_0-8s.flac", "Gryllus_campestris_dat003-004.flac",
                 "background_bird_chorus_0-10s.flac"):
        shutil.copy(examples / name, tmp_path / "card")
    analyzed = CliRunner().invoke(app, ["analyze", str(tmp_path / "card"), "--out", str(tmp_path / "run")])
    assert analyzed.exit_code == 0, analyzed.output
    tables = sorted((tmp_path / "run").glob("[CG]*.pulse.selection.table.txt"))
    assert "Species Code" in tables[0].read_text() and "\tSpecies\t" not in tables[0].read_text()
    tables.append(_table(tmp_path / "background_bird_chorus_0-10s.Table.1.selections.txt",
                         [(1.0, 2.0, "decticus_verrucivorus")]))
    result = CliRunner().invoke(app, ["clips-from-annotations", *map(str, tables), "--audio", str(tmp_path / "card"),
                                      "--out", str(tmp_path / "clips")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "clips").iterdir() if p.is_dir()) == [
        "Chorthippus_biguttulus", "Gryllus_campestris", "decticus_verrucivorus"]
    made = CliRunner().invoke(app, ["make-manifest", str(tmp_path / "clips"), "--out", str(tmp_path / "m.csv")])
    assert made.exit_code == 0, made.output
    assert sorted(set(pd.read_csv(tmp_path / "m.csv")["species"])) == [
        "Chorthippus biguttulus", "Gryllus campestris", "decticus verrucivorus"]


def test_ctrl_c_once_the_folder_is_set_up_or_after_the_last_clip_is_said(field, tmp_path, monkeypatch, caplog,
                                                                           ctrl_c_after):
    """A Ctrl-C raised as the run's record was written (before the first clip) or as problems.txt was (after the
    last) ended the run with exit status 130 and no word."""
    root, _ = field
    for name, stage in (("write_json", "before"), ("write_text", "after")):
        ctrl_c_after(annotation_clips, name)
        out = tmp_path / stage
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert cut(root, out).exit_code == 130
        monkeypatch.undo()
        clips = len(list(out.rglob("*.flac")))
        said = ("run the same command again to cut the rest" if stage == "before" else
                "every clip was tried: run the same command again for the summary")
        assert (clips == 0) == (stage == "before")
        assert f"interrupted: {clips} clip(s) written, 0 kept from an earlier run, in {out}; {said}" in caplog.text
