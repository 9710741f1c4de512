"""Arrow values built without pyarrow's pandas probe.

``pa.array``, ``pa.scalar`` and compute calls given Python values ask pyarrow's pandas shim
whether the value is a pandas object, and the first such question imports pandas (0.3 s
per process, most of a small run). The run path builds its few constants and masks from
buffers instead; nothing else differs.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import pyarrow as pa


@lru_cache(maxsize=64)
def string_scalar(value: str) -> pa.Scalar:
    data = value.encode()
    offsets = pa.py_buffer(struct.pack("<ii", 0, len(data)))
    return pa.Array.from_buffers(pa.string(), 1, [None, offsets, pa.py_buffer(data)])[0]


def bool_array(mask: np.ndarray) -> pa.Array:
    """A boolean Arrow array from a numpy bool mask (no nulls)."""
    bits = np.packbits(np.asarray(mask, dtype=bool), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(mask), [None, pa.py_buffer(bits)])


def int_array(values: np.ndarray | Sequence[int], type: pa.DataType | None = None) -> pa.Array:  # noqa: A002
    """An integer Arrow array (int64 unless ``type`` says) from a numpy array or ints (no nulls)."""
    type = type or pa.int64()  # noqa: A001
    arr = np.ascontiguousarray(values, dtype=type.to_pandas_dtype())
    return pa.Array.from_buffers(type, len(arr), [None, pa.py_buffer(arr)])


def string_array(values: Sequence[str | None]) -> pa.Array:
    """A string Arrow array from a list of str or None."""
    encoded = [b"" if v is None else v.encode() for v in values]
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    valid = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
    validity = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(pa.string(), len(values),
                                 [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])


def int64_copy(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numpy copy of a null-free int64 Arrow array (a slice would keep its whole batch alive)."""
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    parts = [np.frombuffer(c.buffers()[1], dtype=np.int64, count=len(c), offset=c.offset * 8) for c in chunks if len(c)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
