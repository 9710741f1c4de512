"""The SyncRecord staging table: rows in, fingerprints, diff, Arrow batches out.

Staging lives in a private in-memory DuckDB database that spills to a temp directory
(PERF.md: a file-backed copy would cost as much as the destination write). It holds:

    stg       every staged row: mapped record columns, _fp (fingerprint), _action
              (insert / update / delete / unchanged); the row id is stg.rowid (_rid)
    dlv       the delivered state (key columns + _fp) copied in from the workspace
    invalid   (_rid, check_name): rows quarantined by key checks or validation
    outcomes  (_rid, _status, _batch, _error): what happened to each row sent so far

Exactness across a hard kill does not depend on staging surviving: the workspace keeps
the delivered state per batch, and a resumed run re-diffs the source against it.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa

from ._arrow import int64_copy, int_array
from ._dense_diff import DenseState, stage_changed
from ._ident import quote
from ._paths import private_dir, staging_temp_dir
from ._sensitive import key_text
from ._settings import memory_bytes, setting
from ._stage_input import (
    half_memory,
    load_state,
    open_source,
)
from ._stage_retry import keep_retry_keys, retried_count, stage_retry
from ._words import plural
from .errors import DfsyncError, InvalidRecordsError, SourceError
from .mapping import Mapping
from .sources.base import CursorFilter, Source
from .states import DestinationMode

FP_ALGO = f"duckdb-hash/{duckdb.__version__}"
#: staged rows kept in memory before spilling to disk. 1GB keeps a 10M-row first load at about
#: 1.5 GB peak RSS (2GB: 2.05 GB, above dlt's 1.7 GB on the same PostgreSQL job), for about the
#: same speed into DuckDB and 10-15% more time into PostgreSQL (bench/RESULTS_dlt.md, fourth
#: session); DFSYNC_STAGING_MEMORY=2GB trades the memory back for that time (default in dfsync/_settings.py)
ACTIONS = ("insert", "update", "delete", "unchanged")
#: stg._action's type: one byte a row instead of a 16-byte string. A 10M-row first load spills
#: ~150 MB less past the memory cap (bench/RESULTS.md, issue 22); read out as VARCHAR.
ACTION_TYPE = f"ENUM({', '.join(repr(a) for a in ACTIONS)})"


@dataclass
class StageResult:
    counts: dict[str, int] = field(default_factory=dict)
    queried: int = 0
    invalid: int = 0
    key_problems: list[str] = field(default_factory=list)


class Staging:
    """One run's staging database."""

    def __init__(self, temp_dir: str | None = None, memory_limit: str | None = None) -> None:
        # spilled rows are customer data: their directory is readable by its owner only (0700)
        # without one given, a directory of its own in the system's temp directory, removed by close()
        self.temp_dir = private_dir(temp_dir) if temp_dir else staging_temp_dir()
        self._own_dir = not temp_dir
        # Staged rows live in memory and spill to temp_dir past the limit, so a sync of any size
        # streams with bounded memory (DFSYNC_STAGING_MEMORY overrides, e.g. "8GB").
        self.memory_limit = memory_limit or setting("staging_memory")
        config = {"temp_directory": self.temp_dir, "preserve_insertion_order": "false",
                  "memory_limit": self.memory_limit}
        self.con = duckdb.connect(":memory:", config=config)
        limit = memory_bytes(self.memory_limit)  # the delivered state up to half of it is scanned as Arrow
        self.state_bytes = None if limit is None else limit // 2
        self.columns: list[str] = []
        self.key: list[str] = []
        self.loaded = False
        self.joined = False
        self._pending: list[tuple[np.ndarray, str, int, str | None]] = []  # outcomes not yet in the table
        self.read_counts: dict[str, int] = dict.fromkeys(ACTIONS, 0)  # rows per action as read and diffed
        self.changed_only = False  # the last load kept only changed rows (unchanged ones were counted)
        self.src_rescannable = False
        self.dataset_rids = True  # the dataset view's _rid identifies rows (see dataset_view)
        self.keep_columns: set[str] = set()  # columns kept for unchanged rows too (dataset-level checks)
        self.key_distinct = False  # the last load found no null or repeated key among every row it read
        self._snapshot = None

    def for_transfer(self) -> None:
        """Halve the memory cap for the transfer when the staged rows did not fit anyway.

        The transfer only scans ``stg`` in order, while the destination and the workspace
        need memory of their own. Rows that fit in memory stay there (halving would spill
        them only to read them back); rows that already spilled lose little, and the whole
        process stays within about the staging cap however large the run.
        """
        spilled = self.con.execute("SELECT coalesce(sum(size), 0) FROM duckdb_temporary_files()").fetchall()[0][0]
        if spilled:
            self.con.execute(f"SET memory_limit = '{half_memory(self.memory_limit)}'")

    def close(self) -> None:
        with contextlib.suppress(duckdb.Error):
            self.con.close()
        if self._own_dir:  # a directory given (a run's) is its runner's to keep for a resume or remove
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    # ------------------------------------------------------------------ load
    def load(
        self,
        source: Source,
        mapping: Mapping,
        key: Sequence[str],
        *,
        cursor: CursorFilter | None,
        detect_deletes: bool,
        state: pa.RecordBatchReader | pa.Table | None,
        force: bool = False,
        retry: pa.Table | None = None,
        retry_keys: pa.Table | None = None,
        quarantine_keys: bool = False,
        keep_unchanged: bool = False,
        keep_columns: Sequence[str] = (),
    ) -> StageResult:
        """Read the source once, fingerprint every row and diff it with the delivered state.

        Two ways, one result. The *changed-only* diff (a full-refresh re-sync of a source
        whose row count comes free with the read) keeps just the inserts, updates and
        deletes; unchanged rows are only counted, and duplicate keys among them are caught
        by counting: every source row that matched a delivered key must match a different
        one. The *full* diff keeps a key-and-fingerprint row for every source row; it runs
        for first runs, replace mode and previews, incremental reads, or when the counts say
        a key repeats (the source is then read again to name the offending values).
        """
        problem = mapping.reorder_error()  # a definition stored before create_sync refused it
        if problem is not None:
            raise problem
        con = self.con
        self.key = list(key)
        self._reopen = (source, mapping, cursor)  # dataset_view() reads the source again after a changed-only diff
        self.changed_only = False
        self.keep_columns = set(keep_columns)
        counter = self._open_source(source, mapping, cursor)
        delivered = self._load_state(state)  # 0: nothing delivered yet, no join needed
        fast = (delivered > 0 and detect_deletes and not keep_unchanged and not force
                and (retry is None or retry.num_rows == 0) and counter is not None)
        counts: dict[str, int] | None = None
        if fast:
            assert counter is not None
            counts = self._stage_changed(source, counter, delivered)
            self.changed_only = counts is not None
            if counts is None:  # a key repeats (or the files changed while read): the full diff says which
                self._open_source(source, mapping, cursor)
        if counts is None:
            self._stage_full(source, delivered > 0, detect_deletes, force, keep_unchanged)
        if self.counted is not None:
            self.counted.refuse_lossy()
        con.execute("CREATE OR REPLACE TABLE invalid (_rid BIGINT, check_name VARCHAR)")
        con.execute("CREATE OR REPLACE TABLE outcomes (_rid BIGINT, _status VARCHAR, _batch INTEGER, _error VARCHAR)")

        result = StageResult()
        if retry is not None and retry.num_rows:
            stage_retry(con, self.columns, self.key, retry, self._fp_sql)
            counts = None
        keep_retry_keys(con, self.key, retry_keys)  # retried: those of them sent (dfsync._stage_retry)
        # only new keys can be null or repeat once the changed-only diff has checked the matched ones
        self._check_keys(result, only_inserts=counts is not None)
        if result.key_problems and counts is None and self.joined and not keep_unchanged:
            self._fill_dropped_values()
        if counts is None:
            counts = dict.fromkeys(ACTIONS, 0)
            counts.update(dict(con.execute("SELECT _action, count(*) FROM stg GROUP BY ALL").fetchall()))
        result.queried = counts["insert"] + counts["update"] + counts["unchanged"]
        self.read_counts = dict(counts)
        result.counts = self.valid_counts()
        result.invalid = result.counts["invalid"]
        self.key_distinct = not result.key_problems
        self.loaded = True
        if result.key_problems and not quarantine_keys:
            err = InvalidRecordsError(
                "the source has rows that cannot be synced: " + "; ".join(result.key_problems)
                + ". Fix them in the source, choose another primary_key, or create the sync with "
                "on_invalid='skip' to quarantine them and send the rest. Nothing was sent; the offending "
                "rows are kept as run.records(status='invalid')."
            )
            err.stage_result = result  # type: ignore[attr-defined]  # the runner records counters and rows
            raise err
        return result

    def valid_counts(self) -> dict[str, int]:
        """Rows per action that are still to be handled, plus ``invalid``: the quarantined rows
        taken out of the action they had, so ``insert + update + unchanged + invalid`` is
        every row read, whatever the checks quarantined."""
        counts = dict(self.read_counts)
        per = self.con.execute(
            "SELECT s._action, count(*) FROM stg s SEMI JOIN invalid i ON s.rowid = i._rid GROUP BY ALL").fetchall()
        for action, n in per:
            counts[action] -= n
        counts["invalid"] = sum(n for _, n in per)
        return counts

    def retried_count(self, mode: DestinationMode) -> int:
        """Staged rows of keys an earlier run's destination rejected that ``mode`` hands to the
        destination, quarantined rows left out (dfsync._stage_retry)."""
        return retried_count(self.con, self.key, mode)

    def load_nothing(self, key: Sequence[str], types: dict[str, str]) -> StageResult:
        """Stage no rows (the source is known unchanged since everything was delivered)."""
        self.key, self.types, self.columns = list(key), dict(types), list(types)
        cols = ", ".join(f"{quote(c)} {t}" for c, t in types.items())
        self.con.execute(f"CREATE OR REPLACE TABLE stg ({cols}, _fp UBIGINT, _action {ACTION_TYPE})")
        self.con.execute("CREATE OR REPLACE TABLE invalid (_rid BIGINT, check_name VARCHAR)")
        self.con.execute("CREATE OR REPLACE TABLE outcomes (_rid BIGINT, _status VARCHAR, _batch INTEGER, _error VARCHAR)")
        self.loaded = self.joined = True
        self.read_counts = dict.fromkeys(ACTIONS, 0)
        return StageResult(counts={**self.read_counts, "invalid": 0})

    def _open_source(self, source: Source, mapping: Mapping, cursor: CursorFilter | None) -> Callable[[], int | None] | None:
        """Make the source the view ``_src`` (mapped columns); return how to count its rows
        (dfsync._stage_input.open_source)."""
        o = open_source(self.con, source, mapping, cursor, self.key)
        self.src_rescannable, self.counted, self._snapshot = o.rescannable, o.counted, o.snapshot
        self.columns, self.types, self._fp_sql = o.columns, o.types, o.fp_sql
        return o.counter

    def _load_state(self, state: pa.RecordBatchReader | pa.Table | None) -> int:
        """The delivered state as ``dlv``; returns its row count."""
        self._dlv, delivered = load_state(self.con, state, self.state_bytes)
        if not delivered:
            key_cols = ", ".join(f"{quote(k)} {self.types[k]}" for k in self.key)
            self.con.execute(f"CREATE OR REPLACE TABLE dlv ({key_cols}, _fp UBIGINT)")
        return delivered

    def _stage_error(self, source: Source, exc: duckdb.Error) -> DfsyncError:
        """What failed while the source was read, fingerprinted and diffed: the key when its type
        is not the delivered state's (the join cannot compare them), else the read itself, with
        the engine's text and the column it names."""
        msg = str(exc).splitlines()[0]
        try:
            delivered = {r[0]: r[1] for r in self.con.execute("DESCRIBE dlv").fetchall()}
        except duckdb.Error:
            delivered = {}
        changed = [f"{k!r} is {self.types[k]} in the source, {delivered[k]} in the delivered state"
                   for k in self.key if k in delivered and k in self.types and delivered[k] != self.types[k]]
        if changed:
            return SourceError(
                f"the source's primary key {list(self.key)} no longer matches the delivered state "
                f"(types changed: {'; '.join(changed)}): {msg}. Cast it back in the mapping, or recreate the "
                f"sync under a new name to start afresh.")
        if "non-equal length" in msg:  # polars: a mapping expression gave other rows than the source's
            source_, mapping, cursor = self._reopen
            try:
                problem = mapping.row_change_error(source_.scan(cursor).head(1000).collect())
            except Exception:  # noqa: BLE001 - the diagnosis only names the field; the read's error stands
                problem = None
            if problem is not None:
                return problem
        named = [c for c in self.columns if re.search(rf"\bcolumn \"?{re.escape(c)}\"?(\W|$)", msg)]
        text = source.read_error(msg) + (f" (column {named[0]!r})" if len(named) == 1 else "")
        return SourceError(text if "nothing was sent" in text else text + "; nothing was sent").quoting_literals(
            msg, self.columns)

    def _stage_changed(self, source: Source, counter: Callable[[], int | None], delivered: int) -> dict[str, int] | None:
        """The changed-only diff; None when the counts show a repeated key (or cannot be trusted).
        A single integer key compares by position in arrays instead of joining (dfsync/_dense_diff.py)."""
        con, fp = self.con, self._fp_sql
        on = " AND ".join(f"s.{quote(k)} = d.{quote(k)}" for k in self.key)
        cols = ", ".join(f"coalesce(s.{quote(c)}, d.{quote(c)}) AS {quote(c)}" if c in self.key
                         else f"s.{quote(c)}" for c in self.columns)
        dense = DenseState.build(self._dlv, self.key, self.types, self.state_bytes)
        try:
            con.execute(  # with a dense key only its types: stage_changed fills it
                f"""CREATE OR REPLACE TABLE stg AS
                SELECT {cols}, coalesce(s._fp, d._fp) AS _fp,
                       CASE WHEN s._present IS NULL THEN 'delete' WHEN d._fp IS NULL THEN 'insert'
                            ELSE 'update' END::{ACTION_TYPE} AS _action
                FROM (SELECT *, {fp} AS _fp, TRUE AS _present FROM _src) s
                FULL JOIN dlv d ON {on}
                WHERE s._fp IS DISTINCT FROM d._fp {'' if dense is None else 'LIMIT 0'}"""
            )
            rows = counter() if dense is not None and self.src_rescannable else None  # Parquet: read twice, narrow first
            staged = None if dense is None else stage_changed(con, dense, self.columns, self.key[0], fp, ACTION_TYPE, rows)
        except (duckdb.Error, pa.ArrowException) as exc:
            raise self._stage_error(source, exc) from exc
        self.joined = True
        if dense is None:
            counts = {**dict.fromkeys(ACTIONS, 0), **dict(con.execute("SELECT _action, count(*) FROM stg GROUP BY ALL").fetchall())}
        elif staged is None:
            return None  # the kept rows are not the ones compared (Arrow, a second read): the full diff joins
        else:
            counts, streamed = staged
        read = counter()
        if read is None or (dense is not None and read != streamed):
            return None
        matched = read - counts["insert"]  # source rows whose key was delivered before
        if matched != delivered - counts["delete"]:  # two source rows share a delivered key
            return None
        counts["unchanged"] = matched - counts["update"]
        return counts

    def _stage_full(self, source: Source, joined: bool, detect_deletes: bool, force: bool,
                    keep_unchanged: bool) -> None:
        con, fp = self.con, self._fp_sql
        key = self.key
        kq = [quote(k) for k in key]
        join = "FULL" if detect_deletes else "LEFT"
        on = " AND ".join(f"s.{k} = d.{k}" for k in kq)
        same = "FALSE" if force else "s._fp = d._fp"
        # Unchanged rows are counted but never sent (except by replace): keeping only their key
        # and fingerprint makes a re-sync cost a read, a hash and a join, not a full copy.
        def value(c: str) -> str:
            if c in key:
                return f"coalesce(s.{quote(c)}, d.{quote(c)}) AS {quote(c)}"
            if keep_unchanged or c in self.keep_columns:
                return f"s.{quote(c)}"
            return f"CASE WHEN d._fp IS NULL OR NOT ({same}) THEN s.{quote(c)} END AS {quote(c)}"

        rec_cols = ", ".join(value(c) for c in self.columns)
        try:
            self.joined = joined
            if not joined:  # first run (or state reset): every row is an insert
                cols_only = ", ".join(quote(c) for c in self.columns)
                con.execute(f"CREATE OR REPLACE TABLE stg AS SELECT {cols_only}, {fp} AS _fp, "
                            f"'insert'::{ACTION_TYPE} AS _action FROM _src")
            else:
                con.execute(
                    f"""CREATE OR REPLACE TABLE stg AS
                    SELECT {rec_cols}, coalesce(s._fp, d._fp) AS _fp,
                           CASE WHEN s._present IS NULL THEN 'delete'
                                WHEN d._fp IS NULL THEN 'insert'
                                WHEN {same} THEN 'unchanged' ELSE 'update' END::{ACTION_TYPE} AS _action
                    FROM (SELECT *, {fp} AS _fp, TRUE AS _present FROM _src) s
                    {join} JOIN dlv d ON {on}"""
                )
        except duckdb.Error as exc:
            raise self._stage_error(source, exc) from exc

    def _check_keys(self, result: StageResult, only_inserts: bool = False) -> None:
        """Null and repeated primary keys: noted in ``result.key_problems``, the rows in ``invalid``."""
        con, key = self.con, self.key
        kq = [quote(k) for k in key]
        null_cond = " OR ".join(f"{k} IS NULL" for k in kq)
        rows = "_action = 'insert'" if only_inserts else "_action <> 'delete'"
        # GROUP BY spills to disk past the memory limit; count(DISTINCT) would not.
        dup_sql = (f"SELECT {', '.join(kq)}, count(*) AS n FROM stg WHERE {rows} AND NOT ({null_cond}) "
                   f"GROUP BY ALL HAVING count(*) > 1")
        nulls, checked = con.execute(
            f"SELECT count(*) FILTER ({null_cond}), count(*) FROM stg WHERE {rows}").fetchall()[0]
        # Many rows on a dense integer key (the usual surrogate id): a perfect hash table of up
        # to 2^24 slots (~150 MB) makes the GROUP BY ~2x faster. For few rows its set-up costs
        # more than it saves (its size follows the key's range in stg, not the rows checked).
        con.execute(f"SET perfect_ht_threshold = {24 if checked >= 1 << 20 else 12}")
        dups = con.execute(f"SELECT count(*), sum(n) FROM ({dup_sql})").fetchall()[0]
        problems = []
        if nulls:
            problems.append(f"{plural(nulls, 'row')} {'has' if nulls == 1 else 'have'} a null primary key ({', '.join(key)})")
        if dups[0]:
            examples = con.execute(f"{dup_sql} ORDER BY n DESC LIMIT 5").fetchall()
            shown = ", ".join(f"{key_text(key, ex[:-1])} ({ex[-1]} times)" for ex in examples)
            problems.append(f"{plural(dups[0], 'primary key value')} {'appears' if dups[0] == 1 else 'appear'} more than "
                            f"once ({int(dups[1])} rows), e.g. {shown}")
        result.key_problems = problems
        if not problems:
            return
        con.execute(
            f"INSERT INTO invalid SELECT rowid, 'primary_key not_null' FROM stg WHERE {rows} AND ({null_cond})")
        join_on = " AND ".join(f"s.{k} = d.{k}" for k in kq)
        con.execute(
            f"INSERT INTO invalid SELECT s.rowid, 'primary_key unique' FROM stg s SEMI JOIN ({dup_sql}) d ON {join_on} "
            f"WHERE s.{rows}")

    def _fill_dropped_values(self) -> None:
        """An unchanged row is staged with its key and fingerprint only. When its key repeats, it is
        quarantined and kept as an invalid record: its values come back from a second read, matched
        by key and fingerprint (run.records() showed the source's row with null values)."""
        con, kq = self.con, [quote(k) for k in self.key]
        dropped = [quote(c) for c in self.columns if c not in self.key and c not in self.keep_columns]
        mine = "stg._action = 'unchanged' AND stg.rowid IN (SELECT _rid FROM invalid)"
        if not dropped or not con.execute(f"SELECT count(*) FROM stg WHERE {mine}").fetchall()[0][0]:
            return
        self._open_source(*self._reopen)
        keys = ", ".join(kq)
        con.execute(
            f"UPDATE stg SET {', '.join(f'{c} = f.{c}' for c in dropped)} FROM (SELECT DISTINCT ON ({keys}, _fp) * "
            f"FROM (SELECT *, {self._fp_sql} AS _fp FROM _src) WHERE ({keys}) IN (SELECT ({keys}) FROM stg WHERE "
            f"{mine})) f WHERE {' AND '.join(f'f.{k} = stg.{k}' for k in kq)} AND f._fp = stg._fp AND {mine}")

    # ------------------------------------------------------------------ checks
    def to_check_view(self) -> str:
        """A view of the rows about to be sent (inserts and updates), with _rid."""
        cols = ", ".join(quote(c) for c in self.columns)
        self.con.execute(
            f"CREATE OR REPLACE TEMP VIEW to_check AS SELECT {cols}, rowid AS _rid FROM stg "
            f"WHERE _action IN ('insert','update') AND rowid NOT IN (SELECT _rid FROM invalid)")
        return "to_check"

    def dataset_view(self, columns: Sequence[str], *, exact_rids: bool = False) -> str:
        """A view of every row the run read (the ``columns`` dataset-level checks need, the key
        and ``_rid``): for a full refresh the whole mapped source, unchanged rows included; for
        an incremental run the rows it read. ``_rid`` is the staged row's id where the row is
        staged; rows only counted by a changed-only diff are read again from the source (the
        named columns only) and get negative ids.

        A source DuckDB can scan again (files) is, unless ``exact_rids``, read in place with a
        NULL ``_rid`` (``self.dataset_rids`` False): aggregates and passing checks need no row
        ids, and a caller that finds failing rows asks again with ``exact_rids``."""
        cols = list(dict.fromkeys([*self.key, *columns]))
        sel = ", ".join(quote(c) for c in cols)
        con = self.con
        self.dataset_rids = True
        if self.changed_only and (not self.src_rescannable or self._snapshot is None
                                  or self._reopen[0].snapshot() != self._snapshot):
            self.key_distinct = False  # the rows read again may not be the ones the key gate saw
        if self.changed_only and self.src_rescannable and not exact_rids:
            con.execute(f"CREATE OR REPLACE TEMP VIEW dataset AS SELECT {sel}, NULL::BIGINT AS _rid FROM _src")
            self.dataset_rids = False
        elif self.changed_only:
            self._open_source(*self._reopen)
            try:
                con.execute(f"CREATE OR REPLACE TEMP TABLE ds AS SELECT {sel} FROM _src")
            except duckdb.Error as exc:
                raise SourceError(f"could not read the source again for the dataset-level checks: "
                                  f"{str(exc).splitlines()[0]}; nothing was sent") from exc
            con.execute(f"CREATE OR REPLACE TEMP VIEW dataset AS SELECT {sel}, -1 - rowid AS _rid FROM ds")
        else:
            con.execute(f"CREATE OR REPLACE TEMP VIEW dataset AS SELECT {sel}, rowid AS _rid FROM stg "
                        f"WHERE _action <> 'delete'")
        return "dataset"

    def add_invalid(self, failures_table: str, dataset_failures: str | None = None) -> None:
        """Quarantine failing rows: those of row-level checks, and those of dataset-level checks
        that are about to be sent (a delivered, unchanged row stays as it is)."""
        self.con.execute(f"INSERT INTO invalid SELECT _rid, check_name FROM {failures_table}")
        if dataset_failures is None:
            return
        sending = "_action IN ('insert','update')"
        if self.changed_only and not self.dataset_rids:
            # read in place without row ids: evaluate_staged asks again with exact ids as soon as a
            # dataset-level check lists failing rows, so there are none to quarantine here
            listed = self.con.execute(f"SELECT count(*) FROM {dataset_failures}").fetchall()[0][0]
            if listed:
                raise RuntimeError("dataset-level check failures listed without row ids")
            return
        if self.changed_only:
            on = " AND ".join(f"t.{quote(k)} = d.{quote(k)}" for k in self.key)
            self.con.execute(
                f"INSERT INTO invalid SELECT t.rowid, f.check_name FROM {dataset_failures} f "
                f"JOIN ds d ON f._rid = -1 - d.rowid JOIN stg t ON {on} WHERE t.{sending}")
        else:
            self.con.execute(
                f"INSERT INTO invalid SELECT _rid, check_name FROM {dataset_failures} "
                f"WHERE _rid IN (SELECT rowid FROM stg WHERE {sending})")

    def invalid_count(self) -> int:
        return self.con.execute("SELECT count(DISTINCT _rid) FROM invalid").fetchall()[0][0]

    # ------------------------------------------------------------------ transfer
    @staticmethod
    def send_filter(mode: DestinationMode) -> str:
        return f"_action IN ({', '.join(repr(a) for a in mode.sent_actions)})"

    def skipped_by_mode(self, mode: DestinationMode) -> str | None:
        return None if mode.sends_updates else "_action = 'update'"

    def pending_count(self, mode: DestinationMode) -> int:
        self.flush_outcomes()
        return self.con.execute(
            f"SELECT count(*) FROM stg WHERE {self.send_filter(mode)} AND rowid NOT IN (SELECT _rid FROM invalid) "
            f"AND rowid NOT IN (SELECT _rid FROM outcomes)").fetchall()[0][0]

    def batches(self, mode: DestinationMode, batch_size: int, only: str | None = None,
                columns: Sequence[str] | None = None, bookkeeping: bool = True,
                action: bool = True) -> pa.RecordBatchReader:
        """Pending rows as Arrow batches: record columns (``columns``: those of them), _action, _fp,
        _rid (``only``: an SQL condition on ``stg`` that picks some of them, e.g. one bucket of a
        partitioned run). ``bookkeeping`` False: the record columns alone (a reader that only
        encodes the rows, whose actions, fingerprints and row ids another reader of the same rows
        gives: making and exporting them cost a 2M-row Delta first load ~0.1 CPU-s). ``action`` False:
        no _action (a caller that knows every row's; as text it costs ~15 ns a row)."""
        self.flush_outcomes()
        cols = ", ".join(quote(c) for c in (self.columns if columns is None else columns))
        act = "'insert'" if mode.rewrites else "_action::VARCHAR"  # every row goes into the new table
        where = (f"{self.send_filter(mode)} AND s.rowid NOT IN (SELECT _rid FROM invalid) "
                 f"AND s.rowid NOT IN (SELECT _rid FROM outcomes)" + (f" AND ({only})" if only else ""))
        extra = f"{f', {act} AS _action' if action else ''}, _fp, s.rowid AS _rid" if bookkeeping else ""
        rel = self.con.cursor().sql(f"SELECT {cols}{extra} FROM stg s WHERE {where}")
        return rel.to_arrow_reader(batch_size)

    def record_outcomes(self, rids: pa.Array | pa.ChunkedArray, status: str, batch_no: int,
                        error: str | None = None) -> None:
        """Note what happened to rows just sent; written to ``outcomes`` when next read.

        A run that is not paused never reads them back, so a transfer does not pay an
        insert per batch for its bookkeeping.
        """
        if len(rids) == 0:
            return
        # a copy: an Arrow slice of the batch would keep the whole batch's memory alive
        self._pending.append((int64_copy(rids), status, batch_no, error))

    def flush_outcomes(self) -> None:
        pending, self._pending = self._pending, []
        for rids, status, batch_no, error in pending:
            self.con.register("_out", pa.Table.from_arrays([int_array(rids)], names=["_rid"]))
            self.con.execute("INSERT INTO outcomes SELECT _rid, ?, ?, ? FROM _out", [status, batch_no, error])
            self.con.unregister("_out")

    def mark_skipped(self, mode: DestinationMode) -> pa.Table | None:
        """Mark the rows the mode skips (insert mode: changed rows) and return their records; None
        when there are none, or they were marked before: a paused run resumed with these staged
        rows must not count and store them a second time."""
        cond = self.skipped_by_mode(mode)
        if cond is None:
            return None
        self.flush_outcomes()
        marked = self.con.execute(
            f"INSERT INTO outcomes SELECT rowid, 'skipped', NULL, 'insert mode only appends new rows; this row changed' "
            f"FROM stg WHERE {cond} AND rowid NOT IN (SELECT _rid FROM invalid) AND rowid NOT IN (SELECT _rid FROM outcomes)"
        ).fetchall()[0][0]
        return self.records(status="skipped") if marked else None

    # ------------------------------------------------------------------ inspection
    def records(self, status: str | None = None, include_unchanged: bool = False,
                limit: int | None = None, error: str | None = None, keys_first: bool = False) -> pa.Table:
        """``keys_first``: rows with a null or repeated key before the others (a failing run keeps
        the first RECORD_RETENTION invalid rows: the ones it failed on among them, all of them)."""
        self.flush_outcomes()
        cols = ", ".join(f"s.{quote(c)}" for c in self.columns)
        status_sql = ("coalesce(o._status, CASE WHEN i.checks IS NOT NULL THEN 'invalid' "
                      "WHEN s._action = 'unchanged' THEN 'unchanged' ELSE 'pending' END)")
        where = [] if include_unchanged else [
            "(s._action <> 'unchanged' OR o._status IS NOT NULL OR i.checks IS NOT NULL)"]
        if status:
            where.append(f"{status_sql} = '{status}'")
        w, lim = ("WHERE " + " AND ".join(where)) if where else "", f"LIMIT {int(limit)}" if limit else ""
        err = "o._error" if error is None else "coalesce(o._error, '" + error.replace("'", "''") + "')"
        return self.con.cursor().sql(
            f"""SELECT {cols}, s._action::VARCHAR AS _action, {status_sql} AS _status, o._batch, {err} AS _error,
                       i.checks AS _checks, s._fp AS _fingerprint
                FROM stg s
                LEFT JOIN (SELECT _rid, list(check_name ORDER BY check_name) AS checks,
                                  bool_or(check_name IN ('primary_key not_null', 'primary_key unique')) AS key_problem
                           FROM invalid GROUP BY _rid) i ON i._rid = s.rowid
                LEFT JOIN outcomes o ON o._rid = s.rowid
                {w} ORDER BY {'i.key_problem IS NOT TRUE, ' if keys_first else ''}s.rowid {lim}""").to_arrow_table()

    def invalid_records(self, limit: int | None = None, mode: DestinationMode | None = None,
                        keys_first: bool = False) -> pa.Table:
        return self.records(status="invalid", limit=limit, error=mode and mode.invalid_note, keys_first=keys_first)

    def as_read(self, records: pa.Schema) -> pa.Schema:
        """``records`` (the staged fields) with each key column typed as the source gave it. The
        diff's join coalesces a key with the delivered state's, and DuckDB takes a naive time
        into an aware column there (read in the session's zone): compared as staged, a change
        the schema rules refuse (naive <-> aware) was no change, and shifted keys were sent."""
        fields = []
        for f in records:
            if f.name in self.key and f.name in self.types:
                with contextlib.suppress(duckdb.Error):
                    t = self.con.cursor().sql(f"SELECT NULL::{self.types[f.name]} AS x").to_arrow_table().schema
                    f = f.with_type(t.field(0).type)
            fields.append(f)
        return pa.schema(fields)

    def arrow_schema(self) -> pa.Schema:
        cols = ", ".join(quote(c) for c in self.columns)
        return self.con.cursor().sql(f"SELECT {cols}, _action::VARCHAR AS _action FROM stg LIMIT 0").to_arrow_table().schema
