"""The changed-only diff of a single integer key without a hash join (dfsync/staging.py uses it).

A re-sync's diff pairs every source row with the delivered row of the same key. As a DuckDB
FULL JOIN, its 10M-entry hash table costs about what reading and hashing the source does
(bench/RESULTS.md, issue 22). When the key is one integer column whose delivered values fill
most of a range (the usual surrogate id), the delivered fingerprints go into an array indexed
by ``key - low``: each source row, fingerprinted by DuckDB, finds its delivered row by that
position, in key order, and only the rows that are new or changed are copied into staging.

The comparison is the join's, row for row: a source row is unchanged only when a delivered
row has exactly its key and its fingerprint is equal (no hash of the key stands in for it),
so a changed row is taken as unchanged only when its new fingerprint equals the delivered
one of the same key, as before. Each kept row's values are fingerprinted again once staged:
they must hash as they did when read, or the caller diffs again by the join.

A Parquet source whose first rows show (next to) no change is read again for the key and
the fingerprint alone, and the rows that read finds new or changed are fetched by a third read
of their keys, each with the fingerprint it compared: handing every column to Python was most
of what an unchanged re-sync cost above reading and hashing (bench/RESULTS.md, issue 22).
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._arrow import bool_array, int_array
from ._ident import quote

#: the key's range may be up to this many times the delivered rows (the arrays take ~10 bytes a slot)
SPAN_PER_ROW = 4
#: DuckDB types whose values go out to Arrow and back unchanged (the staged rows make that trip)
_ROUND_TRIP = ("BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER",
               "UBIGINT", "FLOAT", "DOUBLE", "VARCHAR", "BLOB", "DATE", "TIME", "TIME_NS", "TIMESTAMP",
               "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "TIMESTAMP WITH TIME ZONE")
#: integer keys and their Arrow types (UBIGINT is left to the join: its values may not fit an int64)
_KEY_TYPES = {"TINYINT": pa.int8(), "SMALLINT": pa.int16(), "INTEGER": pa.int32(), "BIGINT": pa.int64(),
              "UTINYINT": pa.uint8(), "USMALLINT": pa.uint16(), "UINTEGER": pa.uint32()}
#: source rows per Arrow batch read out of DuckDB, and staged rows held before they are inserted.
#: DuckDB builds a batch of text columns slower the larger it is: every column of the 2M-row bench
#: out in batches of 2^14 rows costs ~0.36 CPU-s, in 2^17 ~0.44 (bench/RESULTS.md, session 22)
_BATCH_ROWS = 1 << 14
_FLUSH_BYTES = 64 << 20
#: a whole read gives way to a narrow one (key and fingerprint) when its first _PROBE_ROWS rows say
#: that the source has at most about NARROW_ROWS changed rows (see _narrow)
NARROW_ROWS = 64
_PROBE_ROWS = 1 << 17


def _zeros(n: int, dtype: type) -> np.ndarray:
    """A zeroed array whose pages are mapped in one call (MAP_POPULATE) rather than one page fault
    every 4 KB as they are first written: 80 MB in 0.03 s instead of 0.18 s on the bench host."""
    size = n * np.dtype(dtype).itemsize
    if size < 1 << 20 or not hasattr(mmap, "MAP_POPULATE"):
        return np.zeros(n, dtype=dtype)
    buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)
    return np.frombuffer(buf, dtype=dtype)  # (the array holds the mapping; freed with it)


def _values(arr: pa.Array) -> np.ndarray:
    """A fixed-width integer Arrow array's values (nulls' slots hold anything) as numpy, in place.
    ``Array.to_numpy()`` and ``pa.array(ndarray)`` import pandas the first time: 0.15-0.2 s."""
    t = arr.type
    dtype = np.dtype(f"{'u' if pa.types.is_unsigned_integer(t) else ''}int{t.bit_width}")
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize)


def _valid(arr: pa.Array) -> np.ndarray:
    """Which values of an Arrow array are not null, as a numpy bool array."""
    bits = np.frombuffer(arr.buffers()[0], dtype=np.uint8)
    return np.unpackbits(bits, count=arr.offset + len(arr), bitorder="little")[arr.offset:].astype(bool)


class DenseState:
    """The delivered fingerprints of a single integer key, as arrays indexed by ``key - low``."""

    def __init__(self, low: int, fps: np.ndarray, present: np.ndarray, key_type: pa.DataType) -> None:
        self.low, self.fps, self.present, self.key_type = low, fps, present, key_type

    @classmethod
    def build(cls, state: object, key: Sequence[str], types: dict[str, str], max_bytes: int | None) -> DenseState | None:
        """None when the diff must join: a key of several columns or of another type, a state
        that is not Arrow in memory, keys too sparse for their range, a column that would not
        come back from Arrow unchanged."""
        if not isinstance(state, pa.Table) or len(key) != 1 or not state.num_rows:
            return None
        if not all(t in _ROUND_TRIP or t.startswith("DECIMAL(") for t in types.values()):
            return None
        k = key[0]
        col, fp = state.column(k), state.column("_fp")
        arrow_key = _KEY_TYPES.get(types[k])
        if arrow_key is None or col.type != arrow_key or fp.type != pa.uint64() or col.null_count or fp.null_count:
            return None  # (a key type that changed since: the join names it)
        bounds = pc.min_max(col).as_py()
        low, span = int(bounds["min"]), int(bounds["max"]) - int(bounds["min"]) + 1
        budget = (max_bytes or 512 << 20) // 10
        if span > SPAN_PER_ROW * state.num_rows + 1024 or span > budget:
            return None
        fps, present = _zeros(span, np.uint64), _zeros(span, np.bool_)
        for keys, prints in zip(col.chunks, fp.chunks, strict=True):
            if len(keys):
                pos = _values(keys).astype(np.int64, copy=False) - low
                present[pos] = True
                fps[pos] = _values(prints)
        if int(np.count_nonzero(present)) != state.num_rows:
            return None  # a key repeats in the delivered state: the join's counts say so
        return cls(low, fps, present, arrow_key)


def _kept(batches: list[pa.RecordBatch]) -> pa.Table:
    """The rows kept so far, as staging takes them in (a test changes them here on purpose)."""
    return pa.Table.from_batches(batches)


class _Pass:
    """One read of ``_src`` compared with the delivered state, batch by batch: rows per action
    and which delivered keys the source still has (``seen``)."""

    def __init__(self, dense: DenseState) -> None:
        self.dense = dense
        self.seen = _zeros(len(dense.present), np.bool_)
        self.counts = {"insert": 0, "update": 0, "delete": 0, "unchanged": 0}
        self.read = 0

    def compare(self, kcol: pa.Array, fps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(hit, same) of a batch: its key was delivered; its fingerprint is that key's delivered one."""
        dense, span = self.dense, len(self.dense.present)
        n = len(kcol)
        self.read += n
        pos = _values(kcol).astype(np.int64, copy=False) - dense.low  # (a new array: slots set to 0 below)
        hit = pos.view(np.uint64) < span  # (a key below the range wraps to a large number)
        if kcol.null_count:
            hit &= _valid(kcol)
        if not hit.all():
            pos[~hit] = 0
        hit &= dense.present[pos]
        self.seen[pos if hit.all() else pos[hit]] = True
        same = hit & (dense.fps[pos] == fps)
        n_same, n_hit = int(np.count_nonzero(same)), int(np.count_nonzero(hit))
        self.counts["unchanged"] += n_same
        self.counts["update"] += n_hit - n_same
        self.counts["insert"] += n - n_hit
        return hit, same


