"""PostgreSQL table as a destination, through ADBC (Arrow in, COPY on the wire).

    >>> dest = dfsync.destinations.postgres("postgresql://app@db:5432/crm", table="crm.customers",
    ...                                     password="env:PGPASSWORD_CRM")

How a batch travels (see :mod:`dfsync.destinations._arrowsql`): Arrow batch -> TEMP staging
table by ``adbc_ingest`` (binary COPY) -> ``INSERT … ON CONFLICT`` / ``UPDATE … FROM`` /
``DELETE … WHERE (key) IN (staged keys)`` -> ledger row in ``<schema>._dfsync_batches``, all in one
transaction (exactly once). Into a table that was empty when the run began, new rows are
COPYed straight into the table. ``replace`` builds ``<table>__dfsync_replace_<run>`` and
swaps it in with DROP + RENAME in one transaction: readers never see an empty table.

Passwords. Never stored, never printed. Give the password as ``password="env:NAME"``
(read from the environment each time a connection opens), or write ``env:NAME`` in the
URI's password slot (``postgresql://app:env:PGPASS@db/crm``), or leave it to libpq
(``PGPASSWORD``, ``~/.pgpass``). A literal password in the URI works in this process but is
kept out of :meth:`config` (other processes must get it from one of the above).

Arrow -> PostgreSQL types, for tables dfsync creates (the key becomes the PRIMARY KEY):

    ===================================  ==========================
    Arrow                                PostgreSQL
    ===================================  ==========================
    bool                                 boolean
    int8, int16, uint8                   smallint
    int32, uint16                        integer
    int64, uint32                        bigint
    uint64                               numeric(20,0)
    float16, float32                     real
    float64                              double precision
    decimal128(p, s)                     numeric(p,s)
    string, large_string, string_view    text
    binary, large_binary, fixed binary   bytea
    date32, date64                       date
    time32, time64                       time
    timestamp (no tz)                    timestamp   (microseconds)
    timestamp (with tz)                  timestamptz (microseconds)
    duration                             interval
    list<T>, large_list<T>               T[]   (T scalar)
    struct, map, list of nested          jsonb
    null                                 text
    ===================================  ==========================

An existing table is used as it is; prepare() checks every record column exists with a
compatible type and reports all mismatches before anything is sent. Without a unique
constraint on the key, upserts fall back to UPDATE … FROM + INSERT … WHERE NOT EXISTS.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc  # noqa: F401 - keeps pyarrow.compute loaded for the casts

from .._adbc import connect_postgres
from .._arrow import is_list, nested_to_json
from .._pgtypes import arrow_to_pg
from .._schema import fraction_unit
from .._secrets import resolve_secret, take_password, uri_with_password
from .._settings import setting
from ..errors import (
    ConfigError,
    DestinationError,
    MissingDependencyError,
)
from ._arrowsql import DATA, TERMINAL, TRANSIENT, ArrowSQLSession, Transient
from ._sql import ROW_COLUMN, ServerDestination, TableName, drop_key_clashes, q
from .base import ACTION_COLUMN, DestinationContext, DestinationSession, register_destination

__all__ = ["PostgresDestination", "arrow_to_pg"]


# PostgreSQL type names (format_type) -> the DuckDB names sql.check_compatible speaks
_PG_TO_DUCK = {
    "smallint": "SMALLINT", "integer": "INTEGER", "bigint": "BIGINT", "real": "FLOAT",
    "double precision": "DOUBLE", "numeric": "DECIMAL", "text": "VARCHAR", "character varying": "VARCHAR",
    "character": "VARCHAR", "boolean": "BOOLEAN", "date": "DATE", "bytea": "BLOB",
    "timestamp without time zone": "TIMESTAMP", "timestamp with time zone": "TIMESTAMP WITH TIME ZONE",
    "time without time zone": "TIME", "interval": "INTERVAL", "json": "JSON", "jsonb": "JSON", "uuid": "UUID",
    "numeric(20,0)": "UBIGINT",
}


def pg_to_duck(t: str) -> str:
    array = t.endswith("[]")
    base = re.sub(r"\(.*\)", "", t[:-2] if array else t).strip()
    if base == "numeric" and t.startswith("numeric(20,0)"):
        name = "UBIGINT"
    elif base == "citext" or base.endswith(".citext"):  # text compared without case (extension citext)
        name = "VARCHAR"
    else:
        name = _PG_TO_DUCK.get(base, base.upper())
    return name + ("[]" if array else "")


#: names every PostgreSQL table has already (a column of one's own cannot take them)
_SYSTEM_COLUMNS = frozenset({"tableoid", "xmin", "cmin", "xmax", "cmax", "ctid"})


@register_destination
class PostgresDestination(ServerDestination):
    """A PostgreSQL table; ``table`` may be ``schema.table`` (quote parts to keep dots: ``'"a.b".t'``)."""

    kind = "postgres"
    needs = ("adbc_driver_postgresql", "adbc-driver-postgresql", "postgres", "the PostgreSQL destination")
    max_name = (63, "bytes")
    reusable_sessions = True
    #: the finest time unit its timestamp/interval columns keep
    time_unit = "us"
    #: dates and timestamps from 4714-11-24 BC (Julian day 0; year -4713 in polars): refused outside
    #: before sending (dfsync._schema_values.check_values); PostgreSQL's upper ends lie beyond what Arrow holds
    date_range = ((-4713, 11, 24), (5874898, 1, 1))
    timestamp_range = ((-4713, 11, 24), (294277, 1, 1))
    #: text, arrays and jsonb cannot hold U+0000: refused before sending (dfsync._schema_values.check_values)
    text_nul = False

    def name_problem(self, name: str) -> str | None:
        if name in _SYSTEM_COLUMNS:  # CREATE TABLE / ADD COLUMN failed mid-run with libpq's raw message
            return (f"is one of PostgreSQL's system columns ({', '.join(sorted(_SYSTEM_COLUMNS))}), "
                    f"which no table can have as its own")
        return None

    def __init__(self, uri: str, table: str, *, password: str | None = None, retry_timeout: float = 30.0,
                 connect_timeout: int = 10) -> None:
        if not isinstance(uri, str) or not uri.startswith(("postgresql://", "postgres://")):
            raise ConfigError("destinations.postgres() needs a URI like 'postgresql://user@host:5432/dbname'")
        if not table or not isinstance(table, str):
            raise ConfigError("destinations.postgres() needs table='name' (or 'schema.name')")
        self.uri, self.password, self._literal_password = take_password(uri, password)
        self.table = table
        self.name = TableName.parse(table)
        for part in (self.name.schema, self.name.table):  # PostgreSQL would cut a longer one silently
            if part and len(part.encode()) > 63:
                raise ConfigError(f"table name {part!r} is {len(part.encode())} bytes long; PostgreSQL keeps "
                                  f"63 (a longer name is cut, so two such tables would be one). Choose a "
                                  f"shorter name.")
        self.retry_timeout = float(retry_timeout)
        self.connect_timeout = int(connect_timeout)


    def column_type(self, t: pa.DataType) -> str | None:
        return arrow_to_pg(t)

    def writes_json(self, t: pa.DataType) -> bool:
        return arrow_to_pg(t) == "jsonb"  # a list of scalars is an array, which keeps NaN and infinities

    def connection_uri(self) -> str:
        """The URI with the password filled in (never stored or shown)."""
        secret = resolve_secret(self.password, "postgres password") or self._literal_password
        return uri_with_password(self.uri, secret, self.connect_timeout)

    def open(self, ctx: DestinationContext) -> DestinationSession:
        return PostgresSession(self, ctx)


_TRANSIENT_TEXT = ("connection refused", "server closed the connection", "no connection to the server",
                   "terminating connection", "could not connect", "connection reset", "timeout expired",
                   "the database system is", "could not receive data", "could not send data",
                   "broken pipe", "connection timed out", "ssl syscall", "eof detected")


class PostgresSession(ArrowSQLSession):
    destination: PostgresDestination
    label = "PostgreSQL"
    fence_read_lock = " FOR SHARE"
    fence_write_lock = " FOR UPDATE"
    json_cast = "::jsonb"
    defer_primary_key = True
    exact_names = True  # quoted names keep their case
    #: memory for the one PRIMARY KEY build at the end of a first load: the server default
    #: (64MB) makes a multi-million-row key build sort on disk (measured 10M rows: 18.5 s ->
    #: 13.5-16.5 s with more). It is a cap, not an allocation, and SET LOCAL ends with the
    #: transaction, so nothing else on the connection or server is affected.
    key_build_memory = "512MB"
    #: two COPY streams keep two server backends busy: a 2M-row first load in 100k-row
    #: batches takes 2.4-2.5 s on two connections against 3.8-4.4 s on one (and 2.6 s for a
    #: single one-shot COPY), measured on 2 cores
    @property
    def parallel_writes(self) -> int:  # type: ignore[override]
        return setting("postgres_writers")  # type: ignore[no-any-return]

    def _add_deferred_key(self, cur: Any) -> None:
        cur.execute(f"SET LOCAL maintenance_work_mem = '{self.key_build_memory}'")
        super()._add_deferred_key(cur)

    def _connect(self) -> Any:
        try:
            import adbc_driver_postgresql  # noqa: F401
        except ImportError:
            raise MissingDependencyError("adbc-driver-postgresql", "postgres", "the PostgreSQL destination") from None
        uri = self.destination.connection_uri()
        try:
            return connect_postgres(uri)
        except Exception as exc:
            if self._classify(exc) == TRANSIENT:
                raise Transient(str(exc)) from exc
            raise DestinationError(
                f"cannot connect to PostgreSQL {self.destination.uri}: {' '.join(str(exc).split())}. Check the "
                f"user, the password (env:NAME in the URI's password, or password='env:NAME'), the database "
                f"name and pg_hba.conf."
            ) from exc

    def _classify(self, exc: BaseException) -> str:
        state = getattr(exc, "sqlstate", None) or ""
        text = str(exc).lower()
        if state[:2] in ("08",) or state in ("57P01", "57P02", "57P03", "53300", "40001", "40P01", "55P03"):
            return TRANSIENT
        if state[:2] in ("22", "23") or state == "21000":
            return DATA
        if not state and any(t in text for t in _TRANSIENT_TEXT) and not any(
                t in text for t in ("password authentication failed", "no pg_hba.conf entry")):
            return TRANSIENT
        return TERMINAL

    def _terminal_message(self, exc: BaseException) -> str:
        text = str(exc)
        hint = ""
        if "42501" in text or "permission denied" in text.lower():
            hint = " Grant the sync's user the needed privileges (INSERT/UPDATE/DELETE, CREATE on the schema)."
        return f"PostgreSQL destination {self.destination.describe()} refused: {text}.{hint}"

    def _where(self) -> str:
        return self.destination.describe()

    def _replace_name(self) -> TableName:
        name = f"{self.target.table}__dfsync_replace_{self.ctx.run_id}"
        if len(name.encode()) > 63:  # PostgreSQL truncates identifiers at 63 bytes
            digest = hashlib.sha1(self.target.table.encode()).hexdigest()[:12]
            name = f"_dfsync_replace_{digest}_{self.ctx.run_id}"
        return TableName(self.target.schema, name)

    def _stage_sql(self) -> str:
        return f"pg_temp.{q('_dfsync_stage')}"

    def _ledger_ddl(self) -> str:
        return (f"CREATE TABLE IF NOT EXISTS {self._ledger_name().sql} (run_key text NOT NULL, "
                "batch_no integer NOT NULL, rows bigint, not_delivered jsonb, "
                "committed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (run_key, batch_no))")

    def _connect_and_ledger(self) -> None:
        def go(cur: Any) -> None:
            self._refuse_workspace_schema(cur)
            if self.target.schema:
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {q(self.target.schema)}")
            cur.execute(self._ledger_ddl())
            self.con.commit()
            self._raise_fence(cur)

        self._run(go)

    def _refuse_workspace_schema(self, cur: Any) -> None:
        """The table never goes into a schema holding a dfsync workspace (a PostgreSQL workspace
        in the same database, ``?schema=...``): its tables (syncs, runs, events ...) would be
        written over and the workspace broken. Checked before the ledger or the table is made."""
        where = "$1" if self.target.schema else "current_schema()"
        found = self._fetch(cur, f"SELECT count(*), {where} FROM pg_tables WHERE schemaname = {where} "
                                 "AND tablename IN ('workspace_meta', 'syncs', 'runs') GROUP BY 2",
                            (self.target.schema,) if self.target.schema else ())
        if found and found[0][0] == 3:
            self.con.rollback()
            raise DestinationError(
                f"{self.destination.describe()}: the schema {found[0][1]!r} holds a dfsync workspace (its "
                f"syncs, runs and events tables); the sync's table and ledger would be written among them, "
                f"breaking it. Give the destination a schema of its own (table='analytics.{self.target.table}') "
                f"or another database; nothing was written.")

    def _exists(self, name: TableName) -> bool:
        with self.con.cursor() as cur:
            return bool(self._fetch(cur, "SELECT to_regclass($1) IS NOT NULL", (name.sql,))[0][0])

    def _describe(self, name: TableName) -> dict[str, str]:
        with self.con.cursor() as cur:
            rows = self._fetch(cur, "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute "
                                    "WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped "
                                    "ORDER BY attnum", (name.sql,))
        return {a: t for a, t in rows}

    def _insert_conflicts(self, cur: Any) -> dict[int, str]:
        """Besides insert mode's keys already there: a key column of type citext or with a
        non-deterministic collation takes texts that differ as one ('A' is 'a'), and a char(n) key
        ignores trailing spaces ('a ' is 'a'): rows whose key it takes as an existing row's or
        another staged row's would overwrite that row. They fail, named, and leave the stage.
        Tables dfsync creates have none of these (one catalog look a session)."""
        failed = super()._insert_conflicts(cur)
        pk = self.ctx.primary_key
        if getattr(self, "_loose", None) is None:
            rows = self._fetch(cur, "SELECT a.attname::text, format_type(a.atttypid, NULL), quote_ident(n.nspname) || '.' "
                                    "|| quote_ident(c.collname) FROM pg_attribute a LEFT JOIN pg_collation c ON c.oid = "
                                    "a.attcollation LEFT JOIN pg_namespace n ON n.oid = c.collnamespace WHERE a.attrelid "
                                    "= to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped AND (format_type(a.atttypid, "
                                    "NULL) LIKE '%citext' OR a.atttypid = 'bpchar'::regtype OR NOT coalesce(c.collisdeterministic, true))",
                               (self.write_target.sql,))
            self._loose = {a: f"::{t}" if t.endswith("citext") else "::bpchar" if t == "character" else f" COLLATE {c}"
                           for a, t, c in rows if a in pk}
        loose: dict[str, str] = self._loose
        if not loose:
            return failed
        t, s = self.write_target.sql, self._stage_sql()
        as_table = [f"b.{q(k)}{loose.get(k, '')}" for k in pk]
        sent = f"b.{q(ACTION_COLUMN)} <> 'delete'"
        on = " AND ".join(f"t.{q(k)} = {e}" for k, e in zip(pk, as_table, strict=True))
        exact = " AND ".join(f't.{q(k)}::text COLLATE "C" = b.{q(k)}::text COLLATE "C"' for k in pk)
        grouped = (f"SELECT string_agg(b.{q(ROW_COLUMN)}::text, ','), {', '.join(f'min(b.{q(k)}::text)' for k in pk)} "
                   f"FROM {s} b WHERE {sent} GROUP BY {', '.join(as_table)} HAVING count(*) > 1")
        return {**failed, **drop_key_clashes(self._fetch, cur, s, t, pk, on=on, exact=exact, grouped=grouped,
                                             how="type or collation (citext, char(n) ignoring trailing spaces, or a non-deterministic collation)")}

    def _has_unique_key(self, name: TableName) -> bool:
        with self.con.cursor() as cur:
            rows = self._fetch(cur, "SELECT i.indexrelid::bigint, a.attname::text FROM pg_index i JOIN pg_attribute a "
                                    "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                                    "WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL "
                                    "AND i.indexprs IS NULL", (name.sql,))
        indexes: dict[int, set[str]] = {}
        for idx, col in rows:
            indexes.setdefault(idx, set()).add(col)
        return set(self.ctx.primary_key) in indexes.values()

    def _incoming_types(self, schema: pa.Schema) -> dict[str, str]:
        return {f.name: arrow_to_pg(f.type) for f in schema}

    def _as_duckdb_types(self, types: dict[str, str]) -> dict[str, str]:
        return {c: pg_to_duck(t) for c, t in types.items()}

    def _native_to_arrow(self, declared: str) -> pa.DataType | str | None:
        base = re.sub(r"\(.*\)", "", declared).strip()
        if base == "numeric" and "(" in declared:  # keep the declared precision and scale
            p, _, sc = declared[declared.index("(") + 1:declared.index(")")].partition(",")
            p_, s_ = int(p), int(sc or 0)
            return pa.decimal128(p_, s_) if p_ <= 38 else pa.decimal256(p_, s_)
        if base in ("timestamp without time zone", "timestamp with time zone", "interval", "time without time zone"):
            # microseconds; finer source values are checked before anything is sent (dfsync._schema).
            # A declared precision (timestamp(0), time(3)) rounds finer values: only coarser types fit
            digits = re.search(r"\((\d+)\)", declared)
            unit = fraction_unit(int(digits.group(1))) if digits else "ns"
            if base == "interval":  # interval(0): a staged duration (an Arrow interval) fits none but interval(6)
                return pa.month_day_nano_interval() if unit == "ns" else pa.duration(unit)
            if base == "time without time zone":
                return pa.time32(unit) if unit in ("s", "ms") else pa.time64(unit)
            return pa.timestamp(unit, "UTC" if base == "timestamp with time zone" else None)
        return super()._native_to_arrow(declared)

    def _json_columns(self) -> list[str]:
        return [f.name for f in self.records_schema if arrow_to_pg(f.type) == "jsonb"]

    def _retype_sql(self, name: TableName, column: str, declared: str, was: str) -> list[str]:
        """A column of only NULLs takes NULLs of the new type; an array whose elements are all NULL
        (a list<null>, text[] here) keeps each array, its length and its NULLs ([] stays [])."""
        if not was.endswith("[]"):
            return super()._retype_sql(name, column, declared, was)
        using = f"to_jsonb({q(column)})" if declared in ("json", "jsonb") else f"{q(column)}::{declared}"
        return [f"ALTER TABLE {name.sql} ALTER COLUMN {q(column)} TYPE {declared} USING {using}"]

    def _holds_values(self, cur: Any, column: str, declared: str) -> bool:
        if not declared.endswith("[]"):
            return super()._holds_values(cur, column, declared)
        return bool(self._fetch(cur, f"SELECT 1 FROM {self.target.sql} WHERE EXISTS (SELECT 1 FROM unnest({q(column)}) "
                                     f"AS e(v) WHERE v IS NOT NULL) LIMIT 1"))

    def _casts(self, actual: dict[str, str] | None) -> dict[str, str]:
        """Nested values go as JSON text cast to jsonb; so does text into an existing json or jsonb
        column (PostgreSQL has no implicit cast from text: the statement failed). A column of only
        NULLs (polars' Null type, staged as text) goes as NULLs of the table column's type: into a
        double precision column, say, the text failed the statement; a list of only NULLs
        (list<null>, staged as text[]) as arrays of the column's type, each keeping its length."""
        if getattr(self, "_table_types", None) is None:  # one catalog look a session
            self._table_types = dict(actual if actual is not None else self._describe(self.write_target))
        types = self._table_types
        text = [c for c, t in types.items() if t in ("json", "jsonb") and c in self.columns]
        casts = {f.name: f"::{types[f.name]}" for f in self.records_schema
                 if pa.types.is_null(f.type) and types.get(f.name, "text") != "text"
                 or is_list(f.type) and pa.types.is_null(f.type.value_type) and types.get(f.name, "text[]") != "text[]"}
        return {**casts, **{c: "::jsonb" for c in (*self._json_columns(), *text)}}

    def _conform(self, data: pa.Table) -> pa.Table:
        data = nested_to_json(data, [c for c in self._json_columns() if c in data.column_names])
        fields = []
        changed = False
        for f in data.schema:
            new = _sendable(f.type)
            changed |= new != f.type
            fields.append(pa.field(f.name, new))
        return data.cast(pa.schema(fields)) if changed else data


def _sendable(t: pa.DataType) -> pa.DataType:
    """The Arrow type a value of type ``t`` goes to PostgreSQL as (the same values): the driver
    writes a uint64 as a bigint's bits (2**64 - 1 arrived as -1), in an array too."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = _sendable(t.value_type)
        if inner == t.value_type:
            return t
        field = pa.field(t.value_field.name, inner, t.value_field.nullable)
        return pa.large_list(field) if pa.types.is_large_list(t) else pa.list_(field)
    return {pa.uint8(): pa.int16(), pa.uint16(): pa.int32(), pa.uint32(): pa.int64(),
            pa.uint64(): pa.decimal128(20, 0), pa.float16(): pa.float32(), pa.null(): pa.string(),
            pa.string_view(): pa.large_string(), pa.date64(): pa.date32()}.get(t, t)

