"""The session logic shared by the ADBC SQL destinations (PostgreSQL, SQLite).

One batch = one destination transaction:

1. the Arrow batch (plus a ``_dfsync_row`` number) is ingested into a TEMP staging table
   with ADBC's bulk ingest (COPY on PostgreSQL), never a Python row loop;
2. set-based SQL applies it to the target (``INSERT … ON CONFLICT``, ``UPDATE … FROM``,
   ``DELETE … WHERE (key) IN (staged keys)``);
3. the ``_dfsync_batches`` ledger row (run key, batch number, keys *not* delivered) is
   inserted, and the transaction commits. The batch is in the table exactly when its
   ledger row is, so a crash anywhere costs nothing on resume.

The fence: a session of a run that has an owner epoch (``ctx.owner_epoch``, PostgreSQL
workspaces) raises the run's fence row (``batch_no`` -2, ``rows`` = the epoch) to its epoch when
it connects, before it reads the ledger; each batch transaction reads the fence row (``FOR
SHARE`` where the database locks rows) just before its ledger row, and rolls back with
``RunTakenOver`` when a newer owner raised it. So an owner that was stopped and taken over
cannot apply a batch after the new owner settled the in-flight ones: either its commit came
first (and is settled as landed) or it is refused.

When the apply fails for data reasons (NOT NULL, CHECK, FK, overflow), the whole
transaction is rolled back, the batch is staged once in its own committed transaction,
and :func:`bisect_failures` narrows the bad rows down with cheap ``apply …; ROLLBACK``
attempts over row ranges of the staged batch. ADBC's PostgreSQL driver refuses every
statement, ``ROLLBACK TO SAVEPOINT`` included, once a statement failed inside a
transaction, so the attempts use whole-transaction rollbacks instead of savepoints; the
staged rows are not re-sent, so an attempt costs one SQL statement. The good rows are
then applied with the ledger row in one last transaction.

Subclasses provide the dialect: connecting, error classification, catalog queries and
type names.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from .._arrow import int_array
from .._schema import plan_table
from ..errors import DestinationError, DfsyncError, SchemaMismatchError, TransientDestinationError, redact
from ..states import DestinationMode
from ._sql import FENCE_BATCH, ROW_COLUMN, TableName, conflicts_sql, duck_to_arrow, q, row_error, taken_over
from .base import (
    ACTION_COLUMN,
    EXISTS_MESSAGE,
    LEDGER_TABLE,
    BatchResult,
    DestinationContext,
    DestinationSession,
    WriteBatch,
    batch_actions,
    bisect_failures,
    rows_where,
)

log = logging.getLogger("dfsync.destinations")

STAGE_TABLE = "_dfsync_stage"
DATA = "data"
TRANSIENT = "transient"
TERMINAL = "terminal"
SKIP_MESSAGE = "no row with this key in the destination (update mode only updates existing rows)"


class Transient(Exception):
    """Internal: the connection broke; the caller reconnects and retries."""


class ArrowSQLSession(DestinationSession):
    """A destination session over an ADBC connection (:mod:`dfsync._adbc`; see the module docstring)."""

    #: parameter placeholder style: "$" (PostgreSQL) or "?" (SQLite)
    param_style = "$"
    json_cast = ""
    #: create new tables without their primary key and add it in finish(): one index build at the
    #: end is far cheaper than maintaining the index row by row during a bulk load (key_owed: so here)
    defer_primary_key = key_owed = False
    label = "SQL"
    #: how a batch transaction reads the run's fence row, and how a new owner locks it to raise it
    fence_read_lock = ""
    fence_write_lock = ""

    def __init__(self, destination: Any, ctx: DestinationContext) -> None:
        super().__init__(destination, ctx)
        self.target: TableName = destination.name
        self.run_key = ctx.run_key
        self.columns: list[str] = []
        self.records_schema = pa.schema([])
        self.fresh = False
        self.direct = False  # table's columns are exactly the records' mapped types
        self.unique_key = True
        self.con: Any = None
        self.write_target = self._replace_name() if ctx.mode.rewrites else self.target
        self._with_retries(self._connect_and_ledger)

    # ---------------------------------------------------------------- dialect hooks
    @abstractmethod
    def _connect(self) -> Any: ...

    @abstractmethod
    def _classify(self, exc: BaseException) -> str:
        """DATA (row-level, bisect), TRANSIENT (reconnect, retry) or TERMINAL."""

    @abstractmethod
    def _exists(self, name: TableName) -> bool: ...

    @abstractmethod
    def _describe(self, name: TableName) -> dict[str, str]:
        """Column name -> the database's type name, in table order."""

    @abstractmethod
    def _incoming_types(self, schema: pa.Schema) -> dict[str, str]:
        """Column name -> the type name a column created for it would get."""

    @abstractmethod
    def _as_duckdb_types(self, types: dict[str, str]) -> dict[str, str]:
        """Translate the database's type names to DuckDB's (see ``_native_to_arrow``)."""

    def _native_to_arrow(self, declared: str) -> pa.DataType | str | None:
        """The Arrow type a column of this declared type reads back as (None: unknown)."""
        return duck_to_arrow(self._as_duckdb_types({"c": declared})["c"])

    #: can ALTER TABLE change a column to a wider type in place?
    can_widen = True
    #: are column names told apart by case (a field must name its column exactly)?
    exact_names = False

    def _widen_sql(self, name: TableName, column: str, declared: str) -> str:
        return f"ALTER TABLE {name.sql} ALTER COLUMN {q(column)} TYPE {declared}"

    def _retype_sql(self, name: TableName, column: str, declared: str, was: str) -> list[str]:
        """Give a column of only NULLs (declared ``was``) another type; ``_holds_values``: does it hold another value?"""
        return [f"ALTER TABLE {name.sql} ALTER COLUMN {q(column)} TYPE {declared} USING NULL"]

    def _holds_values(self, cur: Any, column: str, declared: str) -> bool:
        return bool(self._fetch(cur, f"SELECT 1 FROM {self.target.sql} WHERE {q(column)} IS NOT NULL LIMIT 1"))

    def _fit_table(self, cur: Any, records: pa.Schema, incoming: dict[str, str]) -> None:
        """Add the columns the records bring and widen the ones they outgrew (or raise, nothing sent)."""
        existing = {c: (t, self._native_to_arrow(t)) for c, t in self._describe(self.target).items()}
        plan = plan_table(records, existing, policy=self.ctx.schema, can_widen=self.can_widen,
                          widen=self.widen_columns, exact_names=self.exact_names, typed=self.typed_columns,
                          holds_values=lambda c: self._holds_values(cur, c, existing[c][0]),
                          where=f"table {self.target.display} of {self._where()}")
        for f in plan.add:
            cur.execute(f"ALTER TABLE {self.target.sql} ADD COLUMN {q(f.name)} {incoming[f.name]}")
            self.schema_changes.append((f.name, f"added column {f.name!r} {incoming[f.name]} to {self.target.display}"))
        for col, f in plan.widen:
            cur.execute(self._widen_sql(self.target, col, incoming[f.name]))
            self.schema_changes.append((f.name, f"widened column {col!r} of {self.target.display} to {incoming[f.name]}"))
        for col, f in plan.retype:
            for sql in self._retype_sql(self.target, col, incoming[f.name], existing[col][0]):
                cur.execute(sql)
            self.schema_changes.append((f.name, f"column {col!r} of {self.target.display} (only NULLs) is now {incoming[f.name]}"))
        if plan.add or plan.widen or plan.retype:
            self.con.commit()

    @abstractmethod
    def _has_unique_key(self, name: TableName) -> bool: ...

    @abstractmethod
    def _ledger_ddl(self) -> str: ...

    @abstractmethod
    def _replace_name(self) -> TableName: ...

    def _ledger_name(self) -> TableName:
        return TableName(self.target.schema, LEDGER_TABLE)

    def _stage_sql(self) -> str:
        return q(STAGE_TABLE)

    def _casts(self, actual: dict[str, str] | None) -> dict[str, str]:
        """Column -> the SQL cast a staged value needs on its way into the table (e.g. JSON text -> jsonb)."""
        return {}

    def _conform(self, data: pa.Table) -> pa.Table:
        """Cast Arrow types the driver cannot ingest to ones it can (same values)."""
        return data

    def _place(self, i: int) -> str:
        return f"${i}" if self.param_style == "$" else "?"

    # ---------------------------------------------------------------- plumbing
    def _where(self) -> str:
        return self.destination.describe()

    def _with_retries(self, fn: Callable[[], Any]) -> Any:
        """Run fn, reconnecting on transient failures with exponential backoff (tenacity)."""
        import tenacity

        def reset(state: tenacity.RetryCallState) -> None:
            # one warning per outage, not one per attempt; the rest at debug level
            first = state.attempt_number == 1
            (log.warning if first else log.debug)(
                "%s destination %s: connection problem (%s); %s", self.label, self._where(),
                " ".join(redact(str(state.outcome.exception())).split()),
                f"retrying for up to {self.destination.retry_timeout:g}s" if first else "retrying")
            self._drop_connection()

        look = self.ctx.look
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(Transient),
            stop=tenacity.stop_after_attempt(1) if look else tenacity.stop_after_delay(self.destination.retry_timeout),
            wait=tenacity.wait_exponential(multiplier=0.1, max=5),
            before_sleep=reset,
            reraise=True,
        )
        try:
            return retrying(fn)
        except Transient as exc:
            self._drop_connection()
            why = f"{self.label} destination {self._where()} is unreachable ({' '.join(str(exc).split())})"
            if look:
                raise TransientDestinationError(f"{why} (one attempt)") from None
            raise TransientDestinationError(
                f"{why}; retried for {self.destination.retry_timeout:g}s. The run is paused and resumes on the next run."
            ) from None

    def _drop_connection(self) -> None:
        if self.con is not None:
            with contextlib.suppress(Exception):
                self.con.close()
        self.con = None

    def _run(self, fn: Callable[[Any], Any]) -> Any:
        """Run fn(cursor) on the live connection; convert driver errors in this one place."""
        if self.con is None:
            self.con = self._connect()
        try:
            with self.con.cursor() as cur:
                return fn(cur)
        except (Transient, DfsyncError):
            raise
        except Exception as exc:
            kind = self._classify(exc)
            if kind == TRANSIENT:
                raise Transient(redact(str(exc))) from exc
            if kind == DATA:
                raise
            self._rollback()
            raise DestinationError(self._terminal_message(exc)) from exc

    def _terminal_message(self, exc: BaseException) -> str:
        return f"{self.label} destination {self._where()} refused: {exc}"

    def _rollback(self) -> None:
        if self.con is None:
            return
        try:
            self.con.rollback()
        except Exception:
            self._drop_connection()

    def _fetch(self, cur: Any, sql: str, params: tuple = ()) -> list[tuple]:
        cur.execute(sql, parameters=params or None)
        rows = cur.fetchall()
        return rows

    def _connect_and_ledger(self) -> None:
        def go(cur: Any) -> None:
            cur.execute(self._ledger_ddl())
            self.con.commit()
            self._raise_fence(cur)

        self._run(go)

    # ---------------------------------------------------------------- fence
    def _fence_epoch(self, cur: Any, lock: str) -> int | None:
        rows = self._fetch(cur, f"SELECT \"rows\" FROM {self._ledger_name().sql} WHERE run_key = {self._place(1)} "
                                f"AND batch_no = {FENCE_BATCH}{lock}", (self.run_key,))
        return int(rows[0][0]) if rows else None

    def _raise_fence(self, cur: Any) -> None:
        """This run's fence row up to this session's epoch (it waits for a batch commit under way)."""
        epoch = self.ctx.owner_epoch
        if not epoch:
            return
        seen = self._fence_epoch(cur, self.fence_write_lock)
        if seen is None:
            cur.execute(f"INSERT INTO {self._ledger_name().sql} (run_key, batch_no, \"rows\", not_delivered) "
                        f"VALUES ({self._place(1)}, {FENCE_BATCH}, {self._place(2)}, NULL)",
                        parameters=(self.run_key, int(epoch)))
        elif seen < epoch:
            cur.execute(f"UPDATE {self._ledger_name().sql} SET \"rows\" = {self._place(1)} WHERE run_key = "
                        f"{self._place(2)} AND batch_no = {FENCE_BATCH}", parameters=(int(epoch), self.run_key))
        self.con.commit()
        if seen is not None and seen > epoch:
            raise taken_over(self.ctx, self._where())

    def _check_fence(self, cur: Any) -> None:
        """Inside a batch's transaction: refuse it (rolled back) if a newer owner raised the fence."""
        epoch = self.ctx.owner_epoch
        if not epoch:
            return
        seen = self._fence_epoch(cur, self.fence_read_lock)
        if seen is not None and seen > epoch:
            self._rollback()
            raise taken_over(self.ctx, self._where())

    # ---------------------------------------------------------------- prepare
    def prepare(self, schema: pa.Schema) -> None:
        records = pa.schema([f for f in schema if f.name not in (ACTION_COLUMN, ROW_COLUMN)])
        self.columns = records.names
        self.records_schema = records
        missing_pk = [k for k in self.ctx.primary_key if k not in self.columns]
        if missing_pk:
            raise SchemaMismatchError(f"the records lack the primary key column(s) {missing_pk}")
        self._with_retries(lambda: self._run(lambda cur: self._prepare(cur, records)))

    def _prepare(self, cur: Any, records: pa.Schema) -> None:
        incoming = self._incoming_types(records)
        exists = self._exists(self.target)
        if exists and not self.ctx.mode.rewrites:
            self._fit_table(cur, records, incoming)
        elif not exists and self.ctx.mode == DestinationMode.UPDATE:
            raise DestinationError(
                f"table {self.target.display} does not exist in {self._where()}; update mode only "
                f"changes rows that exist. Create the table first, or use destination_mode='upsert'."
            )
        ledger = self._ledger_name().sql
        marker = self._fetch(cur, f"SELECT count(*) FROM {ledger} WHERE run_key = {self._place(1)} "
                                  f"AND batch_no = 0", (self.run_key,))[0][0]
        self.con.commit()
        if marker:
            self.fresh = True  # a resumed run: the table was fresh when the run began
            if not self._exists(self.write_target):
                raise DestinationError(f"table {self.write_target.display} disappeared during the run")
        else:
            if self.ctx.mode.rewrites:
                cur.execute(f"DROP TABLE IF EXISTS {self.write_target.sql}")
            if not self._exists(self.write_target):
                cur.execute(self._create_sql(self.write_target, incoming, with_key=not self.defer_primary_key))
                self.fresh, self.key_owed = True, self.defer_primary_key  # key_owed: not said to lack it
                if self.defer_primary_key:  # batch -1 marks "this run owes the table its key"
                    cur.execute(f"INSERT INTO {ledger} (run_key, batch_no, \"rows\", not_delivered) "
                                f"VALUES ({self._place(1)}, -1, 0, NULL)", parameters=(self.run_key,))
            else:
                self.fresh = bool(self._fetch(cur, f"SELECT NOT EXISTS (SELECT 1 FROM {self.write_target.sql})")[0][0])
            if self.fresh:
                cur.execute(f"INSERT INTO {ledger} (run_key, batch_no, \"rows\", not_delivered) "
                            f"VALUES ({self._place(1)}, 0, 0, NULL)", parameters=(self.run_key,))
            self.con.commit()
        actual = self._describe(self.write_target)
        self.direct = list(actual.items()) == [(c, incoming[c]) for c in self.columns] and not self._casts(actual)
        self.unique_key = self._has_unique_key(self.write_target)
        if not self.unique_key and not self.key_owed:
            log.info("%s has no unique constraint on %s: upserts use UPDATE … FROM + INSERT … WHERE NOT EXISTS",
                     self.write_target.display, self.ctx.primary_key)
        self.con.commit()

    def _create_sql(self, name: TableName, types: dict[str, str], *, with_key: bool = True) -> str:
        cols = ", ".join(f"{q(c)} {types[c]}" for c in self.columns)
        pk = ", ".join(q(k) for k in self.ctx.primary_key)
        return f"CREATE TABLE {name.sql} ({cols}{f', PRIMARY KEY ({pk})' if with_key else ''})"

    def _add_deferred_key(self, cur: Any) -> None:
        """Give a table this run created its PRIMARY KEY (idempotent; see defer_primary_key)."""
        if not self.defer_primary_key or not self._exists(self.write_target):
            return
        owed = self._fetch(cur, f"SELECT count(*) FROM {self._ledger_name().sql} WHERE run_key = "
                                f"{self._place(1)} AND batch_no = -1", (self.run_key,))[0][0]
        if owed and not self._has_unique_key(self.write_target):
            pk = ", ".join(q(k) for k in self.ctx.primary_key)
            cur.execute(f"ALTER TABLE {self.write_target.sql} ADD PRIMARY KEY ({pk})")

    def fork(self) -> ArrowSQLSession:
        other = copy.copy(self)  # prepared state (columns, fresh, direct, unique_key) shared
        other.con = None  # connects on first use
        return other

    # ---------------------------------------------------------------- ledger
    def holds_rows(self) -> bool:
        return self._with_retries(lambda: self._run(lambda cur: self._exists(self.target) and bool(
            self._fetch(cur, f"SELECT 1 FROM {self.target.sql} LIMIT 1"))))

    def committed_batches(self) -> dict[int, list[list[Any]]]:
        def go(cur: Any) -> dict[int, list[list[Any]]]:
            rows = self._fetch(cur, f"SELECT batch_no, not_delivered FROM {self._ledger_name().sql} "
                                    f"WHERE run_key = {self._place(1)} AND batch_no > 0", (self.run_key,))
            self.con.commit()
            return {int(b): json.loads(nd) if nd else [] for b, nd in rows}

        return self._with_retries(lambda: self._run(go))

    # ---------------------------------------------------------------- write
    def write(self, batch: WriteBatch) -> BatchResult:
        return self._with_retries(lambda: self._write_once(batch))

    def _write_once(self, batch: WriteBatch) -> BatchResult:
        if self.con is None:
            # a reconnect: the commit of the previous attempt may have landed before the reset
            done = self.committed_batches().get(batch.batch_no)
            if done is not None:
                return self._result_from_ledger(batch.data, done)
        data = self._conform(batch.data)
        data = data.append_column(ROW_COLUMN, int_array(np.arange(data.num_rows, dtype=np.int64)))
        if self._fast_path_ok(data):
            try:
                bad: dict[int, str] = {}  # rows insert mode finds already there (_insert_conflicts)
                missing = self._run(lambda cur: self._commit(cur, batch.batch_no, data, fast=True, bad=bad))
                return self._result(batch.data, bad, missing)
            except Transient:
                raise
            except Exception as exc:
                if self._classify(exc) != DATA:
                    raise
                self._rollback()
        return self._run(lambda cur: self._bisect(cur, batch.batch_no, data, batch.data))

    def _fast_path_ok(self, data: pa.Table) -> bool:
        """Whether the batch may be tried in one statement (else it goes row by row at once)."""
        return True

    def _stage(self, cur: Any, data: pa.Table) -> None:
        cur.adbc_ingest(STAGE_TABLE, data, mode="replace", temporary=True)

    def _commit(self, cur: Any, batch_no: int, data: pa.Table, *, fast: bool, bad: dict[int, str]) -> list[tuple]:
        actions = batch_actions(data)
        mode = self.ctx.mode
        if fast and self.fresh and self.direct and actions <= {"insert"} and mode != DestinationMode.UPDATE:
            # a table that was empty when the run began: new rows cannot collide, so they
            # go straight into it with one bulk COPY (no staging table, no join)
            if data.num_rows:
                self._ingest_direct(cur, data.select(self.columns))
            missing: list[int] = []
        else:
            if fast:
                self._stage(cur, data)
                bad.update(self._insert_conflicts(cur))
            where = "TRUE" if not bad else f"b.{q(ROW_COLUMN)} NOT IN ({', '.join(str(int(i)) for i in bad)})"
            missing = self._apply(cur, actions, where) if len(bad) < data.num_rows else []  # MariaDB: 1364 on no rows
        pk = self.ctx.primary_key
        nd = [[data.column(k)[i].as_py() for k in pk] for i in sorted(bad)]
        nd += [[data.column(k)[i].as_py() for k in pk] for i in missing]
        self._check_fence(cur)
        cur.execute(
            f"INSERT INTO {self._ledger_name().sql} (run_key, batch_no, \"rows\", not_delivered) "
            f"VALUES ({self._place(1)}, {self._place(2)}, {self._place(3)}, {self._place(4)}{self.json_cast})",
            parameters=(self.run_key, int(batch_no), int(data.num_rows), json.dumps(nd, default=str)))
        self.con.commit()
        return missing

    def _insert_conflicts(self, cur: Any) -> dict[int, str]:
        """Insert mode, a table that had rows when the run began: the staged rows whose key it holds
        (:func:`conflicts_sql`), failed and deleted from the stage so no statement applies them."""
        if self.ctx.mode != DestinationMode.INSERT or (self.fresh and not self.ctx.requeried):
            return {}  # a table empty when the run began holds only this run's keys
        s = self._stage_sql()
        sql = conflicts_sql(s, self.write_target.sql, self.ctx.primary_key, self._casts(None))
        rows = [int(r[0]) for r in self._fetch(cur, sql)]
        if rows:
            cur.execute(f"DELETE FROM {s} WHERE {q(ROW_COLUMN)} IN ({', '.join(map(str, rows))})")
        return dict.fromkeys(rows, EXISTS_MESSAGE)

    def _ingest_direct(self, cur: Any, data: pa.Table) -> None:
        cur.adbc_ingest(self.write_target.table, data, mode="append", db_schema_name=self.write_target.schema)

    def _apply(self, cur: Any, actions: set[str], where: str) -> list[int]:
        """Apply the staged rows matching ``where`` (inside the open transaction).

        Returns the rows (their positions in the batch) whose key update mode did not find: the
        keys as the driver reads them back (SQLite's text for a time, MySQL's naive UTC time for
        a tz-aware one) never equalled the batch's, and such rows counted as succeeded.
        """
        t, s = self.write_target.sql, self._stage_sql()
        pk = self.ctx.primary_key
        mode = self.ctx.mode
        cols = ", ".join(q(c) for c in self.columns)
        cast = self._casts(None)
        bcols = ", ".join(f"b.{q(c)}{cast.get(c, '')}" for c in self.columns)
        on = " AND ".join(f"{t}.{q(k)} = b.{q(k)}" for k in pk)
        sets = ", ".join(f"{q(c)} = b.{q(c)}{cast.get(c, '')}" for c in self.columns if c not in pk)
        act = f"b.{q(ACTION_COLUMN)}"
        if mode == DestinationMode.UPDATE:
            missing = self._fetch(cur, f"SELECT b.{q(ROW_COLUMN)} FROM {s} b WHERE {where} "
                                       f"AND NOT EXISTS (SELECT 1 FROM {t} WHERE {on})")
            if sets:
                cur.execute(f"UPDATE {t} SET {sets} FROM {s} b WHERE {on} AND {where}")
            return [int(r[0]) for r in missing]
        if "delete" in actions:
            # IN over the staged keys, not a correlated EXISTS: SQLite plans that EXISTS as a scan of
            # the whole table probing every staged row for each of its rows (a 336k-row table and
            # 20k deletes ran for minutes); IN searches the table's key index per staged key
            tk = ", ".join(f"{t}.{q(k)}" for k in pk)
            bk = ", ".join(f"b.{q(k)}" for k in pk)
            cur.execute(f"DELETE FROM {t} WHERE ({tk}) IN (SELECT {bk} FROM {s} b "
                        f"WHERE {act} = 'delete' AND {where})")
        rows = f"{act} <> 'delete' AND {where}"
        upserting = mode.upserts
        if not upserting or (self.fresh and actions <= {"insert", "delete"}):
            cur.execute(f"INSERT INTO {t} ({cols}) SELECT {bcols} FROM {s} b WHERE {rows}")
        elif self.unique_key:
            conflict = ", ".join(q(k) for k in pk)
            ex = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in self.columns if c not in pk)
            do = f"DO UPDATE SET {ex}" if ex else "DO NOTHING"
            cur.execute(f"INSERT INTO {t} ({cols}) SELECT {bcols} FROM {s} b WHERE {rows} "
                        f"ON CONFLICT ({conflict}) {do}")
        else:
            if sets:
                cur.execute(f"UPDATE {t} SET {sets} FROM {s} b WHERE {on} AND {rows}")
            cur.execute(f"INSERT INTO {t} ({cols}) SELECT {bcols} FROM {s} b WHERE {rows} "
                        f"AND NOT EXISTS (SELECT 1 FROM {t} WHERE {on})")
        return []

    def _bisect(self, cur: Any, batch_no: int, data: pa.Table, original: pa.Table) -> BatchResult:
        self._stage(cur, data)  # staged once, committed: the attempts below only run SQL
        present = self._insert_conflicts(cur)
        self.con.commit()
        actions = batch_actions(data)

        def attempt(sub: pa.Table) -> str | None:
            try:
                self._apply(cur, actions, rows_where(sub, ROW_COLUMN, f"b.{q(ROW_COLUMN)}"))
                return None
            except Exception as exc:
                if self._classify(exc) != DATA:
                    raise
                return self._row_message(exc)
            finally:
                self.con.rollback()

        failed = {**bisect_failures(data, attempt), **present}
        missing = self._commit(cur, batch_no, data, fast=False, bad=failed)
        cur.execute(f"DROP TABLE IF EXISTS {self._stage_sql()}")
        self.con.commit()
        return self._result(original, failed, missing)

    def _row_message(self, exc: BaseException) -> str:
        return redact(row_error(exc))

    def _result(self, data: pa.Table, failed: dict[int, str], missing: list[int]) -> BatchResult:
        return BatchResult(failed=failed, skipped={i: SKIP_MESSAGE for i in missing if i not in failed})

    def _result_from_ledger(self, data: pa.Table, not_delivered: list[list[Any]]) -> BatchResult:
        keys = {json.dumps(k, default=str) for k in not_delivered}
        cols = [data.column(k).to_pylist() for k in self.ctx.primary_key]
        why = "not delivered (the destination rejected the row; its message was lost in a connection reset)"
        failed = {i: why for i, key in enumerate(zip(*cols, strict=True)) if json.dumps(list(key), default=str) in keys}
        return BatchResult(failed=failed)

    # ---------------------------------------------------------------- finish
    def finish(self) -> None:
        def go(cur: Any) -> None:
            self._check_fence(cur)
            self._add_deferred_key(cur)
            if not self.ctx.mode.rewrites:
                self.con.commit()
                return
            if not self._exists(self.write_target):
                return  # already swapped by an earlier attempt of this run
            # one transaction: readers see the old table until the commit, then the new one
            cur.execute(f"DROP TABLE IF EXISTS {self.target.sql}")
            cur.execute(f"ALTER TABLE {self.write_target.sql} RENAME TO {q(self.target.table)}")
            self.con.commit()

        self._with_retries(lambda: self._run(go))

    def applied(self) -> bool:
        """A replace run is applied once its table was swapped in: its ledger marker stays, its table is gone."""
        if not self.ctx.mode.rewrites:
            return False

        def go(cur: Any) -> bool:
            marker = self._fetch(cur, f"SELECT count(*) FROM {self._ledger_name().sql} WHERE run_key = "
                                      f"{self._place(1)} AND batch_no = 0", (self.run_key,))[0][0]
            return bool(marker) and not self._exists(self.write_target)

        return bool(self._with_retries(lambda: self._run(go)))

    def abandon(self) -> None:
        if not self.ctx.mode.rewrites:
            return
        try:
            def go(cur: Any) -> None:  # the table and the ledger rows that describe it go together
                self._check_fence(cur)
                cur.execute(f"DROP TABLE IF EXISTS {self.write_target.sql}")
                cur.execute(f"DELETE FROM {self._ledger_name().sql} WHERE run_key = {self._place(1)} "
                            f"AND batch_no <> {FENCE_BATCH}", parameters=(self.run_key,))
                self.con.commit()

            self._run(go)
        except Exception:
            pass

    def close(self) -> None:
        self._drop_connection()
