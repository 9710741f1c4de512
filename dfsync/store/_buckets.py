"""A partitioned run's buckets (``dfsync._partition``): one row per (run, bucket) in ``buckets``.

The run's driver writes them (nobody else: workers never touch the workspace) and
``run.buckets()``, the panel and the CLI read them. A row holds the bucket's state (``waiting``,
``running``, ``done``, ``failed``), its attempts (each dispatch to a worker is one), what its
batches sent (``sent``/``succeeded``/``failed``/``skipped``, ``batches``: added up over the run,
a resumed run's too) and its last error. Each change also appends a ``bucket`` event, the run's
history. The SQL is plain enough for both stores (DuckDB file, PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from ._common import first, frame, now

BUCKET_STATES = ("done", "running", "waiting", "failed")
BUCKET_COUNTERS = ("sent", "succeeded", "failed", "skipped", "batches")

# a bucket is only running while its run is: a paused run's (its driver stopped or died) waits again
_STATE = "CASE WHEN b.state = 'running' AND r.status <> 'in_progress' THEN 'waiting' ELSE b.state END"


def bucket_summary(states: dict[str, int]) -> str:
    """``{"done": 3, "running": 2, ...}`` as "3 done, 2 running, 3 waiting, 0 failed"."""
    return ", ".join(f"{int(states.get(s, 0))} {s}" for s in BUCKET_STATES)


class BucketOps:
    """Mixed into the stores (which supply ``_transaction``, ``_connect`` and ``_event``)."""

    _transaction: Any
    _connect: Any
    _event: Any

    def begin_buckets(self, sync_id: int, run_id: int, n: int, detail: str) -> None:
        """A partitioned run's transfer starts or resumes over ``n`` buckets (one transaction, with
        the event ``detail``): each bucket not done waits. A resumed run over the same ``n`` keeps
        its buckets' attempts and counters; over another ``n`` (the definition changed) they start anew."""
        with self._transaction() as con:
            have = int(first(con.execute("SELECT count(*) FROM buckets WHERE run_id = ?", [run_id]))[0])
            if have == n:
                con.execute("UPDATE buckets SET state = 'waiting', updated_at = ? WHERE run_id = ? AND state <> 'done'",
                            [now(), run_id])
            else:
                con.execute("DELETE FROM buckets WHERE run_id = ?", [run_id])
                con.execute("INSERT INTO buckets (run_id, bucket, state, attempts, sent, succeeded, failed, skipped, "
                            "batches, error, updated_at) SELECT CAST(? AS BIGINT), CAST(g.b AS INTEGER), 'waiting', "
                            "0, 0, 0, 0, 0, 0, NULL, CAST(? AS TIMESTAMPTZ) FROM generate_series(0, ?) AS g(b)",
                            [run_id, now(), n - 1])
            self._event(con, sync_id, run_id, "note", None, None, detail)

    def set_bucket(self, sync_id: int, run_id: int, bucket: int, state: str, counts: dict[str, int] | None = None,
                   error: str | None = None) -> dict[str, int]:
        """A bucket changed state (``running``: dispatched again, one attempt more), adding ``counts``
        to its counters and keeping ``error`` as its last one; one transaction with its ``bucket``
        event. Returns how many of the run's buckets are in each state now."""
        from ..errors import redact

        if state not in BUCKET_STATES:
            raise ValueError(f"bucket state {state!r}")
        counts = {c: int((counts or {}).get(c, 0)) for c in BUCKET_COUNTERS}
        adds = ", ".join(f"{c} = {c} + ?" for c in BUCKET_COUNTERS)
        error = redact(error) if error else None
        with self._transaction() as con:
            con.execute(f"UPDATE buckets SET state = ?, attempts = attempts + ?, {adds}, "
                        f"error = coalesce(?, error), updated_at = ? WHERE run_id = ? AND bucket = ?",
                        [state, int(state == "running"), *counts.values(), error, now(), run_id, bucket])
            row = first(con.execute("SELECT attempts FROM buckets WHERE run_id = ? AND bucket = ?", [run_id, bucket]))
            parts = [f"bucket {bucket} {state}", f"attempts {row[0] if row else 0}"]
            parts += [f"{k} {v}" for k, v in counts.items() if v]
            self._event(con, sync_id, run_id, "bucket", None, None,
                        ", ".join(parts) + (f"; error: {error}" if error else ""))
            have = dict(con.execute("SELECT state, count(*) FROM buckets WHERE run_id = ? GROUP BY state",
                                    [run_id]).fetchall())
        return {s: int(have.get(s, 0)) for s in BUCKET_STATES}

    def buckets(self, run_id: int) -> pl.DataFrame:
        """Each bucket of a partitioned run (none: not partitioned): bucket, state, attempts, sent,
        succeeded, failed, skipped, batches, error."""
        with self._connect() as con:
            return frame(con, f"SELECT b.bucket, {_STATE} AS state, b.attempts, b.sent, b.succeeded, b.failed, "
                              f"b.skipped, b.batches, b.error FROM buckets b JOIN runs r ON r.id = b.run_id "
                              f"WHERE b.run_id = ? ORDER BY b.bucket", [run_id])

    def bucket_states(self, run_ids: Sequence[int]) -> dict[int, dict[str, int]]:
        """Run -> how many of its buckets are in each state, for the runs among ``run_ids`` that have buckets."""
        ids = [int(r) for r in run_ids]
        if not ids:
            return {}
        with self._connect() as con:
            rows = con.execute(f"SELECT b.run_id, {_STATE} AS s, count(*) FROM buckets b JOIN runs r ON r.id = b.run_id "
                               f"WHERE b.run_id IN ({', '.join(str(i) for i in ids)}) GROUP BY b.run_id, s").fetchall()
        out: dict[int, dict[str, int]] = {}
        for rid, state, count in rows:
            out.setdefault(int(rid), dict.fromkeys(BUCKET_STATES, 0))[state] = int(count)
        return out
