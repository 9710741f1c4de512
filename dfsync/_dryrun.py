"""The workspace as a dry run sees it (``sync.preview()``).

A preview runs the run's own query and check code (:class:`dfsync.runner.Runner` with
``dry_run=True``), so it cannot drift from ``sync.run()``. It must change nothing: the runner
gets this view of the store, which passes reads through, keeps what a run would record about
itself (counters, notes, check results) for the preview to show, drops what it would store
otherwise (records: a preview's are its staged rows; the key types and snapshot it remembers
for the sync), and refuses everything else (a transition, a batch) loudly.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DryRunStore"]

#: store operations that only read
READS = frozenset({"key", "sync_row", "released", "delivered", "delivered_count", "retry_rows", "last_checked_run",
                   "skipped_versions",
                   "ledger_id", "workspace_id",  # the workspace id keys the hashes of sensitive examples
                   "check_proofs"})  # a preview uses the proofs of earlier runs (and stores none)


class DryRunStore:
    def __init__(self, store: Any) -> None:
        self._store = store
        #: the counters a run would set (queried, inserted, updated, deleted, unchanged, invalid, ...)
        self.counters: dict[str, int] = {}
        #: what a run would note in its events
        self.notes: list[str] = []
        #: the check results a run would store
        self.check_results: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        if name in READS:
            return getattr(self._store, name)
        raise AttributeError(f"a dry run (sync.preview()) writes nothing: store.{name} is not for it")

    def set_counters(self, run_id: Any, **counts: int) -> None:
        self.counters.update(counts)

    def note(self, sync_id: Any, run_id: Any, text: str, **kw: Any) -> None:
        self.notes.append(text)

    def store_checks(self, run_id: Any, results: list[dict[str, Any]], proofs: Any = None) -> None:
        """A preview uses the proofs of earlier runs (``check_proofs`` reads) but keeps none of its own."""
        self.check_results = list(results)

    def store_records(self, sync_id: Any, run_id: Any, records: Any) -> None:
        """A preview's records are its staged rows."""

    def set_sync_fields(self, sync_id: Any, **fields: Any) -> None:
        """What a run remembers for the sync (key types, the source's snapshot): not a preview's."""


def refusals(runner: Any) -> list[str]:
    """What the run would refuse before sending anything, given the rows a preview staged: a schema
    change that could alter values (or any change under schema='freeze'), a type the destination
    cannot hold, a cursor value no later run could read past. The run raises these in its transfer
    (``Runner.decide_schema``, which only reads); a preview lists them as ``a run would fail: ...``."""
    from .errors import CursorValueError, SchemaMismatchError

    try:
        runner.decide_schema(runner.staging)
    except (SchemaMismatchError, CursorValueError) as exc:
        return [f"a run would fail: {exc}"]
    return []
