"""Parquet, CSV and NDJSON files (paths, globs, lists), read natively by DuckDB or polars."""

from __future__ import annotations

import glob as _glob
import hashlib
import os
from typing import Any

import polars as pl

from ..errors import ConfigError, SourceError
from ._options import reader_options, stored_options
from .base import CursorFilter, Source, register_source

_EXT = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "ndjson",
}
FORMATS = ("parquet", "csv", "ndjson")


@register_source
class FilesSource(Source):
    kind = "files"

    def __init__(self, path: str | list[str], format: str | None = None, *, skip_unchanged: bool = True,
                 **options: Any) -> None:
        self.paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        # absolute, so the stored definition works from any working directory (CLI, scheduler)
        self.paths = [os.path.abspath(os.fspath(p)) for p in self.paths]
        if not self.paths:
            raise ConfigError("sources.files() needs at least one path or glob")
        if format is None:
            exts = {os.path.splitext(p.rstrip("*"))[1].lower() for p in self.paths}
            found = {_EXT.get(e) for e in exts}
            if len(found) != 1 or None in found:
                raise ConfigError(
                    f"cannot tell the file format of {self.paths!r} from the extension; "
                    f"pass format= one of {', '.join(FORMATS)}"
                )
            format = found.pop()
        if format not in FORMATS:
            raise ConfigError(f"unknown file format {format!r}; choose one of {', '.join(FORMATS)}")
        tsv = [os.path.splitext(p.rstrip("*"))[1].lower() == ".tsv" for p in self.paths]
        if format == "csv" and any(tsv) and "separator" not in options:
            if not all(tsv):  # one reader, one separator
                raise ConfigError(f"{self.paths!r} mixes .tsv (tab-separated) with other files; read them in "
                                  f"separate syncs, or pass separator= for all of them")
            options = {**options, "separator": "\t"}  # .tsv: tab-separated (stored with the sync)
        self.format = format
        self.options = reader_options(options, "sources.files")  # polars data types rebuilt from storage
        # a full refresh whose files all have the paths, sizes and modification times of the
        # last run that delivered everything is not read again (see docs/GUARANTEES.md)
        self.skip_unchanged = bool(skip_unchanged)

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"path": self.paths, "format": self.format, **stored_options(self.options)}
        if not self.skip_unchanged:
            cfg["skip_unchanged"] = False
        return cfg

    def describe(self) -> str:
        return f"files({', '.join(self.paths)})"

    def resolve(self) -> list[str]:
        """The files matching now, absolute and sorted; a clear error when none do."""
        found: list[str] = []
        for p in self.paths:
            matches = sorted(_glob.glob(p, recursive=True)) if _glob.has_magic(p) else ([p] if os.path.exists(p) else [])
            found.extend(os.path.abspath(m) for m in matches if os.path.isfile(m))
        if not found:
            raise SourceError(
                f"no {self.format} files match {', '.join(self.paths)!s} "
                f"(working directory {os.getcwd()}); check the path or glob"
            )
        return found

    @property
    def counts_from_metadata(self) -> bool:  # type: ignore[override]
        return self.format == "parquet"

    def snapshot(self) -> str | None:
        """Paths, sizes and modification times of the matching files (no data read)."""
        try:
            files = self.resolve()
            parts = []
            for f in files:
                st = os.stat(f)
                parts.append(f"{f}\0{st.st_size}\0{st.st_mtime_ns}")
        except (SourceError, OSError):
            return None
        return hashlib.sha1("\n".join(parts).encode()).hexdigest()

    def read_error(self, message: str) -> str:
        text = super().read_error(message)
        if self.format in ("csv", "ndjson") and "could not parse" in message:
            text += (". polars decides each column's type from the file's first rows; fix the value in the file, "
                     "or read that column as text (sources.files(..., schema_overrides={'COLUMN': pl.String})) "
                     "and cast it in the mapping, or let polars look at every row (infer_schema_length=None); "
                     "nothing was sent")
        return text

    def scan(self, cursor: CursorFilter | None = None) -> pl.LazyFrame:
        files = self.resolve()
        if self.format == "parquet":
            lf = pl.scan_parquet(files, **self.options)
        elif self.format == "csv":
            lf = pl.scan_csv(files, try_parse_dates=True, **self.options)
        else:
            lf = pl.scan_ndjson(files, **self.options)
        if cursor is not None:
            lf = cursor.apply(lf)
        return lf

    def duckdb_relation(self, con: Any, cursor: CursorFilter | None = None) -> Any | None:
        if self.options or self.format != "parquet":
            return None  # polars' CSV/NDJSON type inference is the documented behaviour
        files = self.resolve()
        try:
            rel = con.read_parquet(files)
        except Exception as exc:  # duckdb.Error
            raise SourceError(f"could not read {self.describe()}: {str(exc).splitlines()[0]}. Check that the "
                              f"files are complete, valid Parquet (re-export them if needed), then run again; "
                              f"nothing was sent.") from exc
        if cursor is not None:
            import duckdb

            col = duckdb.ColumnExpression(cursor.field)
            rel = rel.filter((col >= duckdb.ConstantExpression(cursor.value)) | col.isnull())  # as CursorFilter.apply
        return rel
