"""Retention and erasure from a sync's handle: :func:`purge` (``record_retention``, ``dfsync
purge``) and :func:`forget` (``sync.forget(keys)``, for erasure requests). The SQL is the
store's (:mod:`dfsync.store._erasure`); this module decides what to remove and says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ._sensitive import parse_retention, retention_delta
from ._settings import setting
from ._words import plural
from .errors import ConfigError, SyncAlreadyRunning
from .states import UNFINISHED_RUNS

if TYPE_CHECKING:
    from .sync import Sync


def compact(store: Any, sync_id: int, run_id: int | None = None) -> None:
    """After an erasure that removed something: the workspace file rewritten without the freed
    blocks that still hold the erased values (a DuckDB file; see dfsync/store/_compact.py). If
    it cannot be, an event and a warning say so (the erasure itself stands)."""
    why = store.compact()
    if why:
        text = (f"the workspace file was not compacted ({why}): the erased values stay in its unused "
                f"blocks until the next forget or purge that removes something compacts it")
        store.note(sync_id, run_id, text)
        warnings.warn(f"dfsync: {text}", stacklevel=3)


def purge(sync: Sync, older_than: Any = None, run_id: int | None = None, *, compact_file: bool = True) -> int:
    """Remove the records of ``sync``'s runs that finished longer ago than ``older_than``, else its
    ``record_retention``, else the workspace's; returns how many (0: no retention applies). The
    workspace file is then compacted when records were removed (``compact_file=False``: the caller does)."""
    retention = (parse_retention(older_than, "older_than") or sync.spec.record_retention
                 or setting("record_retention") or None)
    if retention is None:
        return 0
    before = datetime.now(timezone.utc) - retention_delta(retention)
    store = sync.workspace.store
    # an incremental run sends failed and invalid rows again from their records (its cursor
    # read may never bring them again): purging those records drops them, which must be said
    dropped = store.retries_purged(sync.id, sync.primary_key, before) if sync.sync_mode == "incremental" else 0
    n = store.purge_records(sync.id, before)
    if n:
        store.note(sync.id, run_id, f"{plural(n, 'record')} of runs that finished before {before:%Y-%m-%d %H:%M} UTC "
                                    f"purged (record_retention {retention})")
        if compact_file:
            compact(store, sync.id, run_id)
    if dropped:
        text = (f"{plural(dropped, 'row')} that failed or were invalid will not be sent again: their records were purged "
                f"(record_retention {retention}) and this incremental sync's cursor read brings them only when "
                f"their cursor is inside its window; sync.reset() (dfsync reset {sync.name}) makes the next run a "
                f"first load that reads and sends them")
        store.note(sync.id, run_id, text)
        warnings.warn(f"dfsync: sync {sync.name!r}: {text}", stacklevel=3)
    return n


def _key_tuples(keys: Any, key: Sequence[str]) -> list[tuple[Any, ...]]:
    if hasattr(keys, "to_dicts"):  # a polars frame
        keys = keys.to_dicts()
    elif hasattr(keys, "to_dict") and hasattr(keys, "columns"):  # a pandas frame
        keys = keys.to_dict("records")
    elif isinstance(keys, str | bytes | int | Mapping) or not isinstance(keys, Sequence):
        keys = [keys]
    out = []
    for k in keys:
        if isinstance(k, Mapping):
            missing = [c for c in key if c not in k]
            if missing:
                raise ConfigError(f"forget(): {dict(k)!r} lacks the primary key column(s) {', '.join(missing)}; "
                                  f"give the primary key ({', '.join(key)}) of each row to forget")
            out.append(tuple(k[c] for c in key))
        elif isinstance(k, tuple | list):
            if len(k) != len(key):
                raise ConfigError(f"forget(): {k!r} is not a primary key of ({', '.join(key)})")
            out.append(tuple(k))
        elif len(key) == 1:
            out.append((k,))
        else:
            raise ConfigError(f"forget(): {k!r} is one value, but the primary key is ({', '.join(key)}): "
                              f"give a tuple or a dict per row")
    nulls = [t for t in out if any(v is None for v in t)]
    if nulls:
        raise ConfigError(f"forget(): {nulls[0]!r} holds a null, and a primary key value is never null (no row with "
                          f"it was ever delivered or kept); give the key values of the rows to forget")
    return list(dict.fromkeys(out))


def forget(sync: Sync, keys: Any) -> dict[str, int]:
    """Remove every stored trace of the rows with these primary keys (see ``Sync.forget``)."""
    key = list(sync.primary_key)
    tuples = _key_tuples(keys, key)
    store = sync.workspace.store
    if store.latest_run_id(sync.id, list(UNFINISHED_RUNS)) is not None:
        raise SyncAlreadyRunning(f"sync {sync.name!r} has a run going on or paused; let it finish (or abort it) "
                                 f"before forgetting keys")
    counts = store.forget_keys(sync.id, key, tuples)
    store.set_sync_fields(sync.id, source_snapshot=None)  # the next run reads the source: they are new there
    store.note(sync.id, None, f"{plural(len(tuples), 'key')} forgotten on request: {plural(counts['records'], 'record')} and "
                              f"{plural(counts['delivered'], 'delivered row')} removed, "
                              f"{plural(counts['checks'], 'check result')} and "
                              f"{plural(counts['texts'], 'event text')} redacted; "
                              f"the next run treats these rows as new")
    if any(counts.values()):
        compact(store, sync.id)
    return counts
