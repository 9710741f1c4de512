"""Retention and erasure of what a workspace keeps about rows: records older than a sync's
``record_retention`` (:meth:`ErasureOps.purge_records`), and every trace of given keys
(:meth:`ErasureOps.forget_keys`: their records, their delivered state, and the events and run
errors and bucket errors that name them). The SQL is plain enough for both stores (DuckDB file, PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .._ident import quote
from ._common import first
from ._delivery import rec_table, state_table

#: what a forgotten key is replaced with in event details and run errors
FORGOTTEN = "[forgotten key]"


class ErasureOps:
    """Mixed into the stores (which supply ``_transaction`` and ``_has_table``)."""

    _transaction: Any
    _has_table: Any

    def purge_records(self, sync_id: int, before: datetime) -> int:
        """Remove the records of the sync's runs that finished before ``before``; how many rows."""
        rt = rec_table(sync_id)
        old = "_run_id IN (SELECT id FROM runs WHERE sync_id = ? AND finished_at IS NOT NULL AND finished_at < ?)"
        with self._transaction() as con:
            if not self._has_table(con, rt):
                return 0
            n = int(first(con.execute(f"SELECT count(*) FROM {rt} WHERE {old}", [sync_id, before]))[0])
            if n:
                con.execute(f"DELETE FROM {rt} WHERE {old}", [sync_id, before])
        return n

    def forget_keys(self, sync_id: int, key: Sequence[str], keys: Sequence[tuple[Any, ...]]) -> dict[str, int]:
        """Remove every trace of ``keys`` (tuples in ``key``'s column order): their records and
        delivered state rows are deleted, their values redacted from the sync's event details and
        run errors, in one transaction. Returns how many records, delivered rows and texts."""
        match = " AND ".join(f"{quote(k)} = ?" for k in key)
        counts = {"records": 0, "delivered": 0, "texts": 0}
        with self._transaction() as con:
            tables = [(name, t) for name, t in (("records", rec_table(sync_id)), ("delivered", state_table(sync_id)))
                      if self._has_table(con, t)]
            for values in keys:
                for name, table in tables:
                    n = int(first(con.execute(f"SELECT count(*) FROM {table} WHERE {match}", list(values)))[0])
                    if n:
                        con.execute(f"DELETE FROM {table} WHERE {match}", list(values))
                        counts[name] += n
                for v in {str(v) for v in values if v is not None and len(str(v)) >= 3}:  # "7" would hit any text
                    for table, col, where in (("events", "detail", "sync_id = ?"),
                                              ("runs", "error", "sync_id = ?"),
                                              ("buckets", "error", "run_id IN (SELECT id FROM runs WHERE sync_id = ?)")):
                        cond = f"{where} AND strpos({col}, ?) > 0"
                        n = int(first(con.execute(f"SELECT count(*) FROM {table} WHERE {cond}", [sync_id, v]))[0])
                        if n:
                            con.execute(f"UPDATE {table} SET {col} = replace({col}, ?, ?) WHERE {cond}",
                                        [v, FORGOTTEN, sync_id, v])
                            counts["texts"] += n
        return counts
