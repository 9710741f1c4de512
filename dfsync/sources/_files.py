"""Parquet, CSV and NDJSON files (paths, globs, lists), read natively by DuckDB or polars."""

from __future__ import annotations

import ast
import functools
import glob as _glob
import hashlib
import inspect
import json
import os
import re
from typing import Any

import polars as pl

from .._args import refuse_unknown
from .._paths import user_path
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
#: reader options that say themselves how files of other layouts are read together
_OWN_LAYOUT = {"schema", "missing_columns", "extra_columns", "cast_options", "allow_missing_columns", "new_columns",
               "has_header"}
_READER = {"parquet": "parquet", "csv": "csv"}


@functools.lru_cache(maxsize=256)
def _footer_schema(path: str, size: int, mtime_ns: int, inode: int) -> Any:
    """A Parquet file's Arrow schema from its footer, read once per version of the file (its size,
    modification time and inode are part of the key): each run asks it for the reader's choice
    (:meth:`FilesSource.read_by_duckdb`) and for the layout checks."""
    import pyarrow.parquet as pq

    return pq.read_schema(path)


def _version(files: list[str]) -> tuple | None:
    """What tells one version of ``files`` from another (paths, sizes, modification times; None:
    one cannot be read now), for the checks each run would otherwise repeat on the same files."""
    try:
        return tuple((f, st.st_size, st.st_mtime_ns) for f, st in ((f, os.stat(f)) for f in files))
    except OSError:
        return None


def _parquet_schema(path: str) -> Any:
    st = os.stat(path)
    return _footer_schema(path, st.st_size, st.st_mtime_ns, st.st_ino)


def _layout(fmt: str, path: str, options: dict[str, Any]) -> dict[str, Any]:
    """A Parquet file's columns and Arrow types (from its footer), or a CSV file's header."""
    try:
        if fmt == "parquet":
            return {f.name: f.type for f in _parquet_schema(path)}
        head = {k: v for k, v in options.items() if k in ("separator", "quote_char", "skip_rows", "encoding",
                                                          "comment_prefix", "eol_char")}
        return dict.fromkeys(pl.scan_csv(path, infer_schema_length=0, **head).collect_schema().names())
    except Exception as exc:  # noqa: BLE001 - the file itself is unreadable: said with its name
        raise SourceError(f"could not read {path}: {str(exc).splitlines()[0]}. Check that it is a complete "
                          f"{fmt} file; nothing was read or sent.") from exc


def _choices(reader: Any, name: str) -> tuple | None:
    """The values polars' ``reader`` accepts for option ``name`` when its type is a closed set of
    text values (``Literal[...]``, or an alias such as ``CsvEncoding``; None among them when it may
    be left out); None when it takes anything else too (a number, a function, ...)."""
    import typing

    try:  # polars' own annotations, read as text: another polars may spell them otherwise
        from polars import _typing as ptyping

        allowed: list = []
        for part in str(inspect.signature(reader).parameters[name].annotation).split(" | "):
            if part == "None":
                allowed.append(None)
            elif part.startswith("Literal[") and part.endswith("]"):
                allowed.extend(ast.literal_eval(f"({part[8:-1]},)"))
            elif typing.get_origin(getattr(ptyping, part, None)) is typing.Literal:
                allowed.extend(typing.get_args(getattr(ptyping, part)))
            else:
                return None
    except Exception:  # noqa: BLE001 - unreadable: polars itself refuses a wrong value at read
        return None
    return tuple(allowed)


def _check_options(format: str, reader: Any, options: dict[str, Any]) -> None:
    """Refuse at configuration the option values polars refuses only when the files are read
    (then the sync could not even be created: its schema is read at ``create_sync``)."""
    where = f"sources.files(..., format={format!r})"
    for name, value in options.items():
        allowed = _choices(reader, name)
        if allowed is not None and value not in allowed:
            shown = ", ".join(repr(a) for a in allowed)
            fix = ""
            if name == "encoding":
                fix = (f"; polars reads UTF-8 only: convert the file first (e.g. `iconv -f {value} -t utf-8 "
                       f"in.csv > out.csv`), or pass encoding='utf8-lossy', which replaces each byte that is "
                       f"not UTF-8 with \ufffd")
            raise ConfigError(f"{where}: {name}={value!r} is not accepted by polars; pass one of {shown}{fix}")
    for name, empty in (("separator", False), ("quote_char", True)):  # polars: one byte
        value = options.get(name)
        if value is None and name == "quote_char":
            continue
        if format == "csv" and name in options and (not isinstance(value, str) or len(value.encode()) > 1
                                                    or (not value and not empty)):
            raise ConfigError(f"{where}: {name}={value!r} must be a single one-byte character"
                              f"{' (or empty/None: no quoting)' if empty else ''}, e.g. {name}={';' if name == 'separator' else chr(39)!r}")


