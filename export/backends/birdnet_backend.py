"""BirdNET V2.4 behind the Predictor contract, so `pulse analyze --model birdnet` runs the teacher
through the same batch path as PULSE's own models (scores + embedding for each 3 s window at 48 kHz).

`species` restricts the output columns to a list (scientific names, or BirdNET's full
'Scientific_Common' labels), as BirdNET-Analyzer's species list does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.predictor import BACKENDS, InputSpec, usable_cores
from pulse.species import species_code
from pulse.teacher import birdnet


def select_labels(labels: tuple[str, ...], species: tuple[str, ...]) -> np.ndarray:
    """Column indices of `species` among BirdNET's labels; every name must be known."""
    if not species:
        return np.arange(len(labels))
    lookup = {}
    for i, label in enumerate(labels):
        lookup.setdefault(label, i)
        lookup.setdefault(label.split("_", 1)[0], i)
    unknown = [name for name in species if name not in lookup]
    if unknown:
        raise ValueError(f"species not in BirdNET's labels: {', '.join(unknown)}")
    return np.array([lookup[name] for name in species])


@BACKENDS.register("birdnet")
class BirdNETPredictor:
    output_names = ("scores", "embedding")

    def __init__(self, path: Path, device: str = "cpu", threads: int = 0, species: tuple[str, ...] = ()):
        if Path(path).name != birdnet.MODEL_FILE:
            raise ValueError(f"{path}: the birdnet backend runs {birdnet.MODEL_FILE} only")
        if device != "cpu":  # said, not ignored: a run timed "on cuda" would have run on the CPU
            raise ValueError(f"BirdNET runs on the CPU here (LiteRT), not on --device {device}")
        labels = birdnet.load_labels()
        self._columns = select_labels(labels, tuple(species))
        chosen = [labels[i].split("_", 1) for i in self._columns]
        self.metadata = {
            "package": "pulse", "arch": "birdnet_v2.4_fp32", "labels": [s for s, _ in chosen],
            "common_names": [c for _, c in chosen], "codes": [species_code(s) for s, _ in chosen],
            "sample_rate": birdnet.SAMPLE_RATE, "window_s": birdnet.WINDOW_S, "embed_dim": birdnet.EMBED_DIM,
            # BirdNET's spectrograms stop at 15 kHz (BirdNET-Analyzer's default band, its Raven boxes too)
            "f_min": 0.0, "f_max": birdnet.F_MAX_HZ,
            "license": birdnet.LICENSE, "attribution": birdnet.ATTRIBUTION,
        }
        self.input_spec = InputSpec("waveform", (None, birdnet.WINDOW_SAMPLES))
        # LiteRT alone would run one thread; every core matches ONNX Runtime's default, so the two compare fairly.
        self._teacher = birdnet.BirdNET(threads=threads or usable_cores())

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        out = self._teacher.predict(batch)
        return {"scores": birdnet.sigmoid(out.logits[:, self._columns]).astype(np.float32), "embedding": out.embedding}

    def close(self) -> None:
        self._teacher.close()
