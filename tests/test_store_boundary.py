"""The workspace store is the only place that speaks SQL to the workspace (issue 19, point 1).

An ``ast`` scan of every module under dfsync/ outside dfsync/store/: no SQL string naming a
workspace table, no raw workspace connection (``store.connect``/``transaction``/``has_table``).
And the delivered state, which the store hands out as a stream of Arrow batches, stages the
same as the table it used to be.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

import dfsync
from dfsync.staging import Staging
from dfsync.store import Store, WorkspaceStore

PACKAGE = Path(dfsync.__file__).parent
WORKSPACE_TABLES = r"(?:syncs|runs|events|batches|checks|workspace_meta|dfsync_schema|state_\w*|rec_\w*)"
# a statement that reads or writes one of the workspace tables
WORKSPACE_SQL = re.compile(
    rf"\b(?:FROM|JOIN|INTO|UPDATE|TABLE|DESCRIBE|USING)\s+{WORKSPACE_TABLES}\b", re.IGNORECASE)
# a per-sync workspace table name being built: f"state_{id}", f"rec_{id}"
TABLE_NAME = re.compile(r"\b(?:state|rec)_$")
RAW_ACCESS = {"connect", "transaction", "has_table", "_connect", "_transaction", "_has_table"}


def _text(node: ast.AST) -> str | None:
    """A string literal, with ``{}`` for the values an f-string puts in."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def violations(source: str, name: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in RAW_ACCESS and "store" in ast.unparse(node.value).lower():
            found.append(f"{name}:{node.lineno}: raw workspace access {ast.unparse(node)}")
        if isinstance(node, ast.JoinedStr):
            parts = node.values
            for a, b in zip(parts, parts[1:], strict=False):
                if isinstance(a, ast.Constant) and isinstance(b, ast.FormattedValue) and TABLE_NAME.search(str(a.value)):
                    found.append(f"{name}:{node.lineno}: builds a workspace table name {ast.unparse(node)[:80]}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("execute", "sql"):
            for arg in node.args[:1]:
                text = _text(arg)
                if text is not None and WORKSPACE_SQL.search(text):
                    found.append(f"{name}:{node.lineno}: workspace SQL outside the store: {text[:80]!r}")
    return found


def test_no_workspace_sql_outside_the_store():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "store":
            continue
        found += violations(path.read_text(encoding="utf-8"), str(rel))
    assert not found, "\n".join(found)


@pytest.mark.parametrize("snippet", [
    'con.execute("SELECT rows FROM batches WHERE run_id = ?", [1])',
    'con.sql(f"SELECT count(*) FROM {st} s JOIN runs r ON r.id = s._run")',
    'con.execute(f"DELETE FROM state_{sync_id} WHERE _ok IS NULL")',
    'st = f"rec_{int(sync_id)}"',
    'with self.store.connect() as con: pass',
    'with ws.store._transaction() as con: pass',
    'ok = store.has_table(con, "x")',
])
def test_the_scan_catches_workspace_sql_and_raw_connections(snippet):
    assert violations(snippet, "snippet"), snippet


def test_the_scan_leaves_staging_and_destination_sql_alone():
    ok = ('con.execute("CREATE OR REPLACE TABLE outcomes (_rid BIGINT)")\n'
          'con.sql(f"SELECT * FROM stg s JOIN dlv d ON {on}")\n'
          'duckdb.connect(path)\n'
          'con.execute(f"INSERT INTO {quote(table)} SELECT * FROM _batch")\n')
    assert violations(ok, "ok") == []


def test_the_duckdb_store_offers_every_operation_of_the_protocol():
    wanted = {n for n in vars(WorkspaceStore) if not n.startswith("_")} | set(WorkspaceStore.__annotations__)
    missing = sorted(n for n in wanted if not hasattr(Store, n) and n not in ("path", "memory"))
    assert missing == []
    store = Store(":memory:")
    try:
        assert isinstance(store.path, str) and store.memory is True and store.key.startswith("memory:")
    finally:
        store.close()


def _people(ids, version=1):
    return pl.DataFrame({"id": list(ids), "name": [f"p{i}-v{version}" for i in ids],
                         "score": [float(i) * version for i in ids]})


def _staged(sync, state, state_bytes=None, **kw):
    staging = Staging()
    if state_bytes is not None:
        staging.state_bytes = state_bytes
    try:
        staging.load(sync.source, sync.mapping, sync.primary_key, cursor=None, detect_deletes=True, state=state, **kw)
        recs = pl.from_arrow(staging.records(include_unchanged=True)).sort("id")
        return staging.valid_counts(), staging.changed_only, recs.to_dicts()
    finally:
        staging.close()


@pytest.mark.parametrize("keep_unchanged", [False, True], ids=["changed-only diff", "full diff"])
def test_a_streamed_delivered_state_stages_the_same_as_a_table(tmp_path, keep_unchanged):
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    try:
        sync = ws.create_sync("people", source=dfsync.sources.frame(_people(range(1, 401))),
                              destination=dfsync.destinations.duckdb(str(tmp_path / "dest.duckdb"), table="people"),
                              primary_key="id", destination_mode="mirror")
        assert sync.run(progress=False).status == "success"
        # 1..50 deleted, 51..100 changed, 101..400 unchanged, 401..450 new
        changed = pl.concat([_people(range(51, 101), version=2), _people(range(101, 451))])
        sync = ws.create_sync("people", source=dfsync.sources.frame(changed),
                              destination=dfsync.destinations.duckdb(str(tmp_path / "dest.duckdb"), table="people"),
                              primary_key="id", destination_mode="mirror", if_exists="update")
        stream = ws.store.delivered(sync.id, sync.primary_key)
        assert isinstance(stream, pa.RecordBatchReader)
        table = ws.store.delivered(sync.id, sync.primary_key).read_all()
        assert table.num_rows == 400
        from_stream = _staged(sync, stream, keep_unchanged=keep_unchanged)
        from_table = _staged(sync, table, keep_unchanged=keep_unchanged)
        assert from_stream == from_table
        # a stream past staging's cap for Arrow state is stored in a DuckDB table (which can spill)
        spilled = ws.store.delivered(sync.id, sync.primary_key)
        assert _staged(sync, spilled, state_bytes=1000, keep_unchanged=keep_unchanged) == from_table
        counts, changed_only, _ = from_stream
        assert changed_only is not keep_unchanged
        assert (counts["insert"], counts["update"], counts["delete"], counts["unchanged"]) == (50, 50, 50, 300)
        # an empty stream is "nothing delivered yet": every row an insert, as with no state at all
        empty = pa.RecordBatchReader.from_batches(table.schema, [])
        assert _staged(sync, empty)[0] == _staged(sync, None)[0]
        assert _staged(sync, None)[0]["insert"] == 400
    finally:
        ws.close()


@pytest.mark.parametrize("cap", [None, 0, 10**9], ids=["default cap", "stored as a table", "scanned as Arrow"])
def test_the_delivered_state_is_the_same_however_it_is_held(cap):
    """dfsync._stage_input.load_state: ``dlv`` holds every streamed row, as Arrow or as a table."""
    import duckdb

    from dfsync._stage_input import load_state

    tbl = pa.table({"id": list(range(5000)), "_fp": pa.array(range(5000, 10000), pa.uint64())})
    con = duckdb.connect()
    try:
        for state in (pa.RecordBatchReader.from_batches(tbl.schema, tbl.to_batches(max_chunksize=700)), tbl):
            _, n = load_state(con, state, cap)
            assert n == 5000
            assert con.execute("SELECT count(*), sum(id), sum(_fp) FROM dlv").fetchall() == [(5000, 12497500, 37497500)]
        # an empty stream or table is nothing delivered: no dlv
        for empty in (pa.RecordBatchReader.from_batches(tbl.schema, []), tbl.slice(0, 0), None):
            assert load_state(con, empty, cap)[1] == 0
            assert not con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'dlv'").fetchall()[0][0]
    finally:
        con.close()
