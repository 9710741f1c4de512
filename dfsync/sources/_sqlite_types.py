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

from collections.abc import Iterator
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


def refuse_reals_as_text(con: Any, sql: str, params: tuple, first: pa.RecordBatch) -> None:
    """A column the driver typed as text (or bytes) from its first rows, because they mix REAL values
    with TEXT (or BLOB) ones, gets those REALs as printf's ``%e``: 3.14159265358979 became
    '3.141593e+00' (7 significant digits) and the run said success. Such a column is refused,
    naming it, one value and the cast that keeps every digit."""
    cols = [f.name for f in first.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
            or pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
    if not cols or not first.num_rows:
        return
    rows = f"(SELECT * FROM ({sql}) AS q0 LIMIT {first.num_rows}) AS q1"  # the rows the driver typed from
    with con.cursor() as cur:
        cur.execute("SELECT " + ", ".join(f"max(typeof({q(c)}) = 'real')" for c in cols) + f" FROM {rows}",
                    parameters=params or None)
        mixed = [c for c, hit in zip(cols, cur.fetchall()[0], strict=True) if hit]
        if not mixed:
            return
        cur.execute(f"SELECT quote({q(mixed[0])}) FROM {rows} WHERE typeof({q(mixed[0])}) = 'real' LIMIT 1",
                    parameters=params or None)
        value = cur.fetchall()[0][0]
    from ..errors import SourceError

    col = q(mixed[0])
    raise SourceError(
        f"column {mixed[0]!r} holds REAL values (e.g. {value}) among text or blob ones; SQLite's driver would "
        f"give those REALs as text with 7 significant digits ('%e': 3.14159265358979 as '3.141593e+00'). "
        f"Give the column one type in the query: SELECT ..., CAST({col} AS TEXT) AS {col} FROM ... keeps "
        f"every digit as text (or CAST({col} AS REAL) for numbers, where the text ones are not)"
        + (f"; also {', '.join(map(repr, mixed[1:]))}" if mixed[1:] else "") + ". Nothing was sent.")


def typed_reader(con: Any, cur: Any, inner: Any, sql: str, params: tuple) -> tuple[Any, Any, list[pa.RecordBatch]]:
    """The SQLite reader with its first batch read, its REAL-among-text columns refused and its
    all-NULL columns typed (see above)."""
    try:
        first = inner.read_next_batch()
    except StopIteration:
        return cur, inner, []
    refuse_reals_as_text(con, sql, params, first)
    typed = typed_query(con, sql, params, first)
    if typed is None:
        return cur, inner, [first]
    inner.close()
    cur.close()
    cur = con.cursor()
    cur.execute(typed, parameters=params or None)
    inner = cur.fetch_record_batch()
    return cur, inner, [inner.read_next_batch().slice(1)]  # without the typing row


#: the largest integer magnitude a double holds exactly (2**53)
_EXACT = 2**53


def refuse_rounded_integers(source: Any, batches: Any) -> Iterator[pa.RecordBatch]:
    """A column the driver typed as REAL (a NUMERIC or DECIMAL column, or one mixing INTEGER and
    REAL values) gets its INTEGER values as doubles: one above 2**53 was rounded
    (9007199254740993 arrived as 9007199254740992, 12345678901234567 as ...68) and the run said
    success. A batch holding a double that large asks the database (once a column and read) whether
    an INTEGER value was behind it; if so the column is refused, naming it, one value and the cast
    that keeps it."""
    import pyarrow.compute as pc

    asked: set[str] = set()
    for rb in batches:
        for f, col in zip(rb.schema, rb.columns, strict=True):
            if pa.types.is_floating(f.type) and f.name not in asked and col.null_count < len(col) \
                    and pc.max(pc.abs(col)).as_py() >= _EXACT:  # 2**53 + 1 arrives as 2**53
                asked.add(f.name)
                _refuse_if_integers(source, f.name)
        yield rb


def _refuse_if_integers(source: Any, name: str) -> None:
    c = q(name)
    con = source.connect()
    try:
        with con.cursor() as cur:
            cur.execute(f"SELECT CAST({c} AS TEXT) FROM ({source.query}) AS q0 WHERE typeof({c}) = 'integer' "
                        f"AND ({c} > {_EXACT} OR {c} < -{_EXACT}) LIMIT 1")
            hit = cur.fetchall()
    finally:
        con.close()
    if hit:
        from ..errors import SourceError

        raise SourceError(
            f"column {name!r} holds INTEGER values (e.g. {hit[0][0]}) that SQLite's driver reads as REAL, "
            f"because the column is declared NUMERIC/DECIMAL or holds REAL values too; a REAL keeps integers "
            f"exactly only up to 2**53, so that one would arrive rounded. Give the column one type in the "
            f"query: SELECT ..., CAST({c} AS TEXT) AS {c} FROM ... keeps every digit (or CAST({c} AS INTEGER) "
            f"when every value is whole); nothing was sent")
