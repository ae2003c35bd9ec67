"""Attention MIL for LRMIL: the ABMIL teacher and student, stage-2 distillation, training, metrics.

attention.py (model) -> train.py (k-fold loop, teacher) and distill.py (stage 2, losses.py) ->
bundle.py (the model folder `lrmil predict` loads); benchmark.py runs the synthetic benchmark.
"""
