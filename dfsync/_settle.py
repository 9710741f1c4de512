"""Settling what earlier runs left behind, before a run goes on (STATES.md).

A crash between a destination applying a batch and the workspace confirming it leaves the
batch in flight: :func:`reconcile` asks the destination's ledger whether it landed. A run its
destination applies only at its end (``replace``, Parquet) that failed or is restarted gives
its batches up through :func:`abandon_run`, the one abort path. :func:`adopt_confirmed_batches`
tells a resumed run's live staging which of its rows such settled batches delivered.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
from typing import TYPE_CHECKING

import pyarrow as pa

from .destinations.base import DestinationContext, DestinationSession
from .errors import WorkspaceOutOfDate
from .states import RecordStatus
from .store import Store, key_match

if TYPE_CHECKING:
    from .definition import SyncDefinition
    from .staging import Staging


def reconcile(store: Store, sync_id: int, sync_name: str, defn: SyncDefinition) -> None:
    """Settle batches a dead process left in flight, by asking the destination's ledger."""
    discard_unapplied_failed_runs(store, sync_id, sync_name, defn)
    inflight = store.inflight_batches(sync_id)
    if not inflight:
        return
    by_run: dict[int, list[int]] = {}
    for run_id, batch_no in inflight:
        by_run.setdefault(run_id, []).append(batch_no)
    for run_id, batches in by_run.items():
        session = defn.destination.open(destination_context(store, sync_id, sync_name, defn, run_id))
        try:
            committed = session.committed_batches()
        finally:
            session.close()
        store.settle_inflight(sync_id, run_id, batches, committed, defn.primary_key, not applies_per_batch(defn))
        store.note(sync_id, run_id, f"reconciled in-flight batches {batches}: "
                   f"{sorted(set(batches) & set(committed))} had landed")


def abandon_run(store: Store, sync_id: int, sync_name: str, defn: SyncDefinition, run_id: int, *,
                session: DestinationSession | None = None,
                ignore: type[BaseException] | tuple[type[BaseException], ...] = (),
                unless_applied: bool = False) -> bool:
    """The one abort path of a run its destination applies only at its end (``replace``, Parquet):
    the destination abandons the batches it holds aside, then the workspace discards them (what
    they superseded is delivered again).

    ``session``: the run's open session (else one is opened and closed here). ``ignore``:
    destination errors that do not stop the discard. ``unless_applied``: ask the destination
    first; when it already applied the run, nothing changes and False is returned.
    """
    own = session is None
    if own:
        try:
            session = defn.destination.open(destination_context(store, sync_id, sync_name, defn, run_id))
        except ignore:
            session = None
    try:
        if unless_applied and session is not None and session.applied():
            return False
        if session is not None:
            with contextlib.suppress(ignore):
                session.abandon()
    finally:
        if own and session is not None:
            with contextlib.suppress(ignore):
                session.close()
    store.discard(sync_id, run_id)
    return True


def settle_failure(store: Store, sync_id: int, sync_name: str, defn: SyncDefinition, run_id: int,
                   session: DestinationSession | None, resumed: bool, error: str, detail: str) -> tuple[str, str]:
    """What a failing run's batches become; returns its error and event texts, true to that.

    A destination that applies a run only at its end (``replace``, Parquet) abandons the batches
    it holds aside, also those a run resumed from ``paused`` wrote before its pause when it fails
    before transferring again (their counters are taken back with them: none of their rows is
    delivered). Unless the destination already applied the run (its final swap happened before
    the error): then its batches stay delivered, and so when it cannot tell (the next run asks
    again). On other destinations those earlier batches stay delivered, and a message saying
    "Nothing was sent" (a check or schema refusal) says so instead."""
    try:
        earlier = resumed and session is None and store.run_row(run_id)["succeeded"] > 0
    except Exception:  # the workspace is away: the run's failure is recorded as it can be
        earlier = False
    if (session is not None or earlier) and not applies_per_batch(defn):
        with contextlib.suppress(Exception):
            abandon_run(store, sync_id, sync_name, defn, run_id, session=session,
                        ignore=Exception if session is not None else (), unless_applied=True)
    elif earlier:
        error, detail = (re.sub(r"[Nn]othing was sent", "Nothing more was sent (what its batches delivered before "
                                "it was paused stays in the destination)", t) for t in (error, detail))
    return error, detail


