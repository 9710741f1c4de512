"""DuckDB database file as a destination.

Each batch is applied in one DuckDB transaction together with its row in the
``_dfsync_batches`` ledger of the same file, so a batch is in the destination exactly
when its ledger row is: a crash between the destination commit and the workspace update
costs nothing on resume.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from .._arrow import int_array, string_scalar
from .._paths import user_path
from .._schema import plan_table
from .._settings import setting
from ..errors import ConfigError, DestinationError, TransientDestinationError
from ..states import DestinationMode
from ._sql import FENCE_BATCH, TableName, duckdb_key_columns, q, taken_over
from .base import (
    ACTION_COLUMN,
    EXISTS_MESSAGE,
    LEDGER_TABLE,
    BatchResult,
    Destination,
    DestinationContext,
    DestinationSession,
    WriteBatch,
    batch_actions,
    bisect_failures,
    register_destination,
)

#: rows in a DuckDB row group
_ROW_GROUP = 122_880
_DATA_ERRORS = (duckdb.ConstraintException, duckdb.ConversionException, duckdb.InvalidInputException,
                duckdb.OutOfRangeException, duckdb.TypeMismatchException)


@register_destination
class DuckDBDestination(Destination):
    tells_rows = True
    kind = "duckdb"
    #: eight DuckDB row groups (122,880 rows each): 20 batches of 100k for 2M rows cost about
    #: 0.9 CPU-s more than two of a million (bench/RESULTS.md, issue 22)
    default_batch_size = 8 * _ROW_GROUP
    one_writer = True
    #: keeps 'infinity' and '-infinity' dates and timestamps (dfsync._schema_values.check_values)
    infinite_times = True

    def __init__(self, path: str, table: str) -> None:
        if not table or not isinstance(table, str):
            raise ConfigError("destinations.duckdb() needs table='name' (or 'schema.name')")
        self.path = user_path(path)  # works from any working directory
        self.table = table
        self.name = TableName.parse(table)

    def config(self) -> dict[str, Any]:
        return {"path": self.path, "table": self.table}

    def identity(self) -> str:
        return json.dumps({"kind": self.kind, "path": os.path.abspath(self.path), "table": self.table})

    def open(self, ctx: DestinationContext) -> DestinationSession:
        return DuckDBSession(self, ctx)

    def refuse_workspace_file(self, workspace_path: str | None) -> None:
        """A destination is never a workspace's own file: its tables (syncs, runs, events ...)
        would be written over, and the workspace broken for good. At create_sync (this workspace's
        file, by its real path) and when the run opens the file (any dfsync workspace)."""
        if workspace_path and os.path.realpath(workspace_path) == os.path.realpath(self.path):
            raise ConfigError(_WORKSPACE_FILE.format(path=self.path, what="this workspace's own file"))


class DuckDBSession(DestinationSession):
    destination: DuckDBDestination

    def __init__(self, destination: DuckDBDestination, ctx: DestinationContext) -> None:
        super().__init__(destination, ctx)
        self.con, self._settings = open_capped(destination.path)
        self.target = destination.name
        self.run_key = ctx.run_key
        self.fresh = False
        self.columns: list[str] = []
        self.unsent: list[str] = []  # table columns the records do not carry
        self.con.execute(
            f"CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} (run_key VARCHAR, batch_no INTEGER, rows BIGINT, "
            f"not_delivered JSON, committed_at TIMESTAMPTZ)"
        )
        self._raise_fence()
        if ctx.mode.rewrites:
            self.write_target = TableName(self.target.schema, f"{self.target.table}__dfsync_replace_{ctx.run_id}")
        else:
            self.write_target = self.target

    # -------------------------------------------------------------- prepare
    def exists(self, name: TableName) -> bool:
        return table_exists(self.con, name)

    def _describe(self, name: TableName) -> dict[str, tuple[str, pa.DataType]]:
        """Each column's declared type and the Arrow type it reads back as."""
        rows = self.con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = current_database() "
            "AND schema_name = ? AND table_name = ? ORDER BY column_index", [name.schema or "main", name.table]).fetchall()
        arrow = self.con.sql(f"SELECT * FROM {name.sql} LIMIT 0").to_arrow_table().schema
        return {c: (t, arrow.field(c).type) for c, t in rows}

    def _fit_table(self, incoming: dict[str, str]) -> None:
        """Add the columns the records bring and widen the ones they outgrew (or raise, nothing sent)."""
        schema = self.con.sql("SELECT * FROM _dfsync_schema").to_arrow_table().schema
        plan = plan_table(schema, self._describe(self.target), policy=self.ctx.schema, widen=self.widen_columns,
                          where=f"table {self.target.display} of {self.destination.path}",
                          fixed=duckdb_key_columns(self.con, self.target))
        t = self.target.sql
        for f in plan.add:
            self.con.execute(f"ALTER TABLE {t} ADD COLUMN {q(f.name)} {incoming[f.name]}")
            self.schema_changes.append((f.name, f"added column {f.name!r} {incoming[f.name]} to {self.target.display}"))
        for name, f in plan.widen:
            self.con.execute(f"ALTER TABLE {t} ALTER COLUMN {q(name)} SET DATA TYPE {incoming[f.name]}")
            self.schema_changes.append((f.name, f"widened column {name!r} of {self.target.display} to {incoming[f.name]}"))

    def _note_unsent(self, cols: list[str]) -> None:
        sent = {c.lower() for c in cols}
        self.unsent = [c for c in self._describe(self.write_target) if c.lower() not in sent]

    def prepare(self, schema: pa.Schema) -> None:
        cols = [f.name for f in schema if f.name != ACTION_COLUMN]
        self.columns = cols
        empty = pa.Table.from_batches([], schema=pa.schema([f for f in schema if f.name != ACTION_COLUMN]))
        self.con.register("_dfsync_schema", empty)
        try:
            incoming = {r[0]: r[1] for r in self.con.execute("DESCRIBE SELECT * FROM _dfsync_schema").fetchall()}
            exists = self.exists(self.target)
            if exists and not self.ctx.mode.rewrites:
                self._fit_table(incoming)
            elif not exists and self.ctx.mode == DestinationMode.UPDATE:
                raise DestinationError(
                    f"table {self.target.display} does not exist in {self.destination.path}; update mode only "
                    f"changes rows that exist. Create the table first, or use destination_mode='upsert'."
                )
            marker = self.con.execute(
                f"SELECT count(*) FROM {LEDGER_TABLE} WHERE run_key = ? AND batch_no = 0", [self.run_key]).fetchall()[0][0]
            if self.write_target.schema:
                self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {q(self.write_target.schema)}")
            if marker:
                self.fresh = True  # resumed run: the table was fresh when the run began
                if not self.exists(self.write_target):
                    raise DestinationError(f"table {self.write_target.display} disappeared during the run")
                self._note_unsent(cols)
                return
            self.con.execute("BEGIN TRANSACTION")
            if self.ctx.mode.rewrites:
                self.con.execute(f"DROP TABLE IF EXISTS {self.write_target.sql}")
            if not self.exists(self.write_target):
                self.con.execute(f"DROP TABLE IF EXISTS {loading_table(self.write_target).sql}")  # dfsync/_fused.py
                self.con.execute(f"CREATE TABLE {self.write_target.sql} AS SELECT * FROM _dfsync_schema LIMIT 0")
                self.fresh = True
                if self.keyable(incoming):  # batch -1 marks "this run owes the table its key"
                    self.con.execute(f"INSERT INTO {LEDGER_TABLE} VALUES (?, -1, 0, NULL, now())", [self.run_key])
            else:
                self.fresh = self.con.execute(f"SELECT count(*) = 0 FROM {self.write_target.sql}").fetchall()[0][0]
            if self.fresh:
                self.con.execute(f"INSERT INTO {LEDGER_TABLE} VALUES (?, 0, 0, NULL, now())", [self.run_key])
            self.con.execute("COMMIT")
            self._note_unsent(cols)
        except duckdb.Error as exc:
            self.rollback()
            raise DestinationError(f"could not prepare {self.target.display} in {self.destination.path}: {exc}") from exc
        finally:
            self.con.unregister("_dfsync_schema")

    # -------------------------------------------------------------- ledger
    def holds_rows(self) -> bool:
        return self.exists(self.target) and bool(self.con.execute(f"SELECT 1 FROM {self.target.sql} LIMIT 1").fetchall())

    def committed_batches(self) -> dict[int, list[list[Any]]]:
        rows = self.con.execute(
            f"SELECT batch_no, not_delivered FROM {LEDGER_TABLE} WHERE run_key = ? AND batch_no > 0",
            [self.run_key]).fetchall()
        return {b: json.loads(nd) if nd else [] for b, nd in rows}

    # -------------------------------------------------------------- write
    def _apply(self, rows: pa.Table) -> list[tuple]:
        """Apply rows inside the open transaction; return keys update mode did not find."""
        con, t = self.con, self.write_target.sql
        pk = self.ctx.primary_key
        mode = self.ctx.mode
        cols = ", ".join(q(c) for c in self.columns)
        # the batch is registered as _dfsync_batch by the caller, outside the transaction
        on = " AND ".join(f"{t}.{q(k)} IS NOT DISTINCT FROM b.{q(k)}" for k in pk)
        actions = batch_actions(rows)
        missing: list[tuple] = []
        if mode == DestinationMode.UPDATE:
            sets = ", ".join(f"{q(c)} = b.{q(c)}" for c in self.columns if c not in pk)
            keys = ", ".join(f"{t}.{q(k)}" for k in pk)
            if sets:
                found = set(con.execute(
                    f"UPDATE {t} SET {sets} FROM _dfsync_batch b WHERE {on} RETURNING {keys}").fetchall())
            else:
                found = set(con.execute(
                    f"SELECT {keys} FROM {t} SEMI JOIN _dfsync_batch b ON {on}").fetchall())
            all_keys = con.execute(f"SELECT {', '.join(q(k) for k in pk)} FROM _dfsync_batch").fetchall()
            missing = [k for k in all_keys if k not in found]
            return missing
        upserting = mode.upserts
        # inserts into a table that was empty when the run began cannot collide
        cond = "b._action = 'update'" if self.fresh else "b._action IN ('insert','update')"
        replacing = upserting and ("update" in actions or not self.fresh)
        if "delete" in actions and replacing and not self.unsent:
            # one pass over the table's keys for the deleted rows and the replaced ones: a 1%
            # change of a 10M-row table (200k rows) 0.53 CPU-s instead of 0.62 (bench/RESULTS.md)
            con.execute(f"DELETE FROM {t} USING _dfsync_batch b WHERE {on} AND (b.{ACTION_COLUMN} = 'delete' OR {cond})")
            replacing = False
        elif "delete" in actions:
            con.execute(f"DELETE FROM {t} USING _dfsync_batch b WHERE {on} AND b.{ACTION_COLUMN} = 'delete'")
        if upserting and self.unsent and ("update" in actions or not self.fresh):
            # the table has columns the records do not carry (the source dropped them): update the
            # columns sent in place, so the others keep their values, then insert the new keys
            sets = ", ".join(f"{q(c)} = b.{q(c)}" for c in self.columns if c not in pk)
            if sets:
                con.execute(f"UPDATE {t} SET {sets} FROM _dfsync_batch b WHERE {on} AND {cond}")
            con.execute(
                f"INSERT INTO {t} ({cols}) SELECT {cols} FROM _dfsync_batch b WHERE {ACTION_COLUMN} <> 'delete' "
                f"AND NOT EXISTS (SELECT 1 FROM {t} WHERE {on})")
            return missing
        if replacing:
            con.execute(f"DELETE FROM {t} USING _dfsync_batch b WHERE {on} AND {cond}")
        con.execute(
            f"INSERT INTO {t} ({cols}) SELECT {cols} FROM _dfsync_batch WHERE {ACTION_COLUMN} <> 'delete'")
        return missing

    def rollback(self) -> None:
        with contextlib.suppress(duckdb.Error):
            self.con.execute("ROLLBACK")

    # -------------------------------------------------------------- fence (dfsync/destinations/_arrowsql.py)
    def _fence_epoch(self) -> int | None:
        rows = self.con.execute(f"SELECT rows FROM {LEDGER_TABLE} WHERE run_key = ? AND batch_no = ?",
                                [self.run_key, FENCE_BATCH]).fetchall()
        return int(rows[0][0]) if rows else None

    def _raise_fence(self) -> None:
        epoch = self.ctx.owner_epoch
        if not epoch:
            return
        self.con.execute("BEGIN TRANSACTION")
        seen = self._fence_epoch()
        if seen is None or seen < epoch:
            self.con.execute(f"DELETE FROM {LEDGER_TABLE} WHERE run_key = ? AND batch_no = ?", [self.run_key, FENCE_BATCH])
            self.con.execute(f"INSERT INTO {LEDGER_TABLE} VALUES (?, ?, ?, NULL, now())",
                             [self.run_key, FENCE_BATCH, int(epoch)])
        self.con.execute("COMMIT")
        if seen is not None and seen > epoch:
            raise taken_over(self.ctx, self.destination.describe())

    def check_fence(self) -> None:
        epoch = self.ctx.owner_epoch
        seen = self._fence_epoch() if epoch else None
        if seen is not None and epoch is not None and seen > epoch:
            raise taken_over(self.ctx, self.destination.describe())

    def _commit(self, batch_no: int, rows: pa.Table, not_delivered: list[list[Any]]) -> list[tuple]:
        self.con.register("_dfsync_batch", _partial_row_group_last(rows))
        try:
            self.con.execute("BEGIN TRANSACTION")
            missing = self._apply(rows)
            nd = not_delivered + [list(k) for k in missing]
            self.check_fence()
            self.con.execute(
                f"INSERT INTO {LEDGER_TABLE} VALUES (?, ?, ?, ?, now())",
                [self.run_key, batch_no, rows.num_rows, json.dumps(nd, default=str) if nd else None])
            self.con.execute("COMMIT")
            return missing
        except BaseException:
            self.rollback()
            raise
        finally:
            self.con.unregister("_dfsync_batch")

    def write(self, batch: WriteBatch) -> BatchResult:
        present = self._insert_conflicts(batch.data)
        if not present:
            return self._write(batch.batch_no, batch.data, [])
        # insert mode, keys already in the table: failed rows, in the ledger as not delivered
        keep = np.setdiff1d(np.arange(batch.num_rows), np.fromiter(present, dtype=np.int64))
        pk = self.ctx.primary_key
        nd = [[batch.data.column(k)[i].as_py() for k in pk] for i in sorted(present)]
        res = self._write(batch.batch_no, batch.data.take(keep), nd)
        return BatchResult(failed={**{int(keep[i]): m for i, m in res.failed.items()}, **present},
                           skipped={int(keep[i]): m for i, m in res.skipped.items()})

    def _insert_conflicts(self, data: pa.Table) -> dict[int, str]:
        """Rows failed before applying: insert mode's keys already there, and keys a COLLATE of the
        table takes as another key."""
        return {**self._keys_present(data), **self._collation_clashes(data)}

    def _collation_clashes(self, data: pa.Table) -> dict[int, str]:
        """In a table made with a COLLATE (NOCASE, NOACCENT), rows whose key the key column's
        collation takes as another key (an existing row's, or another row's of the batch: 'A' and
        'a' under NOCASE) would replace that row. Tables dfsync creates have none: one catalog look."""
        if not data.num_rows or self.ctx.mode.rewrites:
            return {}
        sql = self.con.execute("SELECT sql FROM duckdb_tables() WHERE table_name = ?",
                               [self.write_target.table]).fetchall()
        if not any("COLLATE" in str(r[0] or "").upper() for r in sql):
            return {}
        import pyarrow.compute as pc

        t, pk = self.write_target.sql, list(self.ctx.primary_key)
        mask = pc.not_equal(data.column(ACTION_COLUMN), string_scalar("delete"))
        sent, rows = data.filter(mask), np.flatnonzero(np.asarray(mask))
        keys = sent.select(pk).append_column("_dfsync_row", int_array(rows.astype(np.int64)))
        cols = ", ".join(q(k) for k in pk)
        on = " AND ".join(f"t.{q(k)} = b.{q(k)}" for k in pk)
        exact = " AND ".join(f"t.{q(k)}::VARCHAR::BLOB = b.{q(k)}::VARCHAR::BLOB" for k in pk)
        n, bad = len(pk), {}
        self.con.register("_dfsync_keys", keys)
        try:
            for r in self.con.execute(f"SELECT b._dfsync_row, {', '.join(f'b.{q(k)}' for k in pk)}, "
                                      f"{', '.join(f't.{q(k)}' for k in pk)} FROM _dfsync_keys b JOIN {t} t ON {on} "
                                      f"WHERE NOT ({exact})").fetchall():
                bad[int(r[0])] = (f"key {tuple(r[1:n + 1])!r} is the table's existing key {tuple(r[n + 1:])!r} under "
                                  f"the key column's COLLATE: the row would replace it (a key column without COLLATE "
                                  f"compares texts as they are)")
            # a UNION's column takes the table column's collation (its first part)
            for r in self.con.execute(f"SELECT list(_dfsync_row), {', '.join(f'any_value({q(k)})' for k in pk)} FROM "
                                      f"(SELECT {cols}, NULL::BIGINT AS _dfsync_row FROM {t} WHERE false UNION ALL "
                                      f"SELECT {cols}, _dfsync_row FROM _dfsync_keys) GROUP BY {cols} "
                                      f"HAVING count(*) > 1").fetchall():
                for row in r[0]:
                    bad.setdefault(int(row), f"keys equal to {tuple(r[1:])!r} under the key column's COLLATE are one "
                                             f"key in the table: the rows would replace each other")
        except duckdb.Error as exc:
            raise DestinationError(f"DuckDB destination {self.target.display}: {exc}") from exc
        finally:
            self.con.unregister("_dfsync_keys")
        return bad

    def _keys_present(self, data: pa.Table) -> dict[int, str]:
        """Insert mode: the rows whose key the table already holds (rows there before the sync's
        first run, or delivered before a reset), whether or not the table declares a key: without
        one they would be appended a second time. One semi-join per batch."""
        if self.ctx.mode != DestinationMode.INSERT or (self.fresh and not self.ctx.requeried) or not data.num_rows:
            return {}
        t = self.write_target.sql
        pk = list(self.ctx.primary_key)
        keys = data.select(pk).append_column("_dfsync_row", int_array(np.arange(data.num_rows, dtype=np.int64)))
        on = " AND ".join(f"{t}.{q(k)} IS NOT DISTINCT FROM b.{q(k)}" for k in pk)
        self.con.register("_dfsync_keys", keys)
        try:
            rows = self.con.execute(f"SELECT b._dfsync_row FROM _dfsync_keys b SEMI JOIN {t} ON {on}").fetchnumpy()
        except duckdb.Error as exc:
            raise DestinationError(f"DuckDB destination {self.target.display}: {exc}") from exc
        finally:
            self.con.unregister("_dfsync_keys")
        return dict.fromkeys((int(r) for r in rows["_dfsync_row"]), EXISTS_MESSAGE)

    def _write(self, batch_no: int, data: pa.Table, not_delivered: list[list[Any]]) -> BatchResult:
        for attempt in range(5):
            try:
                missing = self._commit(batch_no, data, not_delivered)
                return self._result(data, {}, missing)
            except _DATA_ERRORS:
                self.rollback()
                break
            except duckdb.IOException as exc:
                self.rollback()
                if attempt == 4:
                    raise TransientDestinationError(f"DuckDB destination {self.destination.path}: {exc}") from exc
                time.sleep(0.2 * 2**attempt)
            except duckdb.Error as exc:
                self.rollback()
                raise DestinationError(f"DuckDB destination {self.target.display}: {exc}") from exc

        def attempt_rows(sub: pa.Table) -> str | None:
            self.con.register("_dfsync_batch", sub)
            try:
                self.con.execute("BEGIN TRANSACTION")
                self._apply(sub)
                return None
            except _DATA_ERRORS as exc:
                return str(exc)
            finally:
                self.rollback()
                self.con.unregister("_dfsync_batch")

        failed = bisect_failures(data, attempt_rows)
        good = data.filter(pa.array([i not in failed for i in range(data.num_rows)]))
        pk = self.ctx.primary_key
        bad_keys = [[data.column(k)[i].as_py() for k in pk] for i in sorted(failed)]
        try:
            missing = self._commit(batch_no, good, not_delivered + bad_keys)
        except duckdb.Error as exc:
            self.rollback()
            raise DestinationError(f"DuckDB destination {self.target.display}: {exc}") from exc
        return self._result(data, failed, missing)

    def _result(self, data: pa.Table, failed: dict[int, str], missing: list[tuple]) -> BatchResult:
        skipped: dict[int, str] = {}
        if missing:
            miss = set(missing)
            pk = self.ctx.primary_key
            cols = [data.column(k).to_pylist() for k in pk]
            for i, key in enumerate(zip(*cols, strict=True)):
                if key in miss and i not in failed:
                    skipped[i] = "no row with this key in the destination (update mode only updates existing rows)"
        return BatchResult(failed=failed, skipped=skipped)

    # -------------------------------------------------------------- finish
    def keyable(self, types: dict[str, str]) -> bool:
        return keyable(types, self.ctx.primary_key)

    def _add_deferred_key(self) -> None:
        """Give a table this run created its PRIMARY KEY, once its first load is in.

        Declared after the load, as the PostgreSQL destination does: one index build costs
        less than keeping the index up to date row by row (bench/RESULTS.md: a 2M-row first
        load 3.6 s without a key, 5.3 s with it declared up front, 4.5 s with it added after).
        """
        owed = self.con.execute(f"SELECT count(*) FROM {LEDGER_TABLE} WHERE run_key = ? AND batch_no = -1",
                                [self.run_key]).fetchall()[0][0]
        if not owed or not self.exists(self.write_target):
            return
        name = self.write_target
        has_key = self.con.execute(
            "SELECT count(*) FROM duckdb_constraints() WHERE database_name = current_database() AND schema_name = ? "
            "AND table_name = ? AND constraint_type = 'PRIMARY KEY'", [name.schema or "main", name.table]).fetchall()[0][0]
        if not has_key:
            pk = ", ".join(q(k) for k in self.ctx.primary_key)
            try:
                self.con.execute(f"ALTER TABLE {name.sql} ADD PRIMARY KEY ({pk})")
            except duckdb.Error as exc:
                raise DestinationError(f"could not declare the primary key ({pk}) of {name.display}: {exc}") from exc

    def finish(self) -> None:
        self._add_deferred_key()
        if not self.ctx.mode.rewrites:
            return
        if not self.exists(self.write_target):
            return  # already swapped by an earlier attempt of this run
        self.check_fence()
        try:
            self.con.execute("BEGIN TRANSACTION")
            self.con.execute(f"DROP TABLE IF EXISTS {self.target.sql}")
            self.con.execute(f"ALTER TABLE {self.write_target.sql} RENAME TO {q(self.target.table)}")
            self.con.execute("COMMIT")
        except duckdb.Error as exc:
            self.rollback()
            raise DestinationError(f"could not swap in the replaced table {self.target.display}: {exc}") from exc

    def applied(self) -> bool:
        """A replace run is applied once its table was swapped in: its ledger marker stays, its table is gone."""
        if not self.ctx.mode.rewrites:
            return False
        marker = self.con.execute(f"SELECT count(*) FROM {LEDGER_TABLE} WHERE run_key = ? AND batch_no = 0",
                                  [self.run_key]).fetchall()[0][0]
        return bool(marker) and not self.exists(self.write_target)

    def abandon(self) -> None:
        if self.ctx.mode.rewrites:
            try:  # the table and the ledger rows that describe it go together (a resumed run starts it anew)
                self.check_fence()
                self.con.execute("BEGIN TRANSACTION")
                self.con.execute(f"DROP TABLE IF EXISTS {self.write_target.sql}")
                self.con.execute(f"DELETE FROM {LEDGER_TABLE} WHERE run_key = ? AND batch_no <> ?",
                                 [self.run_key, FENCE_BATCH])
                self.con.execute("COMMIT")
            except duckdb.Error:
                self.rollback()

    def close(self) -> None:
        close_capped(self.con, self._settings)


