"""PULSE from Python (a notebook): `pulse.load_model()`, then tables of scores, detections or embeddings.

No second pipeline: recordings are found as `pulse analyze` finds them (files and folders), decoded in threads and
scored in full batches (`scoring.score_files`), and made into tables by the code that makes the CLI's
(`analyze.file_tables`), so `predict` gives the numbers `pulse analyze --format scores` writes; `embed` cuts and
embeds as `pulse embeddings` does. Nothing is written. A bad recording is one warning line and one row of
`Model.errors`, as of errors.csv; the others go on.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from pulse.analyze import InFlight, Run, Summary, check_settings, file_tables, run_table, scored_part
from pulse.config import InferConfig
from pulse.discovery import find_audio
from pulse.embeddings import Summary as EmbedSummary
from pulse.embeddings import window_embeddings
from pulse.model_names import model_band, open_checked_model
from pulse.schema import scores_frame
from pulse.scoring import score_files
from pulse.writers import ERROR_COLUMNS, WRITERS, in_file_order

# `pulse analyze`'s settings a model is opened with; --min-conf and --merge-consecutive go to `detect`.
OPEN_SETTINGS = ("overlap", "min_len", "channel", "level_floor", "species_list", "lat", "lon", "week", "sf_thresh",
                 "batch_size", "workers", "device")


def load_model(model: str = "default", threads: int = 0, **settings) -> Model:
    """Open `model` once for many calls: "default", "supervised", "lowrate", "birdnet" or a path, as --model;
    `threads`: the model's CPU threads (0: every core); `settings`: `pulse analyze`'s options by InferConfig's names,
    overlap, min_len, channel, level_floor, species_list, lat, lon, week, sf_thresh, batch_size, workers, device
    (overlap=1.5; lat=52.5, lon=13.4, week=23: BirdNET's species at that place and week)."""
    if unknown := sorted(set(settings) - set(OPEN_SETTINGS)):
        raise TypeError(f"load_model() takes {', '.join(OPEN_SETTINGS)}, not {', '.join(unknown)}")
    return Model(InferConfig(model=str(model), threads=threads, **settings))


class Model:
    """An open model: `labels` (the score columns, in order), `predict`, `detect`, `embed`, and the `errors` of the
    last call."""

    def __init__(self, cfg: InferConfig):
        check_settings(cfg)
        self.cfg = cfg
        self._predictor, self._spec, self.label_set = open_checked_model(cfg)
        self.labels = self.label_set.labels
        self.errors = pd.DataFrame(columns=list(ERROR_COLUMNS))
        self._said = set()  # the notes said once (a low rate, channels mixed), not again at each call

    def predict(self, paths) -> pd.DataFrame:
        """Every window's scores: index (file, start_s, end_s), a column per label (`--format scores`)."""
        tables = self._tables(paths, replace(self.cfg, formats=("scores",)))
        return run_table("scores", [t["scores"] for t in tables], self.label_set)

    def detect(self, paths, min_conf: float = InferConfig.min_conf,
               merge_consecutive: int = InferConfig.merge_consecutive) -> pd.DataFrame:
        """The detections `pulse analyze` writes to detections.csv, with all of pulse's detection columns
        (pulse.schema.DETECTION_COLUMNS: also channel, low_hz, high_hz, code)."""
        cfg = replace(self.cfg, formats=("csv",), min_conf=min_conf, merge_consecutive=merge_consecutive)
        check_settings(cfg)
        return pd.DataFrame(run_table("detections", [t["detections"] for t in self._tables(paths, cfg)],
                                      self.label_set))

    def embed(self, paths) -> pd.DataFrame:
        """Every window's embedding, one column per dimension, indexed as `predict`'s rows (`pulse embeddings`)."""
        if "embedding" not in self._predictor.output_names:
            raise ValueError(f"{self.cfg.model}: the model has no 'embedding' output (export it with `pulse export`)")
        files, errors, parts = _found(paths), [], []
        for path, _ in files:
            if embedded := window_embeddings(path, self._predictor, self._spec, self.cfg, self._said, EmbedSummary(),
                                             errors):
                starts_s, ends_s, embedding, _ = embedded  # a table indexed as scores are, a column per dimension
                parts.append(scores_frame(str(path), starts_s, ends_s, embedding, tuple(range(embedding.shape[1]))))
        self.errors = _errors(errors, files)
        return pd.concat(parts) if parts else scores_frame("", np.zeros(0), np.zeros(0), np.zeros((0, 0)), ())

    def close(self) -> None:
        self._predictor.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _tables(self, paths, cfg: InferConfig) -> list[dict]:
        """Each good recording's tables that `cfg.formats` read, in the order `pulse analyze` lists them."""
        files = _found(paths)
        todo = [InFlight(path, relative) for path, relative in files]
        run = Run(cfg, self._spec, self.label_set, model_band(self._predictor.metadata), journal=None, out_dir=None,
                  writers=tuple(WRITERS.create(name) for name in cfg.formats), said=self._said)  # nothing written
        summary, tables = Summary(), {}

        def keep(f: InFlight, run: Run) -> None:
            tables[f] = file_tables(str(f.path), scored_part(f, run), run)

        score_files(todo, self._predictor, run, summary, keep)
        self.errors = _errors(summary.errors, files)
        return [tables[f] for f in todo if f in tables]


def _found(paths) -> list[tuple[Path, Path]]:
    """The recordings in a path or a list of them, files and folders, as `pulse analyze` finds them."""
    return find_audio([paths] if isinstance(paths, (str, Path)) else list(paths), undecodable=True)


def _errors(errors: list[tuple[str, str, str, str]], files: list[tuple[Path, Path]]) -> pd.DataFrame:
    """errors.csv's rows as a table."""
    return pd.DataFrame(in_file_order(errors, [path for path, _ in files]), columns=list(ERROR_COLUMNS))