def discard_unapplied_failed_runs(store: Store, sync_id: int, sync_name: str,
                                  defn: SyncDefinition) -> None:
    """Forget the batches of failed runs that a once-per-run destination never applied.

    A destination that applies a run at its end (Parquet, ``replace`` mode) holds a resumed
    run's earlier batches aside. If that run then fails before it transfers again (its
    process dies while querying, or the source fails), the batches were never applied, so
    the delivered state must not claim them. (A run failed at its end for too many rejected
    rows was applied, and keeps its state.)
    """
    if applies_per_batch(defn):
        return
    for run_id in store.failed_unapplied_runs(sync_id):
        if not abandon_run(store, sync_id, sync_name, defn, run_id, unless_applied=True):
            # its process died after the final swap: what it sent is delivered (never sent twice)
            store.keep_applied_run(sync_id, run_id, defn.destination_mode.rewrites)
            store.note(sync_id, run_id, "this failed run had been applied by the destination before its process "
                       "died: its batches stay delivered")
            continue
        store.note(sync_id, run_id, "discarded the batches of this failed run: the destination never applied them")


def destination_context(store: Store, sync_id: int, sync_name: str, defn: SyncDefinition, run_id: int,
                        requeried: bool = False) -> DestinationContext:
    """What a destination session of this run is told (mode, keys, schema policy, ledger id)."""
    return DestinationContext(sync_id=sync_id, sync_name=sync_name, run_id=run_id,
                              mode=defn.destination_mode, primary_key=tuple(defn.primary_key),
                              requeried=requeried, workspace_id=store.ledger_id(run_id),
                              schema=defn.schema, owner_epoch=store.owner_epoch(run_id))


def open_for_transfer(store: Store, sync_id: int, sync_name: str, defn: SyncDefinition,
                      ctx: DestinationContext, first: bool) -> DestinationSession:
    """The run's destination session, opened to send its batches. ``first``: the workspace knows
    no batch of this run yet, so the destination's ledger must not either: batches under the
    run's key there were written by a run this workspace file does not know (the file was put
    back from a copy older than the destination, and its run ids repeat). Such a run fails before
    anything is sent (``WorkspaceOutOfDate``): sending would be taken for those batches (resumed
    into a table thought fresh, deduplicated by an idempotency key, or overwriting their files).
    Runs from this one on carry a new ledger key, so the ways out the error names work."""
    session = defn.destination.open(ctx)
    try:
        seen = sorted(session.committed_batches()) if first else []
    except Exception:
        session.close()
        raise
    if not seen:
        return session
    session.close()
    with contextlib.suppress(Exception):  # a role that may not write workspace_meta: the next run says it again
        store.move_ledger(ctx.run_id)
    shown = ", ".join(map(str, seen[:5])) + (f" and {len(seen) - 5} more" if len(seen) > 5 else "")
    raise WorkspaceOutOfDate(
        f"the destination {defn.destination.describe()} already holds {'batch' if len(seen) == 1 else 'batches'} "
        f"{shown} of run {ctx.run_id} of "
        f"sync '{sync_name}' from this workspace, a run this workspace file does not know: the file is older than "
        f"the destination (put back from a copy taken before that run?), so it does not know the rows such runs "
        f"delivered. Nothing was sent. If you have the newer workspace file, put it back. Otherwise: "
        f"sync.reset() and run again makes a first load (upsert and mirror update the rows the destination has, "
        f"though mirror does not delete rows the lost runs delivered that the source no longer has; insert "
        f"fails the rows whose key the destination has), or one run with destination_mode='replace' rewrites the "
        f"table as the source is now. The next runs use a new key in the destination's ledger.")


def close_session(store: Store, session: DestinationSession) -> None:
    """A run's end: its destination session closes on a thread while this thread's workspace lease
    checkpoints (``Store.checkpoint``); both mostly wait on the disk (a DuckDB destination checkpoints
    what the run wrote at its close), so side by side they take about the longer of the two, not the
    sum (bench/RESULTS.md, issue 22). Returns once the session is closed, so the run's callbacks, and
    any process they start, find the destination closed; the lease's own close then writes what is
    left (the run's last events). Errors of either are ignored, as the close's always were."""
    def close() -> None:
        with contextlib.suppress(Exception):
            session.close()

    closing = threading.Thread(target=close, name="dfsync-destination-close", daemon=True)
    closing.start()
    interrupted: BaseException | None = None
    try:
        with contextlib.suppress(Exception):
            store.checkpoint()
    except KeyboardInterrupt as exc:
        interrupted = exc
    while closing.is_alive():  # never return (nor leave on Ctrl-C) with the destination still closing
        try:
            closing.join()
        except KeyboardInterrupt as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted


