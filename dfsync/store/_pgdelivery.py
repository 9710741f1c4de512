"""The delivered state, records and checks of a PostgreSQL workspace: what differs from DuckDB's SQL.

The operations themselves (and their transaction boundaries) are :mod:`dfsync.store._delivery`'s;
these override the statements PostgreSQL does not speak:

* ``state_<id>`` key columns get the PostgreSQL type of the staged DuckDB type (``_KEY_TYPES``;
  others are kept as text) and ``_fp`` is a ``bigint`` holding the fingerprint's 64 bits. Read
  back, every key column is cast to its staged type again (``syncs.key_types``), so the diff in
  staging compares like with like.
* **The delivered state is streamed**, never held whole here: :meth:`PgDeliveryOps.delivered`
  reads it on a connection of its own (the driver fetches it by binary COPY) and hands the
  batches on as they come; staging stores them (it may spill).
* **A row is written once.** ``write_ahead`` is one binary COPY of the batch's keys,
  fingerprints and actions (NULL for an insert, :data:`_ACTION`) straight into ``state_<id>``
  with ``_ok`` TRUE; the row counts as
  delivered once its batch is ``committed`` in ``batches`` (an ``inflight`` batch's rows are
  left out of every read; a discarded batch's are deleted). Confirming a batch is then a few
  set statements, whatever its size: no ``UPDATE ... SET _ok = TRUE`` of every row (MVCC would
  write each row again: 15.9 s for 2M rows, five times the write-ahead). Only the previous
  versions of updated and deleted keys are touched, by one ``DELETE ... USING`` (or, set aside,
  ``UPDATE ... FROM``) per batch through the key index.
* **A local copy, used only when current** (:mod:`dfsync.store._pgstatecache`): each state table
  has a generation that every change of its delivered rows renews (server-side triggers); a read
  whose generation a local base and chain of this host's recorded changes reach uses those files
  instead of the server's 10M rows; any other generation reads the server. Where the copies are
  and when they are removed: :mod:`dfsync.store._pglocalcopy`.
* ``rec_<id>`` is created from the records' Arrow schema (``arrow_to_pg``), gains columns as
  records need them; a column whose type changes is widened (integers, floats) or becomes text.
  ``rowid`` (bigserial) keeps their order, as DuckDB's rowid does; DuckDB's ``* EXCLUDE`` is a
  column list (:meth:`PgDeliveryOps._all_but`), ``BY NAME`` too.
"""

from __future__ import annotations

import contextlib
import logging
import re
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .._arrow import distinct_values, int_array, string_scalar
from .._ident import quote
from .._pgtypes import arrow_to_pg
from ._delivery import key_match, rec_table, state_table
from ._pgkeyindex import STATE_TABLE_OPTIONS
from ._pglocalcopy import PgLocalCopy
from ._pgstatecache import StateCache, gen, gen_trigger_ddl

__all__ = ["PgDeliveryOps", "duck_to_pg"]

log = logging.getLogger("dfsync.store")

