"""A public call given an option it does not take (``destinaton_mode=``), or missing one it needs:
an :class:`~dfsync.errors.ArgumentError` naming the call, the closest option it does take and
all of them, instead of Python's bare TypeError. Decided here for every public entry point."""

from __future__ import annotations

import difflib
import functools
import inspect
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from .errors import ArgumentError

F = TypeVar("F", bound=Callable[..., Any])
_KEYWORDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def refuse_unknown(where: str, given: Iterable[str], known: Sequence[str]) -> None:
    """ArgumentError when a name of ``given`` is not one of ``known``: says the closest known one."""
    unknown = [k for k in given if k not in known]
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hints.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    raise ArgumentError(f"{where} has no option {', '.join(hints)}; its options are: {', '.join(known)}")


def checked(where: str) -> Callable[[F], F]:
    """Decorate a public function or method: its arguments are checked against its signature
    before it runs, so a misspelt keyword or a missing argument is an ArgumentError naming it."""

    def wrap(fn: F) -> F:
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())
        skip = 1 if params and params[0].name == "self" else 0
        known = [p.name for p in params[skip:] if p.kind in _KEYWORDS]
        free = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                sig.bind(*args, **kwargs)
            except TypeError as exc:
                if not free:
                    refuse_unknown(f"{where}()", kwargs, known)
                if "positional" in str(exc):
                    raise ArgumentError(f"{where}(): {exc}; {_shape(where, params[skip:])}") from None
                raise ArgumentError(f"{where}(): {exc}; its arguments are: {', '.join(known)}") from None
            return fn(*args, **kwargs)

        return call  # type: ignore[return-value]

    return wrap


def row_limit(where: str, limit: Any) -> int | None:
    """A ``limit=`` argument: None (every row) or a whole number >= 0; anything else is an
    ArgumentError naming the call (not DuckDB's 'LIMIT/OFFSET cannot be negative' nor a silent int())."""
    if limit is None:
        return None
    try:
        n = operator.index(limit) if not isinstance(limit, bool) else -1  # numpy ints too, not 2.5 or '3'
    except TypeError:
        n = -1
    if n < 0:
        raise ArgumentError(f"{where}(limit={limit!r}): limit is a whole number of rows >= 0, or None for all")
    return n


def _shape(where: str, params: list[inspect.Parameter]) -> str:
    """How the call is written: its positional arguments, then its keywords (required ones first)."""
    first = [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    named = [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    must = [f"{p.name}=..." for p in named if p.default is inspect.Parameter.empty]
    shown = ", ".join([*first, *must, *(["..."] if len(must) < len(named) else [])])
    rest = f"; {', '.join(p.name for p in named)} by name" if named else ""
    return f"it is called as {where}({shown}){rest}"
