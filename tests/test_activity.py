"""`pulse activity`: detections and minutes of audio per site, date and clock hour, from a real run over two sites'
cards of real songs and soundscapes placed at known times."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from pulse.activity import activity_figure, activity_table, clock_hours, Recording
from pulse.cli import app
from tests.test_audiomoth import audiomoth_wav

PLACED = {  # as on the cards -> the real audio (../shared/data/audio) written there
    "siteA/20250701_205950.WAV": "insectset32/Nemobius_sylvestris/Nemobiussylvestris_dat017-001.flac",  # 30.57 s
    "siteA/20250702_130000.WAV": "insectset32/Chorthippus_biguttulus/Chorthippusbiguttulus_Take45.M.flac",
    "siteB/20250701_220000.WAV": "insectset32/Gryllus_campestris/Grylluscampestris_dat008-019.M.flac",
    "siteB/20250702_120000.WAV": "backgrounds/OSS_1min_ARU_bird_chorus.flac",  # 20 s, no Orthoptera
    "siteB/SMA12345_20250702_050000.wav": "insectset32/Gryllus_campestris/Grylluscampestris_Take11.M.flac",  # 3.70 s
    "siteB/REC0001.WAV": "insectset32/Gryllus_campestris/Grylluscampestris_dat008-019.M.flac",  # no start time
}
# Seconds analysed per (site, date, hour): 3 s windows, a last one only with at least --min-len (1 s) of audio.
EFFORT_S = {("siteA", "2025-07-01", 20): 10.0, ("siteA", "2025-07-01", 21): 20.0,  # 30 s across 21:00
            ("siteA", "2025-07-02", 13): 641899 / 44100, ("siteB", "2025-07-01", 22): 605184 / 44100,
            ("siteB", "2025-07-02", 12): 20.0, ("siteB", "2025-07-02", 5): 3.0}


@pytest.fixture(scope="module")
def run(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("activity")
    for name, source in PLACED.items():
        audio, rate = sf.read(shared_data / "audio" / source)
        (root / "cards" / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / "cards" / name, audio, rate, subtype="PCM_16")
    result = CliRunner().invoke(app, ["analyze", str(root / "cards"), "--out", str(root / "out"), "--format", "csv"])
    assert result.exit_code == 0, result.output
    return root


def _table(folder) -> pd.DataFrame:
    return pd.read_csv(folder / "activity.csv", keep_default_na=False)


def _hours_of_cards(tmp_path, *option_sets: list[str]) -> dict[tuple[str, ...], list[tuple[str, int]]]:
    """`pulse analyze` over tmp_path/cards, then `pulse activity` with each set of options: its (date, hour) pairs."""
    runner = CliRunner()
    assert runner.invoke(app, ["analyze", str(tmp_path / "cards"), "--out", str(tmp_path / "out")]).exit_code == 0
    hours = {}
    for options in option_sets:
        result = runner.invoke(app, ["activity", str(tmp_path / "out"), *options])
        assert result.exit_code == 0, result.output
        table = _table(tmp_path / "out")
        hours[tuple(options)] = sorted(set(zip(table["date"], table["hour"])))
    return hours


def test_effort_is_every_analysed_recordings_audio_per_clock_hour(run):
    result = CliRunner().invoke(app, ["activity", str(run / "out")])
    assert result.exit_code == 0, result.output
    assert "1 recording has no start time in its name or metadata: left out" in result.output
    assert (run / "out" / "activity.png").stat().st_size > 0
    table = _table(run / "out")
    effort = table.groupby(["site", "date", "hour"])["effort_min"].agg(["min", "max"])
    assert (effort["min"] == effort["max"]).all()  # one effort per hour, whatever the species
    assert effort["min"].mul(60).to_dict() == pytest.approx(EFFORT_S, abs=0.01)  # the bird chorus's hour too
    rates = table["detections"] / (table["effort_min"] / 60)
    assert table["detections_per_hour"].to_numpy() == pytest.approx(rates.to_numpy(), rel=1e-3)


def test_detections_are_the_runs_windows_at_min_conf_by_clock_hour(run):
    detections = pd.read_csv(run / "out" / "detections.csv")  # a row per window: no --merge-consecutive
    for min_conf in (None, 0.6):
        out = run / f"activity_{min_conf}"
        given = [] if min_conf is None else ["--min-conf", str(min_conf)]
        assert CliRunner().invoke(app, ["activity", str(run / "out"), "--out", str(out), *given]).exit_code == 0
        expected = Counter()
        for row in detections[detections["Confidence"] >= (min_conf or 0.25)].itertuples():
            site, name = row.File.replace("\\", "/").split("/")[-2:]
            if name != "REC0001.WAV":
                at = datetime.strptime(name[-19:-4], "%Y%m%d_%H%M%S") + timedelta(seconds=row[1])  # Start (s)
                expected[site, row[3], at.date().isoformat(), at.hour] += 1  # Scientific name
        table = _table(out)
        found = table[table["detections"] > 0].set_index(["site", "species", "date", "hour"])["detections"]
        assert found.to_dict() == dict(expected)
    table = _table(run / "activity_None")
    by_hour = table.set_index(["site", "species", "date", "hour"])["detections"].sort_index()
    assert by_hour["siteA", "Nemobius sylvestris", "2025-07-01"].sum() > 0  # the wood cricket placed at 20:59:50
    assert by_hour["siteB", "Gryllus campestris", "2025-07-01", 22] > 0  # the field cricket placed at 22:00
    assert table[table["hour"] == 12]["detections"].sum() == 0  # the bird chorus: effort, no song


def test_an_hour_never_recorded_is_grey_and_one_recorded_without_song_is_not(run):
    table = _table(run / "activity_None")
    figure = activity_figure(table, 0.25)
    first = table["species"].iloc[0]
    image = figure.axes[0].images[0].get_array()
    recorded = table[table["species"] == first].groupby(["date", "hour"])["effort_min"].sum()
    assert image.shape == (2, 24)
    dates = ["2025-07-01", "2025-07-02"]
    shown = {(dates[row], hour) for row, hour in zip(*np.nonzero(~np.ma.getmaskarray(image)))}
    assert shown == set(recorded.index)
    assert (image.filled(-1) == 0).any()  # recorded without song: the colour map's zero, not grey


def test_a_season_of_dates_is_a_diel_bar_chart_and_a_night_splits_at_midnight():
    assert list(clock_hours(datetime(2025, 7, 1, 23, 59, 30, tzinfo=timezone.utc), 0.0, 60.0)) == [
        ("2025-07-01", 23, 30.0), ("2025-07-02", 0, 30.0)]
    nights = [Recording("", datetime(2025, 6, 1, 22, tzinfo=timezone.utc) + timedelta(days=d), np.array([0.0]),
                        np.array([3600.0]), np.array([[0.9]], np.float32)) for d in range(70)]
    table = activity_table(nights, ("Gryllus campestris",), 0.25)
    assert len(table) == 70 and table["detections_per_hour"].eq(1.0).all()
    figure = activity_figure(table, 0.25)
    assert not figure.axes[0].images and len(figure.axes[0].patches) == 24  # a bar for 22 h, grey for the 23 others


def test_a_folder_that_is_no_run_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["activity", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output == (f"error: {tmp_path}: not a finished `pulse analyze` --out folder (no config.json of a "
                             "run in it)\n")


def test_cards_given_apart_are_sites_and_an_earlier_runs_recordings_are_left_out(run):
    runner, out = CliRunner(), run / "apart"
    for cards in ([run / "cards" / "siteA", run / "cards" / "siteB"], [run / "cards" / "siteA"]):
        assert runner.invoke(app, ["analyze", *map(str, cards), "--out", str(out), "--format", "csv"]).exit_code == 0
        result = runner.invoke(app, ["activity", str(out)])
        assert result.exit_code == 0, result.output
        if len(cards) == 2:  # flat cards, told apart by their folders' names
            assert set(_table(out)["site"]) == {"siteA", "siteB"}
    assert set(_table(out)["site"]) == {""}  # one card given: flat
    assert "4 recordings in the run's journal are below none of its inputs" in result.output  # siteB's, run before


def test_timezone_gives_dates_and_hours_of_that_zones_clock(run):
    """The cards' AudioMoth and Song Meter clocks kept UTC: in Berlin (CEST, UTC+2) each hour is two later, and
    siteB's field cricket at 22:00 UTC sings at midnight, on the next date."""
    runner = CliRunner()
    assert runner.invoke(app, ["activity", str(run / "out"), "--out", str(run / "utc")]).exit_code == 0
    result = runner.invoke(app, ["activity", str(run / "out"), "--out", str(run / "berlin"), "--timezone",
                                 "Europe/Berlin"])
    assert result.exit_code == 0, result.output
    utc, berlin = _table(run / "utc"), _table(run / "berlin")
    assert set(utc["timezone"]) == {""} and set(berlin["timezone"]) == {"Europe/Berlin"}
    effort = berlin.groupby(["site", "date", "hour"])["effort_min"].first().mul(60).to_dict()
    shifted = {}
    for (site, date, hour), seconds in EFFORT_S.items():
        at = datetime.fromisoformat(date) + timedelta(hours=hour + 2)
        shifted[site, at.date().isoformat(), at.hour] = seconds
    assert effort == pytest.approx(shifted, abs=0.01)
    assert berlin.set_index(["site", "species", "date", "hour"])["detections"]["siteB", "Gryllus campestris",
                                                                               "2025-07-02", 0] > 0
    assert berlin["detections"].sum() == utc["detections"].sum()
    assert activity_figure(berlin, 0.25).axes[0].get_xlabel() == "Hour of Europe/Berlin time"
    assert (berlin["detections_per_hour"].sort_values().to_numpy()
            == pytest.approx(utc["detections_per_hour"].sort_values().to_numpy()))


