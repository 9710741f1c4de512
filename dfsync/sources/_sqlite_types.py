"""SQLite columns whose first rows are all NULL.

SQLite's ADBC driver takes each column's Arrow type from the first batch of rows it reads, and a
column that is NULL in all of them becomes int64, whatever its declared type: a table whose
``email`` column was filled only in later rows failed its read there ("Type mismatch in column 1:
expected INT64 but got STRING/BINARY"), and no cast in the query helped (a NULL stays NULL).
Such a column's first value is looked up (``typeof``), and the query is read with one extra first
row holding a value of that kind, which the reader then drops: the driver types the column from
it.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ..destinations._sql import q

#: a value of each SQLite storage class, for the extra first row
_SAMPLE = {"text": "''", "real": "0.0", "blob": "x''"}


def typed_query(con: Any, sql: str, params: tuple, first: pa.RecordBatch) -> str | None:
    """``sql`` with a first row that types its all-NULL columns, or None when none needs it."""
    unknown = [f.name for f, col in zip(first.schema, first.columns, strict=True)
               if pa.types.is_int64(f.type) and col.null_count == len(col)]
    if not unknown or not first.num_rows:
        return None
    probes = ", ".join(f"(SELECT typeof({q(c)}) FROM ({sql}) AS q1 WHERE {q(c)} IS NOT NULL LIMIT 1)"
                       for c in unknown)
    with con.cursor() as cur:
        cur.execute(f"SELECT {probes}", parameters=(params * len(unknown)) or None)
        kinds = dict(zip(unknown, cur.fetchall()[0], strict=True))
    kinds = {c: k for c, k in kinds.items() if k in _SAMPLE}  # integer (or NULL throughout): int64 is right
    if not kinds:
        return None
    sample = ", ".join(f"{_SAMPLE[kinds[c]] if c in kinds else 'NULL'} AS {q(c)}" for c in first.schema.names)
    return f"SELECT {sample} UNION ALL SELECT * FROM ({sql}) AS q2"


def typed_reader(con: Any, cur: Any, inner: Any, sql: str, params: tuple) -> tuple[Any, Any, list[pa.RecordBatch]]:
    """The SQLite reader with its first batch read and its all-NULL columns typed (see above)."""
    try:
        first = inner.read_next_batch()
    except StopIteration:
        return cur, inner, []
    typed = typed_query(con, sql, params, first)
    if typed is None:
        return cur, inner, [first]
    inner.close()
    cur.close()
    cur = con.cursor()
    cur.execute(typed, parameters=params or None)
    inner = cur.fetch_record_batch()
    return cur, inner, [inner.read_next_batch().slice(1)]  # without the typing row
