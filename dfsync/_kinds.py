"""A registry of backend kinds (sources, destinations), rebuilt from stored configuration."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Kinds(Generic[T]):
    """``kind`` name -> class, with lazy loading of the modules that register the rest."""

    def __init__(self, what: str, load_all: Callable[[], None]) -> None:
        self.what = what
        self._load_all = load_all
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        self._classes[cls.kind] = cls  # type: ignore[attr-defined]
        return cls

    def from_config(self, config: dict[str, Any]) -> T:
        config = dict(config)
        kind = config.pop("kind")
        if kind not in self._classes:
            self._load_all()
        try:
            cls = self._classes[kind]
        except KeyError:
            raise ConfigError(f"unknown {self.what} kind {kind!r}; known: {sorted(self._classes)}") from None
        return cls.from_config(config)  # type: ignore[attr-defined,no-any-return]
