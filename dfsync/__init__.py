"""dfsync: keep a destination in sync with your data, from a notebook or a script.

>>> import dfsync
>>> ws = dfsync.Workspace()
>>> sync = ws.create_sync("customers", source=dfsync.sources.files("data/customers_v1.parquet"),
...     destination=dfsync.destinations.duckdb("warehouse.duckdb", table="customers"),
...     primary_key="customer_id")
>>> run = sync.run()
"""

from __future__ import annotations

from . import destinations, engines, sources
from .errors import (
    ArgumentError,
    ConfigError,
    CursorValueError,
    DestinationError,
    DfsyncError,
    EmptySourceError,
    InvalidRecordsError,
    InvalidTransition,
    MissingDependencyError,
    PermissionDenied,
    RunNotFoundError,
    SchemaMismatchError,
    SessionOnlyError,
    SourceError,
    SyncAlreadyRunning,
    SyncDisabledError,
    SyncNotFoundError,
    SyncRunFailed,
    TransientDestinationError,
    ValidationFailed,
    WorkspaceBusy,
    WorkspaceCorrupt,
    WorkspaceError,
    WorkspaceOutOfDate,
    WorkspaceQueryError,
)
from .mapping import static
from .states import DestinationMode, RecordStatus, RunStatus, SyncMode, SyncStatus
from .workspace import Preview, Sync, SyncRun, Workspace

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy submodules whose imports are heavier
    if name in ("checks", "widgets", "schedule"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'dfsync' has no attribute {name!r}")


__all__ = [
    "ArgumentError",
    "ConfigError",
    "CursorValueError",
    "DestinationError",
    "DestinationMode",
    "DfsyncError",
    "EmptySourceError",
    "InvalidRecordsError",
    "InvalidTransition",
    "MissingDependencyError",
    "PermissionDenied",
    "Preview",
    "RecordStatus",
    "RunNotFoundError",
    "RunStatus",
    "SchemaMismatchError",
    "SessionOnlyError",
    "SourceError",
    "Sync",
    "SyncAlreadyRunning",
    "SyncDisabledError",
    "SyncMode",
    "SyncNotFoundError",
    "SyncRun",
    "SyncRunFailed",
    "SyncStatus",
    "TransientDestinationError",
    "ValidationFailed",
    "Workspace",
    "WorkspaceBusy",
    "WorkspaceCorrupt",
    "WorkspaceError",
    "WorkspaceOutOfDate",
    "WorkspaceQueryError",
    "checks",
    "destinations",
    "engines",
    "schedule",
    "sources",
    "static",
    "widgets",
]