@register_source
class FilesSource(Source):
    kind = "files"

    def __init__(self, path: str | list[str], format: str | None = None, *, skip_unchanged: bool = True,
                 **options: Any) -> None:
        self.paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        # absolute, so the stored definition works from any working directory (CLI, scheduler)
        self.paths = [user_path(p) for p in self.paths]
        if not self.paths:
            raise ConfigError("sources.files() needs at least one path or glob")
        folders = [p for p in self.paths if os.path.isdir(p)]
        if folders:
            ext = format if format in ("csv", "ndjson") else "parquet"
            raise ConfigError(f"{folders[0]} is a directory; sources.files() reads files: name them with a glob, "
                              f"e.g. sources.files('{os.path.join(folders[0], '*.' + ext)}') (or "
                              f"'{os.path.join(folders[0], '**', '*.' + ext)}' with its subdirectories)")
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
        reader = {"parquet": pl.scan_parquet, "csv": pl.scan_csv, "ndjson": pl.scan_ndjson}[format]
        refuse_unknown(f"sources.files(..., format={format!r}) (its options go to polars.{reader.__name__})",
                       options, ["format", "skip_unchanged", *(p for p in inspect.signature(reader).parameters
                                                                if p != "source" and not p.startswith("_"))])
        _check_options(format, reader, options)
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
        # a file two of the patterns match is read once: read twice, each of its rows was a duplicate
        # key (and quarantined, never sent, under on_invalid='skip')
        found = list(dict.fromkeys(found))
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
        """Paths, sizes and modification times of the matching files (no data read), with the
        format and reader options: the same files read another way (``sync.run(source=files(...,
        schema_overrides=...))``) are another source, which must be read."""
        try:
            files = self.resolve()
            parts = [json.dumps([self.format, stored_options(self.options)], sort_keys=True, default=str)]
            for f in files:
                st = os.stat(f)
                parts.append(f"{f}\0{st.st_size}\0{st.st_mtime_ns}")
        except (SourceError, OSError):
            return None
        return hashlib.sha1("\n".join(parts).encode()).hexdigest()

    def read_error(self, message: str) -> str:
        text = super().read_error(message)
        found = re.search(r"cannot parse '(.*)' \((\w+)\) as (\w+)", message) if self.format == "ndjson" else None
        if found:  # polars names neither the key nor the file
            where = self._find_value(found.group(1))
            text += (f" (key {where[1]!r} of {where[0]})" if where else "") + (
                f". polars took the column's type ({found.group(3)}) from the first rows of the first file; "
                f"read it as text and cast it in the mapping (sources.files(..., schema_overrides="
                f"{{{(where[1] if where else 'KEY')!r}: pl.String}})), or let polars look at every row of the first "
                f"file (infer_schema_length=None); nothing was sent")
        elif self.format in ("csv", "ndjson") and re.search(r"valid utf-?8", message, re.IGNORECASE):
            where = _first_invalid_utf8(self.resolve())
            text += ((f" ({where[0]}, line {where[1]})" if where else "") +
                     ". polars reads only UTF-8 text: convert the file to UTF-8 (for a Latin-1 file: "
                     "iconv -f latin1 -t utf-8)" + (
                         ", or read it with sources.files(..., encoding='utf8-lossy'), which replaces each "
                         "invalid byte with U+FFFD and so changes those values" if self.format == "csv" else "")
                     + "; nothing was sent")
        elif self.format in ("csv", "ndjson") and "could not parse" in message:
            text += (". polars decides each column's type from the file's first rows; fix the value in the file, "
                     "or read that column as text (sources.files(..., schema_overrides={'COLUMN': pl.String})) "
                     "and cast it in the mapping, or let polars look at every row (infer_schema_length=None); "
                     "nothing was sent")
        return text

    def _find_value(self, value: str) -> tuple[str, str] | None:
        """The first (file, key) of the NDJSON files whose value reads as ``value``, if any."""
        import duckdb

        con = duckdb.connect()
        try:
            hit = con.execute(
                "SELECT filename, k FROM (SELECT filename, unnest(json_keys(json)) AS k, json FROM "
                "read_json_objects(?, format='newline_delimited', filename=true)) "
                "WHERE json_extract_string(json, '$.\"' || replace(k, '\"', '\\\"') || '\"') = ? LIMIT 1",
                [self.resolve(), value]).fetchall()
        except (duckdb.Error, SourceError):
            return None
        finally:
            con.close()
        return (hit[0][0], hit[0][1]) if hit else None

    def check_layout(self, files: list[str]) -> None:
        """Files read together must agree on their columns. The readers settle a difference
        silently (DuckDB casts every Parquet file to the first one's types, so 10.5 became 10, and
        drops a column only later files have) or refuse it without naming the file: refused here,
        before anything is read, naming the file, the column and what to do."""
        if set(self.options) & _OWN_LAYOUT:
            return
        seen = _version(files)  # the same files passed already: not read again
        if seen is not None and seen == getattr(self, "_layout_ok", None):
            return
        self._check_layout(files)
        self._layout_ok = seen

    def _check_layout(self, files: list[str]) -> None:
        if self.format == "parquet":  # DuckDB's reader renames a struct field '' (or one named twice)
            _refuse_struct_names(files)
        if self.format == "csv":
            self._csv_checked(files)  # its dates, with its numbers (one pass, kept for this version)
        if self.format == "ndjson":  # a key missing from an object is a null: only keys dropped matter
            schema = pl.scan_ndjson(files, **self.options).collect_schema()  # polars' reading, for both checks
            self._check_late_keys(files, schema)
            self._check_float_keys(files, schema)
            return
        if len(files) < 2:
            return
        from .._schema import fits

        first = _layout(self.format, files[0], self.options)
        for f in files[1:]:
            other = _layout(self.format, f, self.options)
            diff = [f"column {c!r} is missing" for c in first if c not in other]
            diff += [f"it has a column {c!r} that {files[0]} lacks" for c in other if c not in first]
            if self.format == "parquet":
                diff += [f"column {c!r} is {t} there but {first[c]} in {files[0]}" for c, t in other.items()
                         if c in first and not fits(t, first[c])]
            elif not diff and self.format == "csv" and list(first) != list(other):
                diff = [f"its columns are in another order ({', '.join(other)})"]
            if diff:
                raise SourceError(
                    f"{self.describe()}: {f} does not have the columns of {files[0]}, which the files are read "
                    f"as: {'; '.join(diff[:5])}. Make the files agree (the same columns with the same types), "
                    f"or read each layout in a sync of its own, or combine them in a query that says how: "
                    f"sources.duckdb_query(\"SELECT ... FROM read_{_READER[self.format]}([...], "
                    f"union_by_name=true)\") with a cast for each column that differs. Nothing was read or sent.")

    def _check_late_keys(self, files: list[str], schema: pl.Schema) -> None:
        """polars takes an NDJSON source's columns, and the fields of its objects, from the first
        rows of its first file (``infer_schema_length``): a key first seen later, or only in another
        file, would be dropped without a word (inside an object too: {"o": {"a": 1, "b": 2}} read
        as {"a": 1}). Every object's keys are looked at, at every level."""
        import duckdb

        con = duckdb.connect()
        try:
            shapes = con.execute(
                "SELECT filename, json_group_structure(json) FROM read_json_objects(?, format='newline_delimited', "
                "filename=true) GROUP BY filename ORDER BY filename", [files]).fetchall()
        except duckdb.Error as exc:
            raise SourceError(f"could not read {self.describe()}: {str(exc).splitlines()[0]}. Check that the "
                              f"files hold one JSON object a line; nothing was read or sent.") from exc
        finally:
            con.close()
        first: dict[str, str] = {}  # each key path polars would drop -> the first file holding it
        for name, shape in shapes:
            for path in _dropped_keys(json.loads(shape) if shape else {}, pl.Struct(schema)):
                first.setdefault(path, name)
        late = sorted(first.items())
        if not late:
            return
        key, where = late[0]
        more = f" and {len(late) - 1} more ({', '.join(repr(k) for k, _ in late[1:4])})" if len(late) > 1 else ""
        if os.path.abspath(where) == files[0]:
            n = self.options.get("infer_schema_length", 100)
            why = f"polars took from the first {n} rows"
            fix = "Let polars look at every row: sources.files(..., infer_schema_length=None)"
        else:
            why = f"polars took from the first file, {files[0]}"
            fix = ("Give every column and its type: sources.files(..., schema={'id': pl.Int64, ...}), or read "
                   "the files with sources.duckdb_query(\"SELECT * FROM read_json([...], union_by_name=true)\")")
        raise SourceError(f"{self.describe()}: key {key!r} (in {where}){more} is not among the columns {why}, so "
                          f"its values would be dropped. {fix}. Nothing was read or sent.")

    def _check_float_keys(self, files: list[str], schema: pl.Schema) -> None:
        """A key polars reads as floats (its values mix integers and decimals) holding an integer a
        float cannot hold (beyond 2**53): 9007199254740993 arrived as 9007199254740992 without a
        word. Refused naming the key, the value and the file (top-level keys)."""
        import duckdb

        keys = [k for k, t in schema.items() if t.is_float()]
        if not keys:
            return
        paths = ['$."' + k.replace('"', '\\"') + '"' for k in keys]
        exact = "TRY_CAST(json_extract_string(json, ?) AS HUGEINT)"  # != its value as a double: a float rounds it
        cond = " OR ".join(f"(json_type(json, ?) IN ('BIGINT', 'UBIGINT', 'HUGEINT') AND {exact} IS DISTINCT FROM "
                           f"TRY_CAST(TRY_CAST({exact} AS DOUBLE) AS HUGEINT))" for _ in keys)
        con = duckdb.connect()
        try:
            hit = con.execute(f"SELECT filename, json FROM read_json_objects(?, format='newline_delimited', "
                              f"filename=true) WHERE {cond} LIMIT 1",
                              [files, *(p for path in paths for p in (path, path, path))]).fetchall()
        except duckdb.Error:
            return  # an unreadable file: the read says why, naming it
        finally:
            con.close()
        if not hit:
            return
        where, obj = hit[0][0], json.loads(hit[0][1])
        key = next((k for k in keys if isinstance(obj.get(k), int) and int(float(obj[k])) != obj[k]), keys[0])
        raise SourceError(
            f"{self.describe()}: key {key!r} holds {obj.get(key)} (in {where}) among decimals, so polars reads "
            f"it as a float, which cannot hold that integer ({float(obj.get(key, 0))!r}). Read it as text and "
            f"cast it in the mapping: sources.files(..., schema_overrides={{{key!r}: pl.String}}). Nothing was "
            f"read or sent.")

    def scan(self, cursor: CursorFilter | None = None) -> pl.LazyFrame:
        files = self.resolve()
        self.check_layout(files)
        if self.format == "parquet":
            lf = pl.scan_parquet(files, **self.options)
        elif self.format == "csv":
            lf = pl.scan_csv(files, try_parse_dates=True, **self._csv_options(files))
        else:
            lf = pl.scan_ndjson(files, **self.options)
        if cursor is not None:
            lf = cursor.apply(lf)
        return lf

    def _csv_options(self, files: list[str]) -> dict[str, Any]:
        """The reader options, with the integer columns written with leading zeros (``01234``) read as
        text (:meth:`_csv_checked`)."""
        zeros = self._csv_checked(files)
        if not zeros:
            return self.options
        given = self.options.get("schema_overrides") or {}
        return {**self.options, "schema_overrides": {**given, **dict.fromkeys(zeros, pl.String)}}

    def _csv_checked(self, files: list[str]) -> list[str]:
        """The CSV files' dates and numbers checked (``_csvdates.csv_checks``: day-first dates and
        timestamps finer than microseconds refused, floats with more digits than a float keeps
        refused) in one pass over each version of the files; the integer columns to read as text."""
        seen = _version(files)
        cached = getattr(self, "_zeros", None)
        if seen is None or cached is None or cached[0] != seen:
            from ._csvdates import csv_checks

            dates = not set(self.options) & _OWN_LAYOUT  # those options lay the columns out themselves
            cached = self._zeros = (seen, csv_checks(files, self.options, self.describe(), dates=dates))
        return cached[1]

    def read_by_duckdb(self, files: list[str]) -> bool:
        """Are ``files`` read by DuckDB's Parquet reader (else by polars)? Not with reader options
        (polars' own), CSV or NDJSON (polars' type inference is the documented behaviour), nor a
        column DuckDB reads as another type: a duration (also inside a list or struct) is read as
        its stored integer (1.5 s as 1500000 or 1500, by its unit), where polars reads a duration."""
        if self.options or self.format != "parquet" or not files:
            return False
        return not any(_holds_duration(t) for t in _layout("parquet", files[0], {}).values())

    def duckdb_relation(self, con: Any, cursor: CursorFilter | None = None) -> Any | None:
        files = self.resolve()
        if not self.read_by_duckdb(files):
            return None
        self.check_layout(files)
        try:
            rel = con.read_parquet(files)
        except Exception as exc:  # duckdb.Error
            raise SourceError(f"could not read {self.describe()}: {str(exc).splitlines()[0]}. Check that the "
                              f"files are complete, valid Parquet (re-export them if needed), then run again; "
                              f"nothing was sent.") from exc
        if cursor is not None:
            import duckdb

            from .base import refuse_other_type

            # the cursor column's type changed (an int cursor, the column now text): named with the ways
            # out, as a polars scan does, not DuckDB's 'Binder Error: Cannot compare values of type ...'
            refuse_other_type(cursor.field, cursor.value, self.schema().get(cursor.field))
            col = duckdb.ColumnExpression(cursor.field)
            rel = rel.filter((col >= duckdb.ConstantExpression(cursor.value)) | col.isnull())  # as CursorFilter.apply
        return rel


