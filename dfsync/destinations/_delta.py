"""A Delta Lake table as a destination, through ``deltalake`` (delta-rs).

    >>> dest = dfsync.destinations.delta("lake/customers", partition_by=["country"])

Each batch is one Delta commit: ``insert``/``upsert``/``update``/``mirror`` go through a
MERGE on the sync's key (a table that was empty when the run began takes new rows as a
plain append; a new table is created by the run's first commit, or empty at the end of a run
that sent nothing; a first load into it is one commit of files written aside, ``_delta_aside``), ``replace`` writes the run's batches aside (``<path>/_dfsync/<run>/``, which
Delta readers ignore) and swaps the table's contents in one overwrite commit at the end:
readers see the old rows or the new ones, never a mix.

Exactly once. Every commit carries a Delta transaction identifier: the application id
``dfsync:<run key>`` and the batch number as its version (``txn`` action), plus the
batch's undelivered keys in the commit's metadata. A resumed run asks the table for its
application id's version, so a batch whose commit landed before a crash is never applied
twice. The table stays readable by any Delta reader (polars ``read_delta``, Spark, DuckDB's
``delta_scan``) after every commit.

Schema. New tables get the records' types (unsigned integers one size up, uint64 as
decimal(20,0), tz-aware timestamps as Delta ``timestamp`` in UTC, naive ones as
``timestamp_ntz``, microseconds). On an existing table the sync's ``schema=`` policy
applies (:mod:`dfsync._schema`): ``evolve`` adds new columns (nullable) and widens a type
without loss by rewriting the table in one commit; ``freeze`` refuses any change. Time of
day, durations and intervals have no Delta type: cast them in the mapping.

``storage_options`` pass through to delta-rs for object stores (S3, GCS, Azure); dfsync
is tested on local paths. Secret values may be ``env:NAME`` references (read at run time);
literal values of secret-looking keys (``*secret*``, ``*token*``, ``*key*``, ``*password*``)
work in this process but are never stored.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any

import numpy as np
import pyarrow as pa

from .._arrow import bool_array, is_nested
from .._paths import user_path
from .._schema import holds_values, plan_table
from .._secrets import resolve_secret
from ..errors import (
    ConfigError,
    DestinationError,
    MissingDependencyError,
    SchemaMismatchError,
    TransientDestinationError,
    redact,
    register_secret,
)
from ..states import DestinationMode
from ._delta_aside import AsideLoad
from ._delta_rows import constraints, refusal, unfit_rows
from ._delta_rows import present as present_keys
from .base import (
    ACTION_COLUMN,
    EXISTS_MESSAGE,
    BatchResult,
    Destination,
    DestinationContext,
    DestinationSession,
    WriteBatch,
    batch_actions,
    register_destination,
)

__all__ = ["DeltaDestination", "delta_type"]

SKIP_MESSAGE = "no row with this key in the destination (update mode only updates existing rows)"
#: what delta-rs cannot take in a local path: it parses the path as a URL (a panic on [ ] | ^; a
#: backslash or %XX escape decoded, a control character refused, into another directory)
_URL_ONLY = re.compile(r"[\[\]|^\\\x00-\x1f\x7f]|%[0-9A-Fa-f]{2}")
_SECRET_KEY = re.compile(r"secret|token|password|key|credential|sas", re.I)


def delta_type(t: pa.DataType) -> pa.DataType:
    """The Arrow type a Delta column holds a value of type ``t`` as (same values).

    >>> delta_type(pa.uint32()), delta_type(pa.timestamp("ns", "Europe/Paris"))
    (DataType(int64), TimestampType(timestamp[us, tz=UTC]))
    """
    if pa.types.is_dictionary(t):
        return delta_type(t.value_type)
    widen = {pa.uint8(): pa.int16(), pa.uint16(): pa.int32(), pa.uint32(): pa.int64(),
             pa.uint64(): pa.decimal128(20, 0), pa.float16(): pa.float32(), pa.date64(): pa.date32(),
             pa.null(): pa.large_string(), pa.string_view(): pa.large_string(),
             pa.binary_view(): pa.large_binary()}
    if t in widen:
        return widen[t]
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", "UTC" if t.tz else None)
    if pa.types.is_fixed_size_binary(t):
        return pa.large_binary()
    if pa.types.is_decimal(t) and t.precision <= 38:
        return pa.decimal128(t.precision, t.scale)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(pa.field("element", delta_type(t.value_type), True))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(t.field(i).name, delta_type(t.field(i).type), True) for i in range(t.num_fields)])
    if pa.types.is_map(t):
        return pa.map_(delta_type(t.key_type), delta_type(t.item_type))
    if (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_date32(t)
            or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t)):
        return t
    raise SchemaMismatchError(
        f"Arrow type {t} has no Delta Lake column type; convert the column in the sync's mapping (a time of "
        f"day as a string, a duration as a number of microseconds: pl.col(c).dt.total_microseconds())")


def _partitionable(t: pa.DataType) -> bool:
    """Does a Delta partition column of (Delta) type ``t`` give back every value written?"""
    return (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
            or pa.types.is_boolean(t) or pa.types.is_date32(t) or pa.types.is_timestamp(t)
            or (pa.types.is_decimal(t) and t.scale == 0))


def _readback(t: pa.DataType) -> pa.DataType:
    """What a Delta column of Arrow type ``t`` accepts exactly, for the schema check.

    Timestamps keep microseconds; a nanosecond source whose values are whole microseconds
    fits (finer values are refused before sending, ``time_unit``).
    """
    if pa.types.is_timestamp(t):
        return pa.timestamp("ns", t.tz)
    return t


@register_destination
class DeltaDestination(Destination):
    """A Delta Lake table at ``path`` (a directory, or an object-store URI with ``storage_options``)."""
    tells_rows = True

    kind = "delta"
    needs = ("deltalake", "deltalake", "delta", "the Delta Lake destination")
    #: rows per commit when the sync leaves batch_size None: each commit costs a Delta log
    #: entry, a table refresh and a file (bench/RESULTS.md, issue 23)
    default_batch_size = 1_000_000
    #: the finest time unit its timestamp columns keep
    time_unit = "us"
    #: years 1 to 9999 (Spark's range; the deltalake reader cannot read a file whose statistics hold
    #: another date): others are refused before sending (dfsync._schema_values.check_values)
    date_range = timestamp_range = ((1, 1, 1), (10000, 1, 1))

    def __init__(self, path: str, *, partition_by: list[str] | str | None = None,
                 storage_options: dict[str, str] | None = None) -> None:
        if isinstance(path, os.PathLike):  # a pathlib.Path, as the other file destinations take
            path = os.fspath(path)
        if not isinstance(path, str) or not path.strip():
            raise ConfigError("destinations.delta() needs a path: a directory or an object-store URI")
        if isinstance(partition_by, str):
            partition_by = [partition_by]
        if partition_by is not None and (not isinstance(partition_by, list)
                                         or not all(isinstance(c, str) for c in partition_by)):
            raise ConfigError("destinations.delta(partition_by=...) takes a column name or a list of them")
        if storage_options is not None and not isinstance(storage_options, dict):
            raise ConfigError("destinations.delta(storage_options=...) takes a dict of strings")
        self.path = path if "://" in path else user_path(path)
        odd = None if "://" in path else _URL_ONLY.search(self.path)
        if odd:
            raise ConfigError(
                f"destinations.delta() cannot use the local path {self.path!r}: it holds {odd.group()!r}, which "
                f"delta-rs reads as part of a URL (it stops at [ ] | ^, takes a backslash or a %XX escape for "
                f"another directory and refuses control characters). Choose a directory whose path has none "
                f"of them.")
        self.partition_by = list(partition_by) if partition_by else None
        self.storage_options: dict[str, str] | None = None
        self._literal: dict[str, str] = {}
        if storage_options:
            kept = {}
            for k, v in storage_options.items():
                v = str(v)
                if not v.startswith("env:") and _SECRET_KEY.search(str(k)):
                    register_secret(v)
                    self._literal[str(k)] = v  # usable here, never stored
                else:
                    kept[str(k)] = v
            self.storage_options = kept or None

    @property
    def literal_secret(self) -> bool:
        return bool(self._literal)

    def column_type(self, t: pa.DataType) -> str | None:
        return str(delta_type(t))

    def config(self) -> dict[str, Any]:
        return {"path": self.path, "partition_by": self.partition_by, "storage_options": self.storage_options}

    def identity(self) -> str:
        return json.dumps({"kind": self.kind, "path": self.path})

    def describe(self) -> str:
        return f"delta({self.path})"

    def options(self) -> dict[str, str] | None:
        """storage_options with ``env:NAME`` references resolved (never stored)."""
        out = {k: resolve_secret(v, f"storage option {k}") or "" for k, v in (self.storage_options or {}).items()}
        out.update(self._literal)
        return out or None

    def validate(self, columns: Any, primary_key: Any, mode: DestinationMode) -> None:
        super().validate(columns, primary_key, mode)
        missing = [c for c in self.partition_by or () if c not in columns]
        if missing:
            raise ConfigError(f"partition_by names {missing}, which the records do not have "
                              f"(they have {', '.join(columns)}); partition by one of those columns")

    def check_schema(self, schema: pa.Schema) -> None:
        super().check_schema(schema)
        for c in self.partition_by or ():
            if c in schema.names and not _partitionable(delta_type(schema.field(c).type)):
                t = schema.field(c).type
                raise SchemaMismatchError(
                    f"partition_by column {c!r} is {t}, which a Delta partition does not keep exactly (delta-rs "
                    f"writes each value as text in a directory name: bytes arrive altered, a negative decimal "
                    f"with a fraction leaves a table no reader can open, a float can make a name longer than "
                    f"a file system allows, lists and structs are refused). Partition by an integer, text, "
                    f"boolean, date or timestamp column, e.g. one made in the mapping "
                    f"(mapping={{..., '{c}_part': pl.col({c!r}).cast(pl.Int64)}}, then partition_by='{c}_part').")

    def texts_read_as_null(self, column: str) -> tuple[str, ...]:
        """Texts that read back as NULL (``_schema_values.check_values`` refuses them): a partition
        column's empty text and Hive's null marker, which name its null partition's directory."""
        return ("", "__HIVE_DEFAULT_PARTITION__") if column in (self.partition_by or ()) else ()

    def open(self, ctx: DestinationContext) -> DestinationSession:
        return DeltaSession(self, ctx)