def notice_lost_rows(store: Store, sync_id: int, sync_name: str, defn: SyncDefinition, run_id: int) -> None:
    """The one policy for a destination that lost what the delivered state says it confirmed: its
    table dropped, its file or Delta directory deleted, or the table emptied, by hand, since the
    last run. Without this look every row would diff ``unchanged`` and nothing would be sent, the
    destination left empty while the sync says healthy.

    Before a new run reads its source (not a resumed one: its batches are its own), when the sync
    has delivered rows and its mode refills lost rows (``DestinationMode.refills_lost_rows``: not
    ``replace``, which rewrites the table anyway, nor ``insert``, whose table a reader may drain), the
    destination is asked once whether its table exists with at least one row
    (``DestinationSession.holds_rows``: no count). If not, the run forgets the delivered state and
    cursor as ``sync.reset()`` does, with an event saying so, and goes on as a first load: every
    row the source has is sent again and counted ``inserted``. That is exact, since the destination
    holds none of them. A destination that cannot tell (HTTP) or cannot be reached now is not
    asked further (one attempt, no retries); an unreachable one pauses the run at its transfer, after
    the transfer's own retries, as before. Rows deleted by
    hand from a table that keeps others are not noticed (that would take a count of every row)."""
    if not defn.destination.tells_rows or not defn.destination_mode.refills_lost_rows or not store.has_delivered(sync_id):
        return
    from .errors import TransientDestinationError

    try:
        # a look only: without the owner's epoch the session raises no fence row in the destination's
        # ledger, so a run refused later (bad input) leaves the destination as it was
        # ``look``: one attempt, no retries: an unreachable destination is waited out by the transfer alone
        ctx = dataclasses.replace(destination_context(store, sync_id, sync_name, defn, run_id), owner_epoch=None,
                                  look=True)
        session = defn.destination.open(ctx)
        try:
            holds = session.holds_rows()
        finally:
            session.close()
    except TransientDestinationError as exc:
        store.note(sync_id, run_id, f"could not ask the destination whether it still holds the delivered rows: {exc}")
        return
    if holds is not False:
        return
    n = store.delivered_count(sync_id)
    store.reset_delivered(sync_id, (
        f"the destination {defn.destination.describe()} holds no row (its table or file is missing or empty) while "
        f"the sync's delivered state says it confirmed {n} (deleted or emptied by hand since the last run?): "
        f"the delivered state and cursor are forgotten, as sync.reset() does, and this run sends every row of "
        f"the source again"), run_id=run_id)


def applies_per_batch(defn: SyncDefinition) -> bool:
    """Does a committed batch change what readers of the destination see right away?"""
    return not defn.destination_mode.rewrites and getattr(defn.destination, "applies_per_batch", True)


def stored_applies_per_batch(defn: SyncDefinition, stored: dict) -> bool:
    """:func:`applies_per_batch` for a sync whose destination may not be buildable in this process
    (a literal secret kept by the session that made it, an extra not installed): then its kind's
    class tells (``stored``: the sync's definition as stored)."""
    from .destinations.base import destination_class
    from .errors import DfsyncError

    try:
        return applies_per_batch(defn)
    except DfsyncError:
        cls = destination_class(str(stored["destination"]["kind"]))
        return getattr(cls, "applies_per_batch", True)


def adopt_confirmed_batches(store: Store, staging: Staging, sync_id: int, run_id: int, key: list[str],
                            rewrites: bool = False) -> None:
    """Batches confirmed by reconcile that the live staging never heard of count as sent.

    Only a staged row with the fingerprint *and action* the batch carried is that batch's
    row: a run that re-read its source after losing its staging may hold, under the same
    key, a newer version (or the delete) of a row an earlier batch of the run delivered,
    and that must be sent. (A delete carries the delivered fingerprint, so the action
    tells it from the insert that delivered it.) ``rewrites``: a ``replace`` run, whose
    batches carry every row, unchanged ones too, as an insert (``Staging.batches``).
    """
    staging.flush_outcomes()
    known = [r[0] for r in staging.con.execute(
        "SELECT DISTINCT _batch FROM outcomes WHERE _batch IS NOT NULL").fetchall()]
    done = store.run_delivered(sync_id, run_id, key, known)
    if done is not None and done.num_rows:
        scon = staging.con
        scon.register("_done", done)
        scon.execute(f"INSERT INTO outcomes SELECT s.rowid, 'succeeded', d._batch, NULL FROM stg s "
                     f"JOIN _done d ON {key_match('s', 'd', key)} AND s._fp = d._fp "
                     f"AND {repr('insert') if rewrites else 's._action'} = d._action")
        scon.unregister("_done")


