"""Retention and erasure of what a workspace keeps about rows: records older than a sync's
``record_retention`` (:meth:`ErasureOps.purge_records`), and every trace of given keys
(:meth:`ErasureOps.forget_keys`: their records, their delivered state, the example values of
check results that are theirs, and the events, run errors and bucket errors that name them).
The SQL is plain enough for both stores (DuckDB file, PostgreSQL); each table is changed by one
``DELETE`` or ``UPDATE`` joined to a registered table of the keys (or of the rewritten rows),
however many keys are forgotten.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa

from .._ident import quote
from .._sensitive import map_examples
from ..errors import ConfigError
from ._common import first
from ._delivery import ahead_table, rec_table, state_table

#: what a forgotten key is replaced with in event details, run errors and check examples
FORGOTTEN = "[forgotten key]"
#: a value this short is found in a text only where the text names the key column with it
_MIN_SUBSTRING = 3


class ErasureOps:
    """Mixed into the stores (which supply ``_transaction`` and ``_has_table``)."""

    _transaction: Any
    _has_table: Any

    def purge_records(self, sync_id: int, before: datetime) -> int:
        """Remove the records of the sync's runs that finished before ``before``; how many rows."""
        rt = rec_table(sync_id)
        old = "_run_id IN (SELECT id FROM runs WHERE sync_id = ? AND finished_at IS NOT NULL AND finished_at < ?)"
        with self._transaction() as con:
            if not self._has_table(con, rt):
                return 0
            n = int(first(con.execute(f"SELECT count(*) FROM {rt} WHERE {old}", [sync_id, before]))[0])
            if n:
                con.execute(f"DELETE FROM {rt} WHERE {old}", [sync_id, before])
        return n

    def retries_purged(self, sync_id: int, key: Sequence[str], before: datetime) -> int:
        """How many rows still to be sent again (the keys :meth:`retry_rows` brings: failed, or found
        invalid by a run that did not fail) have records only in runs that finished before ``before``."""
        rt = rec_table(sync_id)
        cols = ", ".join(quote(k) for k in key)
        old = "_run_id IN (SELECT id FROM runs WHERE sync_id = ? AND finished_at IS NOT NULL AND finished_at < ?)"
        pending = (f"(_status = 'failed' OR _status = 'invalid' AND _run_id IN (SELECT id FROM runs WHERE "
                   f"status <> 'failed')) AND NOT ({' OR '.join(f'{quote(k)} IS NULL' for k in key)})")
        with self._transaction() as con:
            if not self._has_table(con, rt):
                return 0
            return int(first(con.execute(
                f"SELECT count(*) FROM (SELECT DISTINCT {cols} FROM {rt} WHERE {old} AND {pending} "
                f"EXCEPT SELECT DISTINCT {cols} FROM {rt} WHERE NOT {old} AND {pending}) AS gone",
                [sync_id, before, sync_id, before]))[0])

    def forget_keys(self, sync_id: int, key: Sequence[str], keys: Sequence[tuple[Any, ...]]) -> dict[str, int]:
        """Remove every trace of ``keys`` (tuples in ``key``'s column order), in one transaction:
        their records and delivered state rows are deleted; their values are replaced by
        ``[forgotten key]`` in the example values of the sync's check results (in checks on key
        columns, and values their records hold in the column of a check) and in its event
        details, run errors and bucket errors. Returns how many records, delivered rows, check results and texts."""
        counts = {"records": 0, "delivered": 0, "checks": 0, "texts": 0}
        if not keys:
            return counts
        with self._transaction() as con:
            records: list[dict[str, Any]] = []  # the forgotten rows' records: their values in check examples
            for name, table in (("records", rec_table(sync_id)), ("delivered", state_table(sync_id)),
                                ("delivered", ahead_table(sync_id))):  # a batch written ahead on its own
                if not self._has_table(con, table):
                    continue
                _register_keys(con, table, key, keys)
                try:
                    match = f"EXISTS (SELECT 1 FROM _forget_keys k WHERE " \
                            f"{' AND '.join(f'k.{quote(c)} = {table}.{quote(c)}' for c in key)})"
                    if name == "records":
                        records = con.sql(f"SELECT * FROM {table} WHERE {match}").to_arrow_table().to_pylist()
                    found = int(first(con.execute(f"SELECT count(*) FROM {table} WHERE {match}"))[0])
                    counts[name] += found
                    if found:
                        con.execute(f"DELETE FROM {table} WHERE {match}")
                finally:
                    con.unregister("_forget_keys")
            counts["checks"] = _forget_in_checks(con, sync_id, key, keys, records)
            counts["texts"] = _forget_in_texts(con, sync_id, key, keys)
        return counts


