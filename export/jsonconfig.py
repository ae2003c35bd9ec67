"""JSON round-trip for the frozen config dataclasses of every package (pulse, lrmil, export).

A config is saved with every run and read back to rerun it, so to_dict/from_dict must agree:
JSON lists become tuples again and nested configs are rebuilt from their type hints.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path


class JsonConfig:
    """to_dict / from_dict / load shared by every config dataclass."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue  # unknown keys are ignored, missing ones keep their default
            value, hint = data[f.name], hints[f.name]
            if isinstance(value, dict) and isinstance(hint, type) and issubclass(hint, JsonConfig):
                value = hint.from_dict(value)
            elif isinstance(value, list):
                value = tuple(value)
            values[f.name] = value
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path):
        return cls.from_dict(json.loads(Path(path).read_text()))
