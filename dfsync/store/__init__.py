"""The workspace store: the only place that speaks SQL to the workspace tables.

:class:`WorkspaceStore` lists the operations the rest of dfsync uses; :class:`Store` implements
them on a DuckDB file (``_duckdb.py``; opening the file, leases and the hand-over between
processes in ``_filelock.py``; the schema in ``_migrations.py``).
"""

from __future__ import annotations

from ._common import COUNTERS, now, owner_token, quote
from ._duckdb import Store
from ._migrations import SCHEMA_VERSION
from ._protocol import WorkspaceStore

__all__ = ["COUNTERS", "SCHEMA_VERSION", "Store", "WorkspaceStore", "now", "owner_token", "quote"]
