"""A source's reader options as the workspace stores them (JSON): polars data types, such as
``schema_overrides={"dep_time": pl.String}`` for a CSV, are kept as their text
(``{"polars_dtype": "String"}``) and rebuilt without ``eval``; anything else that JSON cannot
hold is refused at ``create_sync`` naming the option."""

from __future__ import annotations

import ast
import json
from typing import Any

import polars as pl

from ..errors import ConfigError

_TAG = "polars_dtype"


def _dtype_names() -> frozenset[str]:
    return frozenset(n for n in dir(pl) if isinstance(getattr(pl, n), type) and issubclass(getattr(pl, n), pl.DataType))


def _encode(value: Any) -> Any:
    if isinstance(value, pl.DataType) or (isinstance(value, type) and issubclass(value, pl.DataType)):
        dtype = value() if isinstance(value, type) else value
        return {_TAG: repr(dtype)}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _build(node: ast.AST, names: frozenset[str]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_build(e, names) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
        return {_build(k, names): _build(v, names) for k, v in zip(node.keys, node.values, strict=True)}  # type: ignore[arg-type]
    if isinstance(node, ast.Name) and node.id in names:
        return getattr(pl, node.id)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names:
        return getattr(pl, node.func.id)(*[_build(a, names) for a in node.args],
                                         **{k.arg: _build(k.value, names) for k in node.keywords if k.arg})
    raise ValueError(ast.dump(node))


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_TAG} and isinstance(value[_TAG], str):
            try:
                return _build(ast.parse(value[_TAG], mode="eval").body, _dtype_names())
            except (SyntaxError, ValueError, TypeError) as exc:
                raise ConfigError(f"stored polars data type {value[_TAG]!r} cannot be read by this polars "
                                  f"({pl.__version__}): {exc}") from None
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def reader_options(options: dict[str, Any], source: str) -> dict[str, Any]:
    """The options to pass to the reader (polars data types rebuilt), after checking that every
    one can be stored: a value JSON cannot hold is a ConfigError naming the option."""
    for name, value in options.items():
        try:
            json.dumps(_encode(value))
        except (TypeError, ValueError):
            raise ConfigError(f"{source}(..., {name}=...) holds a {type(value).__name__}, which a saved sync "
                              f"cannot store; pass plain values (text, numbers, lists, dicts, polars data "
                              f"types)") from None
    return {k: _decode(v) for k, v in options.items()}


def stored_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options as the workspace stores them (JSON-safe)."""
    return {k: _encode(v) for k, v in options.items()}
