"""A Parquet data set: ``directory/data.parquet``, replaced atomically once per run.

Batches are written aside as ``directory/_dfsync/<run>/batch-000001.parquet.part``
(each one atomically: written to a temporary name, then renamed), which doubles as the
ledger: a batch is committed exactly when its file exists. ``finish()`` merges the
current data with every batch of the run in DuckDB, writes ``data.parquet.tmp`` with
the run's key in the Parquet key-value metadata, and renames it over ``data.parquet``
(atomic on POSIX). A resumed run that finds its key already in ``data.parquet`` knows the
swap happened and only cleans up, so no batch is ever applied twice.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from .._arrow import holds, is_interval
from .._paths import not_writable, user_path
from .._schema import plan_table
from ..errors import ConfigError, DestinationError, SchemaMismatchError
from ..states import DestinationMode
from ._sql import q
from .base import (
    ACTION_COLUMN,
    EXISTS_MESSAGE,
    BatchResult,
    Destination,
    DestinationContext,
    DestinationSession,
    WriteBatch,
    register_destination,
)

DATA_FILE = "data.parquet"


@register_destination
class ParquetDestination(Destination):
    tells_rows = True
    kind = "parquet"
    applies_per_batch = False

    def __init__(self, directory: str) -> None:
        if not directory:
            raise ConfigError("destinations.parquet() needs a directory")
        self.directory = user_path(directory)  # works from any working directory

    def config(self) -> dict[str, Any]:
        return {"directory": self.directory}

    def identity(self) -> str:
        return json.dumps({"kind": self.kind, "directory": os.path.abspath(self.directory)})

    def column_type(self, t: pa.DataType) -> str | None:
        if holds(t, is_interval):
            # Parquet's INTERVAL keeps milliseconds: finer durations would be cut (inside a list or
            # struct pyarrow has no Parquet form at all: the run failed with ArrowNotImplementedError)
            raise SchemaMismatchError(
                "Parquet keeps durations to the millisecond only; send them as a number of microseconds, "
                "e.g. mapping={c: pl.col(c).dt.total_microseconds()} (in a list: "
                "pl.col(c).list.eval(pl.element().dt.total_microseconds())), or as text (pl.col(c).cast(pl.String))")
        return None

    def open(self, ctx: DestinationContext) -> DestinationSession:
        return ParquetSession(self, ctx)


def _lit(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


class ParquetSession(DestinationSession):
    destination: ParquetDestination

    def __init__(self, destination: ParquetDestination, ctx: DestinationContext) -> None:
        super().__init__(destination, ctx)
        self.dir = os.path.abspath(destination.directory)
        self.data = os.path.join(self.dir, DATA_FILE)
        self.run_key = ctx.run_key
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{ctx.sync_id}-{ctx.run_id}"
                      + (f"-{ctx.workspace_id[:12]}" if ctx.workspace_id else ""))
        self.batch_dir = os.path.join(self.dir, "_dfsync", safe)
        self.con = duckdb.connect()
        self.schema: pa.Schema | None = None
        self.existing: pa.Schema | None = None  # the data set's schema when the run began (not replace)

    def _has_data(self) -> bool:
        return os.path.exists(self.data)

    def holds_rows(self) -> bool | None:
        try:
            return self._has_data() and pq.ParquetFile(self.data).metadata.num_rows > 0
        except (OSError, pa.ArrowException):  # unreadable: prepare() says so
            return None

    def _already_swapped(self) -> bool:
        if not self._has_data():
            return False
        meta = pq.read_schema(self.data).metadata or {}
        return meta.get(b"dfsync_run", b"").decode() == self.run_key

    def prepare(self, schema: pa.Schema) -> None:
        self.destination.check_schema(pa.schema([f for f in schema if f.name != ACTION_COLUMN]))
        self.schema = schema
        why = not_writable(self.dir, is_dir=True)
        if why:
            raise DestinationError(f"cannot write the Parquet destination {self.dir}: {why}. Point "
                                   f"destinations.parquet() at a directory you can write.")
        os.makedirs(self.batch_dir, exist_ok=True)
        if self.ctx.mode.rewrites or not self._has_data():
            if self.ctx.mode == DestinationMode.UPDATE:
                raise DestinationError(
                    f"{self.data} does not exist; update mode only changes rows that exist. "
                    f"Use destination_mode='upsert' to create it."
                )
            return
        try:
            existing = pq.read_schema(self.data)
        except (OSError, pa.ArrowException) as exc:
            raise DestinationError(f"cannot read the existing {self.data}: {exc}") from exc
        records = pa.schema([f for f in schema if f.name != ACTION_COLUMN])
        # the whole file is rewritten at the end of the run: new columns and wider types need no
        # step of their own (rows that had no value for a new column read back NULL)
        plan_table(records, {f.name: (str(f.type), f.type) for f in existing}, policy=self.ctx.schema,
                   where=self.data, widen=self.widen_columns, exact_names=True)
        self.existing = existing

    def _batch_path(self, batch_no: int) -> str:
        return os.path.join(self.batch_dir, f"batch-{batch_no:06d}.parquet.part")

    def committed_batches(self) -> dict[int, list[list[Any]]]:
        done: dict[int, list[list[Any]]] = {}
        if self._already_swapped():
            # every batch of this run is in data.parquet; the marker lists them
            meta = pq.read_schema(self.data).metadata or {}
            for b in json.loads(meta.get(b"dfsync_batches", b"[]")):
                done[int(b)] = []
            return done
        for path in glob.glob(os.path.join(self.batch_dir, "batch-*.parquet.part")):
            done[int(os.path.basename(path)[6:12])] = []
        return done

    def write(self, batch: WriteBatch) -> BatchResult:
        skipped: dict[int, str] = {}
        failed: dict[int, str] = {}
        data = batch.data
        mode = self.ctx.mode
        if mode == DestinationMode.UPDATE or (mode == DestinationMode.INSERT and self._has_data()):
            # update mode changes only keys the data set has; insert mode adds only keys it lacks
            # (a key already there, e.g. after sync.reset(), is rejected as the SQL tables' key does)
            pk = list(self.ctx.primary_key)
            self.con.register("_b", data.select(pk))
            on = " AND ".join(f"b.{q(k)} IS NOT DISTINCT FROM d.{q(k)}" for k in pk)
            found = set(self.con.execute(
                f"SELECT {', '.join('b.' + q(k) for k in pk)} FROM _b b SEMI JOIN read_parquet({_lit(self.data)}) d ON {on}").fetchall())
            self.con.unregister("_b")
            keys = list(zip(*[data.column(k).to_pylist() for k in pk], strict=True))
            for i, key in enumerate(keys):
                if mode == DestinationMode.UPDATE and key not in found:
                    skipped[i] = "no row with this key in the data set (update mode only updates existing rows)"
                elif mode == DestinationMode.INSERT and key in found:
                    failed[i] = EXISTS_MESSAGE
            if skipped or failed:
                data = data.filter(pa.array([i not in skipped and i not in failed for i in range(data.num_rows)]))
        path = self._batch_path(batch.batch_no)
        tmp = path + ".tmp"
        try:
            pq.write_table(data, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise DestinationError(f"could not write to {self.dir}: {exc}") from exc
        return BatchResult(failed=failed, skipped=skipped)

    def finish(self) -> None:
        files = sorted(glob.glob(os.path.join(self.batch_dir, "batch-*.parquet.part")))
        if self._already_swapped():
            shutil.rmtree(self.batch_dir, ignore_errors=True)
            return
        pk = list(self.ctx.primary_key)
        assert self.schema is not None
        cols = [f.name for f in self.schema if f.name != ACTION_COLUMN]
        sel = ", ".join(q(c) for c in cols)
        if files and self.ctx.requeried and len(files) > 1:
            # a run that re-read its source may have sent a key in an earlier batch and again,
            # newer, in a later one: keep each key's last version (batch files sort by number)
            keys = ", ".join(q(k) for k in pk)
            changes = (f"(SELECT * EXCLUDE (_dfsync_file) FROM read_parquet([{', '.join(_lit(f) for f in files)}], "
                       f"union_by_name=true, filename='_dfsync_file') "
                       f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY _dfsync_file DESC) = 1)")
        elif files:
            changes = f"read_parquet([{', '.join(_lit(f) for f in files)}], union_by_name=true)"
        else:
            self.con.register("_empty", pa.Table.from_batches([], schema=self.schema))
            changes = "_empty"
        mode = self.ctx.mode
        has_base = self._has_data() and not mode.rewrites
        base = f"read_parquet({_lit(self.data)})"
        on = " AND ".join(f"c.{q(k)} IS NOT DISTINCT FROM d.{q(k)}" for k in pk)
        new_rows = f"SELECT {sel} FROM {changes} WHERE {q(ACTION_COLUMN)} <> 'delete'"
        if not has_base:
            query = new_rows
        elif mode == DestinationMode.INSERT:  # columns the records lack are NULL in the new rows
            query = f"SELECT * FROM {base} UNION ALL BY NAME {new_rows}"
        else:  # upsert, mirror, update: every key in the changes replaces (or removes) its old row
            # columns the data set has and the records lack (the source dropped them) keep their
            # values in the rows replaced, and are NULL in new rows
            kept = [f.name for f in pq.read_schema(self.data) if f.name not in cols]
            if kept:
                csel = ", ".join(f"c.{q(c)}" for c in cols) + ", " + ", ".join(f"d.{q(c)}" for c in kept)
                new_rows = (f"SELECT {csel} FROM {changes} c LEFT JOIN {base} d ON {on} "
                            f"WHERE c.{q(ACTION_COLUMN)} <> 'delete'")
            query = (f"SELECT d.* FROM {base} d ANTI JOIN {changes} c ON {on} "
                     f"UNION ALL BY NAME {new_rows}")
        batches = sorted(int(os.path.basename(f)[6:12]) for f in files)
        meta = {"dfsync_run": self.run_key, "dfsync_batches": json.dumps(batches)}
        meta_sql = ", ".join(f"{_lit(k)}: {_lit(v)}" for k, v in meta.items())
        tmp = self.data + ".tmp"
        try:
            os.makedirs(self.dir, exist_ok=True)
            self.con.execute(f"COPY ({query}) TO {_lit(tmp)} (FORMAT parquet, KV_METADATA {{{meta_sql}}})")
            os.replace(tmp, self.data)
        except (duckdb.Error, OSError) as exc:
            raise DestinationError(f"could not write {self.data}: {exc}") from exc
        shutil.rmtree(self.batch_dir, ignore_errors=True)

    def applied(self) -> bool:
        return self._already_swapped()

    def abandon(self) -> None:
        shutil.rmtree(self.batch_dir, ignore_errors=True)

    def close(self) -> None:
        self.con.close()
        parent = os.path.join(self.dir, "_dfsync")
        if os.path.isdir(parent) and not os.listdir(parent):
            os.rmdir(parent)
