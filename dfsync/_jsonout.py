"""The command line's ``--json`` output: every value of the user's data as JSON other tools read."""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from typing import Any

__all__ = ["json_text"]


def json_text(obj: Any) -> str:
    """``obj`` as indented JSON (times ISO 8601, bytes as hex, NaN and infinities as text)."""
    return json.dumps(_finite(obj), default=_jsonable, indent=2, allow_nan=False)


def _jsonable(v: Any) -> Any:
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(v).hex()  # PostgreSQL's bytea text form, not Python's b'...' repr
    return str(v)


def _finite(v: Any) -> Any:
    """JSON has no NaN or infinity (Python writes a bare NaN that jq, JavaScript and most parsers
    refuse): a non-finite float of the user's data is written as the text "NaN", "Infinity" or
    "-Infinity", never as null (that would be another value)."""
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v
