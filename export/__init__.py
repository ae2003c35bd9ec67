"""Shared deployment layer: registries, artefacts with metadata, and the Predictor contract.

PULSE and LRMIL both build on this package so that a model saved by one command is
loaded the same way by the CLIs, the apps and the benchmarks.
"""