def keep_own_rejections(store: Store, staging: Staging, sync_id: int, run_id: int, key: list[str]) -> None:
    """A paused run that read its source again keeps the rows its earlier batches saw rejected as
    rejected (outcome ``failed``, not sent again in this run: the next run sends them, as when its
    staged rows survive the pause). Only a staged row with the rejected version's fingerprint: a row
    changed since is a new version and is sent. Its records and counters already say so."""
    rejected = store.records(sync_id, run_id, RecordStatus.FAILED.value)
    if rejected is None or not rejected.num_rows:
        return
    staging.flush_outcomes()
    scon = staging.con
    scon.register("_rejected", rejected.select([*key, "_fingerprint", "_batch", "_error"]))
    try:
        scon.execute(f"INSERT INTO outcomes SELECT DISTINCT ON (s.rowid) s.rowid, 'failed', r._batch, r._error "
                     f"FROM stg s JOIN _rejected r ON {key_match('s', 'r', key)} AND s._fp = r._fingerprint "
                     f"WHERE s.rowid NOT IN (SELECT _rid FROM outcomes)")
    finally:
        scon.unregister("_rejected")


def with_earlier_batches(store: Store, staging: Staging, sync_id: int, run_id: int, defn: SyncDefinition,
                         counts: dict[str, int]) -> dict[str, int]:
    """``counts`` (rows per action as a resumed run re-read them) with the rows its earlier batches
    delivered counted as what they were sent as, not as ``unchanged``.

    A paused run whose staged rows were lost reads its source again and diffs it with the delivered
    state, which holds its own earlier batches: a row it inserted before is found unchanged now. The
    run did insert it (its ``sent`` and ``succeeded`` say so), so it counts as inserted (updated) here,
    and the deletes it already sent (gone from the state) as deleted; rows read again stay counted once
    (``queried = inserted + updated + unchanged + invalid``). So do the changed rows its mode skipped
    (insert mode): their skip was noted, so they read again as unchanged; they count as updated."""
    key = list(defn.primary_key)
    own = store.run_delivered(sync_id, run_id, key)
    delivered = 0 if own is None else own.num_rows
    own = None if own is None else own.select([*key, "_fp", "_action"])
    if not defn.destination_mode.sends_updates:
        skipped = store.records(sync_id, run_id, RecordStatus.SKIPPED.value)
        if skipped is not None and skipped.num_rows:
            skipped = skipped.select([*key, "_fingerprint", "_action"]).rename_columns([*key, "_fp", "_action"])
            # a key kept hashed (sensitive=) or retyped since cannot match: counted as before
            with contextlib.suppress(pa.ArrowException, ValueError):
                own = skipped if own is None else pa.concat_tables([own, skipped.cast(own.schema)])
    if own is None or not own.num_rows:
        return counts
    scon, out = staging.con, dict(counts)
    scon.register("_own", own)
    try:
        if staging.changed_only:  # only changed rows were staged: an own row whose key is not among them is unchanged
            found = scon.execute(f"SELECT o._action, count(*) FROM _own o ANTI JOIN stg s ON {key_match('o', 's', key)} "
                                 f"WHERE o._action IN ('insert', 'update') GROUP BY ALL").fetchall()
        else:
            found = scon.execute(
                f"SELECT o._action, count(*) FROM _own o SEMI JOIN (SELECT * FROM stg WHERE _action = 'unchanged' "
                f"AND rowid NOT IN (SELECT _rid FROM invalid)) s ON {key_match('o', 's', key)} AND s._fp = o._fp "
                f"WHERE o._action IN ('insert', 'update') GROUP BY ALL").fetchall()
    finally:
        scon.unregister("_own")
    for action, n in found:
        n = min(n, out["unchanged"])
        out[action] += n
        out["unchanged"] -= n
    if defn.destination_mode.sends_deletes:  # a delivered delete leaves no state row: what else it confirmed
        out["delete"] += max(0, int(store.run_row(run_id)["succeeded"] or 0) - delivered)
    return out