def test_a_zone_that_does_not_exist_is_one_line(run):
    for option, name in (("--timezone", "Europe/Berln"), ("--clock-timezone", "Europe")):
        result = CliRunner().invoke(app, ["activity", str(run / "out"), option, name])
        assert result.exit_code == 2
        assert result.output == (f"error: {option} '{name}' is no IANA time zone name (such as Europe/Berlin, "
                                 "Australia/Brisbane, UTC)\n")


@pytest.mark.parametrize("start, zone, expected", [
    # the night the clocks go back: 02:00-03:00 passes twice, one row of both passes' audio and songs
    ("2025-10-25T23:00Z", "Europe/Berlin", {("2025-10-26", 1): 3600, ("2025-10-26", 2): 7200,
                                            ("2025-10-26", 3): 3600}),
    # and forward: 02:00-03:00 never is
    ("2025-03-30T00:00Z", "Europe/Berlin", {("2025-03-30", 1): 3600, ("2025-03-30", 3): 3600,
                                            ("2025-03-30", 4): 3600, ("2025-03-30", 5): 3600}),
    # UTC+9:30: a UTC hour is half in one hour of the clock, half in the next
    ("2025-07-01T10:00Z", "Australia/Adelaide", {("2025-07-01", 19): 1800, ("2025-07-01", 20): 3600,
                                                 ("2025-07-01", 21): 3600, ("2025-07-01", 22): 3600,
                                                 ("2025-07-01", 23): 1800}),
])
def test_effort_and_songs_by_the_hours_of_a_zones_clock_are_all_the_audio(start, zone, expected):
    windows = np.arange(0.0, 4 * 3600, 3.0)  # four hours of 3 s windows, a song in each
    night = Recording("", datetime.fromisoformat(start), windows, windows + 3, np.full((len(windows), 1), 0.9))
    table = activity_table([night], ("Gryllus campestris",), 0.25, ZoneInfo(zone))
    assert table.set_index(["date", "hour"])["effort_min"].mul(60).to_dict() == pytest.approx(expected)
    assert table["effort_min"].sum() == pytest.approx(4 * 60)
    assert table.set_index(["date", "hour"])["detections"].to_dict() == {key: s / 3 for key, s in expected.items()}
    assert set(table["timezone"]) == {zone}


