"""The delivered state, the batch ledger, records and check results of a DuckDB workspace.

Per sync, ``state_<id>`` holds the key columns and fingerprint of every row sent, with the run
and batch that sent it and ``_ok`` (TRUE: the destination confirmed it; FALSE: in flight;
NULL: set aside until the run that superseded it is applied); ``rec_<id>`` keeps records
after a run. Each operation below is one transaction unless it says otherwise: the crash
tests depend on where those boundaries are (a batch's confirmation is one transaction with
its counters, the run's cursor and its records).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .._arrow import distinct_values, int_array
from .._ident import quote
from ..states import RunStatus
from ._common import first

#: a state row's action as written: NULL is an insert (every row of a first load), as in the
#: PostgreSQL store: 10M rows written ahead in batches of 983,040 cost 1.8-1.9 instead of
#: 2.3-2.4 CPU-s (bench/RESULTS.md, issue 22). Rows written before say 'insert': both read back as 'insert'.
_ACTION = "coalesce(_action, 'insert')"

#: a state row's own columns, each compressed as DuckDB would choose for it (random fingerprints
#: stay uncompressed; a batch's run, batch and _ok are runs of one value), told rather than tried
#: on every segment: 10M rows written and checkpointed 1.9-2.0 instead of 2.5 CPU-s, the same file
#: (bench/RESULTS.md, issue 22). The key columns are left to DuckDB.
_STATE_COLUMNS = ("_fp UBIGINT USING COMPRESSION uncompressed, _run BIGINT USING COMPRESSION rle, "
                  "_batch INTEGER USING COMPRESSION rle, _action VARCHAR USING COMPRESSION dict_fsst, "
                  "_ok BOOLEAN USING COMPRESSION rle")

# the cursor merge a caller passes to finish_run/fail_run: (sync's cursor, run's cursor_max) -> new (JSON values)
CursorMerge = Callable[[Any, Any], Any]


def state_table(sync_id: int) -> str:
    return f"state_{int(sync_id)}"


def rec_table(sync_id: int) -> str:
    return f"rec_{int(sync_id)}"


def ahead_table(sync_id: int) -> str:
    """Where a lone batch into an empty state is written ahead (:meth:`DeliveryOps.write_ahead`)."""
    return f"ahead_{int(sync_id)}"


def key_match(a: str, b: str, key: Sequence[str]) -> str:
    return " AND ".join(f"{a}.{quote(k)} = {b}.{quote(k)}" for k in key)


#: DuckDB's whole-number types by family (signed, unsigned), narrowest first
_SIGNED = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT")
_UNSIGNED = ("UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT")


def wider_key_type(have: str, new: str) -> bool:
    """Does staged key type ``new`` hold every value of ``have`` and more (the state's key column is
    widened to it)? Whole numbers of a larger size (unsigned into a larger signed one), FLOAT into
    DOUBLE, a DECIMAL with more whole digits and no fewer decimals. Any other change keeps the column.
    Stricter than :func:`_common_type` (the records' columns), on purpose: a key must stay exact, and
    DuckDB's common type of BIGINT and DOUBLE is DOUBLE, of a number and text VARCHAR.

    >>> wider_key_type("INTEGER", "BIGINT"), wider_key_type("UINTEGER", "BIGINT"), wider_key_type("BIGINT", "INTEGER")
    (True, True, False)
    """
    import re

    have, new = have.upper().strip(), new.upper().strip()
    if have == new:
        return False
    for a, b in ((_SIGNED, _SIGNED), (_UNSIGNED, _UNSIGNED), (_UNSIGNED, _SIGNED)):
        if have in a and new in b:
            return b.index(new) > a.index(have)
    if (have, new) == ("FLOAT", "DOUBLE"):
        return True
    d1, d2 = (re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", t) for t in (have, new))
    if d1 and d2:
        (p1, s1), (p2, s2) = ((int(m.group(1)), int(m.group(2))) for m in (d1, d2))
        return p2 - s2 >= p1 - s1 and s2 >= s1
    return False


class DeliveryOps:
    """Mixed into :class:`dfsync.store._duckdb.Store` (which supplies ``_connect``/``_transaction``)."""

    # ------------------------------------------------------------------ delivered state
    def delivered(self, sync_id: int, key: Sequence[str]) -> pa.RecordBatchReader | None:
        """Key columns and ``_fp`` of every delivered row, as a stream of Arrow batches (None: nothing yet).

        DuckDB holds the file only while a connection is open, so the rows are read in one go
        and handed out batch by batch (another store streams them from the server).
        """
        with self._connect() as con:
            if not self._has_table(con, state_table(sync_id)):
                return None
            cols = ", ".join(quote(k) for k in key)
            tbl = con.sql(f"SELECT {cols}, _fp FROM {state_table(sync_id)} WHERE _ok").to_arrow_table()
        return pa.RecordBatchReader.from_batches(tbl.schema, tbl.to_batches())

    def delivered_count(self, sync_id: int) -> int:
        with self._connect() as con:
            if not self._has_table(con, state_table(sync_id)):
                return 0
            return con.execute(f"SELECT count(*) FROM {state_table(sync_id)} WHERE _ok").fetchall()[0][0]

    def has_delivered(self, sync_id: int) -> bool:
        """Has the destination confirmed any row of this sync (cheaper than counting them)?"""
        with self._connect() as con:
            st = state_table(sync_id)
            return bool(self._has_table(con, st) and con.execute(
                f"SELECT EXISTS (SELECT 1 FROM {st} WHERE _ok)").fetchall()[0][0])

    def run_delivered(self, sync_id: int, run_id: int, key: Sequence[str],
                      except_batches: Sequence[int] = ()) -> pa.Table | None:
        """Key, ``_fp``, ``_action`` and ``_batch`` of the rows of ``run_id`` confirmed delivered,
        leaving out ``except_batches`` (None: the sync has no delivered state)."""
        cols = ", ".join(quote(k) for k in key)
        not_in = f"AND _batch NOT IN ({', '.join(str(int(b)) for b in except_batches)})" if except_batches else ""
        with self._connect() as con:
            if not self._has_table(con, state_table(sync_id)):
                return None
            return con.sql(f"SELECT {cols}, _fp, {_ACTION} AS _action, _batch FROM {state_table(sync_id)} "
                           f"WHERE _run = {int(run_id)} AND _ok {not_in}").to_arrow_table()

    def ensure_state_table(self, sync_id: int, key_types: dict[str, str]) -> None:
        """Create the sync's delivered-state table (key columns of the staged DuckDB types) if missing,
        else widen a key column whose staged type grew (:func:`wider_key_type`): an int32 key now
        int64 beyond int32's range failed the write-ahead with a raw conversion error."""
        st = state_table(sync_id)
        with self._connect() as con:
            if not self._has_table(con, st):
                for stmt in self._state_table_ddl(st, key_types):
                    con.execute(stmt)
                self._share_table(con, st)
                return
            have = {r[0]: r[1] for r in con.execute(f"DESCRIBE {st}").fetchall()}
            for k, t in key_types.items():
                if k in have and wider_key_type(have[k], t):
                    con.execute(f"ALTER TABLE {st} ALTER COLUMN {quote(k)} SET DATA TYPE {t}")

    def _share_table(self, con: Any, table: str) -> None:
        """A per-sync table was just created (the PostgreSQL store hands it to the workspace's roles)."""

    @staticmethod
    def _state_table_ddl(st: str, key_types: dict[str, str]) -> list[str]:
        """The statements creating a state table (the PostgreSQL store maps the types, adds indexes)."""
        cols = ", ".join(f"{quote(k)} {t}" for k, t in key_types.items())
        return [f"CREATE TABLE {st} ({cols}, {_STATE_COLUMNS})"]

    # ------------------------------------------------------------------ batches
    def next_batch_no(self, run_id: int) -> int:
        with self._connect() as con:
            return con.execute("SELECT coalesce(max(batch_no), 0) FROM batches WHERE run_id = ?",
                               [run_id]).fetchall()[0][0] + 1

    def write_ahead(self, sync_id: int, run_id: int, batch_no: int, rows: pa.Table, key: Sequence[str],
                    action_column: str, alone: bool = False) -> None:
        """Before a batch is sent: its keys, fingerprints and actions, not yet confirmed, and the batch in flight.

        ``alone``: the run's only batch (a fused first load). Inserts into a state without rows go to
        a table of their own (``ahead_<sync>``), already ``_ok``: its confirmation renames that table
        to the state instead of rewriting ``_ok`` row by row (10M rows: ~0.4 CPU-s, and the column
        rewritten at checkpoint); its discard drops it. Nothing reads it before."""
        st = state_table(sync_id)
        cols = ", ".join(quote(k) for k in key)
        inserts_only = distinct_values(rows.column(action_column)) <= {"insert", None}  # nulls count as inserts
        action = "NULL" if inserts_only else f"nullif({action_column}, 'insert')"  # see _ACTION
        with self._transaction() as con:
            into, ok = st, "FALSE"
            if alone and inserts_only and not con.execute(f"SELECT EXISTS (SELECT 1 FROM {st})").fetchall()[0][0]:
                into, ok = ahead_table(sync_id), "TRUE"
                con.execute(f"DROP TABLE IF EXISTS {into}")  # left by a batch settled without it: never confirmed
                types = {r[0]: r[1] for r in con.execute(f"DESCRIBE {st}").fetchall()}
                for stmt in self._state_table_ddl(into, {k: types[k] for k in key}):
                    con.execute(stmt)
            con.register("_log", rows.select([*key, "_fp"] + ([] if inserts_only else [action_column])))
            con.execute(f"INSERT INTO {into} SELECT {cols}, _fp, {int(run_id)}, {int(batch_no)}, "
                        f"{action}, {ok} FROM _log")
            con.unregister("_log")
            con.execute("INSERT INTO batches VALUES (?, ?, 'inflight', ?, 0, now(), NULL)",
                        [run_id, batch_no, rows.num_rows])

    def confirm_batch(self, sync_id: int, run_id: int, batch_no: int, key: Sequence[str],
                      not_delivered: list[list[Any]], keep_superseded: bool, counters: dict[str, int],
                      cursor_max: Any = None, records: pa.Table | None = None) -> None:
        """The destination applied (run_id, batch_no): in ONE transaction, the state, the batch's
        status, the run's counters, its ``cursor_max`` (a JSON value, None: unchanged) and its records."""
        with self._transaction() as con:
            self._confirm(con, sync_id, run_id, batch_no, key, not_delivered, keep_superseded)
            self._add_counters(con, run_id, counters)
            if cursor_max is not None:
                con.execute("UPDATE runs SET cursor_max = ? WHERE id = ?", [json.dumps(cursor_max), run_id])
            if records is not None:
                self._store_records(con, sync_id, run_id, records)

    def settle_inflight(self, sync_id: int, run_id: int, batches: Sequence[int], committed: dict[int, list[list[Any]]],
                        key: Sequence[str], keep_superseded: bool) -> None:
        """Batches a dead process left in flight, as the destination's ledger tells (one transaction):
        those in ``committed`` (batch -> keys not delivered) are confirmed and counted, the rest discarded."""
        with self._transaction() as con:
            for b in batches:
                if b in committed:
                    nd = committed[b]
                    self._confirm(con, sync_id, run_id, b, key, nd, keep_superseded)
                    rows = con.execute("SELECT rows FROM batches WHERE run_id = ? AND batch_no = ?",
                                       [run_id, b]).fetchall()[0][0]
                    self._add_counters(con, run_id, dict(sent=rows, succeeded=rows - len(nd), failed=len(nd),
                                                         batches=1))
                else:
                    self._discard(con, sync_id, run_id, b)

    def discard(self, sync_id: int, run_id: int, batch_no: int | None = None) -> None:
        """Forget a batch (or, without ``batch_no``, every batch of the run: what it superseded is current
        again, and none of its rows counts as succeeded: ``sent = succeeded + failed + skipped`` still holds,
        the rows the destination rejected or skipped staying counted as sent)."""
        with self._transaction() as con:
            self._discard(con, sync_id, run_id, batch_no)
            if batch_no is None:
                con.execute("UPDATE runs SET sent = sent - succeeded, succeeded = 0 WHERE id = ?", [run_id])

    def restart_transfer(self, sync_id: int, run_id: int) -> None:
        """A run whose transfer starts over (a resumed ``replace`` run that lost its staged rows
        abandoned its batches and rewrites the table from the start): what the abandoned batches
        sent is no longer counted, and their records go (the rows are sent and recorded again)."""
        with self._transaction() as con:
            rt = rec_table(sync_id)
            if self._has_table(con, rt):
                con.execute(f"DELETE FROM {rt} WHERE _run_id = ?", [run_id])
            con.execute("UPDATE runs SET sent = 0, succeeded = 0, failed = 0, skipped = 0, batches = 0 "
                        "WHERE id = ?", [run_id])

    def failed_unapplied_runs(self, sync_id: int) -> list[int]:
        """Failed runs of the sync with batches not discarded, unless known applied or failed at the end
        for too many rejected rows (those were applied)."""
        with self._connect() as con:
            return [r[0] for r in con.execute(
                "SELECT DISTINCT b.run_id FROM batches b JOIN runs r ON r.id = b.run_id WHERE r.sync_id = ? "
                "AND r.status = 'failed' AND coalesce(r.error_kind, '') NOT IN ('too_many_failed_rows', 'applied') "
                "AND b.status <> 'discarded' ORDER BY 1", [sync_id]).fetchall()]

    def keep_applied_run(self, sync_id: int, run_id: int, replace: bool) -> None:
        """A failed run the destination had applied: its batches stay delivered (what it superseded goes;
        ``replace``: every other run's rows go) and it is marked ``applied``."""
        with self._transaction() as con:
            st = state_table(sync_id)
            if self._has_table(con, st):
                if replace:
                    con.execute(f"DELETE FROM {st} WHERE _run <> ?", [run_id])
                con.execute(f"DELETE FROM {st} WHERE _ok IS NULL")
            con.execute("UPDATE runs SET error_kind = 'applied' WHERE id = ?", [run_id])

    def _confirm(self, con: Any, sync_id: int, run_id: int, batch_no: int, key: Sequence[str],
                 not_delivered: list[list[Any]], keep_superseded: bool = False) -> None:
        """Inside a transaction: the destination confirmed (run_id, batch_no).

        ``keep_superseded`` (destinations that apply a run only at its end): the previous
        versions of updated/deleted keys are set aside (``_ok`` NULL) rather than deleted, so
        discarding the run restores them; the run's end (:meth:`finish_run`) forgets them.
        """
        st = state_table(sync_id)
        this = f"_run = {int(run_id)} AND _batch = {int(batch_no)}"
        alone = self._ahead_of(con, sync_id, run_id, batch_no)
        if not_delivered:
            keys = pa.table({k: [row[i] for row in not_delivered] for i, k in enumerate(key)})
            con.register("_nd", keys)
            con.execute(f"DELETE FROM {ahead_table(sync_id) if alone else st} s USING _nd n "
                        f"WHERE s.{this.replace(' AND ', ' AND s.')} AND {key_match('s', 'n', key)}")
            con.unregister("_nd")
        if alone:  # written ahead on its own, already _ok (inserts only): it becomes the state
            if con.execute(f"SELECT EXISTS (SELECT 1 FROM {st})").fetchall()[0][0]:
                con.execute(f"INSERT INTO {st} SELECT * FROM {ahead_table(sync_id)}")
                con.execute(f"DROP TABLE {ahead_table(sync_id)}")
            else:
                con.execute(f"DROP TABLE {st}")
                con.execute(f"ALTER TABLE {ahead_table(sync_id)} RENAME TO {st}")
        has_changes = 0 if alone else con.execute(
            f"SELECT count(*) FROM {st} WHERE {this} AND _action IN ('update','delete')").fetchall()[0][0]
        if has_changes:
            _room_for_scattered_writes(con, st)
            prev = "UPDATE {st} s SET _ok = NULL FROM" if keep_superseded else "DELETE FROM {st} s USING"
            con.execute(
                f"{prev.format(st=st)} (SELECT {', '.join(quote(k) for k in key)} FROM {st} "
                f"WHERE {this} AND _action IN ('update','delete')) n "
                f"WHERE s._ok AND {key_match('s', 'n', key)}")
            con.execute(f"DELETE FROM {st} WHERE {this} AND _action = 'delete'")
        if not alone:
            con.execute(f"UPDATE {st} SET _ok = TRUE WHERE {this}")
        con.execute(
            "UPDATE batches SET status = 'committed', committed_at = now(), failed = ? WHERE run_id = ? AND batch_no = ?",
            [len(not_delivered), run_id, batch_no])

    def _ahead_of(self, con: Any, sync_id: int, run_id: int, batch_no: int | None) -> bool:
        """Is (run_id, batch_no) (None: any batch of the run) the batch written ahead on its own?"""
        at = ahead_table(sync_id)
        return self._has_table(con, at) and con.execute(
            f"SELECT EXISTS (SELECT 1 FROM {at} WHERE _run = ?{' AND _batch = ?' if batch_no is not None else ''})",
            [run_id] + ([batch_no] if batch_no is not None else [])).fetchall()[0][0]

    def _discard(self, con: Any, sync_id: int, run_id: int, batch_no: int | None = None) -> None:
        st = state_table(sync_id)
        where = f"_run = {int(run_id)}" + (f" AND _batch = {int(batch_no)}" if batch_no is not None else "")
        if self._ahead_of(con, sync_id, run_id, batch_no):
            con.execute(f"DROP TABLE {ahead_table(sync_id)}")
        if self._has_table(con, st):
            _room_for_scattered_writes(con, st)
            con.execute(f"DELETE FROM {st} WHERE {where}")
            if batch_no is None:  # the whole run is undone: what it superseded is current again
                con.execute(f"UPDATE {st} SET _ok = TRUE WHERE _ok IS NULL")
        bw = "run_id = ?" + (" AND batch_no = ?" if batch_no is not None else "")
        con.execute(f"UPDATE batches SET status = 'discarded' WHERE {bw} AND status <> 'discarded'",
                    [run_id] + ([batch_no] if batch_no is not None else []))

    # ------------------------------------------------------------------ records and checks
    def store_records(self, sync_id: int, run_id: int, records: pa.Table) -> None:
        """Keep records of a run in ``rec_<sync>`` (columns added or widened as the records need)."""
        with self._transaction() as con:
            self._store_records(con, sync_id, run_id, records)

    def _store_records(self, con: Any, sync_id: int, run_id: int, recs: pa.Table) -> None:
        rt = rec_table(sync_id)
        recs = recs.append_column("_run_id", int_array(np.full(recs.num_rows, run_id)))
        con.register("_recs", recs)
        try:
            if not self._has_table(con, rt):
                con.execute(f"CREATE TABLE {rt} AS SELECT * FROM _recs LIMIT 0")
            have = {r[0]: r[1] for r in con.execute(f"DESCRIBE {rt}").fetchall()}
            folded = {n.lower(): n for n in have}
            for name, typ, *_ in con.execute("DESCRIBE SELECT * FROM _recs").fetchall():
                old = folded.get(name.lower(), name)
                if old != name:  # renamed only in case (a state reset let it through): one column here, its new name
                    con.execute(f"ALTER TABLE {rt} RENAME COLUMN {quote(old)} TO {quote(name)}")
                    have[name] = have.pop(old)
                if name not in have:
                    con.execute(f"ALTER TABLE {rt} ADD COLUMN {quote(name)} {typ}")
                elif have[name] != typ:  # the column's type changed (a widening, a replace run, a new mapping)
                    wider = _common_type(have[name], typ)
                    if wider != have[name]:  # the records' type holds the stored values: widen to it
                        con.execute(f"ALTER TABLE {rt} ALTER COLUMN {quote(name)} SET DATA TYPE "
                                    f"{wider if wider == typ else 'VARCHAR'}")
            con.execute(f"INSERT INTO {rt} BY NAME SELECT * FROM _recs")
        finally:
            with contextlib.suppress(Exception):  # an aborted transaction must not hide the error that aborted it
                con.unregister("_recs")

    @staticmethod
    def _all_but(con: Any, table: str, exclude: Sequence[str], alias: str = "") -> str:
        """Every column of ``table`` except ``exclude``, as a select list (the PostgreSQL store lists them)."""
        return f"{alias + '.' if alias else ''}* EXCLUDE ({', '.join(exclude)})"

    def records(self, sync_id: int, run_id: int, status: str | None = None, limit: int | None = None) -> pa.Table | None:
        """The kept records of a run (without ``_run_id``), oldest batch first; None: the sync kept none."""
        rt = rec_table(sync_id)
        with self._connect() as con:
            if not self._has_table(con, rt):
                return None
            where = "_run_id = ?" + (" AND _status = ?" if status else "")
            lim = f"LIMIT {int(limit)}" if limit else ""
            return con.sql(f"SELECT {self._all_but(con, rt, ['_run_id'])} FROM {rt} WHERE {where} "
                           f"ORDER BY _batch NULLS FIRST, rowid {lim}",
                           params=[run_id] + ([status] if status else [])).to_arrow_table()

    def retry_rows(self, sync_id: int, key: Sequence[str],
                   meta_columns: Sequence[str]) -> tuple[pa.Table | None, pa.Table | None]:
        """(rows to send again: the latest kept version of each failed key, and of rows a run that did
        not fail found invalid, without ``meta_columns``; the distinct failed keys). (None, None): no records.

        A key the source held more than once (quarantined ``primary_key unique``) comes back with every
        version its latest run kept: one of them alone would pass as a settled row and be delivered,
        though the source still holds both."""
        rt = rec_table(sync_id)
        cols = ", ".join(quote(k) for k in key)
        with self._connect() as con:
            if not self._has_table(con, rt):
                return None, None
            keys = con.sql(f"SELECT DISTINCT {cols} FROM {rt} WHERE _status = 'failed'").to_arrow_table()
            rows = con.sql(
                f"SELECT {self._all_but(con, rt, [*meta_columns, '_dfsync_n', '_dfsync_last'], 'r')} FROM ("
                f"SELECT *, row_number() OVER (PARTITION BY {cols} ORDER BY _run_id DESC) AS _dfsync_n, "
                f"max(_run_id) OVER (PARTITION BY {cols}) AS _dfsync_last FROM {rt} "
                f"WHERE (_status = 'failed' OR "
                # rows a failed run found invalid were never let through: the next read brings them
                f"_status = 'invalid' AND _run_id IN (SELECT id FROM runs WHERE status <> 'failed')) "
                f"AND NOT ({' OR '.join(f'{quote(k)} IS NULL' for k in key)})) r "
                f"WHERE r._dfsync_n = 1 OR (r._run_id = r._dfsync_last AND r._status = 'invalid' "
                f"AND list_contains(r._checks, 'primary_key unique')) "
                f"ORDER BY {', '.join(f'r.{quote(k)}' for k in key)}").to_arrow_table()
        return rows, keys

    def skipped_versions(self, sync_id: int, key: Sequence[str], definition_version: int) -> pa.Table | None:
        """Key columns and ``_fp`` of the rows whose latest record (a run of this definition version,
        since the last ``sync.reset()``) says the destination mode skipped them, unless a later run
        delivered the key. None: no records."""
        rt, st = rec_table(sync_id), state_table(sync_id)
        cols = ", ".join(quote(k) for k in key)
        with self._connect() as con:
            if not self._has_table(con, rt):
                return None
            later = (f"AND NOT EXISTS (SELECT 1 FROM {st} s WHERE s._ok AND s._run > r._run_id "
                     f"AND {key_match('s', 'r', key)})") if self._has_table(con, st) else ""
            return con.sql(
                f"SELECT {', '.join(f'r.{quote(k)}' for k in key)}, r._fingerprint AS _fp FROM ("
                f"SELECT DISTINCT ON ({cols}) {cols}, _fingerprint, _status, _run_id FROM {rt} "
                f"WHERE _run_id IN (SELECT id FROM runs WHERE sync_id = ? AND definition_version = ?) "
                f"AND _run_id > coalesce((SELECT max(e.run_id) FROM events e WHERE e.sync_id = ? AND e.id < "
                f"(SELECT max(id) FROM events WHERE sync_id = ? AND kind = 'reset')), 0) "
                f"AND NOT ({' OR '.join(f'{quote(k)} IS NULL' for k in key)}) "
                f"ORDER BY {cols}, _run_id DESC, _batch DESC NULLS LAST) r "
                f"WHERE r._status = 'skipped' AND r._fingerprint IS NOT NULL {later}",
                params=[sync_id, definition_version, sync_id, sync_id]).to_arrow_table()

    def store_checks(self, run_id: int, results: list[dict[str, Any]],
                     proofs: dict[str, dict[str, Any]] | None = None) -> None:
        """A run's check results, replacing any it stored before; ``proofs``: by check name, the
        digest of the hashes a uniqueness check proved distinct (``Evaluation.proofs``). A digest
        of a sensitive column's 64-bit hashes reveals nothing practical about its values (it can
        only confirm a guess of every value of the column, in order)."""
        proofs = proofs or {}
        with self._transaction() as con:
            con.execute("DELETE FROM checks WHERE run_id = ?", [run_id])
            for r in results:
                proof = proofs.get(str(r.get("check_name")))
                con.execute(
                    "INSERT INTO checks (run_id, check_name, kind, column_name, level, success, element_count, "
                    "unexpected_count, unexpected_percent, partial_unexpected_list, result, scope, proof) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    [run_id, r.get("check_name"), r.get("kind"), r.get("column_name"), r.get("level"),
                     bool(r.get("success")), r.get("element_count"), r.get("unexpected_count"),
                     r.get("unexpected_percent"), json.dumps(r.get("partial_unexpected_list"), default=str),
                     json.dumps(r.get("result"), default=str), r.get("scope"),
                     json.dumps(proof) if proof else None])

    def check_proofs(self, sync_id: int) -> dict[str, dict[str, Any]]:
        """By check name, the last proof each uniqueness check of the sync's current definition
        stored (``{"sha256", "values", "run_id"}``): plain data for the next evaluation. Runs of
        any status count: a proof says only that a sequence of hashes was distinct."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT DISTINCT ON (c.check_name) c.check_name, CAST(c.proof AS VARCHAR), c.run_id "
                "FROM checks c JOIN runs r ON r.id = c.run_id JOIN syncs s ON s.id = r.sync_id "
                "WHERE r.sync_id = ? AND r.definition_version = s.definition_version AND c.proof IS NOT NULL "
                "ORDER BY c.check_name, c.run_id DESC", [sync_id]).fetchall()
        out = {}
        for name, proof, run_id in rows:
            p = json.loads(proof)
            out[name] = {"sha256": p.get("sha256"), "values": p.get("values"), "run_id": run_id}
        return out

    def copy_checks(self, run_id: int, from_run: int) -> None:
        """A run reuses the check results of ``from_run`` (same files, same checks)."""
        with self._transaction() as con:
            con.execute("DELETE FROM checks WHERE run_id = ?", [run_id])
            con.execute("INSERT INTO checks BY NAME SELECT * REPLACE (? AS run_id) FROM checks WHERE run_id = ?",
                        [run_id, from_run])

    def last_checked_run(self, sync_id: int, run_id: int, definition_version: int) -> int | None:
        """The latest successful run (other than ``run_id``) of this definition with check results."""
        with self._connect() as con:
            return con.execute(
                "SELECT max(r.id) FROM runs r WHERE r.sync_id = ? AND r.status = 'success' AND r.id <> ? "
                "AND r.definition_version = ? AND EXISTS (SELECT 1 FROM checks c WHERE c.run_id = r.id)",
                [sync_id, run_id, definition_version]).fetchall()[0][0]

    def requeried(self, run_id: int) -> bool:
        """Did this run go through ``querying`` more than once (in any process)?"""
        with self._connect() as con:
            return con.execute("SELECT count(*) > 1 FROM events WHERE run_id = ? AND kind = 'run' "
                               "AND to_status = 'querying'", [run_id]).fetchall()[0][0]

    # ------------------------------------------------------------------ the end of a run
    def transfer_done(self, sync_id: int, key: Sequence[str]) -> None:
        """Nothing to prepare in a DuckDB file (its state has no index to build)."""

    def finish_run(self, sync_id: int, run_id: int, key: Sequence[str], *, replace: bool, fp_algo: str,
                   source_snapshot: str | None, merge_cursor: CursorMerge | None, problem: str | None) -> None:
        """A run's end, in one transaction: the versions it superseded are gone (``replace``: every
        other run's rows), records it delivered again are forgotten, old succeeded records trimmed,
        the cursor advanced (``merge_cursor``: incremental syncs), then success (or failed with
        ``problem``)."""
        st, rt = state_table(sync_id), rec_table(sync_id)
        with self._transaction() as con:
            if replace and self._has_table(con, st):
                _room_for_scattered_writes(con, st)
                con.execute(f"DELETE FROM {st} WHERE _run <> ?", [run_id])
            if self._has_table(con, st):  # the run is applied: the versions it superseded are gone
                self._drop_set_aside(con, sync_id, st, key)
            if self._has_table(con, rt) and self._has_table(con, st):
                con.execute(
                    f"DELETE FROM {rt} r USING {st} s WHERE s._run = ? AND s._ok AND r._run_id <> ? "
                    f"AND r._status IN ('failed','invalid','skipped') AND {key_match('r', 's', key)}",
                    [run_id, run_id])
                con.execute(
                    f"DELETE FROM {rt} WHERE _status = 'succeeded' AND _run_id NOT IN "
                    f"(SELECT id FROM runs WHERE sync_id = ? ORDER BY id DESC LIMIT 20)", [sync_id])
            self._save_cursor(con, sync_id, run_id, merge_cursor)
            con.execute("UPDATE syncs SET fp_algo = ?, source_snapshot = ? WHERE id = ?",
                        [fp_algo, source_snapshot, sync_id])
            if problem:
                self.transition_run(run_id, RunStatus.FAILED, problem, error=problem,
                                    error_kind="too_many_failed_rows", con=con)
            else:
                self.transition_run(run_id, RunStatus.SUCCESS, "all pending rows handled", con=con)

    def _drop_set_aside(self, con: Any, sync_id: int, st: str, key: Sequence[str]) -> None:
        """The versions set aside (``_ok`` NULL, never read as delivered) are deleted."""
        _room_for_scattered_writes(con, st)
        con.execute(f"DELETE FROM {st} WHERE _ok IS NULL")

    def fail_run(self, sync_id: int, run_id: int, error: str, kind: str, detail: str,
                 merge_cursor: CursorMerge | None) -> None:
        """A run fails, in one transaction with the cursor its confirmed batches reached (incremental)."""
        with self._transaction() as con:
            self._save_cursor(con, sync_id, run_id, merge_cursor)
            self.transition_run(run_id, RunStatus.FAILED, detail, error=error, error_kind=kind, con=con)

    def _save_cursor(self, con: Any, sync_id: int, run_id: int, merge: CursorMerge | None) -> None:
        if merge is None:
            return
        run_cursor = first(con.execute("SELECT cursor_max FROM runs WHERE id = ?", [run_id]))[0]
        old = first(con.execute("SELECT cursor_value FROM syncs WHERE id = ?", [sync_id]))[0]
        new = merge(json.loads(old) if old else None, json.loads(run_cursor) if run_cursor else None)
        con.execute("UPDATE syncs SET cursor_value = ? WHERE id = ?", [json.dumps(new), sync_id])


#: memory DuckDB needs while a transaction deletes or updates rows spread over a table: version
#: information for every 2,048-row vector it touches, about 8 bytes a row of the table (measured:
#: 1% of a 2M-row state deleted needs 16-24 MB, of 50M rows more than the 256 MB default)
_SCATTERED_BYTES_PER_ROW = 16


def _room_for_scattered_writes(con: Any, table: str) -> None:
    """Raise the workspace's memory limit (never lower it) so that deleting or updating keys
    spread over a large delivered state cannot fail a run with DuckDB's "Out of Memory": the
    limit caps what the workspace's pages may hold, and these statements need room in
    proportion to the table's rows, not to the rows they change."""
    import duckdb

    if not isinstance(con, duckdb.DuckDBPyConnection):  # a PostgreSQL workspace has no such limit
        return
    from . import _host
    rows = first(con.execute("SELECT estimated_size FROM duckdb_tables() WHERE table_name = ? AND schema_name = "
                             "current_schema() AND database_name = current_database()", [table]))
    _host.need(con, int((rows[0] if rows else 0) or 0) * _SCATTERED_BYTES_PER_ROW + 64 * 2**20)


def _common_type(a: str, b: str) -> str:
    """The DuckDB type both ``a`` and ``b`` values fit, VARCHAR when they have none (text and a
    number). Asked on a connection of its own: a failed probe would abort the caller's transaction."""
    import duckdb

    with duckdb.connect() as probe:
        try:
            return probe.execute(f"SELECT typeof([NULL::{a}, NULL::{b}][1])").fetchall()[0][0]
        except duckdb.Error:
            return "VARCHAR"
