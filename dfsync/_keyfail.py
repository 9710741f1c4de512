"""A run that fails on its rows before anything is sent, keeping them as ``invalid`` records (private).

A source with null or repeated primary keys under ``on_invalid='fail'`` fails, but first runs its
checks on the other rows, as ``sync.preview()`` does: the run records every row it could not send
as ``invalid`` (a preview said 7 invalid rows where the failed run recorded 6, the one failing a
check counted as an update), and its error names the failing checks beside the keys, so one fix
covers both. A ``replace`` run whose every row was quarantined fails too (it would empty the table).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._sensitive import protect
from ._words import plural
from .errors import InvalidRecordsError, ValidationFailed

#: runs that change at most this many rows keep every record; a failing run keeps this many invalid ones
RECORD_RETENTION = 10_000


def keep_invalid_records(runner: Any) -> None:
    """A run failing on its rows keeps the offending ones (the first RECORD_RETENTION) as
    ``invalid`` records, so the user sees them without re-running under another policy. Rows with
    a null or repeated key come first: failing on its keys and on a check that rejects most rows,
    the run kept 2 of its 6 repeated keys (source order) while its error said they were kept."""
    staging = runner.staging
    inv = staging.invalid_records(limit=RECORD_RETENTION, keys_first=True)
    if inv.num_rows:
        runner.store.store_records(runner.sync_id, runner.run_id, protect(inv, runner.defn.sensitive, runner.store))
    total = staging.invalid_count()
    if total > inv.num_rows:
        runner.store.note(runner.sync_id, runner.run_id, f"{plural(total, 'row')} are invalid; the first "
                          f"{inv.num_rows} are kept as run.records(status='invalid')")


def refuse_emptied_table(runner: Any) -> None:
    """A ``replace`` run writes exactly its valid rows: when the checks quarantined every row it read
    (``on_invalid='skip'``), it would leave the table empty, as an empty source would. Like an empty
    full refresh, it fails before anything is sent (keeping the rows as invalid records), unless the
    sync has ``allow_empty=True``; a preview lists it as a problem."""
    defn = runner.defn
    if not defn.destination_mode.rewrites or defn.allow_empty:
        return
    c = runner.staging.valid_counts()
    if not c["invalid"] or c["insert"] + c["update"] + c["unchanged"]:
        return
    err = ValidationFailed(
        f"the checks quarantined every row the source returned ({plural(c['invalid'], 'row')}): "
        f"destination_mode='replace' would leave the table empty, so nothing was sent. Fix the rows "
        f"(run.records(status='invalid')), or create the sync with allow_empty=True if an empty table is meant.")
    if runner.dry:
        runner.problems.append(f"a run would fail: {err}")
        return
    keep_invalid_records(runner)
    raise err


def keys_and_checks(keys: InvalidRecordsError, count: Callable[[], None], validate: Callable[[], str],
                    keep_records: Callable[[], None]) -> InvalidRecordsError:
    """The error to raise for a run that fails on its keys, once ``count`` (the run's counters),
    ``validate`` (its checks, which under 'fail' quarantine the failing rows, keep the invalid
    records and raise) and ``keep_records`` (the invalid records) have recorded what it found."""
    count()
    try:
        validate()
    except ValidationFailed as checks:
        failing = str(checks).split(". Nothing was sent")[0]
        return InvalidRecordsError(f"{keys} The checks failed too: {failing}.")
    keep_records()
    return keys