#: delta-rs / object_store texts of a store that did not answer (not of one that refused the request)
_UNREACHABLE = re.compile(r"connection refused|connect error|timed out|timeout|error sending request|dns error|"
                          r"failed to lookup address|connection reset|broken pipe|network is unreachable", re.I)


class DeltaSession(AsideLoad, DestinationSession):
    destination: DeltaDestination

    def __init__(self, destination: DeltaDestination, ctx: DestinationContext) -> None:
        super().__init__(destination, ctx)
        try:
            import deltalake  # noqa: F401
        except ImportError:
            raise MissingDependencyError("deltalake", "delta", "the Delta Lake destination") from None
        self.uri = destination.path
        self.opts = destination.options()
        self.app_id = f"dfsync:{ctx.run_key}"
        self.columns: list[str] = []
        self.fresh = False
        self.not_null: list[str] = []
        self.checks: dict[str, str] = {}  # the table's CHECK constraints
        self.parts = os.path.join(self.uri, "_dfsync", ctx.run_tag) if "://" not in self.uri else None
        self._dt: Any = None

    # ---------------------------------------------------------------- table access
    def _table(self) -> Any:
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError

        try:
            if self._dt is None:
                self._refuse_unwritable()  # (delta-rs would say "Generic LocalFileSystem error")
                if not DeltaTable.is_deltatable(self.uri, storage_options=self.opts):
                    return None
                self._dt = DeltaTable(self.uri, storage_options=self.opts)
            else:
                self._dt.update_incremental()
        except (OSError, DeltaError) as exc:  # every step of a session reads the table's state here first
            raise self._store_error(exc) from None
        return self._dt

    def _refuse_unwritable(self) -> None:
        """A local table's directory must be one this process can write (not a file, say)."""
        if "://" not in self.uri:
            from .._paths import not_writable

            why = not_writable(self.uri, is_dir=True)
            if why:
                raise DestinationError(f"cannot write the Delta table {self.uri}: {why}. Point "
                                       f"destinations.delta() at a directory you can write.")

    def _store_error(self, exc: BaseException) -> Exception:
        """delta-rs's error reading the table's state as dfsync's: an object store that does not
        answer (refused, timed out, unknown host) pauses the run, as a database that does not does
        (delta-rs has retried the request already); anything else (access denied, no such bucket)
        fails it. The text loses its colours and its arrows: one line, credentials redacted."""
        text = " ".join(re.sub(r"\x1b\[[0-9;]*m|↳", " ", str(exc)).split())
        if _UNREACHABLE.search(text):
            return TransientDestinationError(
                f"Delta table {self.uri} is unreachable: its object store did not answer ({redact(text)[:600]}). "
                f"The run is paused and resumes on the next run.")
        return DestinationError(f"cannot read the Delta table {self.uri}: {redact(text)[:600]}. Check the URI and "
                                f"destinations.delta(storage_options=...) (endpoint, region, credentials).")

    def _commit_props(self, version: int, meta: dict[str, Any]) -> Any:
        from deltalake import CommitProperties, Transaction

        return CommitProperties(custom_metadata={"dfsync": json.dumps({"run": self.ctx.run_key, **meta}, default=str)},
                                app_transactions=[Transaction(self.app_id, int(version))])

    def _run_commits(self, dt: Any) -> dict[int, dict[str, Any]]:
        """This run's commits, newest last: {batch: metadata} from the table's history."""
        top = dt.transaction_version(self.app_id)
        if top is None:
            return {}
        found: dict[int, dict[str, Any]] = {}
        for entry in dt.history(int(top) + 200):
            try:
                meta = json.loads(entry.get("dfsync") or "{}")
            except ValueError:
                continue
            if meta.get("run") == self.ctx.run_key and "batch" in meta:
                found[int(meta["batch"])] = meta
        return found

    # ---------------------------------------------------------------- prepare
    def prepare(self, schema: pa.Schema) -> None:
        self._refuse_unwritable()
        records = pa.schema([f for f in schema if f.name != ACTION_COLUMN])
        self.columns = records.names
        target = pa.schema([pa.field(f.name, delta_type(f.type), True) for f in records])
        if self.ctx.mode.rewrites:
            self.target_schema = target
            return
        dt = self._table()
        if dt is None:
            if self.ctx.mode == DestinationMode.UPDATE:
                raise DestinationError(f"there is no Delta table at {self.uri}; update mode only changes rows "
                                       f"that exist. Create the table first, or use destination_mode='upsert'.")
            # the run's first commit creates the table (a run sending nothing creates it empty at
            # its end): no commit of its own, and no table a run that fails before sending leaves behind
            self.target_schema, self.fresh, self.creates_table = target, True, True
            return
        self._fit(dt, records)
        have = pa.schema(dt.schema().to_arrow())
        self.target_schema = have
        self.not_null = [f.name for f in have if not f.nullable and f.name in self.columns]
        self.checks = constraints(dt)
        runs = self._run_commits(dt)
        if runs:  # a resumed run: was the table empty when it began?
            self.fresh = bool(runs[max(runs)].get("fresh"))
        else:
            self.fresh = dt.count() == 0 if hasattr(dt, "count") else dt.to_pyarrow_table().num_rows == 0

    def _fit(self, dt: Any, records: pa.Schema) -> None:
        from deltalake import Schema, write_deltalake

        have = pa.schema(dt.schema().to_arrow())
        existing = {f.name: (str(f.type), _readback(f.type)) for f in have}
        plan = plan_table(records, existing, policy=self.ctx.schema, where=f"Delta table {self.uri}", exact_names=True,
                          widen=self.widen_columns, typed=self.typed_columns, holds_values=lambda c: holds_values(
                              dt.to_pyarrow_table(columns=[c]).column(c), delta_type(records.field(c).type)))
        if plan.add:
            fields = [pa.field(f.name, delta_type(f.type), True) for f in plan.add]
            dt.alter.add_columns(Schema.from_arrow(pa.schema(fields)).fields)
            for f in fields:
                self.schema_changes.append((f.name, f"added column {f.name!r} ({f.type}) to Delta table {self.uri}"))
        if plan.widen or plan.retype:  # Delta cannot change a column's type in place: one commit rewrites the table
            table = dt.to_pyarrow_table()
            for (col, f), widened in [(w, True) for w in plan.widen] + [(r, False) for r in plan.retype]:
                i, t = table.schema.get_field_index(col), delta_type(f.type)
                # a retyped column holds only NULLs (a cast from text to a list has no kernel); a list or
                # struct only NULLs where its type changes: cast, its lists and other fields kept as they are
                nested = is_nested(table.schema.field(i).type)
                values = table.column(col).cast(t) if widened or nested else pa.nulls(table.num_rows, t)
                table = table.set_column(i, pa.field(col, t, True), values)
                self.schema_changes.append((col, f"widened column {col!r} of Delta table {self.uri} to {f.type}"
                                            if widened else f"column {col!r} of Delta table {self.uri} (only NULLs) is now {f.type}"))
            write_deltalake(dt, table, mode="overwrite", schema_mode="overwrite",
                            partition_by=dt.metadata().partition_columns or None)
        if plan.add or plan.widen or plan.retype:
            self._dt = None

    def _create_empty(self) -> None:
        from deltalake import write_deltalake

        write_deltalake(self.uri, pa.Table.from_batches([], schema=self.target_schema), mode="append",
                        partition_by=self.destination.partition_by, storage_options=self.opts)

    # ---------------------------------------------------------------- ledger
    def holds_rows(self) -> bool:
        dt = self._table()
        return dt is not None and len(dt.file_uris()) > 0

    def committed_batches(self) -> dict[int, list[list[Any]]]:
        if self.ctx.mode.rewrites:
            return {b: [] for b in sorted(self._part_files())}
        dt = self._table()
        if dt is None:
            return {}
        return {b: meta.get("not_delivered") or [] for b, meta in self._run_commits(dt).items()}

    # ---------------------------------------------------------------- write
    def _conform(self, data: pa.Table) -> pa.Table:
        cols = [data.column(f.name).cast(delta_type(f.type), safe=False) if delta_type(f.type) != f.type
                else data.column(f.name) for f in data.schema]
        return pa.table(cols, names=data.column_names)

    def write(self, batch: WriteBatch) -> BatchResult:
        if self.ctx.mode.rewrites:
            return self._write_part(batch)
        return self._guard(lambda: self._write(batch))

    def _guard(self, fn: Any, attempts: int = 5) -> Any:
        """delta-rs errors as dfsync's: a commit that lost a race with another writer (or an object
        store that did not answer) is tried again, then the run pauses; anything else fails it."""
        import time

        from deltalake.exceptions import CommitFailedError, DeltaError

        for attempt in range(attempts):
            try:
                return fn()
            except CommitFailedError as exc:
                why = str(exc)
            except (OSError, DeltaError) as exc:
                text = str(exc)
                refused = refusal(exc)
                if refused is not None:  # a CHECK or NOT NULL: no retry helps (the rows' values not kept)
                    raise DestinationError(f"Delta table {self.uri} refused the batch: {redact(refused)[:600]} A "
                                           f"constraint of the table refuses a row: send values it takes.") from None
                if "file name too long" in text.lower():  # no retry makes it shorter: the run fails
                    raise DestinationError(
                        f"Delta table {self.uri} refused the batch: a file's name is longer than the file system "
                        f"allows ({redact(text)[-300:]}). A partition's directory is named by its value, each "
                        f"character other than a letter, a digit or - _ . ~ written as %XX: partition by a column with "
                        f"shorter values.") from exc
                if isinstance(exc, DeltaError) and not any(
                        t in text.lower() for t in ("timed out", "connection", "object store", "generic")):
                    raise DestinationError(f"Delta table {self.uri} refused the batch: {redact(text)}") from exc
                why = text
            self._dt = None  # read the table's state afresh: the txn check runs again first
            time.sleep(min(0.1 * 2 ** attempt, 2.0))
        raise TransientDestinationError(f"Delta table {self.uri} did not take the batch after {attempts} tries "
                                        f"({redact(why)}); the run is paused and resumes on the next run")

    def _write(self, batch: WriteBatch) -> BatchResult:
        dt = self._table()
        top = dt.transaction_version(self.app_id) if dt is not None else None
        done = self._run_commits(dt).get(batch.batch_no) if top is not None and top >= batch.batch_no else None
        if done is not None:  # committed before a crash or a lost answer: never twice
            return self._from_ledger(batch.data, done.get("not_delivered") or [])
        data = self._conform(batch.records()).append_column(ACTION_COLUMN, batch.data.column(ACTION_COLUMN))
        failed, skipped = unfit_rows(data, self.not_null, self.ctx.primary_key, self.checks), {}
        mode = self.ctx.mode
        if mode in (DestinationMode.UPDATE, DestinationMode.INSERT):
            # a table that was empty when the run began holds only this run's earlier batches, whose
            # keys no batch repeats (unless the source was read again): no key of this one is there.
            # Scanning the table's keys cost 0.1-0.23 s a batch, the more the more batches went before
            skip_scan = mode == DestinationMode.INSERT and self.fresh and not self.ctx.requeried
            present = np.zeros(data.num_rows, dtype=bool) if skip_scan else present_keys(dt, data, list(self.ctx.primary_key))
            for i in np.flatnonzero(present):
                if mode == DestinationMode.INSERT and int(i) not in failed:
                    failed[int(i)] = EXISTS_MESSAGE
            if mode == DestinationMode.UPDATE:
                skipped = {int(i): SKIP_MESSAGE for i in np.flatnonzero(~present) if int(i) not in failed}
        out = set(failed) | set(skipped)
        keep = data
        if out:
            mask = np.ones(data.num_rows, dtype=bool)
            mask[list(out)] = False
            keep = data.filter(bool_array(mask))
        pk = self.ctx.primary_key
        nd = [[data.column(k)[i].as_py() for k in pk] for i in sorted(out)]
        props = self._commit_props(batch.batch_no, {"batch": batch.batch_no, "fresh": self.fresh, "not_delivered": nd})
        self._apply(dt, keep, props)
        return BatchResult(failed=failed, skipped=skipped)

    def _apply(self, dt: Any, data: pa.Table, props: Any) -> None:
        from deltalake import write_deltalake

        actions = batch_actions(data)
        mode = self.ctx.mode
        records = data.select(self.columns)
        if dt is None and actions <= {"insert"}:  # the run's first commit creates the table
            write_deltalake(self.uri, records.cast(self.target_schema), partition_by=self.destination.partition_by,
                            mode="append", storage_options=self.opts, commit_properties=props)
            return
        if dt is None:  # changes to rows of a table that is gone: merged into a new, empty one
            self._create_empty()
            dt = self._table()
        if self.fresh and actions <= {"insert"} and mode != DestinationMode.UPDATE and not self.ctx.requeried:
            # a table that was empty when the run began: new keys cannot collide
            write_deltalake(dt, records, mode="append", commit_properties=props)
            return
        def col(c: str) -> str:
            return "`" + c.replace("`", "``") + "`"

        on = " AND ".join(f"t.{col(k)} = s.{col(k)}" for k in self.ctx.primary_key)
        values = {col(c): f"s.{col(c)}" for c in self.columns}
        act = f"s.{col(ACTION_COLUMN)}"
        # the batch is in memory already: not streamed, so delta-rs derives a predicate from the
        # batch's key range and skips the table's files outside it (streamed_exec=True, its
        # default, scans every file; a change set in one key range merged in 0.45 vs 0.75 CPU-s)
        merger = dt.merge(data, on, source_alias="s", target_alias="t", streamed_exec=False, commit_properties=props)
        if mode.sends_deletes and "delete" in actions:
            merger = merger.when_matched_delete(f"{act} = 'delete'")
        if mode in (DestinationMode.UPSERT, DestinationMode.MIRROR, DestinationMode.UPDATE):
            merger = merger.when_matched_update(values, f"{act} <> 'delete'")
        if mode != DestinationMode.UPDATE:
            merger = merger.when_not_matched_insert(values, f"{act} <> 'delete'")
        merger.execute()

    def _from_ledger(self, data: pa.Table, not_delivered: list[list[Any]]) -> BatchResult:
        keys = {json.dumps(k, default=str) for k in not_delivered}
        cols = [data.column(k).to_pylist() for k in self.ctx.primary_key]
        why = "not delivered (the row was refused; its message was lost when the run stopped)"
        if self.ctx.mode == DestinationMode.UPDATE:
            why = SKIP_MESSAGE
        hits = {i for i, key in enumerate(zip(*cols, strict=True)) if json.dumps(list(key), default=str) in keys}
        if self.ctx.mode == DestinationMode.UPDATE:
            return BatchResult(skipped={i: why for i in hits})
        return BatchResult(failed={i: why for i in hits})

    # ---------------------------------------------------------------- replace: one overwrite commit
    def _write_part(self, batch: WriteBatch) -> BatchResult:
        if self.parts is None:
            raise DestinationError("destination_mode='replace' on a Delta table needs a local path (its batches "
                                   "wait beside the table until the run ends)")
        os.makedirs(self.parts, exist_ok=True)
        # Arrow IPC, not Parquet: the overwrite commit encodes the rows (a Parquet part was encoded and
        # decoded once more: a 2M-row replace 1.36 -> 0.47 CPU-s for parts and commit; ~2.5x the bytes)
        final = os.path.join(self.parts, f"batch-{batch.batch_no:08d}.arrow")
        data = self._conform(batch.records()).cast(self.target_schema)
        with pa.OSFile(final + ".part", "wb") as sink, pa.ipc.new_file(sink, data.schema) as out:
            out.write_table(data, max_chunksize=1 << 17)
        os.replace(final + ".part", final)  # the batch is held exactly when this file exists
        return BatchResult()

    def finish(self) -> None:
        if not self.ctx.mode.rewrites:
            if self._table() is None:  # nothing was sent to a new table: it is created empty
                self._create_empty()
            self.drop_aside()  # left by a load written aside whose process died before its commit
            return
        from deltalake import write_deltalake

        dt = self._table()
        if dt is None or dt.transaction_version(self.app_id) is None:
            files = self._part_files()
            schema = self.target_schema
            # streamed from the parts, one record batch at a time, into the overwrite commit
            data = pa.RecordBatchReader.from_batches(schema, (b.cast(schema) for n in sorted(files)
                                                              for b in self._part_batches(files[n])))
            try:
                write_deltalake(self.uri, data, mode="overwrite", schema_mode="overwrite",
                                partition_by=self.destination.partition_by, storage_options=self.opts,
                                commit_properties=self._commit_props(0, {"replace": True}))
            except Exception as exc:  # delta-rs's text previews the refused rows' values: not kept
                refused = refusal(exc)
                if refused is None:
                    raise
                raise DestinationError(
                    f"Delta table {self.uri} refused the replace: {redact(refused)} "
                    f"A CHECK constraint or NOT NULL column of the table refuses rows of the source; the table "
                    f"is unchanged. Send values it takes, or drop the constraint.") from None
        self.abandon()

    def abandon(self) -> None:
        if self.parts is not None:
            shutil.rmtree(self.parts, ignore_errors=True)
            parent = os.path.dirname(self.parts)
            if os.path.isdir(parent) and not os.listdir(parent):
                os.rmdir(parent)
