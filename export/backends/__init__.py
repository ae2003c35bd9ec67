"""Predictor backends, one file each: <name>_backend.py registers <name> in export.predictor.BACKENDS."""
