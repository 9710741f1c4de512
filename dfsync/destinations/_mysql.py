"""MySQL 8 / MariaDB 10.11 table as a destination, through PyMySQL and ``LOAD DATA LOCAL INFILE``.

    >>> dest = dfsync.destinations.mysql("mysql://app@db:3306/crm", table="customers",
    ...                                  password="env:MYSQL_PASSWORD")

Same flow and guarantees as PostgreSQL (:mod:`dfsync.destinations._arrowsql`): a batch is
loaded into a TEMPORARY staging table, applied with set-based SQL (``INSERT … ON DUPLICATE
KEY UPDATE``, ``UPDATE … JOIN``, ``DELETE … JOIN``) and committed in one InnoDB transaction
together with its row in the ``_dfsync_batches`` ledger of the same database, so a crash
anywhere is settled on the next run (exactly once). Into a table that was empty when the
run began, new rows are loaded straight into the table. ``replace`` builds a new table and
swaps it in with one atomic ``RENAME TABLE``.

Loading. Each batch is written as CSV to a temporary file (Arrow's CSV writer, no Python
row loop) and sent with ``LOAD DATA LOCAL INFILE``. With LOCAL the server turns every error
into a warning and keeps going (a value cut short, a duplicate key skipped), so dfsync reads
the warnings of every load: a warning names its row, and that row is rejected with the
server's message; a load with a warning it cannot place fails the batch. Nothing that
differs from what was sent is ever committed. When the server refuses LOCAL loads (MySQL 8's
default ``local_infile=OFF``), batches go as multi-row prepared INSERTs instead.

Sessions run in strict SQL mode (``STRICT_ALL_TABLES``, no zero dates, ``NO_AUTO_VALUE_ON_ZERO``)
with ``ANSI_QUOTES``, time zone UTC and READ COMMITTED isolation.

Arrow -> MySQL types, for tables dfsync creates (utf8mb4 with a binary, no-pad collation so
text compares byte for byte; the key becomes the PRIMARY KEY):

    ===================================  =============================================
    Arrow                                MySQL / MariaDB
    ===================================  =============================================
    bool                                 tinyint(1)  (reads back as 0/1)
    int8 / int16 / int32 / int64         tinyint / smallint / int / bigint
    uint8 … uint64                       the same, unsigned
    float16, float32                     float
    float64                              double      (NaN and ±inf rejected per row)
    decimal128(p, s)                     decimal(p,s)   (p <= 65)
    string, large_string, string_view    longtext    (key columns: varchar(255) (*))
    binary, large_binary, fixed binary   longblob    (key columns: varbinary(255) (*))
    date32, date64                       date
    time32, time64                       time(6)
    timestamp (no tz)                    datetime(6)
    timestamp (with tz)                  datetime(6) holding UTC, comment 'dfsync: UTC'
    list, struct, map                    json (JSON text), comment 'dfsync: JSON'
    null                                 longtext
    duration                             not supported: convert in the mapping
    ===================================  =============================================

(*) shorter when the whole key would pass InnoDB's 3072-byte index (four text key columns: varchar(192)).
Sub-microsecond timestamps and times are rejected per row (the server keeps microseconds).
Passwords follow the PostgreSQL destination's rules: ``password="env:NAME"`` or ``env:NAME``
in the URI's password slot; a literal password works in this process but is never stored.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa

from .._secrets import resolve_secret, take_password
from .._settings import setting
from ..errors import ConfigError, DestinationError, DfsyncError, redact
from ..states import DestinationMode
from ._arrowsql import (
    DATA,
    ROW_COLUMN,
    TERMINAL,
    TRANSIENT,
    ArrowSQLSession,
    Transient,
)
from ._mysql_data import (
    Loader,
    RowWarnings,
    arrow_to_mysql,
    conform,
    fixed_width,
    key_chars,
    mysql_connect,
    mysql_to_arrow,
    mysql_to_duck,
    normal_type,
    row_message,
    unstorable,
)
from ._sql import ServerDestination, TableName, drop_key_clashes, q
from .base import (
    ACTION_COLUMN,
    BatchResult,
    DestinationContext,
    DestinationSession,
    batch_actions,
    bisect_failures,
    register_destination,
    rows_where,
)

__all__ = ["MySQLDestination", "MySQLSession"]

@register_destination
class MySQLDestination(ServerDestination):
    """A MySQL or MariaDB table (InnoDB); ``table`` may be ``database.table``."""

    kind = "mysql"
    needs = ("pymysql", "pymysql", "mysql", "the MySQL/MariaDB connector")
    max_name = (64, "characters")
    #: the finest time unit its datetime/time columns keep
    time_unit = "us"
    #: MySQL stores neither NaN nor infinity: refused before sending (dfsync._schema_values.check_values)
    nonfinite = ""

    def name_problem(self, name: str) -> str | None:
        # the server refused them mid-run ('Incorrect column name', 'Invalid utf8mb4 character string')
        if name[-1:].isspace():
            return "ends with a space, which MySQL and MariaDB refuse in names"
        wide = next((ch for ch in name if ord(ch) > 0xFFFF), None)
        if wide:
            return (f"holds {wide!r} (U+{ord(wide):X}), a character outside the Basic Multilingual Plane, "
                    f"which MySQL and MariaDB refuse in names")
        return None

    def __init__(self, uri: str, table: str, *, password: str | None = None, retry_timeout: float = 30.0,
                 connect_timeout: int = 10) -> None:
        if not isinstance(uri, str) or not uri.startswith(("mysql://", "mariadb://")):
            raise ConfigError("destinations.mysql() needs a URI like 'mysql://user@host:3306/database'")
        if not urlsplit(uri).path.strip("/"):
            raise ConfigError(f"destinations.mysql() needs the database in the URI: 'mysql://user@host:3306/DATABASE' "
                              f"(got {uri.split('@')[-1]!r})")
        if not table or not isinstance(table, str):
            raise ConfigError("destinations.mysql() needs table='name' (or 'database.name')")
        self.uri, self.password, self._literal_password = take_password(uri, password)
        self.table = table
        self.name = TableName.parse(table)
        if len(self.name.table) > 64:
            raise ConfigError(f"table name {self.name.table!r} is longer than MySQL's 64 characters")
        why = self.name_problem(self.name.table)
        if why:
            raise ConfigError(f"table name {self.name.table!r} {why}; choose another table name")
        self.retry_timeout = float(retry_timeout)
        self.connect_timeout = int(connect_timeout)

    def column_type(self, t: pa.DataType) -> str | None:
        return arrow_to_mysql(t)

    def writes_json(self, t: pa.DataType) -> bool:
        return True  # lists, structs and maps go into json columns


    def secret(self) -> str | None:
        return resolve_secret(self.password, "mysql password") or self._literal_password

    def open(self, ctx: DestinationContext) -> DestinationSession:
        return MySQLSession(self, ctx)


#: errno -> kind. 2003/2006/2013/2055: can't connect / gone away / lost; 1205 lock wait
#: timeout; 1213 deadlock; 1040 too many connections; 1053/1927/4031 server shutdown, killed,
#: idle disconnect. Data: NULL into NOT NULL, duplicate key, out of range, truncation,
#: bad date/number/string (invalid UTF-8), foreign key, CHECK constraint.
_TRANSIENT_ERRNO = {2003, 2006, 2013, 2055, 1205, 1213, 1040, 1053, 1927, 4031, 1043, 1081, 2002}
_DATA_ERRNO = {1048, 1062, 1264, 1265, 1292, 1366, 1406, 1451, 1452, 1690, 3819, 4025, 1300, 1367, 1411,
               1263, 1261, 1262, 1364, 1586, 1859, 4100}
class _Cursor:
    """PyMySQL's cursor with the ``execute(sql, parameters=…)`` the shared SQL session uses."""

    def __init__(self, con: Any) -> None:
        self.cur = con.cursor()

    def execute(self, sql: str, parameters: Any = None) -> int:
        if parameters:
            sql = sql.replace("%", "%%").replace("%%s", "%s")
        return self.cur.execute(sql, parameters)

    def fetchall(self) -> list[tuple]:
        return list(self.cur.fetchall())

    def __enter__(self) -> _Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.cur.close()


