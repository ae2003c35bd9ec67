"""The Python API (pulse/api.py) gives, as tables, what the CLIs write: the same scores, detections, embeddings and
errors, for the same recordings and settings."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import pulse
from pulse.cli import app
from pulse.writers import WRITERS
from tests.test_analyze import make_batch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from tests.test_analyze import level_meter_onnx

    return level_meter_onnx(tmp_path_factory.mktemp("model") / "meter.onnx")


def written(tmp_path: Path, fmt: str, table: pd.DataFrame) -> str:
    """`table` as `pulse analyze --format fmt` writes it."""
    writer = WRITERS.create(fmt)
    writer.write(table, tmp_path / writer.suffix)
    return (tmp_path / writer.suffix).read_text()


def test_predict_and_detect_give_what_pulse_analyze_writes_for_real_recordings(shared_data, tmp_path):
    songs = shared_data / "audio" / "insectset32"
    files = [str(sorted((songs / species).glob("*.flac"))[0])
             for species in ("Gryllus_campestris", "Oecanthus_pellucens", "Tettigonia_viridissima")]
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["analyze", *files, "--out", str(out), "--format", "scores,csv"])
    assert result.exit_code == 0, result.output
    with pulse.load_model() as model:
        scores, found = model.predict(files), model.detect(files, min_conf=0.25)
    assert list(scores.columns) == list(model.labels) and len(scores) > 10 and len(found) > 3
    assert written(tmp_path, "scores", scores) == (out / "scores.csv").read_text()
    assert written(tmp_path, "csv", found) == (out / "detections.csv").read_text()


def test_bad_files_are_one_line_each_and_the_errors_of_errors_csv(tmp_path, model, caplog):
    make_batch(tmp_path / "in")
    out = tmp_path / "out"
    CliRunner().invoke(app, ["analyze", str(tmp_path / "in"), "--out", str(out), "--model", str(model), "--format",
                             "scores,csv", "--merge-consecutive", "2", "--overlap", "1"])
    model = pulse.load_model(str(model), overlap=1)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        scores = model.predict(tmp_path / "in")
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for bad in ("zero.wav", "text.flac", "nan.wav", "cut.flac"):  # cut.flac: analysed up to the break
        assert sum(bad in line for line in said) == 1, said
    assert written(tmp_path, "scores", scores) == (out / "scores.csv").read_text()
    pd.testing.assert_frame_equal(model.errors, pd.read_csv(out / "errors.csv"))
    found = model.detect([tmp_path / "in"], merge_consecutive=2)
    assert written(tmp_path, "csv", found) == (out / "detections.csv").read_text()


def test_embed_gives_the_windows_and_embeddings_pulse_embeddings_writes(tmp_path, model):
    make_batch(tmp_path / "in")
    out = tmp_path / "emb"
    CliRunner().invoke(app, ["embeddings", str(tmp_path / "in"), "--out", str(out), "--model", str(model)])
    with pulse.load_model(str(model)) as opened:
        table = opened.embed(tmp_path / "in")
        pd.testing.assert_frame_equal(opened.errors, pd.read_csv(out / "errors.csv"))
    assert table.index.get_level_values("file").nunique() == 7  # the good recordings and cut.flac
    for file, rows in table.groupby(level="file", sort=False):
        with h5py.File(out / f"{Path(file).relative_to(tmp_path / 'in')}.embeddings.h5") as f:
            np.testing.assert_array_equal(rows.index.get_level_values("start_s"), f["starts_s"][:])
            np.testing.assert_array_equal(rows.index.get_level_values("end_s"), f["ends_s"][:])
            np.testing.assert_array_equal(rows.to_numpy(), f["embedding"][:])


def test_importing_pulse_stays_cheap_and_only_cli_settings_are_taken(model):
    code = "import sys, pulse; print(sorted({'pandas', 'pulse.api'} & set(sys.modules)), 'load_model' in dir(pulse))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert run.stdout.split() == ["[]", "True"]  # `pulse analyze` starts without pandas
    with pytest.raises(TypeError, match="not formats"):
        pulse.load_model(str(model), formats=("raven",))
    with pytest.raises(ValueError, match="--min-conf is a score between 0 and 1"):
        pulse.load_model(str(model)).detect([], min_conf=25)


def test_the_documented_example_runs():
    doc = (REPO / "docs" / "pulse.md").read_text(encoding="utf-8")
    start = doc.index("```python\n", doc.index("**Python API**")) + len("```python\n")
    run = subprocess.run([sys.executable, "-c", doc[start:doc.index("```", start)]], capture_output=True,
                         text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Gryllus_campestris" in run.stdout and "Empty DataFrame" in run.stdout  # six recordings, no bad one
