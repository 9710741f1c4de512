"""Where rows come from: ``frame``, ``files``, ``duckdb_query``, ``database``.

Each is one small module implementing :class:`dfsync.sources.base.Source`.
"""

from __future__ import annotations

from typing import Any

from .._args import checked, refuse_unknown
from ..errors import ConfigError
from .base import CursorFilter, Source, source_from_config

__all__ = ["CursorFilter", "Source", "database", "duckdb_query", "files", "frame", "source_from_config"]


@checked("sources.frame")
def frame(df: Any, *, name: str | None = None) -> Source:
    """An in-memory polars DataFrame/LazyFrame, pandas DataFrame or Arrow table (an Arrow record
    batch reader is read whole here: a stream can be read only once, and every run reads the frame).

    >>> import polars as pl, dfsync
    >>> src = dfsync.sources.frame(pl.DataFrame({"id": [1, 2], "email": ["a@x.io", "b@x.io"]}))
    >>> src.schema()
    Schema([('id', Int64), ('email', String)])
    """
    from ._frame import FrameSource

    return FrameSource(df, name=name)


def files(glob: str | list[str] | None = None, format: str | None = None, **options: Any) -> Source:
    """Parquet, CSV or NDJSON files: a path, a glob (``data/*.parquet``) or a list of them.

    The format comes from the extension unless ``format`` says (``"parquet"``, ``"csv"``,
    ``"ndjson"``). Extra options go to the reader (e.g. ``separator=";"`` for CSV).
    ``path=`` is taken for ``glob=``.
    """
    from ._files import FilesSource

    if "path" in options:
        if glob is not None:
            raise ConfigError("sources.files() takes the files once: as glob= (or the first argument), or as path=, "
                              "not both")
        glob = options.pop("path")
    if glob is None:
        raise ConfigError("sources.files() needs the files to read: a path, a glob such as 'data/*.parquet', or a "
                          "list of them, e.g. sources.files('data/customers.parquet')")
    return FilesSource(glob, format=format, **options)


@checked("sources.duckdb_query")
def duckdb_query(sql: str, database: str | None = None) -> Source:
    """The result of a DuckDB SQL query, over a database file or (None) the files it names.

    >>> src = dfsync.sources.duckdb_query("SELECT * FROM read_csv('data/customers_v1.csv')")
    """
    from ._duckdb_query import DuckDBQuerySource

    return DuckDBQuerySource(sql, database=database)


@checked("sources.database")
def database(uri: str, query: str, **options: Any) -> Source:
    """Rows of a SQL query on PostgreSQL (``postgresql://…``), MySQL/MariaDB (``mysql://…``),
    SQLite (``sqlite:///path``), streamed as Arrow batches. Passwords may be ``env:NAME`` references.
    """
    import inspect

    from ._database import DatabaseSource

    known = [p for p in inspect.signature(DatabaseSource).parameters if p not in ("uri", "query")]
    refuse_unknown("sources.database()", options, known)
    return DatabaseSource(uri, query, **options)
