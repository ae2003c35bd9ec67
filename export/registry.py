"""A tiny name -> factory registry, in the spirit of timm's `register_model`.

Names are the public API: `create("pulse_cnn_s")` builds a model, and `list("pulse_*")`
is how tests enrol every registered entry.
"""

from __future__ import annotations

import fnmatch
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories; raises on duplicates and unknown names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            key = name or factory.__name__
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._entries[key] = factory
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise KeyError(f"unknown {self.kind} {name!r} (known: {known})") from None

    def list(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def create(self, name: str, **kwargs) -> T:
        """Build `name`; keyword arguments that are None mean "keep the factory's default"."""
        return self.get(name)(**{k: v for k, v in kwargs.items() if v is not None})

    def __contains__(self, name: str) -> bool:
        return name in self._entries