_KEY_TYPES = {
    "BOOLEAN": "boolean", "TINYINT": "smallint", "SMALLINT": "smallint", "UTINYINT": "smallint",
    "INTEGER": "integer", "USMALLINT": "integer", "BIGINT": "bigint", "UINTEGER": "bigint",
    "UBIGINT": "numeric(20,0)", "HUGEINT": "numeric(39,0)", "UHUGEINT": "numeric(39,0)", "FLOAT": "real",
    "DOUBLE": "double precision", "VARCHAR": "text", "DATE": "date", "TIME": "time",
    "TIMESTAMP": "timestamp", "TIMESTAMP WITH TIME ZONE": "timestamptz", "BLOB": "bytea", "UUID": "text",
}
_WIDER = {"smallint": 1, "integer": 2, "bigint": 3, "numeric": 4}
#: staged key types whose Arrow values binary COPY writes straight into the state table's column
#: once cast to this Arrow type; other key types go through a temporary table (PostgreSQL casts)
_COPY_TYPES = {
    "BOOLEAN": pa.bool_(), "TINYINT": pa.int16(), "SMALLINT": pa.int16(), "UTINYINT": pa.int16(),
    "INTEGER": pa.int32(), "USMALLINT": pa.int32(), "BIGINT": pa.int64(), "UINTEGER": pa.int64(),
    "FLOAT": pa.float32(), "DOUBLE": pa.float64(), "VARCHAR": pa.large_string(), "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("us"), "BLOB": pa.large_binary(),
}
#: a state row is delivered when its batch is not in flight (a discarded batch's rows are gone)
#: the rows of a batch that supersede a delivered version (their partial index is this predicate)
_CHANGES = "_action IN ('update','delete')"
_NOT_IN_FLIGHT = "(_run, _batch) NOT IN (SELECT run_id, batch_no FROM batches WHERE status = 'inflight')"
#: a state row's action as written: NULL is an insert (the action every row of a first load has;
#: not writing it is a quarter of the state's COPY: 4.1 instead of 5.4 server CPU-s per 10M rows).
#: Rows written before 2026-12-06 (fifth session) say 'insert': both read back as 'insert'.
_ACTION = "coalesce(_action, 'insert')"
#: does the state table's ``_ok`` default to TRUE (created since 2026-12-07, ninth session: the
#: write-ahead's COPY leaves the column out then; 0.2-0.3 server CPU-s per 10M rows)
#: is there the state table's index of the rows set aside (``_ok`` NULL)? A table created since
#: 2026-12-07 (ninth session) gets it with its first rows set aside (:meth:`PgDeliveryOps._aside_index`):
#: without it, the table has none.
_HAS_ASIDE_INDEX = ("SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = to_regclass(CAST(? AS text)) "
                    "AND pg_get_expr(i.indpred, i.indrelid) = '(_ok IS NULL)')")
_OK_DEFAULT = ("SELECT coalesce((SELECT a.atthasdef FROM pg_attribute a WHERE a.attrelid = to_regclass(CAST(? AS text)) "
               "AND a.attname = '_ok' AND NOT a.attisdropped), FALSE)")


