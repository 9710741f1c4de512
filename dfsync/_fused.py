"""A first load into a DuckDB table the run creates, loaded in place: one batch, two commits.

The usual run stages every source row (dfsync/staging.py), writes each batch's keys ahead to
the workspace, sends the batch as Arrow and confirms it: three copies of every row. When the
run creates the destination table (nothing delivered, the table does not exist), the
destination's own DuckDB reads the source instead, with the fingerprint staging computes
(``_stage_input.open_source``):

1. ``querying``, on a connection of its own (:class:`_Loading`): ``CREATE TABLE
   t__dfsync_load AS SELECT <records>, <fingerprint> AS _fp FROM <source>``; the keys and
   fingerprints out as Arrow; null or repeated keys counted, the schema plan and the value
   checks run on that table; ``_fp`` dropped; COMMIT. Anything refused or failing before
   that commit rolls it back (a destination file it created is removed) and the run takes
   the usual path from the start, which says what it says: nothing was sent;
2. ``queued`` -> ``in_progress`` (counters as the usual path sets them; a sync with checks
   never comes here);
3. the workspace writes the keys and fingerprints ahead, not confirmed, batch 1 in flight (one
   set operation), while the table's primary key is built on a thread;
4. ONE destination commit renames the table to ``t`` with its ledger rows (batch 0: the table
   was fresh; batch 1: its rows);
5. the workspace confirms batch 1 (state, counters, records), then the run ends as usual.

A crash settles as the usual path's do: before 4 the destination has no ``t`` and the next run
discards batch 1 (its ledger lacks it); after 4 the next run confirms it from the ledger. A
table left under the loading name is dropped by the next run that creates ``t`` (fused or not).
The run is one batch: a pause or abort asked for while the source is read acts before the
batch is sent (the loading table dropped); one asked for while it is sent, once it is delivered.

:func:`takes_fused` decides, in one place, whether a run goes this way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pyarrow as pa

from . import _retry, _sensitive, _settle
from ._arrow import int_array, string_array
from ._ident import quote
from ._keyfail import RECORD_RETENTION
from ._paths import private_dir
from ._stage_input import open_source
from .destinations._duckdb import (
    DuckDBDestination,
    DuckDBSession,
    close_capped,
    keyable,
    loading_table,
    open_capped,
    table_exists,
)
from .destinations._sql import q
from .destinations.base import ACTION_COLUMN, LEDGER_TABLE
from .errors import DestinationError, DfsyncError
from .states import (
    DestinationMode,
    RecordStatus,
    RunStatus,
    SyncMode,
    checks_outcome,
)

if TYPE_CHECKING:
    from .runner import Runner

#: the modes a fused first load takes (update needs rows there, replace rewrites at its end)
MODES = (DestinationMode.INSERT, DestinationMode.UPSERT, DestinationMode.MIRROR)


class _Fallback(Exception):
    """The fused load cannot go on: roll back, take the usual path (nothing was sent)."""


def hook(point: str) -> None:
    """Tests (tests/faulty.py) replace this to stop a process between two steps."""


def takes_fused(runner: Runner) -> bool:
    """Does this run load the destination in place? Only a fresh (not resumed, not previewed)
    full-refresh run without checks, partitions or an explicit batch size, into a DuckDB
    destination in insert/upsert/mirror mode, of a sync with nothing delivered, nothing to
    send again and nothing in flight. (Whether the table exists is asked once it is open.)"""
    defn, store = runner.defn, runner.store
    if (runner.dry or runner.resume or runner.status != RunStatus.QUERYING or type(defn.destination) is not DuckDBDestination
            or defn.destination_mode not in MODES or defn.sync_mode != SyncMode.FULL_REFRESH
            or defn.checks or defn.partitions or defn.batch_size is not None):
        return False
    if store.has_delivered(runner.sync_id) or store.inflight_batches(runner.sync_id):
        return False
    retry, keys = _retry.retry_rows(store, defn, runner.sync_id, runner.run_id)
    if (retry is not None and retry.num_rows) or (keys is not None and keys.num_rows):
        return False
    row = store.sync_row(sync_id=runner.sync_id)
    state = _retry.state_for_diff(store, defn, runner.sync_id, row["definition_version"])
    return state is None or not _rows(state)


def _rows(state: Any) -> int:
    if isinstance(state, pa.RecordBatchReader):
        return sum(b.num_rows for b in state)
    return state.num_rows


class _Loading:
    """Step 1's own connection to the destination file (the run's session, which writes the
    ledger, opens once the load's table is committed). Closed before that, it leaves the
    destination as it found it: a file it created is removed."""

    def __init__(self, destination: DuckDBDestination, spill_dir: str) -> None:
        self.path, self.target = destination.path, destination.name
        self.new_dir = not os.path.isdir(os.path.dirname(self.path))
        self.new_file = not os.path.exists(self.path)
        self.committed = False
        self.spill = spill_dir
        self.con, self.settings = open_capped(self.path)
        try:  # rows it spills are customer data: in the run's staging directory, owner only (as staging's)
            self.settings["temp_directory"] = self.con.execute("SELECT current_setting('temp_directory')").fetchall()[0][0]
            self.con.execute(f"SET temp_directory = '{private_dir(spill_dir).replace(chr(39), chr(39) * 2)}'")
        except (duckdb.Error, OSError) as exc:
            self.close()
            raise DestinationError(f"could not set where {self.path} spills: {exc}") from exc

    def hand_over(self, open_session: Callable[[], DuckDBSession]) -> DuckDBSession:
        """The run's session, opened on this connection's database (the committed load is not
        checkpointed, freed and read again in between: the session's close checkpoints once),
        capped as this connection left it until its close restores the settings found. Only
        when nothing spilled: DuckDB keeps a used spill directory, and this one goes now."""
        try:
            self.con.execute(f"SET temp_directory = '{self.settings['temp_directory'].replace(chr(39), chr(39) * 2)}'")
        except duckdb.Error:  # spilled: closed first, as before (the session opens the file afresh)
            self.close()
            return open_session()
        try:
            session = open_session()
        except BaseException:
            self.close()
            raise
        self.close(capped=False)
        session._settings = {k: v for k, v in self.settings.items() if k != "temp_directory"}
        return session

    def close(self, capped: bool = True) -> None:
        with contextlib.suppress(duckdb.Error):
            self.con.execute("ROLLBACK")
        close_capped(self.con, self.settings if capped else {})
        shutil.rmtree(self.spill, ignore_errors=True)
        if self.new_file and not self.committed:
            for leftover in (self.path, self.path + ".wal"):
                with contextlib.suppress(OSError):
                    os.remove(leftover)
            shutil.rmtree(self.path + ".tmp", ignore_errors=True)
            if self.new_dir:
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.dirname(self.path))


def first_load(runner: Runner) -> bool:
    """Run the whole of a fused first load (True), or change nothing and return False for the
    usual path. Called by the runner once the run is ``querying``."""
    if not takes_fused(runner):
        return False
    defn = runner.defn
    try:
        loading = _Loading(defn.destination, runner.staging_dir)
    except DfsyncError:
        return False  # the destination cannot be opened: the usual path says so when it gets there
    runner.session = loading  # a Ctrl-C interrupts its statement; the runner closes it whatever happens
    try:
        loaded = _load(runner, loading)
    except (_Fallback, DfsyncError, duckdb.Error):
        loaded = None  # the usual path reads again and says what is wrong, if anything
    runner.session = None
    if loaded is None:
        loading.close()
        return False
    ctx = _settle.destination_context(runner.store, runner.sync_id, runner.sync_name, defn, runner.run_id)
    runner.session = session = loading.hand_over(lambda: defn.destination.open(ctx))
    assert isinstance(session, DuckDBSession)
    _deliver(runner, session, *loaded)
    return True


def _load(runner: Runner, loading: _Loading) -> tuple[Any, pa.Table, int, Any, str | None]:
    """Step 1: the rows into a new table under a name of dfsync's own (``loading_table``),
    committed without its fingerprints once its keys, the schema checks and the values passed;
    the keys and fingerprints out. Raises _Fallback (or the error) for the usual path, the
    transaction rolled back."""
    from . import _schema, _schema_values
    from ._reads import source_for

    defn, store, con = runner.defn, runner.store, loading.con
    target, load = loading.target, loading_table(loading.target)
    if table_exists(con, target):
        raise _Fallback("the table exists")
    key = list(defn.primary_key)
    row = store.sync_row(sync_id=runner.sync_id)
    token = runner.snapshot_token(row)
    with store.released():  # reading the source can take long: let other processes in
        opened = open_source(con, source_for(runner, None), defn.mapping, None, key)
        if not keyable(opened.types, key) or _through_arrow(opened.types) != opened.types:
            raise _Fallback("the key cannot be a PRIMARY KEY, or a column's type is not the one the usual path creates")
        cols = ", ".join(quote(c) for c in opened.columns)
        con.execute("BEGIN TRANSACTION")
        if target.schema:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {q(target.schema)}")
        con.execute(f"DROP TABLE IF EXISTS {load.sql}")  # left by a run that died before its commit
        con.execute(f"CREATE TABLE {load.sql} AS SELECT {cols}, {opened.fp_sql} AS _fp FROM _src")
    if opened.counted is not None:
        opened.counted.refuse_lossy()
    state = con.sql(f"SELECT {', '.join(quote(k) for k in key)}, _fp FROM {load.sql}").to_arrow_table()
    n = state.num_rows
    if n == 0 or not _keys_distinct(con, load.sql, state, key):
        raise _Fallback("no rows, or null or repeated keys")
    records = pa.schema(list(con.sql(f"SELECT {cols} FROM {load.sql} LIMIT 0").to_arrow_table().schema))
    where = defn.destination.describe()
    plan = _schema.plan(_schema.load(row.get("dest_schema")), records, defn.primary_key, defn.schema, where,
                        replace=False, replace_ok=DestinationMode.REPLACE in defn.destination.modes)
    defn.destination.check_schema(records)
    _schema_values.check_values(con, load.sql, records, defn.destination, where)
    kept = _records(con, load.sql, cols, n)
    con.execute(f"ALTER TABLE {load.sql} DROP COLUMN _fp")
    con.execute("COMMIT")
    loading.committed = True
    hook("fused_loaded")
    same = token is not None and runner.snapshot_token(row) == token  # the files did not change while read
    return opened, state, n, (plan, kept), token if same else None


def _through_arrow(types: dict[str, str]) -> dict[str, str]:
    """The column types a table the usual path creates would have: the staged types as Arrow
    (its batches) read back by DuckDB. Asked of an empty table on a connection of its own (the
    source is not touched: a stream read once would lose rows)."""
    with duckdb.connect() as scratch:
        scratch.execute(f"CREATE TABLE x ({', '.join(f'{quote(c)} {t}' for c, t in types.items())})")
        scratch.register("y", scratch.sql("SELECT * FROM x").to_arrow_table())
        return {r[0]: r[1] for r in scratch.execute("DESCRIBE SELECT * FROM y").fetchall()}


def _keys_distinct(con: Any, table: str, state: pa.Table, key: list[str]) -> bool:
    """No key column holds a null and no key repeats (DuckDB checks a primary key declared in a
    transaction only at its commit, after the workspace wrote the keys ahead)."""
    if any(state.column(k).null_count for k in key):
        return False
    col = state.column(key[0])
    if len(key) == 1 and pa.types.is_integer(col.type) and len(col):
        import pyarrow.compute as pc

        bounds = pc.min_max(col)
        lo, hi = int(bounds["min"].as_py()), int(bounds["max"].as_py())
        if hi - lo < 4 * len(col) + 1024 and hi < 2**63:  # a dense key (the usual surrogate id): by position
            seen = np.zeros(hi - lo + 1, dtype=bool)
            for chunk in col.chunks:
                seen[_integers(chunk) - lo] = True
            return int(np.count_nonzero(seen)) == len(col)
    kq = ", ".join(quote(k) for k in key)
    return con.execute(f"SELECT count(*) = count(DISTINCT ({kq})) FROM {table}").fetchall()[0][0]


def _integers(arr: pa.Array) -> np.ndarray:
    """A null-free integer Arrow array's values as int64 (``Array.to_numpy()`` would import pandas)."""
    t = arr.type
    dtype = np.dtype(f"{'u' if pa.types.is_unsigned_integer(t) else ''}int{t.bit_width}")
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize).astype(np.int64)


