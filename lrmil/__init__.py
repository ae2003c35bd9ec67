"""LRMIL: whole-slide classification with a 20x teacher distilled into a 5x student.

Data flows one way: slide -> tissue mask -> two-resolution patch grid -> encoder ->
feature store (HDF5) -> MIL -> prediction and heatmap.
"""

__version__ = "0.1.0"
