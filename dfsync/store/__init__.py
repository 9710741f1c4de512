"""The workspace store: the only place that speaks SQL to the workspace tables.

:class:`WorkspaceStore` (``_protocol.py``) lists the operations the rest of dfsync uses; no other
module gets a connection to the workspace (tests/test_store_boundary.py). :class:`Store` implements
them on a DuckDB file (``_duckdb.py``: syncs, runs, events; ``_delivery.py``: the delivered state,
the batch ledger, records and check results; ``_buckets.py``: a partitioned run's buckets; opening the file, leases and the hand-over between
processes in ``_filelock.py``; the schema in ``_migrations.py``); :class:`PostgresStore` on a schema
of a PostgreSQL database (``_postgres.py``: the SQL that differs; ``_pgconnections.py``, ``_pgcon.py``;
``_pgstatecache.py``: a host's copy of a delivered state, read only while it is the server's;
``_pgkeyindex.py``: a state's key index, built after a first load).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError, redact
from ._buckets import BUCKET_STATES, bucket_summary
from ._common import COUNTERS, hostname, now, owner_token
from ._delivery import key_match
from ._duckdb import Store
from ._migrations import SCHEMA_VERSION
from ._protocol import WorkspaceStore

__all__ = ["BUCKET_STATES", "COUNTERS", "SCHEMA_VERSION", "Store", "WorkspaceStore", "bucket_summary", "hostname",
           "key_match", "now", "open_store", "owner_token"]


def open_store(target: str, *, busy_timeout: float = 30.0, create: bool = True,
               memory_limit: str | None = None, then: Callable[[Any], Any] | None = None) -> WorkspaceStore:
    """The store for a workspace target: a ``postgresql://`` URI (``?schema=NAME``, default
    ``dfsync``) opens :class:`~dfsync.store._postgres.PostgresStore`, anything else a DuckDB file
    (``memory_limit``: of its connections; default ``DFSYNC_WORKSPACE_MEMORY``, else 256MB).
    ``then(store)`` runs once the store is open (on a DuckDB file, before the file is let go)."""
    if isinstance(target, str) and re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://", target) and \
            not target.startswith(("postgresql://", "postgres://")):  # was made as a file: 'mysql:/u@h/db'
        raise ConfigError(f"a workspace is a DuckDB file path or a postgresql://user@host/db?schema=NAME URI, "
                          f"not {redact(target)!r}; nothing was created")
    if isinstance(target, str) and target.startswith(("postgresql://", "postgres://")):
        from ._postgres import PostgresStore

        store = PostgresStore(target, busy_timeout=busy_timeout, create=create)
        if then is not None:
            then(store)
        return store
    return Store(target, busy_timeout=busy_timeout, create=create, memory_limit=memory_limit, then=then)
