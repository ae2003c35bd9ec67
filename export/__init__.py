"""Shared deployment layer: registries, artefacts with metadata, and the Predictor contract.

PULSE and LRMIL both build on this package (registries, weights and ONNX files that carry their
metadata, atomic outputs, parity checks, ONNX Runtime sessions) so that a model saved by one command is
loaded the same way by the CLIs, the apps and the benchmarks. The Predictor contract itself (waveform
windows in, species scores out) serves PULSE's models; LRMIL's graphs run through `lrmil predict`.
"""