def stage_changed(con: duckdb.DuckDBPyConnection, dense: DenseState, columns: Sequence[str], key: str,
                  fp_sql: str, action_type: str, rows: int | None = None) -> tuple[dict[str, int], int] | None:
    """Read ``_src`` (fingerprinted by DuckDB), keep its new and changed rows and the delivered
    keys it no longer has in ``stg`` (which must exist, empty, with the staged columns). Returns
    (rows per action, rows read), or None when the kept rows are not the ones the comparison
    found (a value that did not come back from Arrow as read, a file changed between two reads,
    a null key among rows read twice: the caller's join then diffs again).

    ``rows``, the source's row count, is given when ``_src`` can be read again (Parquet files):
    a read whose first rows have (next to) no changed row then gives way to one of the key and the
    fingerprint alone, and a second read fetches the few rows it finds changed (:func:`_narrow`)."""
    writer = con.cursor()  # stg is filled while another cursor streams the source
    try:
        done = _whole(con, writer, dense, columns, key, fp_sql, action_type, rows)
        if done is None:
            done, changed = _narrow(con, dense, key, fp_sql)
            if _fetch(con, changed, columns, key, fp_sql, action_type) != done.counts["insert"] + done.counts["update"]:
                return None  # not exactly the rows the first read found changed (a null key is not fetched)
        gone = np.flatnonzero(dense.present & ~done.seen)
        done.counts["delete"] = len(gone)
        if len(gone):
            writer.register("_gone", pa.Table.from_arrays(
                [int_array(gone + dense.low, dense.key_type), int_array(dense.fps[gone], pa.uint64())], names=[key, "_fp"]))
            writer.execute(f"INSERT INTO stg ({quote(key)}, _fp, _action) SELECT {quote(key)}, _fp, "
                           f"'delete'::{action_type} FROM _gone")
            writer.unregister("_gone")
        # the kept rows must hash as they did when compared (they went out to Arrow and back in,
        # or were read a second time)
        if writer.execute(f"SELECT count(*) FROM stg WHERE _action <> 'delete' AND {fp_sql} <> _fp").fetchall()[0][0]:
            return None
    finally:
        writer.close()
    return done.counts, done.read


