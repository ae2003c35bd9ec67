"""Wall-clock latency of a Predictor, measured the same way for every backend and benchmark."""

from __future__ import annotations

import time

import numpy as np


def ms_per_window(predictor, batch: np.ndarray, repeats: int = 5, warmup: int = 1) -> float:
    """Fastest milliseconds per window over `repeats` runs of `batch` (after `warmup` runs).

    The minimum, not the mean: on a shared machine other processes only ever add time, so the
    fastest run is the least disturbed estimate of what the code itself costs.
    """
    for _ in range(warmup):
        predictor.predict(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.predict(batch)
        times.append(time.perf_counter() - start)
    return 1e3 * min(times) / len(batch)