def _records(con: Any, table: str, cols: str, n: int) -> pa.Table | None:
    """The run's records as the usual path keeps them: every row when the run changes few."""
    if n > RECORD_RETENTION:
        return None
    tbl = con.sql(f"SELECT {cols}, 'insert' AS {ACTION_COLUMN}, _fp FROM {table}").to_arrow_table()
    return (tbl.drop_columns(["_fp"])
            .append_column("_status", string_array([RecordStatus.SUCCEEDED.value] * n))
            .append_column("_batch", int_array(np.full(n, 1), pa.int32()))
            .append_column("_error", string_array([None] * n))
            .append_column("_checks", pa.nulls(n, pa.list_(pa.string())))
            .append_column("_fingerprint", tbl.column("_fp")))


def _deliver(runner: Runner, session: DuckDBSession, opened: Any, state: pa.Table, n: int, planned: Any,
             token: str | None) -> None:
    """Steps 2-5: the run's states and counters as the usual path leaves them; the primary key
    built while the workspace writes ahead; the table renamed with its ledger rows in one
    commit; the confirmation and the run's end."""
    defn, store, con = runner.defn, runner.store, session.con
    plan, kept = planned
    key = list(defn.primary_key)
    target, load = session.write_target, loading_table(session.write_target)
    session.columns, session.fresh = list(opened.columns), True
    def add_key() -> None:
        pk = ", ".join(q(k) for k in key)
        try:
            con.execute(f"ALTER TABLE {load.sql} ADD PRIMARY KEY ({pk})")
        except duckdb.Error as exc:
            raise DestinationError(f"could not declare the primary key ({pk}) of {target.display}: {exc}") from exc

    try:
        with _beside(add_key, con):  # the key's index is built while the workspace writes ahead
            store.set_counters(runner.run_id, queried=n, retried=0)
            store.set_counters(runner.run_id, inserted=n, updated=0, deleted=0, unchanged=0, invalid=0)
            store.set_sync_fields(runner.sync_id, key_types=opened.types)
            runner.source_token = token
            runner.move_to(RunStatus.QUEUED, "all rows staged")
            runner.move_to(RunStatus.IN_PROGRESS, checks_outcome(0, defn.on_invalid, ""))
            runner.check_requests()
            runner.record_schema(plan, n)
            store.ensure_state_table(runner.sync_id, {k: opened.types[k] for k in key})
            batch_no = store.next_batch_no(runner.run_id)
            actions = pa.DictionaryArray.from_arrays(int_array(np.zeros(n, np.int8), pa.int8()), string_array(["insert"]))
            with store.lease():
                store.write_ahead(runner.sync_id, runner.run_id, batch_no, state.append_column(ACTION_COLUMN, actions),
                                  key, ACTION_COLUMN, alone=True)
            del state, actions
        hook("fused_written_ahead")
        con.execute("BEGIN TRANSACTION")  # the table under its name with the ledger's rows (0: fresh; batch_no)
        con.execute(f"ALTER TABLE {load.sql} RENAME TO {q(target.table)}")
        con.execute(f"INSERT INTO {LEDGER_TABLE} VALUES (?, 0, 0, NULL, now()), (?, ?, ?, NULL, now())",
                    [session.run_key, session.run_key, batch_no, n])
        session.check_fence()
        con.execute("COMMIT")
    except BaseException as exc:
        session.rollback()  # nothing was sent: the new table goes (else the next run creating it drops it)
        with contextlib.suppress(duckdb.Error):
            con.execute(f"DROP TABLE IF EXISTS {load.sql}")
        if isinstance(exc, duckdb.Error):
            raise DestinationError(f"DuckDB destination {target.display}: {exc}") from exc
        raise
    hook("fused_committed")
    store.confirm_batch(runner.sync_id, runner.run_id, batch_no, key, [], not _settle.applies_per_batch(defn),
                        dict(sent=n, succeeded=n, failed=0, skipped=0, batches=1),
                        records=_sensitive.protect(kept, defn.sensitive, store))
    runner.report()
    hook("fused_confirmed")
    runner.check_requests()  # a pause or abort asked for while the batch was sent acts now
    runner.finish()


@contextlib.contextmanager
def _beside(work: Callable[[], None], con: Any) -> Iterator[None]:
    """Run ``work`` (a statement on ``con``) on a thread while the block runs; its error is raised
    after the block's. If the block fails, the statement is interrupted and waited for."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - raised on the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=run, name="dfsync-fused-key", daemon=True)
    thread.start()
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            con.interrupt()
        thread.join()
        raise
    thread.join()
    if failed:
        raise failed[0]
