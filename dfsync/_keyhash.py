"""The bucket of a primary key: a stable 64-bit hash of the key, scaled onto the buckets.

A key's bucket is a pure function of the key's values and the number of buckets, the same in
every process, on every host and in every version of DuckDB, polars or numpy: it is computed on
the driver only (workers receive their rows already cut), and the delivered state stores no
bucket, so a resumed run may re-bucket its pending rows without any effect on what is sent
(docs/PARTITIONS.md, *The hash*). Two algorithms, picked by the key's Arrow types:

- ``splitmix64-int-v1`` when every key column is an integer (the common key): each value as its
  64-bit two's complement through the SplitMix64 finalizer (Steele, Lea, Flood 2014; the
  ``mix64`` of ``java.util.SplittableRandom``), columns chained as ``h = mix(h ^ mix(v))``;
  computed with numpy's wrapping ``uint64`` arithmetic, ~10 ns a row where MD5 took ~800.
- ``md5-lower64-varchar-v1`` for any other key (and an integer key that holds a null): MD5, a
  fixed standard (DuckDB's own ``hash()`` may change between versions and is not used), of each
  key column cast to text and length-prefixed (so ``('x', 'yz')`` and ``('xy', 'z')`` differ),
  its low 64 bits.

Either hash is scaled onto N buckets as ``hash * N >> 64``: each bucket is one contiguous range of
hashes and every N works, not only powers of two. ``tests/test_partition.py`` pins the values.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ._ident import quote

MD5_ALGO = "md5-lower64-varchar-v1"
INT_ALGO = "splitmix64-int-v1"

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def key_algo(schema: pa.Schema, key: list[str]) -> str:
    """The hash a key of these (Arrow) types is bucketed by."""
    return INT_ALGO if all(pa.types.is_integer(schema.field(k).type) for k in key) else MD5_ALGO


def key_hash_sql(key: list[str]) -> str:
    """The MD5 hash of a row's key (:data:`MD5_ALGO`, an UBIGINT SQL expression over the key columns)."""
    parts = [f"coalesce(length(CAST({quote(k)} AS VARCHAR))::VARCHAR || ':' || CAST({quote(k)} AS VARCHAR), '-')"
             for k in key]
    return f"md5_number_lower({' || '.join(parts)})"


def bucket_sql(key: list[str], n: int) -> str:
    """The bucket (0 .. n-1) of a row by :data:`MD5_ALGO`: its key hash scaled onto n."""
    return f"CAST((CAST({key_hash_sql(key)} AS UHUGEINT) * {int(n)}) >> 64 AS INTEGER)"


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer, in place on a uint64 array (numpy's uint64 arithmetic wraps)."""
    z += _GOLDEN
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def int_key_hash(columns: list[np.ndarray]) -> np.ndarray:
    """:data:`INT_ALGO`: the 64-bit hash of integer key columns (numpy integer arrays, no nulls)."""
    h: np.ndarray | None = None
    for col in columns:
        v = _mix(np.asarray(col).astype(np.int64 if col.dtype.kind == "i" else np.uint64).view(np.uint64))
        h = v if h is None else _mix(h ^ v)
    assert h is not None
    return h


def int_key_buckets(columns: list[np.ndarray], n: int, step: int = 1 << 20) -> np.ndarray:
    """The buckets (0 .. n-1, int64) of integer keys by :data:`INT_ALGO`, a million rows at a time
    (the temporaries stay in the CPU's caches: 0.1 s for 10M rows)."""
    rows = len(columns[0]) if columns else 0
    out = np.empty(rows, np.int64)
    for i in range(0, rows, step):
        out[i:i + step] = scale(int_key_hash([c[i:i + step] for c in columns]), n)
    return out


def scale(hashes: np.ndarray, n: int) -> np.ndarray:
    """``hash * n >> 64`` (the bucket, 0 .. n-1) of uint64 hashes, exactly, in 64-bit halves."""
    if not 0 < n < 2**32:
        raise ValueError(f"{n} buckets")
    m = np.uint64(n)
    hi, lo = hashes >> np.uint64(32), hashes & np.uint64(0xFFFFFFFF)
    return ((hi * m + ((lo * m) >> np.uint64(32))) >> np.uint64(32)).astype(np.int64)