def _whole(con: duckdb.DuckDBPyConnection, writer: duckdb.DuckDBPyConnection, dense: DenseState,
           columns: Sequence[str], key: str, fp_sql: str, action_type: str, rows: int | None) -> _Pass | None:
    """One read of every column; the new and changed rows go into ``stg`` as they come. None when
    it stopped after its first _PROBE_ROWS rows to let a narrow read take over (``rows``: see
    stage_changed); it stops before it stages a row."""
    cols = ", ".join(quote(c) for c in columns)
    done = _Pass(dense)
    held: list[pa.RecordBatch] = []
    size = 0

    def flush() -> None:
        nonlocal size
        if not held:
            return
        writer.register("_kept", _kept(held))
        writer.execute(f"INSERT INTO stg SELECT {cols}, _fp, CASE WHEN _upd THEN 'update' ELSE 'insert' END"
                       f"::{action_type} FROM _kept")
        writer.unregister("_kept")
        held.clear()
        size = 0

    reader = con.sql(f"SELECT {cols}, {fp_sql} AS _fp FROM _src").to_arrow_reader(_BATCH_ROWS)
    ki = list(reader.schema.names).index(key)
    total = rows or 0
    probing, seen = total > 0, 0  # (changed rows among the first ones, while they may still decide)
    for batch in reader:
        if not batch.num_rows:
            continue
        hit, same = done.compare(batch.column(ki), _values(batch.column(batch.num_columns - 1)))
        changed = len(same) - int(np.count_nonzero(same))
        if probing:
            seen += changed
            if seen * total > NARROW_ROWS * _PROBE_ROWS or done.read >= total:
                probing = False  # too many changes for the narrow read, or nothing left to read
            elif done.read >= _PROBE_ROWS:
                if seen * total <= NARROW_ROWS * done.read:
                    reader.close()  # (the narrow read follows on the same connection; nothing was staged)
                    return None
                probing = False
        if changed:
            keep = ~same
            kept = batch.filter(bool_array(keep)).append_column("_upd", bool_array(hit[keep]))
            held.append(kept)
            size += kept.nbytes
            if size >= _FLUSH_BYTES:
                probing = False  # (rows staged: the read goes on)
                flush()
    flush()
    return done


def _narrow(con: duckdb.DuckDBPyConnection, dense: DenseState, key: str, fp_sql: str) -> tuple[_Pass, pa.Table | None]:
    """A read of the key and the fingerprint only: the (key, fingerprint, delivered key?) of the
    rows that are new or changed (None: no row is).

    Most of a whole read's cost above reading and hashing is handing every column to Python
    (about 0.45 CPU-s for the two text columns of the 10M-row bench), so an unchanged source
    costs the read and the hash alone. Fetching the changed rows again costs up to what a read
    does (their keys spread over the file), more than the narrow read saves once more than
    about NARROW_ROWS rows changed: hence a whole read's first rows decide (_whole)."""
    done = _Pass(dense)
    keys: list[np.ndarray] = []
    prints: list[np.ndarray] = []
    updates: list[np.ndarray] = []
    ktype = None
    for batch in con.sql(f"SELECT {quote(key)}, {fp_sql} AS _fp FROM _src").to_arrow_reader(_BATCH_ROWS):
        if not batch.num_rows:
            continue
        kcol, fps = batch.column(0), _values(batch.column(1))
        hit, same = done.compare(kcol, fps)
        if not same.all():
            keep = ~same
            if kcol.null_count:
                keep &= _valid(kcol)  # a null key is not fetched again (stage_changed's count says so)
            keys.append(_values(kcol)[keep])
            prints.append(fps[keep])
            updates.append(hit[keep])
            ktype = kcol.type
    if ktype is None:
        return done, None
    return done, pa.Table.from_arrays(
        [int_array(np.concatenate(keys), ktype), int_array(np.concatenate(prints), pa.uint64()),
         bool_array(np.concatenate(updates))], names=[key, "_fp", "_upd"])


def _fetch(con: duckdb.DuckDBPyConnection, changed: pa.Table | None, columns: Sequence[str], key: str,
           fp_sql: str, action_type: str) -> int:
    """The second read: the rows the first one found new or changed, with the fingerprint it
    found (a key's other rows, unchanged ones, are not taken), into ``stg``; the rows staged."""
    if changed is None:
        return 0
    cols, k = ", ".join(quote(c) for c in columns), quote(key)
    con.register("_changed", changed)
    try:
        return con.execute(
            f"INSERT INTO stg SELECT {', '.join(f's.{quote(c)}' for c in columns)}, s._fp, CASE WHEN c._upd "
            f"THEN 'update' ELSE 'insert' END::{action_type} FROM (SELECT {cols}, {fp_sql} AS _fp FROM _src "
            f"WHERE {k} IN (SELECT {k} FROM _changed)) s JOIN (SELECT {k}, _fp, bool_or(_upd) AS _upd FROM "
            f"_changed GROUP BY ALL) c ON s.{k} = c.{k} AND s._fp = c._fp").fetchall()[0][0]
    finally:
        con.unregister("_changed")
