"""Polars expressions in stored definitions (``checks.expression``, ``mapping``) are data.

Polars serializes a Python function inside an expression (given to ``map_elements``,
``map_batches``, ``fold``, ...) with pickle, and unpickles it when the expression is read back:
a stored one would run code read from the workspace on every host that runs the sync, past
``allowed_callbacks``. So an expression carrying Python code is never stored (the sync runs
only in the session that made it), and a stored expression is read back only when no part of
it but a literal holds bytes (where polars keeps pickles); anything else is refused unread.

>>> import polars as pl
>>> python_code(pl.col("x") > 0), python_code(pl.col("x").map_batches(lambda s: s > 0))
(False, True)
"""

from __future__ import annotations

import base64
import io
import json
import struct
from typing import Any

import polars as pl

from .errors import ConfigError

__all__ = ["load_expr", "python_code"]

_SHORTEST_CODE = 8  # bytes: no pickle that runs anything is shorter


def python_code(expr: pl.Expr) -> bool:
    """Whether ``expr`` holds bytes outside its literals (a pickled Python function or object)."""
    try:
        tree = json.loads(expr.meta.serialize(format="json"))
    except Exception:  # noqa: BLE001 - polars cannot serialize it (a Python object literal): not storable
        return True
    return bool(_code_paths(tree))


def load_expr(data: str, what: str, *, fmt: str = "json") -> pl.Expr:
    """A stored expression (``fmt`` "json": its JSON text; "binary": base64 of polars' binary form)
    read back, refused with a ConfigError naming ``what`` when it holds Python code."""
    try:
        raw = base64.b64decode(data) if fmt == "binary" else data
        tree = _msgpack(raw) if fmt == "binary" else json.loads(raw)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"{what}: the stored polars expression is unreadable ({exc})") from None
    found = _code_paths(tree)
    if found:
        raise ConfigError(
            f"{what}: the stored polars expression holds Python code ({found[0]}), which dfsync never loads "
            f"from a workspace (polars would unpickle it and run it here). Write it with polars' own "
            f"expressions, or run the sync from the Python session that made it")
    stream = io.BytesIO(raw) if fmt == "binary" else io.StringIO(raw)  # type: ignore[arg-type]
    return pl.Expr.deserialize(stream, format=fmt)  # type: ignore[arg-type]


def _code_paths(node: Any, path: str = "") -> list[str]:
    """Where ``node`` (an expression's tree) holds bytes outside a literal."""
    if isinstance(node, bytes | bytearray) or (
            isinstance(node, list) and len(node) >= _SHORTEST_CODE
            and all(isinstance(x, int) and not isinstance(x, bool) for x in node)):
        # a literal's value, or a selector's column positions: data polars never unpickles
        data = (".Literal." in path + "." and not any(k in path for k in ("Object", "Python"))) \
            or path.endswith(".ByIndex.indices")
        return [] if data else [path.lstrip(".") or "the expression"]
    out: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _code_paths(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _code_paths(v, f"{path}[{i}]")
    return out


def _msgpack(data: bytes) -> Any:
    """Polars' binary form (MessagePack) as Python values, bytes kept as bytes."""
    value, end = _unpack(data, 0)
    return value


def _unpack(b: bytes, i: int) -> tuple[Any, int]:  # noqa: C901 - one branch per MessagePack type
    t = b[i]
    i += 1
    if t <= 0x7F:
        return t, i
    if t >= 0xE0:
        return t - 0x100, i
    if 0x80 <= t <= 0x8F:
        return _map(b, i, t & 0x0F)
    if 0x90 <= t <= 0x9F:
        return _array(b, i, t & 0x0F)
    if 0xA0 <= t <= 0xBF:
        n = t & 0x1F
        return b[i:i + n].decode("utf-8", "replace"), i + n
    if t == 0xC0:
        return None, i
    if t in (0xC2, 0xC3):
        return t == 0xC3, i
    sizes = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}
    if t in sizes:  # bin 8/16/32, str 8/16/32
        n, i = int.from_bytes(b[i:i + sizes[t]], "big"), i + sizes[t]
        chunk = b[i:i + n]
        return (bytes(chunk) if t <= 0xC6 else chunk.decode("utf-8", "replace")), i + n
    ints = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q", 0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q",
            0xCA: ">f", 0xCB: ">d"}
    if t in ints:
        size = struct.calcsize(ints[t])
        return struct.unpack(ints[t], b[i:i + size])[0], i + size
    if t in (0xDC, 0xDD, 0xDE, 0xDF):
        size = 2 if t in (0xDC, 0xDE) else 4
        n, i = int.from_bytes(b[i:i + size], "big"), i + size
        return _array(b, i, n) if t in (0xDC, 0xDD) else _map(b, i, n)
    fixext = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}
    if t in fixext:  # fixext: a type byte and its data
        return bytes(b[i + 1:i + 1 + fixext[t]]), i + 1 + fixext[t]
    if t in (0xC7, 0xC8, 0xC9):  # ext 8/16/32
        size = {0xC7: 1, 0xC8: 2, 0xC9: 4}[t]
        n, i = int.from_bytes(b[i:i + size], "big"), i + size
        return bytes(b[i + 1:i + 1 + n]), i + 1 + n
    raise ValueError(f"not MessagePack (byte 0x{t:02x} at {i - 1})")


def _array(b: bytes, i: int, n: int) -> tuple[list, int]:
    out = []
    for _ in range(n):
        v, i = _unpack(b, i)
        out.append(v)
    return out, i


def _map(b: bytes, i: int, n: int) -> tuple[dict, int]:
    out: dict = {}
    for _ in range(n):
        k, i = _unpack(b, i)
        v, i = _unpack(b, i)
        out[str(k)] = v
    return out, i