def _stored_actions(actions: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """The ``_action`` values a batch's rows are written with: NULL for inserts (see :data:`_ACTION`)."""
    import pyarrow.compute as pc

    actions = actions.cast(pa.large_string())
    return pc.if_else(pc.equal(actions, string_scalar("insert")), pa.scalar(None, pa.large_string()), actions)


def duck_to_pg(t: str) -> str:
    """The PostgreSQL column type keeping a staged key type exactly (a type without one: text).

    >>> duck_to_pg("DECIMAL(18,3)"), duck_to_pg("TIMESTAMP_NS")
    ('numeric(18,3)', 'text')
    """
    t = t.upper().strip()
    m = re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", t)
    if m:
        return f"numeric({m.group(1)},{m.group(2)})"
    return _KEY_TYPES.get(t, "text")


def _columns(con: Any, table: str) -> dict[str, str]:
    rows = con.execute("SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute "
                       "WHERE attrelid = to_regclass(?) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                       [table]).fetchall()
    return dict(rows)


def _cast_keys(tbl: pa.Table, types: dict[str, str] | None) -> pa.Table:
    """Key columns back to their staged DuckDB types (the state holds them in PostgreSQL's)."""
    if not types or tbl.num_rows == 0 and not tbl.num_columns:
        return tbl
    import duckdb

    cols = ", ".join(f"CAST({quote(c)} AS {types[c]}) AS {quote(c)}" if c in types else quote(c)
                     for c in tbl.column_names)
    con = duckdb.connect()
    try:
        con.register("_t", tbl)
        return con.sql(f"SELECT {cols} FROM _t").to_arrow_table()
    finally:
        con.close()


class _KeyCaster:
    """Batches read from the state table, as staging typed them (``_fp`` uint64, keys cast back)."""

    def __init__(self, schema: pa.Schema, types: dict[str, str] | None) -> None:
        self.types = types or {}
        self._duck: Any = None
        self.schema = self(pa.Table.from_batches([], schema)).schema

    def __call__(self, tbl: pa.Table) -> pa.Table:
        from ._pgcon import from_pg_arrow

        tbl = from_pg_arrow(tbl)
        if not self.types:
            return tbl
        if hasattr(self, "schema") and tbl.schema.equals(self.schema):
            return tbl  # the common case (integer and text keys): no copy
        if self._duck is None:
            import duckdb

            self._duck = duckdb.connect()
        cols = ", ".join(f"CAST({quote(c)} AS {self.types[c]}) AS {quote(c)}" if c in self.types else quote(c)
                         for c in tbl.column_names)
        self._duck.register("_t", tbl)
        try:
            out = self._duck.sql(f"SELECT {cols} FROM _t").to_arrow_table()
        finally:
            self._duck.unregister("_t")
        return out.cast(self.schema) if hasattr(self, "schema") else out

    def close(self) -> None:
        if self._duck is not None:
            self._duck.close()
            self._duck = None


def _widen(have: str, new: str) -> str | None:
    """The type a records column takes when its records' type changes (None: keep it)."""
    if have == new:
        return None
    a, b = _WIDER.get(have.split("(")[0]), _WIDER.get(new.split("(")[0])
    if a is not None and b is not None:
        return None if a >= b else new
    if {have, new} <= {"real", "double precision"}:
        return None if have == "double precision" else new
    return None if have == "text" else "text"


def _holds_more(have: str, new: str) -> bool:
    """Does PostgreSQL type ``new`` hold every value of ``have`` and more (whole numbers: more digits,
    no fewer decimals; real into double precision)? A state key's rule: unlike :func:`_widen` (the
    records' columns) it never falls back to text, and compares numeric precisions."""
    def digits(t: str) -> tuple[int, int] | None:
        m = re.fullmatch(r"numeric\((\d+),(\d+)\)", t.replace(" ", ""))
        return (int(m.group(1)) - int(m.group(2)), int(m.group(2))) if m else \
            {"smallint": (4, 0), "integer": (9, 0), "bigint": (18, 0)}.get(t)
    a, b = digits(have), digits(new)
    if a is not None and b is not None:
        return b[0] > a[0] and b[1] >= a[1] or b[0] >= a[0] and b[1] > a[1]
    return (have, new) == ("real", "double precision")


class PgDeliveryOps(PgLocalCopy):
    """Mixed in before :class:`dfsync.store._duckdb.Store` in :class:`PostgresStore`."""

    target: Any
    busy_timeout: float

    @property
    def _changes(self) -> dict[tuple[int, int], bool]:
        """(run, batch) -> does the batch update or delete keys (known to the process that wrote it ahead)."""
        return self.__dict__.setdefault("_changes_by_batch", {})

    def _qualified(self, name: str) -> str:
        return f"{quote(self.target.schema)}.{quote(name)}"

    def _run_key_types(self, con: Any, sync_id: int, run_id: int) -> dict[str, str] | None:
        """:meth:`_key_types` as the run set them at its start (read once per run, not per batch:
        only a run's start writes them, and one run of a sync at a time)."""
        known = self.__dict__.setdefault("_key_types_by_sync", {})
        got = known.get(sync_id)
        if got is None or got[0] != run_id:
            got = known[sync_id] = (run_id, self._key_types(con, sync_id))
        return got[1]

    def set_sync_fields(self, sync_id: int, **fields: Any) -> None:
        if "key_types" in fields:  # a run's start (a resumed run's too): read them again
            self.__dict__.get("_key_types_by_sync", {}).pop(sync_id, None)
        super().set_sync_fields(sync_id, **fields)  # type: ignore[misc]

    def _key_types(self, con: Any, sync_id: int) -> dict[str, str] | None:
        import json

        row = con.execute("SELECT key_types FROM syncs WHERE id = ?", [sync_id]).fetchall()
        return json.loads(row[0][0]) if row and row[0][0] else None

    # ------------------------------------------------------------------ delivered state
    @staticmethod
    def _state_table_ddl(st: str, key_types: dict[str, str]) -> list[str]:
        """The state table with a partial index that stays small: a batch's updates and deletes
        (the rows set aside get theirs when there are any, :meth:`_aside_index`: a partial index
        costs a first load ~0.3 server CPU-s per 10M rows, its predicate checked for each row
        written, though none enters it). ``_ok`` defaults to TRUE, so a write-ahead COPY leaves it out (a
        column less to send and parse per row; tables created before 2026-12-07 have no default
        and are sent it, :data:`_OK_DEFAULT`). Its key index (superseded versions, rejected rows are found by key)
        is built once a write needs it (:mod:`dfsync.store._pgkeyindex`): a first load's rows go
        into no index."""
        cols = ", ".join(f"{quote(k)} {duck_to_pg(t)}" for k, t in key_types.items())
        return [f"CREATE TABLE {st} ({cols}, _fp bigint, _run bigint, _batch integer, _action text, "
                f"_ok boolean DEFAULT TRUE) "
                f"WITH ({STATE_TABLE_OPTIONS})",
                f"CREATE INDEX ON {st} (_run, _batch) WHERE {_CHANGES}", *gen_trigger_ddl(st)]

    @staticmethod
    def _aside_index(con: Any, st: str) -> bool:
        """Before rows of the state are first set aside (in the same transaction): the index that
        finds them at the run's end. True if the table has it (tables created before 2026-12-07
        have it from the start); a table without it has no rows set aside."""
        return bool(con.execute(_HAS_ASIDE_INDEX, [st]).fetchall()[0][0])

    def _read_schema(self, con: Any, st: str, key: Sequence[str], types: dict[str, str] | None) -> pa.Schema:
        """The schema :meth:`delivered` hands its rows over in (the table's key types, as staged)."""
        import json

        known = self.__dict__.setdefault("_read_schemas", {})
        oid = con.execute("SELECT CAST(to_regclass(?) AS oid)", [st]).fetchall()[0][0]
        at = (oid, st, tuple(key), json.dumps(types, sort_keys=True))
        if at not in known:
            raw = con.execute(f"SELECT {', '.join(quote(k) for k in key)}, _fp FROM {st} LIMIT 0").to_arrow_table()
            cast = _KeyCaster(raw.schema, types)
            cast.close()
            known[at] = cast.schema
        return known[at]

    def _keep_delta(self, cache: StateCache, g0: str | None, g1: str | None, schema: pa.Schema,
                    removed: pa.Table | None = None, added: pa.Table | None = None) -> None:
        """Once this transaction commits: its change, from generation ``g0`` (locked) to ``g1``."""
        if g0 is None or g1 is None:
            return

        def keep() -> None:
            with contextlib.suppress(OSError, pa.ArrowException, ValueError):
                cache.keep_delta(g0, g1, schema, removed, added)

        self._after_commit(keep)  # type: ignore[attr-defined]

    @property
    def _written(self) -> dict[tuple[int, int], pa.Table]:
        """(run, batch) -> key, ``_fp`` and ``_action`` of the rows this process wrote ahead (for the local copy)."""
        return self.__dict__.setdefault("_written_by_batch", {})

    def ensure_state_table(self, sync_id: int, key_types: dict[str, str]) -> None:
        st = state_table(sync_id)
        with self._connect() as con:
            if self._has_table(con, st):  # a key column whose staged type grew is widened (as the DuckDB store's)
                have = _columns(con, self._qualified(st))
                wider = {k: duck_to_pg(t) for k, t in key_types.items() if k in have and _holds_more(have[k], duck_to_pg(t))}
                for k, t in wider.items():
                    con.execute(f"ALTER TABLE {st} ALTER COLUMN {quote(k)} TYPE {t}")
                if wider:
                    gen(con, st, "new")  # this host's copies of the state (other key types) are not current
                return
            for stmt in self._state_table_ddl(st, key_types):
                con.execute(stmt)
            self._share_table(con, st)  # type: ignore[attr-defined]
            g = gen(con, st, "new")
            types = self._key_types(con, sync_id)
            cache = self._state_cache(con, sync_id, list(key_types), types)
            if g is not None and cache is not None:  # nothing delivered yet: the first base is empty
                empty = self._read_schema(con, st, list(key_types), types).empty_table()
                self._after_commit(lambda: cache.keep_base(g, empty))  # type: ignore[attr-defined]

    def delivered(self, sync_id: int, key: Sequence[str]) -> pa.RecordBatchReader | None:
        """Key columns and ``_fp`` of every delivered row: this host's copy when it is current,
        else streamed from the server (and kept as this host's copy).

        The rows are read on a connection of their own (closed once the stream is read, or
        dropped), so the thread's connection stays free for the run's other calls.
        """
        from ._pgcon import busy_error, open_connection, to_dollar, unreachable

        st = state_table(sync_id)
        with self._connect() as con:
            if not self._has_table(con, st):
                return None
            types = self._key_types(con, sync_id)
            cache = self._state_cache(con, sync_id, key, types)
            if cache is not None:
                schema = self._read_schema(con, st, key, types)
                g = gen(con, st, "get")
                local = cache.open(g, schema) if g is not None else None
                if local is not None:
                    log.debug("sync %s: delivered state read from this host's copy (generation %s)", sync_id, g)
                    return local
        log.debug("sync %s: delivered state read from the server", sync_id)
        cols = ", ".join(quote(k) for k in key)
        raw = open_connection(self.target, self.busy_timeout)
        try:
            cur = raw.cursor()
            g = None
            if cache is not None:  # the generation in the snapshot the rows are read in
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur.execute(to_dollar("SELECT CAST(dfsync_state_gen(to_regclass(?), 'get') AS text)"), [st])
                g = cur.fetchall()[0][0]
            cur.execute(to_dollar(f"SELECT {cols}, _fp FROM {st} WHERE _ok AND {_NOT_IN_FLIGHT}"))
            reader = cur.fetch_record_batch()
            cast = _KeyCaster(reader.schema, types)
        except BaseException:
            raw.close()
            raise
        keep = cache.base_writer(g, cast.schema) if cache is not None and g else None

        def close() -> None:
            cast.close()
            cur.close()
            with contextlib.suppress(Exception):
                raw.rollback()
            raw.close()
            if keep is not None:
                keep.abort()  # a stream not read to its end leaves no copy

        def batches() -> Any:
            try:
                for batch in reader:
                    if batch.num_rows:
                        for b in cast(pa.Table.from_batches([batch])).to_batches():
                            if keep is not None:
                                keep.write(b)
                            yield b
                if keep is not None:
                    keep.commit()
            except Exception as exc:
                if unreachable(exc):  # the server went away mid-read: WorkspaceBusy, never a driver error
                    raise busy_error(self.target, exc, None) from None
                raise
            finally:
                done()

        stream = batches()
        done = weakref.finalize(stream, close)  # also when the stream is dropped unread
        return pa.RecordBatchReader.from_batches(cast.schema, stream)

    def delivered_count(self, sync_id: int) -> int:
        with self._connect() as con:
            if not self._has_table(con, state_table(sync_id)):
                return 0
            return con.execute(f"SELECT count(*) FROM {state_table(sync_id)} WHERE _ok AND {_NOT_IN_FLIGHT}"
                               ).fetchall()[0][0]

    def has_delivered(self, sync_id: int) -> bool:
        with self._connect() as con:
            st = state_table(sync_id)
            return bool(self._has_table(con, st) and con.execute(
                f"SELECT EXISTS (SELECT 1 FROM {st} WHERE _ok AND {_NOT_IN_FLIGHT})").fetchall()[0][0])

    def run_delivered(self, sync_id: int, run_id: int, key: Sequence[str],
                      except_batches: Sequence[int] = ()) -> pa.Table | None:
        cols = ", ".join(quote(k) for k in key)
        not_in = f"AND _batch NOT IN ({', '.join(str(int(b)) for b in except_batches)})" if except_batches else ""
        with self._connect() as con:
            if not self._has_table(con, state_table(sync_id)):
                return None
            tbl = con.sql(f"SELECT {cols}, _fp, {_ACTION} AS _action, _batch FROM {state_table(sync_id)} "
                          f"WHERE _run = {int(run_id)} AND _ok AND {_NOT_IN_FLIGHT} {not_in}").to_arrow_table()
            return _cast_keys(tbl, self._key_types(con, sync_id))

    # ------------------------------------------------------------------ batches
    def write_ahead(self, sync_id: int, run_id: int, batch_no: int, rows: pa.Table, key: Sequence[str],
                    action_column: str, alone: bool = False) -> None:
        """One binary COPY of the batch's key, ``_fp`` and action into the state (``_ok`` TRUE: the
        batch's ``inflight`` status keeps the rows out of every read until it is committed; so
        ``alone`` changes nothing here)."""

        st = state_table(sync_id)
        n = rows.num_rows
        actions = rows.column(action_column)
        self._changes[(run_id, batch_no)] = bool(n) and bool(distinct_values(actions) & {"update", "delete"})
        if self._changes[(run_id, batch_no)]:
            # in key order: the key index takes these rows, and the confirm looks up the versions
            # they supersede in this order, so both walk the index and the heap in order, not at
            # random (10M-row state, 100k updates in random order: 0.45 -> 0.34 s here, 0.53 ->
            # 0.36 s in the confirm; 2 ms to sort rows that come sorted, 9 ms shuffled ones)
            rows = rows.select(list(dict.fromkeys([*key, "_fp", action_column])))
            with contextlib.suppress(pa.ArrowNotImplementedError):  # a key Arrow does not sort: as it came
                rows = rows.sort_by([(k, "ascending") for k in key])
            actions = rows.column(action_column)
        with self._transaction() as con:
            types = self._run_key_types(con, sync_id, run_id) or {}
            cache = self._state_cache(con, sync_id, key, types)
            g0 = gen(con, st, "lock") if cache is not None else None
            used, ok_default = con.execute(
                f"SELECT EXISTS (SELECT 1 FROM batches WHERE run_id = ? AND batch_no = ?), ({_OK_DEFAULT})",
                [run_id, batch_no, st]).fetchall()[0]
            if used:  # recorded for the local copy: nothing this batch writes counts yet,
                g0 = None  # but a batch number used before: its rows would change what counts
            inserts_only = not self._changes[(run_id, batch_no)] and distinct_values(actions) <= {"insert"}
            if all(types.get(k, "").upper() in _COPY_TYPES for k in key):
                cols = {k: rows.column(k).cast(_COPY_TYPES[types[k].upper()]) for k in key}
                # no _action column for a batch of inserts: the COPY leaves it NULL (see _INSERT)
                act = {} if inserts_only else {"_action": _stored_actions(actions)}
                log = pa.table({**cols, "_fp": rows.column("_fp"),
                                "_run": pa.array(np.full(n, run_id, dtype=np.int64)),
                                "_batch": pa.array(np.full(n, batch_no, dtype=np.int32)),
                                **act, **({} if ok_default else {"_ok": pa.array(np.ones(n, dtype=bool))})})
                con.ingest(st, log)
            else:  # key types binary COPY would not write as they are: PostgreSQL casts them
                con.register("_log", rows.select([*key, "_fp", action_column]))
                names = ", ".join(quote(k) for k in key)
                con.execute(f"INSERT INTO {st} ({names}, _fp, _run, _batch, _action, _ok) SELECT {names}, _fp, "
                            f"{int(run_id)}, {int(batch_no)}, NULLIF({quote(action_column)}, 'insert'), TRUE "
                            f"FROM pg_temp._log")
                con.unregister("_log")
            con.execute("INSERT INTO batches VALUES (?, ?, 'inflight', ?, 0, now(), NULL)", [run_id, batch_no, n])
            if cache is not None and g0 is not None:
                schema = self._read_schema(con, st, key, types)
                self._keep_delta(cache, g0, gen(con, st, "get"), schema)
                self._written[(run_id, batch_no)] = rows.select([*key, "_fp"]).append_column(
                    "_action", actions.cast(pa.large_string()))

    def _confirm(self, con: Any, sync_id: int, run_id: int, batch_no: int, key: Sequence[str],
                 not_delivered: list[list[Any]], keep_superseded: bool = False) -> None:
        """Inside a transaction: the destination confirmed (run_id, batch_no). Set statements only;
        the batch's own rows are not rewritten (its status makes them delivered).

        A batch this process wrote ahead is recorded for the local copy (:mod:`._pgstatecache`):
        the keys the statements took out (``RETURNING``) and the rows that now count."""
        import pyarrow.compute as pc

        st = state_table(sync_id)
        this = f"n._run = {int(run_id)} AND n._batch = {int(batch_no)}"
        written = self._written.pop((run_id, batch_no), None)
        changes = self._changes.pop((run_id, batch_no), None)
        cache = g0 = types = None
        if written is not None and changes is not None:
            types = self._run_key_types(con, sync_id, run_id)
            cache = self._state_cache(con, sync_id, key, types)
            g0 = gen(con, st, "lock") if cache is not None else None
        track = g0 is not None
        ret = (lambda alias: " RETURNING " + ", ".join(f"{alias}.{quote(k)}" for k in key)) if track else \
            (lambda alias: "")
        keys_out = [k for k in key]
        dropped: list[pa.Table] = []  # rows of this batch deleted (they never count)
        removed: list[pa.Table] = []  # keys whose delivered versions were taken out
        if not_delivered:
            keys = pa.table({k: [row[i] for row in not_delivered] for i, k in enumerate(key)})
            con.register("_nd", keys)
            con.execute("ANALYZE pg_temp._nd")  # found through the key index, not by a scan of the state
            out = con.execute(f"DELETE FROM {st} n USING pg_temp._nd d WHERE {this} AND {key_match('n', 'd', key)}"
                              + ret("n"))
            if track:
                dropped.append(out.to_arrow_table())
            con.unregister("_nd")
        deleted = None
        if changes is None:  # written ahead by another process (settling what it left): look
            changes = bool(con.execute(f"SELECT EXISTS (SELECT 1 FROM {st} n WHERE {this} AND {_CHANGES})"
                                       ).fetchall()[0][0])
            # a batch written ahead before rows were written with _ok TRUE (an earlier version)
            con.execute(f"UPDATE {st} n SET _ok = TRUE WHERE {this} AND NOT _ok")
        if changes:  # the previous versions of the batch's updated and deleted keys, found by the key index
            if keep_superseded and not self._aside_index(con, st):  # the first rows set aside: found by it
                con.execute(f"CREATE INDEX ON {st} (_run) WHERE _ok IS NULL")
            prev = "UPDATE {st} s SET _ok = NULL FROM" if keep_superseded else "DELETE FROM {st} s USING"
            out = con.execute(f"{prev.format(st=st)} {st} n WHERE {this} AND n.{_CHANGES} "
                              f"AND {key_match('s', 'n', key)} AND s._ok AND NOT (s._run = n._run AND s._batch = n._batch)"
                              + (ret("s") + ", s._run, s._batch" if track else ""))
            if track:
                out_t = out.to_arrow_table()
                removed.append(out_t.select(keys_out))
                # rows of another batch this process wrote ahead are gone too: that batch is not recorded
                for r, b in set(zip(out_t.column("_run").to_pylist(), out_t.column("_batch").to_pylist(), strict=True)):
                    self._written.pop((r, b), None)
            out = con.execute(f"DELETE FROM {st} n WHERE {this} AND {_CHANGES} AND _action = 'delete'" + ret("n"))
            if track:
                deleted = out.to_arrow_table()
        con.execute(
            "UPDATE batches SET status = 'committed', committed_at = now(), failed = ? WHERE run_id = ? AND batch_no = ?",
            [len(not_delivered), run_id, batch_no])
        if not track or cache is None:
            return
        # the rows that count now: those written ahead, but the not delivered and the deletions
        added = written
        if dropped and dropped[0].num_rows:
            added = added.filter(pc.invert(cache.has_key(added, dropped[0])))
        is_delete = pc.fill_null(pc.equal(added.column("_action"), "delete"), False)
        if (deleted.num_rows if deleted is not None else 0) != (pc.sum(pc.cast(is_delete, pa.int64())).as_py() or 0):
            return  # not what this process wrote ahead: the change is not recorded
        added = added.filter(pc.invert(is_delete))
        schema = self._read_schema(con, st, key, types)
        self._keep_delta(cache, g0, gen(con, st, "get"),
                         schema, pa.concat_tables(removed) if removed else None, added)

    def _drop_set_aside(self, con: Any, sync_id: int, st: str, key: Sequence[str]) -> None:
        """As the DuckDB store does, recorded for the local copy as no change (the rows deleted never count).
        Nothing to do in a table without the index of rows set aside (it has none, :meth:`_aside_index`)."""
        if not self._aside_index(con, st):
            return
        types = self._key_types(con, sync_id)
        cache = self._state_cache(con, sync_id, key, types)
        g0 = gen(con, st, "lock") if cache is not None else None
        super()._drop_set_aside(con, sync_id, st, key)  # type: ignore[misc]
        if cache is not None and g0 is not None:
            self._keep_delta(cache, g0, gen(con, st, "get"), self._read_schema(con, st, key, types))

    # ------------------------------------------------------------------ records
    def _store_records(self, con: Any, sync_id: int, run_id: int, recs: pa.Table) -> None:
        from ._pgcon import to_pg_arrow

        rt = rec_table(sync_id)
        recs = to_pg_arrow(recs.append_column("_run_id", int_array(np.full(recs.num_rows, run_id))))
        wanted = {f.name: arrow_to_pg(f.type) for f in recs.schema}
        if not self._has_table(con, rt):
            cols = ", ".join(f"{quote(c)} {t}" for c, t in wanted.items())
            con.execute(f"CREATE TABLE {rt} ({cols}, rowid bigserial)")
            self._share_table(con, rt)  # type: ignore[attr-defined]
        have = _columns(con, self._qualified(rt))
        for name, typ in wanted.items():
            if name not in have:
                con.execute(f"ALTER TABLE {rt} ADD COLUMN {quote(name)} {typ}")
            else:
                to = _widen(have[name], typ)
                if to is not None:
                    con.execute(f"ALTER TABLE {rt} ALTER COLUMN {quote(name)} TYPE {to} "
                                f"USING {quote(name)}::{to}")
        con.register("_recs", recs)
        try:
            cols = ", ".join(quote(c) for c in wanted)
            con.execute(f"INSERT INTO {rt} ({cols}) SELECT {cols} FROM pg_temp._recs")
        finally:
            con.unregister("_recs")

    def _all_but(self, con: Any, table: str, exclude: Sequence[str], alias: str = "") -> str:
        p = f"{alias}." if alias else ""
        return ", ".join(p + quote(c) for c in _columns(con, self._qualified(table)) if c not in (*exclude, "rowid"))

    def retry_rows(self, sync_id: int, key: Sequence[str],
                   meta_columns: Sequence[str]) -> tuple[pa.Table | None, pa.Table | None]:
        rows, keys = super().retry_rows(sync_id, key, meta_columns)  # type: ignore[misc]
        if keys is None:
            return rows, keys
        with self._connect() as con:
            return rows, _cast_keys(keys, self._key_types(con, sync_id))

    def skipped_versions(self, sync_id: int, key: Sequence[str], definition_version: int) -> pa.Table | None:
        rows = super().skipped_versions(sync_id, key, definition_version)  # type: ignore[misc]
        if rows is None:
            return rows
        with self._connect() as con:
            return _cast_keys(rows, self._key_types(con, sync_id))

    def copy_checks(self, run_id: int, from_run: int) -> None:
        with self._transaction() as con:
            cols = [c for c in _columns(con, self._qualified("checks")) if c not in ("run_id", "rowid")]
            names = ", ".join(quote(c) for c in cols)
            con.execute("DELETE FROM checks WHERE run_id = ?", [run_id])
            con.execute(f"INSERT INTO checks (run_id, {names}) SELECT ?, {names} FROM checks WHERE run_id = ? "
                        f"ORDER BY rowid", [run_id, from_run])
