"""A first load into a Delta table the run creates, in one commit of files written aside.

The usual transfer sends a batch only once its keys are written ahead to the workspace, so
encoding a batch's Parquet files (most of a Delta commit's cost) waits for the write-ahead, and
each batch is read out of staging whole before either starts. Files written *aside* are no
part of the table until a commit names them: ``write_aside`` encodes the run's rows into a
scratch table under ``<table>/_dfsync/<run>/aside/`` (Delta readers skip ``_`` directories)
while the workspace writes the keys ahead, and ``commit_aside`` then moves its files into the
table and creates the table with them in one commit carrying the run's Delta transaction
identifier and ledger metadata, exactly what the usual path's first commit carries (batch,
``fresh``, the keys not delivered: none). So a resumed run and ``committed_batches`` see it as
they see any batch: landed exactly when the commit did. A run that stops before the commit
leaves no table (files moved but not committed are no part of one; the scratch table is
removed by the run's end or its abandon).

``replace`` holds its batches aside too (``<table>/_dfsync/<run>/batch-N.arrow``) until its one
overwrite commit; the reading of those is here as well.

:class:`AsideLoad` is mixed into :class:`dfsync.destinations._delta.DeltaSession`; the
engine's side is :mod:`dfsync._fused_delta`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pyarrow as pa

from .base import BatchResult

#: the scratch table's directory under the run's own (``<table>/_dfsync/<run>/``)
ASIDE = "aside"


class AsideLoad:
    """The two steps of a first load written aside (see the module's text)."""

    #: set by prepare(): there was no Delta table, and this run's first commit creates it
    creates_table: bool = False
    # the session's (dfsync.destinations._delta.DeltaSession)
    uri: str
    parts: str | None
    opts: dict[str, str] | None
    app_id: str
    target_schema: pa.Schema
    destination: Any

    if TYPE_CHECKING:
        def _table(self) -> Any: ...
        def _guard(self, fn: Any, attempts: int = 5) -> Any: ...
        def _conform(self, data: pa.Table) -> pa.Table: ...
        def _commit_props(self, version: int, meta: dict[str, Any]) -> Any: ...

    def can_load_aside(self) -> bool:
        """A local table (files are moved into it by a rename) the run creates."""
        return bool(self.creates_table and self.parts is not None)

    def _aside_dir(self) -> str:
        assert self.parts is not None
        return os.path.join(self.parts, ASIDE)

    def write_aside(self, batches: Iterator[pa.RecordBatch], schema: pa.Schema, writers: int = 1) -> None:
        """Encode the run's records (``schema``: the staged one, without the action column) into
        the scratch table, as the first commit would have written them (the table's types,
        ``partition_by``). Nothing of the table changes. ``writers`` > 1: that many encoders at
        once, each taking the next batch when it is ready, into scratch tables of their own
        (delta-rs encodes one stream on one core; a 2M-row load 1.0-1.3 s on two, 1.5-2.7 on one)."""
        import threading

        from deltalake import write_deltalake

        target = self.target_schema
        lock = threading.Lock()

        def conformed() -> Iterator[pa.RecordBatch]:
            while True:
                with lock:  # the writers share the one stream from staging
                    rb = next(batches, None)
                if rb is None:
                    return
                tbl = self._conform(pa.Table.from_batches([rb], schema=schema))
                yield from tbl.cast(target).to_batches()

        shutil.rmtree(self._aside_dir(), ignore_errors=True)  # left by an attempt of this run that died

        def write(i: int) -> None:  # errors as the usual commit's (_guard), once: the stream is read once
            where = os.path.join(self._aside_dir(), str(i))
            os.makedirs(os.path.dirname(where), exist_ok=True)
            self._guard(lambda: write_deltalake(where, pa.RecordBatchReader.from_batches(target, conformed()),
                                                mode="append", partition_by=self.destination.partition_by),
                        attempts=1)

        failed: list[BaseException] = []

        def guarded(i: int) -> None:
            try:
                write(i)
            except BaseException as exc:  # noqa: BLE001 - raised below, on the calling thread
                failed.append(exc)

        threads = [threading.Thread(target=guarded, args=(i,), name=f"dfsync-delta-aside-{i}", daemon=True)
                   for i in range(1, writers)]
        for t in threads:
            t.start()
        guarded(0)
        for t in threads:
            t.join()
        if failed:
            raise failed[0]

    def commit_aside(self, batch_no: int) -> BatchResult:
        """Move the scratch table's files into the table and create it with them in one commit
        (the run's transaction identifier at ``batch_no``, the ledger's metadata). A commit
        that landed before (a lost answer, a retry) is not made twice."""
        return self._guard(lambda: self._commit_aside(batch_no))

    def _commit_aside(self, batch_no: int) -> BatchResult:
        from deltalake import DeltaTable
        from deltalake.transaction import AddAction, create_table_with_add_actions

        dt = self._table()
        if dt is not None and (dt.transaction_version(self.app_id) or 0) >= batch_no:
            return BatchResult()  # landed already: never twice
        adds = []
        scratch = sorted(os.path.join(self._aside_dir(), d) for d in os.listdir(self._aside_dir()))
        for where in scratch:
            for name in sorted(os.listdir(os.path.join(where, "_delta_log"))):
                if not name.endswith(".json"):
                    continue
                with open(os.path.join(where, "_delta_log", name), encoding="utf-8") as f:
                    found = [a["add"] for a in map(json.loads, f) if "add" in a]
                for a in found:  # the log's paths are URI-encoded: on disk (and to the commit) they are not
                    a["path"] = unquote(a["path"])  # ('c=%2528x%2529/part-...' is the file 'c=%28x%29/part-...')
                    src, dst = os.path.join(where, a["path"]), os.path.join(self.uri, a["path"])
                    if os.path.exists(src):  # (a retry finds those moved before)
                        os.makedirs(os.path.dirname(dst), exist_ok=True)
                        os.replace(src, dst)
                adds += found
        props = self._commit_props(batch_no, {"batch": batch_no, "fresh": True,
                                              "not_delivered": []})
        actions = [AddAction(a["path"], a["size"], a.get("partitionValues") or {}, a["modificationTime"],
                             a.get("dataChange", True), a.get("stats") or "") for a in adds]
        schema = DeltaTable(scratch[0]).schema()
        if dt is None:
            create_table_with_add_actions(self.uri, schema, actions, mode="append",
                                          partition_by=self.destination.partition_by,
                                          storage_options=self.opts, commit_properties=props)
        else:  # created meanwhile (by another writer): appended to, as the usual first commit would
            dt.create_write_transaction(actions, mode="append", schema=schema, commit_properties=props)
        self.drop_aside()
        return BatchResult()

    def drop_aside(self) -> None:
        """Remove the scratch table (never one of the table's files: those were moved out of it),
        and the run's directory and ``_dfsync`` when nothing else is left in them."""
        if self.parts is None or not os.path.isdir(self._aside_dir()):
            return
        shutil.rmtree(self._aside_dir(), ignore_errors=True)
        for d in (self.parts, os.path.dirname(self.parts)):
            with contextlib.suppress(OSError):  # not empty (replace's parts, another run's): kept
                os.rmdir(d)

    # ---------------------------------------------------------------- replace: the batches held aside
    def _part_files(self) -> dict[int, str]:
        """The batches held aside: Arrow IPC files (``batch-N.arrow``), or Parquet ones a paused run of
        an older dfsync left (``batch-N.parquet``)."""
        if self.parts is None or not os.path.isdir(self.parts):
            return {}
        found = (re.fullmatch(r"batch-(\d+)\.(?:arrow|parquet)", n) for n in os.listdir(self.parts))
        return {int(m.group(1)): os.path.join(self.parts, m.group(0)) for m in found if m}

    @staticmethod
    def _part_batches(path: str) -> Any:
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq
            yield from pq.ParquetFile(path).iter_batches()
            return
        with pa.OSFile(path) as src:
            part = pa.ipc.open_file(src)
            for i in range(part.num_record_batches):
                yield part.get_batch(i)