def open_capped(path: str) -> tuple[duckdb.DuckDBPyConnection, dict[str, str]]:
    """A connection to the destination file that checkpoints (compresses and writes row groups)
    once at close, not every 16 MB of WAL, and caps the buffer pool, so the pages just written
    are evicted rather than kept (a large first load would otherwise hold the whole new table in
    memory); with the settings :func:`close_capped` restores (another connection of this process
    may share the database instance). A file holding a dfsync workspace is refused, nothing written."""
    con = _connect(path)
    if con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
                   "AND schema_name = 'main' AND table_name IN ('workspace_meta', 'syncs', 'runs')").fetchall()[0][0] == 3:
        con.close()
        raise DestinationError(_WORKSPACE_FILE.format(path=path, what="a dfsync workspace file"))
    settings = dict(con.execute(
        "SELECT name, value FROM duckdb_settings() WHERE name IN ('checkpoint_threshold', 'memory_limit')").fetchall())
    con.execute("SET checkpoint_threshold = '1GB'")
    con.execute(f"SET memory_limit = '{setting('destination_memory')}'")
    return con, settings


def close_capped(con: duckdb.DuckDBPyConnection, settings: dict[str, str]) -> None:
    try:
        for name, value in settings.items():
            con.execute(f"SET {name} = '{value}'")
    except duckdb.Error:
        pass
    with contextlib.suppress(duckdb.Error):
        con.close()


