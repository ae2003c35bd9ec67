"""The baseline PULSE must beat: a linear probe on BirdNET embeddings.

This is what BirdNET-Analyzer's custom classifier gives a user with a few labelled clips: one
sigmoid output per species on top of the frozen 1024-d embedding, trained on the same
labelled windows (plus all-negative background windows) as the student.
"""

from __future__ import annotations

import numpy as np


class EmbeddingProbe:
    """Standardised embeddings -> one balanced logistic regression per class (scikit-learn rules)."""

    def __init__(self, C: float = 1.0, max_iter: int = 2000):
        self.C = C
        self.max_iter = max_iter

    def fit(self, embeddings: np.ndarray, targets: np.ndarray) -> "EmbeddingProbe":
        """`targets` [N, C] multi-hot; all-zero rows are negatives (background windows)."""
        from sklearn.linear_model import LogisticRegression

        self.mean_ = embeddings.mean(axis=0)
        self.scale_ = embeddings.std(axis=0) + 1e-6
        x = (embeddings - self.mean_) / self.scale_
        self.models_ = []
        for k in range(targets.shape[1]):
            model = LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight="balanced")
            self.models_.append(model.fit(x, targets[:, k] > 0.5))
        return self

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """Sigmoid scores [N, C], one column per class as in `targets`."""
        x = (embeddings - self.mean_) / self.scale_
        return np.stack([m.predict_proba(x)[:, 1] for m in self.models_], axis=1).astype(np.float32)


def cross_fitted_scores(embeddings: np.ndarray, targets: np.ndarray, groups: np.ndarray, negatives: np.ndarray,
                        folds: int = 5) -> np.ndarray:
    """Each labelled row's probe scores [N, C], from a probe fitted without any row of its group.

    Groups are recordings, so a window is scored by a probe that never heard its recording: on the
    training audio these scores are as fallible as on new audio, which is what makes them worth
    distilling (an in-sample probe would only repeat the labels). `negatives` (song-free windows)
    join every fold's training set, as the backgrounds do in `fit`.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    recordings = [len(np.unique(groups[targets[:, k] > 0.5])) for k in range(targets.shape[1])]
    if min(recordings) < 2:
        raise ValueError("cross-fitting needs every class in at least two recordings; "
                         f"class {int(np.argmin(recordings))} is in {min(recordings)}")
    splitter = StratifiedGroupKFold(min(folds, min(recordings)))  # each class's recordings spread over the folds
    scores = np.zeros(targets.shape, np.float32)
    no_labels = np.zeros((len(negatives), targets.shape[1]), targets.dtype)
    for fit_rows, score_rows in splitter.split(embeddings, targets.argmax(axis=1), groups):
        probe = EmbeddingProbe().fit(np.concatenate([embeddings[fit_rows], negatives]),
                                     np.concatenate([targets[fit_rows], no_labels]))
        scores[score_rows] = probe.predict_proba(embeddings[score_rows])
    return scores


def window_targets(species: str, windows: int, labels: tuple[str, ...]) -> np.ndarray:
    """One-hot rows [windows, labels]: every window of a weakly labelled recording gets its species."""
    return np.tile(np.eye(len(labels), dtype=np.float32)[labels.index(species)], (windows, 1))


def fit_on_caches(manifest: str, background_manifest: str, labels: tuple[str, ...],
                  caches: tuple[str, str]) -> EmbeddingProbe:
    """The probe as a BirdNET-Analyzer user would train it: the manifest's training recordings, every window
    labelled with the recording's species, plus the training soundscapes as negatives (from teacher caches)."""
    from pulse.manifest import read_manifest, select_split
    from pulse.teacher.cache import load_cache

    def cached(cache: dict, cache_dir: str, path: str):
        if path not in cache:
            raise KeyError(f"{path}: not in the teacher cache {cache_dir} (run `pulse teacher-cache` on its manifest)")
        return cache[path].embedding

    clips, backgrounds = load_cache(caches[0]), load_cache(caches[1])
    x, y = [], []
    for path, species in select_split(read_manifest(manifest), "train")[["path", "species"]].itertuples(index=False):
        x.append(cached(clips, caches[0], path))
        y.append(window_targets(species, len(x[-1]), labels))
    for path in select_split(read_manifest(background_manifest), "train")["path"]:
        x.append(cached(backgrounds, caches[1], path))
        y.append(np.zeros((len(x[-1]), len(labels)), np.float32))
    return EmbeddingProbe().fit(np.concatenate(x), np.concatenate(y))


class BirdNETProbe:
    """The probe on a running BirdNET: 48 kHz windows in, species scores out, the scorer `pulse.evaluate` takes.

    Fit it with `fit_on_caches`, cut the evaluation data at `sample_rate` / `window_s`, close it when done.
    """

    def __init__(self, probe: EmbeddingProbe, threads: int = 0):
        from pulse.teacher import birdnet

        self.probe = probe
        self.teacher = birdnet.BirdNET(threads=threads)
        self.sample_rate, self.window_s = birdnet.SAMPLE_RATE, birdnet.WINDOW_S

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        return self.probe.predict_proba(self.teacher.predict(windows).embedding)

    def close(self) -> None:
        self.teacher.close()
