"""A registry of backend kinds (sources, destinations), rebuilt from stored configuration."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Kinds(Generic[T]):
    """``kind`` name -> class, with lazy loading of the modules that register the rest.

    ``modules`` are imported (those whose optional packages are missing are passed over)
    the first time a stored configuration names a kind not registered yet.
    """

    def __init__(self, what: str, modules: Iterable[str]) -> None:
        self.what = what
        self.modules = tuple(modules)
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        self._classes[cls.kind] = cls  # type: ignore[attr-defined]
        return cls

    def from_config(self, config: dict[str, Any]) -> T:
        config = dict(config)
        kind = config.pop("kind")
        if kind not in self._classes:
            self.load_all()
        try:
            cls = self._classes[kind]
        except KeyError:
            raise ConfigError(f"unknown {self.what} kind {kind!r}; known: {sorted(self._classes)}") from None
        return cls.from_config(config)  # type: ignore[attr-defined,no-any-return]

    def class_of(self, kind: str) -> type[T] | None:
        """The class registered for ``kind`` (None: unknown), without building an instance."""
        if kind not in self._classes:
            self.load_all()
        return self._classes.get(kind)

    def load_all(self) -> None:
        for mod in self.modules:
            with contextlib.suppress(ImportError):
                importlib.import_module(mod)