def _holds_duration(t: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_duration(t):
        return True
    if pa.types.is_struct(t):
        return any(_holds_duration(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_map(t):
        return _holds_duration(t.key_type) or _holds_duration(t.item_type)
    return _holds_duration(t.value_type) if hasattr(t, "value_type") else False


def _refuse_struct_names(files: list[str]) -> None:
    """A struct field named '' or twice in a Parquet file, refused naming the file (the rule:
    ``_arrow.refuse_struct_names``)."""
    from .._arrow import refuse_struct_names

    for f in files:
        try:
            schema = _parquet_schema(f)
        except Exception:  # noqa: BLE001 - an unreadable file is reported by the reader, naming it
            continue
        refuse_struct_names(schema, file=f)


def _dropped_keys(shape: Any, dtype: Any, prefix: str = "") -> Any:
    """The key paths ('o.b') of a JSON structure (DuckDB's json_group_structure) that the polars
    type read for it has no field for."""
    if isinstance(shape, dict) and isinstance(dtype, pl.Struct):
        fields = {f.name: f.dtype for f in dtype.fields}
        for key, sub in shape.items():
            if key not in fields:
                yield prefix + key
            else:
                yield from _dropped_keys(sub, fields[key], f"{prefix}{key}.")
    elif isinstance(shape, list) and shape and isinstance(dtype, (pl.List, pl.Array)):
        yield from _dropped_keys(shape[0], dtype.inner, prefix)


def _first_invalid_utf8(files: list[str]) -> tuple[str, int] | None:
    """The first (file, 1-based line) holding bytes that are not UTF-8 (no UTF-8 character
    holds a newline byte, so each line decodes on its own)."""
    for f in files:
        try:
            with open(f, "rb") as fh:
                for n, line in enumerate(fh, 1):
                    try:
                        line.decode("utf-8")
                    except UnicodeDecodeError:
                        return f, n
        except OSError:
            continue
    return None