class _Connection:
    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def cursor(self) -> _Cursor:
        return _Cursor(self.raw)

    def commit(self) -> None:
        self.raw.commit()

    def rollback(self) -> None:
        self.raw.rollback()

    def close(self) -> None:
        self.raw.close()


class MySQLSession(ArrowSQLSession):
    destination: MySQLDestination
    label = "MySQL"
    fence_read_lock = " LOCK IN SHARE MODE"
    fence_write_lock = " FOR UPDATE"
    #: one connection: two LOAD DATA streams into one InnoDB table contend (2M-row first load
    #: 30.5 s on two connections, 17.2 s on one, measured on 2 cores; bench/mysql_bench.py)
    @property
    def parallel_writes(self) -> int:  # type: ignore[override]
        return setting("mysql_writers")  # type: ignore[no-any-return]

    def __init__(self, destination: Any, ctx: DestinationContext) -> None:
        self.collation = "utf8mb4_bin"
        self.loader = Loader(self._classify, destination.describe())
        self._pre_bad: dict[int, str] = {}
        self._fixed: dict[str, tuple[str, int]] = {}  # CHAR(n) / BINARY(n) columns of a table made by hand
        self._loose: dict[str, str] | None = None
        super().__init__(destination, ctx)

    def _place(self, i: int) -> str:
        return "%s"

    # ---------------------------------------------------------------- connection
    def _connect(self) -> Any:
        try:
            raw = mysql_connect(self.destination.uri, self.destination.secret(),
                                connect_timeout=self.destination.connect_timeout, local_infile=True)
            with raw.cursor() as cur:
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                cur.execute("SET SESSION max_error_count = 65535")
                cur.execute("SELECT version()")
                version = cur.fetchone()[0]
            raw.commit()
        except DfsyncError:
            raise
        except Exception as exc:
            if self._classify(exc) == TRANSIENT:
                raise Transient(redact(str(exc))) from exc
            raise DestinationError(
                f"cannot connect to MySQL {self.destination.uri}: {redact(str(exc))}. Check the user, the "
                f"password (password='env:NAME'), the database name and the user's host grants."
            ) from exc
        # text compares byte for byte, trailing spaces included
        self.collation = "utf8mb4_nopad_bin" if "mariadb" in version.lower() else "utf8mb4_0900_bin"
        return _Connection(raw)

    def _classify(self, exc: BaseException) -> str:
        if isinstance(exc, RowWarnings):
            return DATA
        if isinstance(exc, (ConnectionError, BrokenPipeError, TimeoutError)):
            return TRANSIENT
        errno = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        if errno in _TRANSIENT_ERRNO:
            return TRANSIENT
        if errno in _DATA_ERRNO:
            return DATA
        if errno == 0 and "connection" in str(exc).lower():  # pymysql: "(0, '')" on a dead socket
            return TRANSIENT
        name = type(exc).__name__
        if name == "InterfaceError" or (name == "OperationalError" and errno is None):
            return TRANSIENT
        return TERMINAL

    def _terminal_message(self, exc: BaseException) -> str:
        text = redact(str(exc))
        hint = ""
        if exc.args and exc.args[0] in (1044, 1045, 1142, 1143):
            hint = " Grant the sync's user the needed privileges (INSERT/UPDATE/DELETE, CREATE, DROP)."
        return f"MySQL destination {self.destination.describe()} refused: {text}.{hint}"

    # ---------------------------------------------------------------- catalog
    def _replace_name(self) -> TableName:
        name = f"{self.target.table}__dfsync_replace_{self.ctx.run_id}"
        if len(name) > 64:
            name = f"_dfsync_replace_{hashlib.sha1(self.target.table.encode()).hexdigest()[:12]}_{self.ctx.run_id}"
        return TableName(self.target.schema, name)

    def _old_name(self) -> TableName:
        digest = hashlib.sha1(self.target.table.encode()).hexdigest()[:12]
        return TableName(self.target.schema, f"_dfsync_old_{digest}_{self.ctx.run_id}")

    def _ledger_ddl(self) -> str:
        return (f"CREATE TABLE IF NOT EXISTS {self._ledger_name().sql} (run_key varchar(700) CHARACTER SET "
                "utf8mb4 COLLATE utf8mb4_bin NOT NULL, batch_no int NOT NULL, \"rows\" bigint, "
                "not_delivered longtext, committed_at timestamp(6) NOT NULL DEFAULT current_timestamp(6), "
                "PRIMARY KEY (run_key, batch_no)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")

    def _schema_sql(self, name: TableName) -> tuple[str, tuple]:
        if name.schema:
            return "%s", (name.schema,)
        return "DATABASE()", ()

    def _exists(self, name: TableName) -> bool:
        where, params = self._schema_sql(name)
        with self.con.cursor() as cur:
            return bool(self._fetch(cur, f"SELECT count(*) FROM information_schema.tables WHERE table_schema = "
                                         f"{where} AND table_name = %s", (*params, name.table))[0][0])

    def _describe(self, name: TableName) -> dict[str, str]:
        where, params = self._schema_sql(name)
        with self.con.cursor() as cur:
            rows = self._fetch(cur, f"SELECT column_name, column_type, column_comment FROM information_schema.columns "
                                    f"WHERE table_schema = {where} AND table_name = %s ORDER BY ordinal_position",
                               (*params, name.table))
        return {str(a): normal_type(str(t), str(c or "")) for a, t, c in rows}

    def _has_unique_key(self, name: TableName) -> bool:
        """Is the key a unique index, and the table's only one? ``ON DUPLICATE KEY UPDATE`` fires on a
        clash with any unique index: a new key whose ``email`` a UNIQUE index already holds updated
        that other row (its values overwritten, the new row never inserted, the run a success). With
        another unique index upserts go as UPDATE … JOIN + INSERT … WHERE NOT EXISTS, where such a
        row is refused with the server's duplicate-entry error, as on PostgreSQL."""
        where, params = self._schema_sql(name)
        with self.con.cursor() as cur:
            rows = self._fetch(cur, f"SELECT index_name, column_name FROM information_schema.statistics WHERE "
                                    f"table_schema = {where} AND table_name = %s AND non_unique = 0",
                               (*params, name.table))
        indexes: dict[str, set[str]] = {}
        for idx, col in rows:
            indexes.setdefault(str(idx), set()).add(str(col))
        return list(indexes.values()) == [set(self.ctx.primary_key)]

    def _fit_table(self, cur: Any, records: pa.Schema, incoming: dict[str, str]) -> None:
        super()._fit_table(cur, records, incoming)
        self._fixed = fixed_width(self._describe(self.target))

    def _incoming_types(self, schema: pa.Schema) -> dict[str, str]:
        chars = key_chars(schema, self.ctx.primary_key)
        return {f.name: arrow_to_mysql(f.type, f.name in self.ctx.primary_key, chars) for f in schema}

    def _as_duckdb_types(self, types: dict[str, str]) -> dict[str, str]:
        return {c: mysql_to_duck(t) for c, t in types.items()}

    def _native_to_arrow(self, declared: str) -> pa.DataType | str | None:
        return mysql_to_arrow(declared)

    def _widen_sql(self, name: TableName, column: str, declared: str) -> str:
        return f"ALTER TABLE {name.sql} MODIFY COLUMN {q(column)} {declared}"

    def _retype_sql(self, name: TableName, column: str, declared: str, was: str) -> list[str]:
        return [self._widen_sql(name, column, declared)]  # the column holds only NULLs: nothing to convert

    def _create_sql(self, name: TableName, types: dict[str, str], *, with_key: bool = True) -> str:
        return (super()._create_sql(name, types, with_key=with_key)
                + f" ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={self.collation}")

    # ---------------------------------------------------------------- values
    def _conform(self, data: pa.Table) -> pa.Table:
        return conform(data)

    def _stage_sql(self) -> str:
        return q("_dfsync_stage")

    def _stage(self, cur: Any, data: pa.Table, *, strict: bool = True) -> dict[int, str]:
        """A TEMPORARY table with the target's column types, loaded with the batch's rows.

        Values the target could not hold exactly show up as load warnings here, tied to rows.
        """
        s = self._stage_sql()
        cur.execute(f"DROP TEMPORARY TABLE IF EXISTS {s}")
        cols = ", ".join(q(c) for c in self.columns)
        cur.execute(f"CREATE TEMPORARY TABLE {s} ENGINE=InnoDB SELECT {cols}, CAST('' AS CHAR(6)) AS "
                    f"{q(ACTION_COLUMN)}, CAST(0 AS SIGNED) AS {q(ROW_COLUMN)} FROM {self.write_target.sql} "
                    f"WHERE 1 = 0")
        send = data.select([*self.columns, ACTION_COLUMN, ROW_COLUMN])
        keep = self._keep_mask(data)
        if keep is not None:
            send = send.filter(keep)
        warned = self.loader.load(cur, s, send)
        if warned and strict:
            raise RowWarnings(next(iter(warned.values())))
        rows = send.column(ROW_COLUMN).to_pylist()
        bad = {int(rows[i]): why for i, why in warned.items()}
        if bad:
            cur.execute(f"DELETE FROM {s} WHERE {q(ROW_COLUMN)} IN ({', '.join(str(r) for r in bad)})")
        return bad

    def _keep_mask(self, data: pa.Table) -> pa.Array | None:
        if not self._pre_bad:
            return None
        mask = np.ones(data.num_rows, dtype=bool)
        mask[list(self._pre_bad)] = False
        return pa.array(mask)

    def _ingest_direct(self, cur: Any, data: pa.Table) -> None:
        if self.loader.load(cur, self.write_target.sql, data):
            raise RowWarnings("a value was not stored as sent")

    # ---------------------------------------------------------------- write
    def _fast_path_ok(self, data: pa.Table) -> bool:
        self._pre_bad = unstorable(data, self.columns, self._fixed)  # values MySQL would store other than sent
        return not self._pre_bad

    def _bisect(self, cur: Any, batch_no: int, data: pa.Table, original: pa.Table) -> BatchResult:
        failed = dict(self._pre_bad)
        failed.update(self._stage(cur, data, strict=False))  # staged once, committed
        failed.update(self._insert_conflicts(cur))
        self.con.commit()
        actions = batch_actions(data)
        rest = data
        if failed:
            keep = np.ones(data.num_rows, dtype=bool)
            keep[list(failed)] = False
            rest = data.filter(pa.array(keep))

        def attempt(sub: pa.Table) -> str | None:
            try:
                self._apply(cur, actions, rows_where(sub, ROW_COLUMN, f"b.{q(ROW_COLUMN)}"))
                return None
            except Exception as exc:
                if self._classify(exc) != DATA:
                    raise
                return redact(row_message(exc))
            finally:
                self.con.rollback()

        positions = rest.column(ROW_COLUMN).to_pylist()
        for pos, why in bisect_failures(rest, attempt).items():
            failed[int(positions[pos])] = why
        missing = self._commit(cur, batch_no, data, fast=False, bad=failed)
        cur.execute(f"DROP TEMPORARY TABLE IF EXISTS {self._stage_sql()}")
        return self._result(original, failed, missing)

    def _loose_keys(self, cur: Any) -> dict[str, str]:
        """Key columns of the table whose collation takes texts that differ as one (``_ci``, accents,
        PAD SPACE): column -> collation. Tables dfsync creates have none (binary, no-pad)."""
        if self._loose is None:
            where, params = self._schema_sql(self.write_target)
            rows = self._fetch(cur, f"SELECT column_name, collation_name FROM information_schema.columns WHERE "
                                    f"table_schema = {where} AND table_name = %s AND collation_name IS NOT NULL",
                               (*params, self.write_target.table))
            self._loose = {str(c): str(k) for c, k in rows if str(c) in self.ctx.primary_key
                           and str(k).lower() not in ("utf8mb4_nopad_bin", "utf8mb4_0900_bin", "binary")}
        return self._loose

    def _insert_conflicts(self, cur: Any) -> dict[int, str]:
        """Besides insert mode's keys already there: rows whose key the table's collation takes as
        another key (an existing row's, or another staged row's: 'A' and 'a' under
        utf8mb4_general_ci) would overwrite that row. They fail, named, and leave the stage."""
        failed = super()._insert_conflicts(cur)
        loose = self._loose_keys(cur)
        if not loose:
            return failed
        t, s, pk = self.write_target.sql, self._stage_sql(), self.ctx.primary_key
        keys = ", ".join(f"b.{q(k)}" for k in pk)
        sent = f"b.{q(ACTION_COLUMN)} <> 'delete'"
        on = " AND ".join(f"t.{q(k)} = b.{q(k)}" for k in pk)
        exact = " AND ".join(f"BINARY t.{q(k)} = BINARY b.{q(k)}" if k in loose else f"t.{q(k)} <=> b.{q(k)}"
                             for k in pk)
        how = (", ".join(f"{c!r} is {k}" for c, k in loose.items())
               + f"; a key column that compares bytes as they are: COLLATE {self.collation}")
        grouped = f"SELECT GROUP_CONCAT(b.{q(ROW_COLUMN)}), {keys} FROM {s} b WHERE {sent} GROUP BY {keys} HAVING count(*) > 1"
        return {**failed, **drop_key_clashes(self._fetch, cur, s, t, pk, on=on, exact=exact, grouped=grouped,
                                             how=f"collation ({how})")}

    def _apply(self, cur: Any, actions: set[str], where: str) -> list[int]:
        t, s = self.write_target.sql, self._stage_sql()
        pk = self.ctx.primary_key
        cols = ", ".join(q(c) for c in self.columns)
        bcols = ", ".join(f"b.{q(c)}" for c in self.columns)
        on = " AND ".join(f"t.{q(k)} = b.{q(k)}" for k in pk)
        sets = ", ".join(f"t.{q(c)} = b.{q(c)}" for c in self.columns if c not in pk)
        act = f"b.{q(ACTION_COLUMN)}"
        if self.ctx.mode == DestinationMode.UPDATE:
            missing = self._fetch(cur, f"SELECT b.{q(ROW_COLUMN)} FROM {s} b LEFT JOIN {t} t ON {on} WHERE {where} "
                                       f"AND t.{q(pk[0])} IS NULL")  # positions: the keys read back differ (naive UTC)
            if sets:
                cur.execute(f"UPDATE {t} t JOIN {s} b ON {on} SET {sets} WHERE {where}")
            return [int(r[0]) for r in missing]
        if "delete" in actions:
            cur.execute(f"DELETE t FROM {t} t JOIN {s} b ON {on} WHERE {act} = 'delete' AND {where}")
        rows = f"{act} <> 'delete' AND {where}"
        upserting = self.ctx.mode.upserts
        if not upserting or (self.fresh and actions <= {"insert", "delete"}):
            cur.execute(f"INSERT INTO {t} ({cols}) SELECT {bcols} FROM {s} b WHERE {rows}")
        elif self.unique_key:
            ex = ", ".join(f"{q(c)} = b.{q(c)}" for c in self.columns if c not in pk)
            do = ex or ", ".join(f"{q(k)} = {q(k)}" for k in pk)
            cur.execute(f"INSERT INTO {t} ({cols}) SELECT {bcols} FROM {s} b WHERE {rows} "
                        f"ON DUPLICATE KEY UPDATE {do}")
        else:
            if sets:
                cur.execute(f"UPDATE {t} t JOIN {s} b ON {on} SET {sets} WHERE {rows}")
            cur.execute(f"INSERT INTO {t} ({cols}) SELECT {bcols} FROM {s} b WHERE {rows} "
                        f"AND NOT EXISTS (SELECT 1 FROM {t} t WHERE {on})")
        return []

    # ---------------------------------------------------------------- finish
    def finish(self) -> None:
        def go(cur: Any) -> None:
            if not self.ctx.mode.rewrites:
                self.con.commit()
                return
            old = self._old_name()
            if self._exists(self.write_target):
                # one atomic RENAME: readers see the old table, then the new one
                if self._exists(self.target):
                    cur.execute(f"RENAME TABLE {self.target.sql} TO {old.sql}, "
                                f"{self.write_target.sql} TO {self.target.sql}")
                else:
                    cur.execute(f"RENAME TABLE {self.write_target.sql} TO {self.target.sql}")
            cur.execute(f"DROP TABLE IF EXISTS {old.sql}")
            self.con.commit()

        self._with_retries(lambda: self._run(go))