def test_an_offset_the_file_gives_wins_over_the_clock_zone(shared_data, tmp_path):
    """The same instant, 21:30 UTC, as an AudioMoth (UTC clock) and two BAR-LTs (clocks of Berlin and Brisbane,
    their offsets in their names) name it: one hour of any zone's clock, three as named."""
    audio, rate = sf.read(shared_data / "audio" / PLACED["siteB/SMA12345_20250702_050000.wav"])  # 3.70 s
    (tmp_path / "cards").mkdir()
    for name in ("20250701_213000.WAV", "20250701T233000+0200_REC.flac", "20250702T073000+1000_REC.flac"):
        sf.write(tmp_path / "cards" / name, audio, rate)
    hours = _hours_of_cards(tmp_path, [], ["--timezone", "Europe/Berlin"], ["--clock-timezone", "Australia/Brisbane"])
    assert hours[()] == [("2025-07-01", 21), ("2025-07-01", 23), ("2025-07-02", 7)]
    assert hours["--timezone", "Europe/Berlin"] == [("2025-07-01", 23)]
    assert hours["--clock-timezone", "Australia/Brisbane"] == [("2025-07-01", 21), ("2025-07-02", 7)]


def test_an_audiomoths_comment_gives_its_clocks_offset_and_the_clock_zone_is_for_the_others(shared_data, tmp_path):
    """AudioMoths set to UTC+1 (a DST-free offset), UTC+5:30 and UTC name files by those clocks and state the
    offset in their comment only: the hours are of the instants the comments place the names at, whatever
    --clock-timezone says (as for an offset in a BAR-LT's name or GUANO), which a file stating none still takes."""
    audio, rate = sf.read(shared_data / "audio" / PLACED["siteB/SMA12345_20250702_050000.wav"], dtype="int16")
    (tmp_path / "cards").mkdir()
    for name, zone in (("20220224_210000.WAV", "UTC+1"), ("20220224_230000.WAV", "UTC+5:30"),
                       ("20220225_030000.WAV", "UTC"), ("20220225_070000.WAV", None)):
        comment = (f"Recorded at {name[9:11]}:00:00 {name[6:8]}/{name[4:6]}/{name[:4]} ({zone}) by AudioMoth "
                   "24F319055FDF2F5B at medium gain while battery was 4.2V and temperature was 15.2C.")
        audiomoth_wav(tmp_path / "cards" / name, audio, comment.encode() if zone else b"", rate)
    hours = _hours_of_cards(tmp_path, [], ["--timezone", "UTC"], ["--clock-timezone", "Asia/Tokyo"])
    assert hours[()] == [("2022-02-24", 21), ("2022-02-24", 23), ("2022-02-25", 3), ("2022-02-25", 7)]  # as named
    # 21:00 at UTC+1 is 20:00 UTC, 23:00 at UTC+5:30 17:30 UTC; 07:00, no offset stated, taken for UTC
    assert hours["--timezone", "UTC"] == [("2022-02-24", 17), ("2022-02-24", 20), ("2022-02-25", 3),
                                          ("2022-02-25", 7)]
    # in Tokyo (UTC+9), the commented files' hours are of their instants; the last one's named 07:00 is Tokyo's own
    assert hours["--clock-timezone", "Asia/Tokyo"] == [("2022-02-25", 2), ("2022-02-25", 5), ("2022-02-25", 7),
                                                       ("2022-02-25", 12)]
