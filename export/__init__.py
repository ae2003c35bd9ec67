"""Shared deployment layer: registries, artefacts with metadata, and the Predictor contract.

PULSE and LRMIL both build on this package (registries, weights and ONNX files that carry their
metadata, atomic outputs, parity checks, ONNX Runtime sessions) so that a model saved by one command is
loaded the same way by the CLIs, the apps and the benchmarks. The Predictor contract itself (a float32 batch
in, named outputs out) carries PULSE's waveform windows in every backend, and LRMIL's exported patch and bag
graphs in ONNX Runtime (`lrmil.mil.bundle.OnnxPathModel`); the torch and TensorRT backends build PULSE models
only, and LRMIL's PyTorch path is `lrmil.mil.bundle.PathModel`.
"""