def table_exists(con: duckdb.DuckDBPyConnection, name: TableName) -> bool:
    return con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = ? AND table_name = ?", [name.schema or "main", name.table]).fetchall()[0][0] > 0


def keyable(types: dict[str, str], key: Sequence[str]) -> bool:
    """Can the key columns form a PRIMARY KEY (not lists, structs or maps)?"""
    return all(not types[k].endswith("]") and not types[k].startswith(("STRUCT", "MAP", "UNION"))
               for k in key if k in types)


def loading_table(target: TableName) -> TableName:
    """Where a fused first load (dfsync/_fused.py) fills a new table before its commit renames
    it: a table left there by a run that died is dropped by the next run that creates ``target``."""
    return TableName(target.schema, f"{target.table}__dfsync_load")


def _partial_row_group_last(rows: pa.Table) -> pa.Table:
    """The batch as one Arrow chunk when it does not fill whole row groups (a run's last batch).

    Scanned in several chunks, such a batch left its partial row group ahead of a full one,
    and a later re-sync's checkpoint rewrote them (bench/RESULTS.md, issue 22); one chunk
    puts the partial row group last. Same values and types; a batch too large to combine
    (a string column past 2 GB) is sent as it is."""
    if rows.num_rows % _ROW_GROUP == 0 or rows.num_rows < 2:
        return rows
    with contextlib.suppress(pa.ArrowInvalid, pa.ArrowCapacityError):
        return rows.combine_chunks()
    return rows


