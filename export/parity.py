"""Feed the same input through two Predictors and report how far their outputs drift.

Every exported artefact is checked against its source before anyone relies on it: a wrong
frontend, a bad quantisation or a fused op shows up here as a number, not as silent
misdetections in the field. Differences are max |a - b| per output, and the pass/fail test
scales the tolerance by the output's range, so large embeddings are judged like [0, 1] scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Stated tolerances, as a fraction of max(1, max |reference|) of each output.
FP32_TOLERANCE = 1e-4  # same graph, different kernels (torch vs ONNX Runtime, fft vs conv)
FP16_TOLERANCE = 2e-2  # TensorRT: FP16 encoder, or TF32 convolutions in FP32 engines
INT8_TOLERANCE = 1e-1  # 8-bit weights and activations move scores by a few hundredths


@dataclass(frozen=True)
class Parity:
    """One comparison: max abs difference and reference scale for every output."""

    reference: str
    candidate: str
    max_abs_diff: dict[str, float]
    scale: dict[str, float]
    tolerance: float

    @property
    def ok(self) -> bool:
        return all(self.max_abs_diff[k] <= self.tolerance * self.scale[k] for k in self.max_abs_diff)

    def line(self) -> str:
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in self.max_abs_diff.items())
        verdict = "ok" if self.ok else "FAIL"
        return (f"{self.candidate} vs {self.reference}: max|diff| {diffs} "
                f"(tolerance {self.tolerance:g} x range) {verdict}")

    def to_dict(self) -> dict:
        return {"reference": self.reference, "candidate": self.candidate, "max_abs_diff": self.max_abs_diff,
                "scale": self.scale, "tolerance": self.tolerance, "ok": self.ok}


def compare(reference, candidate, batch: np.ndarray, tolerance: float = FP32_TOLERANCE,
            names: tuple[str, str] = ("reference", "candidate"), batch_size: int = 32) -> Parity:
    """Run `batch` through both Predictors (in chunks of `batch_size`) and compare every output."""
    ref, cand = _run(reference, batch, batch_size), _run(candidate, batch, batch_size)
    if ref.keys() != cand.keys():
        raise ValueError(f"{names[1]} outputs {sorted(cand)} differ from {names[0]} outputs {sorted(ref)}")
    for key in ref:
        if ref[key].shape != cand[key].shape:
            raise ValueError(f"output {key!r}: {names[1]} shape {cand[key].shape} != {names[0]} {ref[key].shape}")
    diffs = {k: float(np.abs(ref[k].astype(np.float64) - cand[k]).max()) for k in ref}
    scale = {k: max(1.0, float(np.abs(ref[k]).max())) for k in ref}
    return Parity(names[0], names[1], diffs, scale, tolerance)


def _run(predictor, batch: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    parts = [predictor.predict(batch[i:i + batch_size]) for i in range(0, len(batch), batch_size)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
