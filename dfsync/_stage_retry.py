"""The staging side of the rows a run sends again (see :mod:`dfsync._retry` for which rows).

An incremental run stages, beside what its cursor read brings, the rows an earlier run's
destination rejected (or found invalid) that this read did not bring (:func:`stage_retry`).
The keys of the rows the destination rejected are kept in staging as ``retry_keys``
(:func:`keep_retry_keys`), so the ``retried`` counter is the rows among them that this run
hands to the destination: staged with an action the mode sends (or skips), and not
quarantined by the checks (:func:`retried_count`). A row staged again but quarantined is
``invalid``, never ``retried``: ``retried`` counts what is sent again, so it is at most ``sent``.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pyarrow as pa

from ._ident import quote
from .states import DestinationMode

__all__ = ["keep_retry_keys", "retried_count", "stage_retry"]


def _on(key: Sequence[str], left: str, right: str) -> str:
    return " AND ".join(f"{left}.{quote(k)} = {right}.{quote(k)}" for k in key)


def stage_retry(con: duckdb.DuckDBPyConnection, columns: Sequence[str], key: Sequence[str],
                retry: pa.Table, fp_sql: str) -> None:
    """Stage the rows that failed or were quarantined earlier and that this read did not bring
    (``fp_sql``: the fingerprint of a row of the staged columns; ``dlv``: the delivered state)."""
    if any(c not in retry.column_names for c in columns):
        return  # the record shape changed since; the full source read covers them
    con.register("_retry", retry.select(list(columns)))
    cols_sql = ", ".join(f"s.{quote(c)}" for c in columns)
    con.execute(
        f"""INSERT INTO stg SELECT {cols_sql}, s._fp, CASE WHEN d._fp IS NULL THEN 'insert'
                 WHEN s._fp = d._fp THEN 'unchanged' ELSE 'update' END
            FROM (SELECT r.*, {fp_sql} AS _fp FROM _retry r ANTI JOIN stg x ON {_on(key, 'r', 'x')}) s
            LEFT JOIN dlv d ON {_on(key, 's', 'd')}"""
    )
    con.unregister("_retry")


def keep_retry_keys(con: duckdb.DuckDBPyConnection, key: Sequence[str], keys: pa.Table | None) -> None:
    """Keep the keys of the rows an earlier run's destination rejected (none: an empty table)."""
    cols = ", ".join(quote(k) for k in key)
    if keys is None or not keys.num_rows:
        con.execute(f"CREATE OR REPLACE TABLE retry_keys AS SELECT {cols} FROM stg LIMIT 0")
        return
    con.register("_retry_keys", keys)
    con.execute(f"CREATE OR REPLACE TABLE retry_keys AS SELECT DISTINCT {cols} FROM _retry_keys")
    con.unregister("_retry_keys")


def retried_count(con: duckdb.DuckDBPyConnection, key: Sequence[str], mode: DestinationMode) -> int:
    """The staged rows of rejected keys this run hands to the destination in ``mode`` (sent, or
    skipped by the mode), the rows the checks quarantined left out."""
    if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'retry_keys'").fetchall()[0][0]:
        return 0
    handed = [*mode.sent_actions, *(() if mode.sends_updates else ("update",))]
    return con.execute(
        f"SELECT count(*) FROM stg s SEMI JOIN retry_keys d ON {_on(key, 's', 'd')} "
        f"WHERE s._action IN ({', '.join(repr(a) for a in dict.fromkeys(handed))}) "
        f"AND s.rowid NOT IN (SELECT _rid FROM invalid) "
        # rows a resumed run had itself seen rejected are not sent again by it (dfsync._settle)
        f"AND s.rowid NOT IN (SELECT _rid FROM outcomes)").fetchall()[0][0]
