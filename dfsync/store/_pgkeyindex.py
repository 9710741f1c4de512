"""The key index of a PostgreSQL workspace's delivered state, built after a first load.

``state_<id>``'s index on the key columns finds the delivered versions a batch's updates and
deletes supersede, the rows a destination rejected, the keys ``sync.forget`` erases. Kept up to
date row by row while a first load writes 10M rows ahead, it cost the server more than the
writes themselves (2.3-2.6 CPU-s per 2M rows with it, 1.0-1.1 without; worse once it outgrows
the cache), and a first load needs none of it: every row is new. So a state table is created
without it, and the index is built in one pass (a sort: a fraction of that) the first time a
write needs it:

* before a batch whose confirmation finds rows by key: one that updates or deletes keys, or
  has rows the destination rejected (:meth:`PgKeyIndex.confirm_batch`);
* before batches a dead process left in flight are settled, and at a run's end: started on a
  connection of its own once every batch is confirmed (:meth:`transfer_done`), so it runs beside
  the destination's own finish (a first load into PostgreSQL builds the table's primary key
  then), and waited for by :meth:`finish_run`: every first load ends with the index built;
* at the start of a transfer into a state that already holds rows (a first load that failed or
  paused and is resumed, a table an older version created without it), and before ``forget``.

An index changes no row: reads return the same rows with or without it, so the local copy's
generation (:mod:`dfsync.store._pgstatecache`) is untouched, and a crash before the build only
leaves it for the next of these. It is built in a transaction of its own, outside the run's
fenced writes (a build holds no lock on the run's row: the heartbeat goes on); ``SHARE ROW
EXCLUSIVE`` on the table makes a second builder wait and then find it built. Writers of the same
state wait for the build (at most ``busy_timeout``, then ``WorkspaceBusy``); readers do not.
Which index is "the key index" is told by the catalog (the state table's one index without a
predicate), so tables created by older versions, with an index named by PostgreSQL, count.

The state tables also skip autovacuum's insert-triggered passes
(``autovacuum_vacuum_insert_threshold = -1``: a first load would otherwise start one each time
the table grew by a fifth); the passes deletes trigger, and ANALYZE, stay as they were.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from .._ident import quote
from ._delivery import state_table

__all__ = ["PgKeyIndex", "STATE_TABLE_OPTIONS", "build_settings"]

log = logging.getLogger("dfsync.store")

#: storage parameters of a new state table (see the module docstring)
STATE_TABLE_OPTIONS = "autovacuum_vacuum_insert_threshold = -1"

_HAS_INDEX = ("SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = to_regclass(CAST(? AS text)) "
              "AND i.indpred IS NULL)")


def build_settings(table_bytes: int) -> dict[str, str]:
    """The server settings the key index is built with, for a state table of ``table_bytes``.

    One process, and memory to sort the keys in it: the sort's tuples take about the table's
    bytes (10M rows of a bigint key: a 603 MB table; 1.25x that sorts in memory). PostgreSQL
    would otherwise start two parallel workers for a table this size (its default
    ``max_parallel_maintenance_workers``), which cost more CPU in all than they save in time, and
    the build runs beside the destination's own key build (measured alone, 10M rows: parallel
    with 256 MB 3.4-3.7 server CPU-s, serial with 256 MB 2.9-3.1, serial with 1 GB 2.3-2.4, as
    fast as the parallel build). ``SET LOCAL``: for the build's transaction only; the memory is
    a cap (a small table's sort takes what it needs), at most 1 GB.
    """
    mb = max(256, min(1024, int(table_bytes * 1.25) >> 20))
    return {"max_parallel_maintenance_workers": "0", "maintenance_work_mem": f"{mb}MB"}


def has_key_index(con: Any, st: str) -> bool:
    """Does the state table have its key index (an index without a predicate)?"""
    return bool(con.execute(_HAS_INDEX, [st]).fetchall()[0][0])


class PgKeyIndex:
    """Mixed in before :class:`~dfsync.store._pgfence.PgFencing` in ``PostgresStore``: the index is
    built in its own transaction, before the fenced write that needs it."""

    def key_index(self, sync_id: int, key: Sequence[str], *, only_if_rows: bool = False) -> bool:
        """Build the state's key index if it is missing (``only_if_rows``: only when the table
        holds rows). True when the table has it afterwards."""
        st = state_table(sync_id)
        with self._connect() as con:  # type: ignore[attr-defined]
            exists = self._has_table(con, st)  # type: ignore[attr-defined]
            if not exists or has_key_index(con, st):
                return exists
        with self._transaction() as con:  # type: ignore[attr-defined]
            con.execute(f"LOCK TABLE {st} IN SHARE ROW EXCLUSIVE MODE")  # one builder; writers wait
            if has_key_index(con, st):
                return True
            if only_if_rows and not con.execute(f"SELECT EXISTS (SELECT 1 FROM {st})").fetchall()[0][0]:
                return False
            size = con.execute("SELECT pg_relation_size(to_regclass(CAST(? AS text)))", [st]).fetchall()[0][0]
            for name, value in build_settings(int(size or 0)).items():
                con.execute(f"SET LOCAL {name} = '{value}'")
            con.execute(f"CREATE INDEX {quote(st + '_key')} ON {st} ({', '.join(quote(k) for k in key)})")
            log.debug("sync %s: key index of the delivered state built", sync_id)
        return True

    def ensure_state_table(self, sync_id: int, key_types: dict[str, str]) -> None:
        super().ensure_state_table(sync_id, key_types)  # type: ignore[misc]
        self.key_index(sync_id, list(key_types), only_if_rows=True)  # rows already there: a re-sync follows

    def confirm_batch(self, sync_id: int, run_id: int, batch_no: int, key: Sequence[str],
                      not_delivered: list[list[Any]], *args: Any, **kw: Any) -> None:
        # a batch this process wrote ahead with inserts only, all delivered, finds nothing by key
        if not_delivered or self._changes.get((run_id, batch_no), True):  # type: ignore[attr-defined]
            self.key_index(sync_id, key)
        return super().confirm_batch(sync_id, run_id, batch_no, key, not_delivered,  # type: ignore[misc]
                                     *args, **kw)

    def settle_inflight(self, sync_id: int, run_id: int, batches: Sequence[int], committed: Any,
                        key: Sequence[str], *args: Any, **kw: Any) -> None:
        if committed:
            self.key_index(sync_id, key)
        return super().settle_inflight(sync_id, run_id, batches, committed, key, *args, **kw)  # type: ignore[misc]

    def transfer_done(self, sync_id: int, key: Sequence[str]) -> None:
        """Start building a missing key index on a connection of its own while the destination
        finishes (its own indexes, commits): the two run side by side; :meth:`finish_run` waits.
        Beside them, a thread of its own folds this host's copy of the state (a first load recorded
        a delta per batch) into one file, so the next run reads it whole instead of replaying them."""
        st = state_table(sync_id)
        with self._connect() as con:  # type: ignore[attr-defined]
            if not self._has_table(con, st) or has_key_index(con, st):  # type: ignore[attr-defined]
                return

        def build() -> None:
            try:
                self.key_index(sync_id, key)
            except Exception as exc:  # finish_run builds it then (or says why it cannot)
                log.debug("sync %s: key index not built beside the destination's finish: %s", sync_id, exc)
            finally:
                self._drop_thread_con()  # type: ignore[attr-defined]  # this thread's connection only

        def fold() -> None:  # an index changes no row: the copy's generation is the same after the build
            try:
                self.fold_local_copy(sync_id, key)  # type: ignore[attr-defined]
            except Exception as exc:  # the next read replays the deltas instead
                log.debug("sync %s: this host's copy not folded: %s", sync_id, exc)
            finally:
                self._drop_thread_con()  # type: ignore[attr-defined]

        threads = [threading.Thread(target=fn, name=f"dfsync-{fn.__name__}-{sync_id}", daemon=True)
                   for fn in (build, fold)]
        self.__dict__.setdefault("_key_builds", {})[sync_id] = threads
        for t in threads:
            t.start()

    def finish_run(self, sync_id: int, run_id: int, key: Sequence[str], **kw: Any) -> None:
        for started in self.__dict__.get("_key_builds", {}).pop(sync_id, ()):
            started.join()
        self.key_index(sync_id, key)
        return super().finish_run(sync_id, run_id, key, **kw)  # type: ignore[misc]

    def forget_keys(self, sync_id: int, key: Sequence[str], keys: Sequence[tuple[Any, ...]]) -> dict[str, int]:
        if keys:
            self.key_index(sync_id, key, only_if_rows=True)
        return super().forget_keys(sync_id, key, keys)  # type: ignore[misc]
