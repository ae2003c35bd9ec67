"""PULSE: Orthoptera song detection in field recordings.

Data flows one way: recording (io) -> windows -> model -> scores -> detections -> writers.
"""

__version__ = "0.1.0"
