"""BirdNET's location filter (`--lat --lon --week --sf-thresh`, BirdNET-Analyzer's): its meta model on real places,
and `pulse analyze --model birdnet` on a real bird chorus reporting only the species expected there."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pulse.cli import app
from pulse.teacher.location import species_at

CHORUS = Path(__file__).resolve().parents[1] / "pulse" / "assets" / "examples" / "background_bird_chorus_0-10s.flac"
BERLIN, PERTH, PITTSBURGH = (52.52, 13.40), (-31.95, 115.86), (40.44, -79.99)


def genus_species(labels) -> set[str]:
    return {label.split("_", 1)[0] for label in labels}


def test_the_meta_model_keeps_the_species_of_a_place_and_week():
    """Mid-June (week 23): the Eurasian Blackbird in Berlin, not in Perth; the Wood Thrush in Pittsburgh, not in
    Berlin; some 100-300 of BirdNET's 6522 species at each place, more over the whole year."""
    berlin, perth, pittsburgh = (genus_species(species_at(*place, 23)) for place in (BERLIN, PERTH, PITTSBURGH))
    assert "Turdus merula" in berlin and "Turdus merula" not in perth
    assert "Hylocichla mustelina" in pittsburgh and "Hylocichla mustelina" not in berlin
    assert all(100 <= len(found) <= 300 for found in (berlin, perth, pittsburgh))
    assert genus_species(species_at(*BERLIN, -1)) > berlin
    assert len(species_at(*BERLIN, 23, sf_thresh=0.5)) < len(berlin)


def test_analyze_birdnet_at_a_place_reports_only_its_species(tmp_path, caplog):
    """The opensoundscape chorus (eastern North American birds) at Pittsburgh in late May: BirdNET's own detections
    but the California Towhee's, a bird of the west coast; scores unchanged. A rerun in another week says the
    location changed; a species list given too is not used, as in BirdNET-Analyzer."""
    (tmp_path / "in").mkdir()
    shutil.copy(CHORUS, tmp_path / "in")
    args = ["analyze", str(tmp_path / "in"), "--model", "birdnet", "--format", "csv,scores", "--min-conf", "0.1"]
    place = ["--lat", str(PITTSBURGH[0]), "--lon", str(PITTSBURGH[1]), "--week", "21"]
    assert CliRunner().invoke(app, [*args, "--out", str(tmp_path / "all")]).exit_code == 0
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "here"), *place])
    assert result.exit_code == 0, result.output
    every, here = (pd.read_csv(tmp_path / out / "detections.csv") for out in ("all", "here"))
    assert "Melozone crissalis" in set(every["Scientific name"])
    assert set(here["Scientific name"]) == set(every["Scientific name"]) - {"Melozone crissalis"}
    scores = pd.read_csv(tmp_path / "here" / "scores.csv")
    assert set(scores.columns[3:]) == genus_species(species_at(*PITTSBURGH, 21))
    pd.testing.assert_frame_equal(scores, pd.read_csv(tmp_path / "all" / "scores.csv")[scores.columns])

    with caplog.at_level(logging.INFO):
        CliRunner().invoke(app, [*args, "--out", str(tmp_path / "here"), *place[:-1], "23"])
    assert "settings changed (location 40.44 -79.99 21 0.03 -> 40.44 -79.99 23 0.03)" in caplog.text
    (tmp_path / "slist.txt").write_text("Melozone crissalis\n")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "both"), *place,
                                          "--species-list", str(tmp_path / "slist.txt")])
    assert result.exit_code == 0 and "slist.txt: not used, as --lat and --lon choose the species" in caplog.text
    assert set(pd.read_csv(tmp_path / "both" / "scores.csv").columns) == set(scores.columns)


@pytest.mark.parametrize("options, error", [
    (["--lat", "52.5", "--lon", "13.4"], "(BirdNET's location filter) apply to --model birdnet only"),
    (["--model", "birdnet", "--lat", "95", "--lon", "13.4"], "--lat is a latitude in degrees, -90 to 90, got 95"),
    (["--model", "birdnet", "--lat", "52.5", "--lon", "190"], "--lon is a longitude in degrees, -180 to 180, got 190"),
    (["--model", "birdnet", "--lat", "52.5", "--lon", "13.4", "--week", "49"], "--week is 1-48"),
    (["--model", "birdnet", "--lat", "52.5", "--lon", "13.4", "--sf-thresh", "1.5"], "--sf-thresh is an occurrence"),
    (["--model", "birdnet", "--lat", "52.5"], "--lat and --lon go together"),
    (["--model", "birdnet", "--week", "23"], "--week and --sf-thresh apply with --lat and --lon"),
])
def test_a_bad_location_is_one_line_and_exit_2(tmp_path, options, error):
    result = CliRunner().invoke(app, ["analyze", str(CHORUS), "--out", str(tmp_path / "o"), *options])
    assert result.exit_code == 2 and error in result.output, result.output


def test_lat_and_lon_of_minus_one_are_no_filter_as_in_birdnet_analyzer(tmp_path):
    """BirdNET-Analyzer's defaults, --lat -1 --lon -1, turn its filter off: a command copied from it is not a place
    in the Gulf of Guinea, and not an error with a model the filter does not apply to."""
    result = CliRunner().invoke(app, ["analyze", str(CHORUS), "--out", str(tmp_path / "o"), "--lat", "-1",
                                      "--lon", "-1", "--format", "scores"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "o" / "scores.csv").columns) == 3 + 9


def test_load_model_takes_the_location_filter():
    """`pulse.load_model("birdnet", lat=..., lon=..., week=...)`: BirdNET's species there are its labels."""
    import pulse

    with pulse.load_model("birdnet", lat=BERLIN[0], lon=BERLIN[1], week=23) as model:
        assert set(model.labels) == genus_species(species_at(*BERLIN, 23))
