"""Training of PULSE models, one file per method; `weak_labels.train` is the supervised entry point."""
