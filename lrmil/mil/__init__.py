"""Attention MIL for LRMIL: the ABMIL teacher and student, stage-2 distillation, training, metrics.

bags.py (the feature files of the slides in splits.py's folds CSV) -> attention.py (model) -> train.py (k-fold
loop, teacher; metrics.py scores it) and distill.py (stage 2, losses.py) -> bundle.py (the model folder `lrmil
predict` loads); config.py holds every default, benchmark.py runs the synthetic benchmark.
"""
