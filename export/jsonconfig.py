"""JSON round-trip for the frozen config dataclasses of every package (pulse, lrmil, export), and `read_json` for the
JSON files in a user's folder that a command cannot do without (a model folder's, a run's record).

A config is saved with every run and read back to rerun it, so to_dict/from_dict must agree:
JSON lists become tuples again and nested configs are rebuilt from their type hints.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path


def read_json(path: str | Path):
    """What a JSON file in a user's folder holds (a model folder's onnx.json, a run's record), or a ValueError naming
    the file and where its JSON breaks: json's own message ("Expecting value: line 2 column 1 (char 13)") named none.
    OSError is left to the caller, which knows what a missing file means."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); was it cut short or edited by hand?") from None


def _fits(value, hint) -> bool:
    """A JSON value of the type a field declares: an int is a float too, a bool is not a number, a tuple is a
    list whose items fit (as many as declared, or any number for `tuple[X, ...]`), a union fits any member."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(item, args[0]) for item in value)
        return len(value) == len(args) and all(_fits(item, arg) for item, arg in zip(value, args))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True  # dicts and anything else are left to the config's own checks


_WORDS = {bool: ("true or false", "true/false values"), int: ("a whole number", "whole numbers"),
          float: ("a number", "numbers"), str: ("a string", "strings"), type(None): ("null", "nulls")}


def _described(hint, plural: bool = False) -> str:
    """`tuple[float, float]` as "a list of 2 numbers": words for the one writing the config."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_described(args[0], plural=True)}"
        if len(set(args)) == 1:
            return f"a list of {len(args)} {_described(args[0], plural=True)}"
        return f"a list of {len(args)} ({', '.join(map(_described, args))})"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_described(arg, plural) for arg in args)
    return _WORDS.get(hint, (getattr(hint, "__name__", str(hint)),) * 2)[plural]


class JsonConfig:
    """to_dict / from_dict / load shared by every config dataclass."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        """Unknown keys are ignored here (a newer version's run record still loads; `unknown_keys` names them),
        missing ones keep their default; a value of the wrong type is a ValueError naming the field."""
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            value, hint = data[f.name], hints[f.name]
            if isinstance(hint, type) and issubclass(hint, JsonConfig):
                if not isinstance(value, dict):
                    raise ValueError(f"{f.name} must be an object of settings, got {value!r}")
                value = hint.from_dict(value)
            elif not _fits(value, hint):
                raise ValueError(f"{f.name} must be {_described(hint)}, got {value!r}")
            elif isinstance(value, list):
                value = tuple(value)
            values[f.name] = value
        return cls(**values)

    @classmethod
    def unknown_keys(cls, data: dict, prefix: str = "") -> list[str]:
        """Keys of `data`, nested configs included, that no field takes: misspellings, mostly."""
        hints, fields = typing.get_type_hints(cls), {f.name for f in dataclasses.fields(cls)}
        unknown = []
        for key, value in data.items():
            hint = hints.get(key)
            if key not in fields:
                unknown.append(prefix + key)
            elif isinstance(value, dict) and isinstance(hint, type) and issubclass(hint, JsonConfig):
                unknown += hint.unknown_keys(value, f"{prefix}{key}.")
        return unknown

    RECORD_KEYS: typing.ClassVar[tuple[str, ...]] = ()  # keys a saved run adds beside the settings
    RECORD_NESTS: typing.ClassVar[str] = ""  # or the key a saved run nests its settings under (lrmil: "config")

    @classmethod
    def load(cls, path: str | Path):
        """A settings file or a run's record; every problem is one ValueError naming the file, and a key no
        setting takes is refused (a misspelt "epoch" would otherwise train the default number of epochs)."""
        try:
            data = read_json(path)
        except OSError as exc:
            raise FileNotFoundError(f"{path}: cannot read the config ({exc.strerror})") from None
        if cls.RECORD_NESTS and isinstance(data, dict) and isinstance(data.get(cls.RECORD_NESTS), dict):
            data = data[cls.RECORD_NESTS]
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a config is a JSON object of settings")
        if unknown := [k for k in cls.unknown_keys(data) if k not in cls.RECORD_KEYS]:
            raise ValueError(f"{path}: no setting is called {', '.join(unknown)} (misspelt?)")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from None
