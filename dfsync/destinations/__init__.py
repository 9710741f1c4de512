"""Where rows go: ``duckdb``, ``parquet``, ``delta``, ``postgres``, ``mysql``, ``sqlite``, ``http``.

Each is one small module implementing :class:`dfsync.destinations.base.Destination`.
"""

from __future__ import annotations

from typing import Any

from .._args import checked
from .base import BatchResult, Destination, DestinationSession, WriteBatch, destination_from_config

__all__ = [
    "BatchResult",
    "Destination",
    "DestinationSession",
    "WriteBatch",
    "destination_from_config",
    "delta",
    "duckdb",
    "http",
    "mysql",
    "parquet",
    "postgres",
    "sqlite",
]


@checked("destinations.duckdb")
def duckdb(path: str, table: str) -> Destination:
    """A table in a DuckDB database file (created if missing); ``table`` may be ``schema.table``.

    >>> dest = dfsync.destinations.duckdb("warehouse.duckdb", table="customers")
    """
    from ._duckdb import DuckDBDestination

    return DuckDBDestination(path, table)


@checked("destinations.delta")
def delta(path: str, *, partition_by: list[str] | str | None = None,
          storage_options: dict[str, str] | None = None) -> Destination:
    """A Delta Lake table (``pip install 'dfsync[delta]'``): MERGE per batch, exactly once through
    Delta transaction identifiers; ``storage_options`` go to delta-rs (values may be ``env:NAME``).

    >>> dest = dfsync.destinations.delta("lake/customers", partition_by="country")
    """
    from ._delta import DeltaDestination

    return DeltaDestination(path, partition_by=partition_by, storage_options=storage_options)


@checked("destinations.parquet")
def parquet(directory: str) -> Destination:
    """A Parquet data set in ``directory`` (one ``data.parquet``, replaced atomically per run)."""
    from ._parquet import ParquetDestination

    return ParquetDestination(directory)


@checked("destinations.postgres")
def postgres(uri: str, table: str, **options: Any) -> Destination:
    """A PostgreSQL table (``schema.table`` allowed). The password may be ``env:NAME``."""
    from ._postgres import PostgresDestination

    return PostgresDestination(uri, table, **_known(PostgresDestination, "postgres", options, "uri", "table"))


@checked("destinations.mysql")
def mysql(uri: str, table: str, **options: Any) -> Destination:
    """A MySQL 8 or MariaDB table (InnoDB; ``database.table`` allowed). The password may be ``env:NAME``.

    >>> dest = dfsync.destinations.mysql("mysql://app@db:3306/crm", table="scores",
    ...                                  password="env:MYSQL_PASSWORD")
    """
    from ._mysql import MySQLDestination

    return MySQLDestination(uri, table, **_known(MySQLDestination, "mysql", options, "uri", "table"))


@checked("destinations.sqlite")
def sqlite(path: str, table: str, **options: Any) -> Destination:
    """A table in a SQLite database file (created if missing)."""
    from ._sqlite import SQLiteDestination

    return SQLiteDestination(path, table, **_known(SQLiteDestination, "sqlite", options, "path", "table"))


@checked("destinations.http")
def http(url: str, **options: Any) -> Destination:
    """A REST API: batched JSON requests, retries, rate limits and per-record outcomes."""
    from ._http import HTTPDestination

    return HTTPDestination(url, **_known(HTTPDestination, "http", options, "url"))


def _known(cls: type, name: str, options: dict[str, Any], *positional: str) -> dict[str, Any]:
    """The keyword options, each one ``cls`` takes: a misspelt one (``retries=``) was a bare TypeError."""
    import inspect

    from .._args import refuse_unknown

    known = [p for p in inspect.signature(cls).parameters if p not in positional]
    refuse_unknown(f"destinations.{name}()", sorted(options), known)
    return options