_WORKSPACE_FILE = ("destinations.duckdb({path!r}) is {what}: the sync's table and ledger would be "
                   "written among the workspace's own tables (syncs, runs, events), breaking it. Give the "
                   "destination a DuckDB file of its own, e.g. destinations.duckdb('warehouse.duckdb', table=...); "
                   "nothing was written.")


def _connect(path: str) -> duckdb.DuckDBPyConnection:
    from .._paths import not_writable

    why = not_writable(path)
    if why:
        raise DestinationError(f"cannot write the DuckDB destination {path}: {why}. Point "
                               f"destinations.duckdb() at a file in a directory you can write.")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    delay = 0.05
    deadline = time.monotonic() + 30
    while True:
        try:
            return duckdb.connect(path)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise DestinationError(f"cannot open DuckDB destination {path}: {exc}. Check that the path names "
                                       f"a DuckDB database file you can write (or a new file in an existing directory).") from exc
            if time.monotonic() > deadline:
                raise TransientDestinationError(
                    f"DuckDB destination {path} is locked by another process ({exc}); close that "
                    f"connection and run the sync again (the run is paused and will resume)"
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        except duckdb.Error as exc:
            raise DestinationError(f"cannot open DuckDB destination {path}: {exc}. Check that the path names "
                                   f"a DuckDB database file you can write (or a new file in an existing directory).") from exc
