"""PULSE: Orthoptera song detection in field recordings.

Data flows one way: recording (io) -> windows -> model -> scores -> detections -> writers.
From Python: `pulse.load_model()` (pulse/api.py).
"""

__version__ = "0.1.0"

API = ("load_model", "Model")  # imported when first used: `pulse analyze` starts without pandas


def __getattr__(name: str):
    if name in API:
        from pulse import api

        return getattr(api, name)
    raise AttributeError(f"module 'pulse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])
