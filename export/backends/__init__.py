"""Predictor backends, one file each; each registers itself in export.predictor.BACKENDS."""