def _register_keys(con: Any, table: str, key: Sequence[str], keys: Sequence[tuple[Any, ...]]) -> None:
    """The keys as the temporary table ``_forget_keys``, typed as ``table``'s key columns."""
    schema = con.sql(f"SELECT {', '.join(quote(c) for c in key)} FROM {table} LIMIT 0").to_arrow_table().schema
    columns = {}
    for i, c in enumerate(key):
        values = [k[i] for k in keys]
        try:
            columns[c] = pa.array(values, schema.field(c).type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(f"forget(): the primary key column {c!r} holds {schema.field(c).type} values; "
                              f"{values[:5]!r} cannot be one ({exc}). Nothing was changed.") from exc
        # Arrow truncates on the way (2.5 -> 2, a datetime at noon -> its date): another row's key
        altered = [v for v, back in zip(values, columns[c].to_pylist(), strict=True) if not _same(v, back)]
        if altered:
            raise ConfigError(f"forget(): the primary key column {c!r} holds {schema.field(c).type} values; "
                              f"{altered[:5]!r} {'is' if len(altered) == 1 else 'are'} not one (as "
                              f"{schema.field(c).type}: {[_back(v, schema.field(c).type) for v in altered[:5]]!r}, "
                              f"another key). Give the key values as the column holds them; nothing was changed.")
    con.register("_forget_keys", pa.table(columns))


def _same(given: Any, stored: Any) -> bool:
    """A key value given to forget() reads back as itself in its column's type (1.0 is 1; NaN is NaN)."""
    if given is None or stored is None:
        return given is None and stored is None
    if isinstance(given, float) and isinstance(stored, float) and given != given and stored != stored:
        return True
    try:
        return type(given) is not bool and bool(given == stored) and \
            isinstance(given, datetime) == isinstance(stored, datetime)
    except Exception:  # noqa: BLE001 - values that cannot be compared are not the same
        return False


def _back(value: Any, typ: Any) -> Any:
    return pa.array([value], typ).to_pylist()[0]


def _norm(value: Any) -> Any:
    """A value as a check result keeps it (JSON, non-JSON values as text)."""
    return json.loads(json.dumps(value, default=str))


def _forget_in_checks(con: Any, sync_id: int, key: Sequence[str], keys: Sequence[tuple[Any, ...]],
                      records: list[dict[str, Any]]) -> int:
    """Example values of the sync's check results that are the forgotten rows': in a check on a
    key column the values equal to a forgotten key's, and in a check on any column the values
    the forgotten rows' records hold in that column (a row-level check fails a value whichever
    row holds it; a run that reused another's results holds a copy of them)."""
    by_key: dict[str, set[Any]] = {c: {_norm(k[i]) for k in keys if k[i] is not None} for i, c in enumerate(key)}
    theirs: dict[str, set[Any]] = {}  # column -> the values the forgotten rows' records hold
    for rec in records:
        for c, v in rec.items():
            if not c.startswith("_") and c != "rowid" and v is not None:
                theirs.setdefault(c, set()).add(_norm(v))
    rows = con.sql("SELECT rowid AS rid, check_name, column_name, CAST(partial_unexpected_list AS VARCHAR) "
                   "AS pul, CAST(result AS VARCHAR) AS res FROM checks WHERE run_id IN "
                   "(SELECT id FROM runs WHERE sync_id = ?)", params=[sync_id]).to_arrow_table().to_pylist()
    changed = []
    for row in rows:
        def redact(column: str | None, value: Any) -> Any:
            hit = value in by_key.get(column or "", ()) or value in theirs.get(column or "", ())
            return FORGOTTEN if hit else value

        before = {"column_name": row["column_name"], "partial_unexpected_list": json.loads(row["pul"] or "null"),
                  "result": json.loads(row["res"] or "null")}
        after = map_examples(before, redact)
        if after != before:
            changed.append({"rid": row["rid"], "pul": json.dumps(after["partial_unexpected_list"]),
                            "res": json.dumps(after["result"])})
    if changed:
        con.register("_forget_checks", pa.Table.from_pylist(
            changed, pa.schema([("rid", pa.int64()), ("pul", pa.string()), ("res", pa.string())])))
        try:
            con.execute("UPDATE checks SET partial_unexpected_list = CAST(n.pul AS JSON), result = CAST(n.res AS JSON) "
                        "FROM _forget_checks n WHERE checks.rowid = n.rid")
        finally:
            con.unregister("_forget_checks")
    return len(changed)


def _pattern(key: Sequence[str], keys: Sequence[tuple[Any, ...]]) -> re.Pattern[str] | None:
    """What names a forgotten key in a text: a value of 3 characters or more anywhere; a shorter
    one only where the text names its column with it (``id=4``, ``id: 4``, ``(id)=(4)``, ``'id': 4``,
    as :func:`dfsync._sensitive.key_text` and databases' key errors write keys), as a whole token."""
    long = {str(v) for k in keys for v in k if v is not None and len(str(v)) >= _MIN_SUBSTRING}
    alts = [re.escape(v) for v in sorted(long, key=len, reverse=True)]  # the longest first: one may hold another
    for i, c in enumerate(key):
        short = {str(k[i]) for k in keys if k[i] is not None and len(str(k[i])) < _MIN_SUBSTRING}
        if short:
            values = "|".join(re.escape(v) for v in sorted(short, key=len, reverse=True))
            alts.append(rf"(?<![\w.]){re.escape(c)}['\"]?\)?\s*(?:=\s*\(?|:)\s*['\"]?(?:{values})(?![\w.])")
    return re.compile("|".join(alts)) if alts else None


def _redact(text: str, pattern: re.Pattern[str], key: Sequence[str]) -> str:
    def one(m: re.Match[str]) -> str:
        s = m.group(0)
        for c in key:  # a short value: keep the column's name, replace the value
            named = re.match(rf"{re.escape(c)}['\"]?\)?\s*(?:=\s*\(?|:)\s*['\"]?", s)
            if named:
                return s[:named.end()] + FORGOTTEN
        return FORGOTTEN

    return pattern.sub(one, text)


#: the texts that may name a key: (table, column, the columns naming a row, the sync's rows)
_TEXTS = (("events", "detail", ("id",), "sync_id = ?"), ("runs", "error", ("id",), "sync_id = ?"),
          ("buckets", "error", ("run_id", "bucket"), "run_id IN (SELECT id FROM runs WHERE sync_id = ?)"))


def _forget_in_texts(con: Any, sync_id: int, key: Sequence[str], keys: Sequence[tuple[Any, ...]]) -> int:
    """The sync's event details, run errors and bucket errors, with the forgotten keys' values redacted."""
    pattern = _pattern(key, keys)
    if pattern is None:
        return 0
    needles = sorted({str(v) for k in keys for v in k if v is not None})
    con.register("_forget_values", pa.table({"v": pa.array(needles, pa.string())}))
    n = 0
    try:
        for table, col, ids, scope in _TEXTS:
            rows = con.sql(f"SELECT {', '.join(ids)}, {col} AS text FROM {table} t WHERE {scope} AND EXISTS "
                           f"(SELECT 1 FROM _forget_values f WHERE strpos(t.{col}, f.v) > 0)",
                           params=[sync_id]).to_arrow_table().to_pylist()
            changed = [{**{i: r[i] for i in ids}, "text": new} for r in rows
                       if (new := _redact(r["text"], pattern, key)) != r["text"]]
            if not changed:
                continue
            con.register("_forget_texts", pa.Table.from_pylist(
                changed, pa.schema([*((i, pa.int64()) for i in ids), ("text", pa.string())])))
            try:
                con.execute(f"UPDATE {table} SET {col} = n.text FROM _forget_texts n "
                            f"WHERE {' AND '.join(f'{table}.{i} = n.{i}' for i in ids)}")
            finally:
                con.unregister("_forget_texts")
            n += len(changed)
    finally:
        con.unregister("_forget_values")
    return n
