"""A first load into a DuckDB table the run creates is loaded in place (dfsync/_fused.py): the
same outcome as the staged path (rows, types, key, counters, records, events, delivered state,
the schema the sync knows) and the same refusals; the re-syncs after it diff exactly.

The staged path is taken by giving the sync a ``batch_size`` (a fused load is one batch)."""

from __future__ import annotations

import os
from datetime import date

import duckdb
import polars as pl
import pytest

import dfsync
from dfsync import _fused

#: the fused load writes ahead to, and confirms in, either store (PostgreSQL's under -m slow)
WORKSPACE_STORES = ("duckdb", "postgres")
SLOW_WORKSPACE_STORES = ("postgres",)


@pytest.fixture
def fused(monkeypatch) -> list[int]:
    """How many runs took the fused load."""
    calls: list[int] = []
    real = _fused._deliver

    def spy(runner, *a, **kw):
        calls.append(runner.run_id)
        return real(runner, *a, **kw)

    monkeypatch.setattr(_fused, "_deliver", spy)
    return calls


def rows(n: int, start: int = 0) -> pl.DataFrame:
    ids = list(range(start, start + n))
    return pl.DataFrame({
        "id": ids,
        "name": [None if i % 7 == 0 else f"row {i} ✓" for i in ids],
        "value": [i * 0.25 for i in ids],
        "day": [date(2024, 1, 1 + i % 28) for i in ids],
        "tags": [[i, i + 1] if i % 3 else [] for i in ids],
    })


def dest_state(path: str) -> tuple:
    if not os.path.exists(path):
        return None, None, None, None
    con = duckdb.connect(path, read_only=True)
    try:
        tables = sorted(r[0] for r in con.execute("SHOW TABLES").fetchall())
        if "t" not in tables:
            return tables, None, None, None
        data = pl.from_arrow(con.sql("SELECT * FROM t ORDER BY id").to_arrow_table())
        columns = con.execute("DESCRIBE t").fetchall()
        keys = sorted(r[0] for r in con.execute(
            "SELECT constraint_type FROM duckdb_constraints() WHERE table_name = 't'").fetchall())
        return tables, data, columns, keys
    finally:
        con.close()


def two_syncs(ws, tmp_path, make_source, mode="upsert", **kw):
    """The same sync twice, into two destination files: fused (no batch size) and staged."""
    out = []
    for name, extra in (("fused", {}), ("staged", {"batch_size": 1000})):
        dest = dfsync.destinations.duckdb(str(tmp_path / f"{name}.duckdb"), table="t")
        out.append(ws.create_sync(name, source=make_source(), destination=dest, primary_key="id",
                                  destination_mode=mode, **extra, **kw))
    return out


def run_events(run) -> list[tuple]:
    ev = run.events()
    return [(r["kind"], r["from_status"], r["to_status"], r["detail"]) for r in ev.iter_rows(named=True)]


@pytest.mark.parametrize("mode", ["insert", "upsert", "mirror"])
def test_a_fused_first_load_gives_what_the_staged_path_gives(tmp_path, ws_target, fused, mode):
    df = rows(300)
    ws = dfsync.Workspace(ws_target)
    a, b = two_syncs(ws, tmp_path, lambda: dfsync.sources.frame(df), mode)
    ra, rb = a.run(progress=False), b.run(progress=False)
    assert fused == [ra.id]
    assert ra.status == rb.status == "success", (ra.error, rb.error)
    assert ra.counts == rb.counts and ra.counts["sent"] == 300 and ra.counts["inserted"] == 300
    assert [e[:3] + (e[3],) for e in run_events(ra)] == run_events(rb)
    fa, fb = dest_state(str(tmp_path / "fused.duckdb")), dest_state(str(tmp_path / "staged.duckdb"))
    assert fa[0] == fb[0] == ["_dfsync_batches", "t"]  # no table of the load's own is left
    assert fa[1].equals(fb[1]) and fa[1].equals(df)
    assert fa[2] == fb[2] and fa[3] == fb[3] == ["NOT NULL", "PRIMARY KEY"]
    # what a user can ask about the run and the sync afterwards
    assert ra.records().sort("id").equals(rb.records().sort("id"))
    assert ra.records().height == 300 and set(ra.records()["_status"]) == {"succeeded"}
    assert a.delivered().sort("id").equals(b.delivered().sort("id"))
    assert a.schema().equals(b.schema())
    ws.close()


def test_the_re_syncs_after_a_fused_first_load_diff_exactly(tmp_path, ws_target, fused):
    v1 = rows(20_000)  # more rows than a run keeps records of
    v2 = pl.concat([v1.filter(pl.col("id") % 50 != 0)  # 400 deleted
                    .with_columns(pl.when(pl.col("id") % 101 == 0).then(pl.lit("changed")).otherwise(pl.col("name"))
                                  .alias("name")),  # 195 updated (199 ids divisible by 101, 4 of them by 50)
                    rows(100, start=20_000)])  # 100 new
    src = tmp_path / "src.parquet"
    v1.write_parquet(src)
    ws = dfsync.Workspace(ws_target)
    dest = dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t")
    sync = ws.create_sync("s", source=dfsync.sources.files(str(src)), destination=dest, primary_key="id",
                          destination_mode="mirror")
    first = sync.run(progress=False)
    assert fused == [first.id] and first.status == "success", first.error
    assert first.records().height == 0  # 20,000 rows delivered: their records are not kept, as staged
    again = sync.run(progress=False)  # the same files: not read again
    assert again.status == "success" and again.counts["sent"] == 0 and again.counts["unchanged"] == 20_000
    os.utime(src)  # read and diffed again: every row unchanged
    reread = sync.run(progress=False)
    assert reread.counts["sent"] == 0 and reread.counts["queried"] == 20_000 == reread.counts["unchanged"]
    v2.write_parquet(src)
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    c = run.counts
    assert (c["inserted"], c["updated"], c["deleted"], c["sent"]) == (100, 195, 400, 695), c
    assert dest_state(str(tmp_path / "d.duckdb"))[1].equals(v2.sort("id"))
    assert fused == [first.id]
    ws.close()


CASES = {
    "repeated key": lambda: pl.concat([rows(50), rows(3, start=10)]),
    "null key": lambda: pl.concat([rows(50), rows(1).with_columns(pl.lit(None, pl.Int64).alias("id"))]),
    "empty": lambda: rows(0),
}


@pytest.mark.parametrize("on_invalid", ["fail", "skip"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_what_the_fused_load_cannot_take_ends_as_the_staged_path_ends(tmp_path, ws_target, fused, case, on_invalid):
    """Null or repeated keys and an empty source: the fused load rolls back and the run takes the
    staged path, which says what it says (nothing was sent, the offending rows kept as records)."""
    df = CASES[case]()
    ws = dfsync.Workspace(ws_target)
    a, b = two_syncs(ws, tmp_path, lambda: dfsync.sources.frame(df), "mirror", on_invalid=on_invalid)
    ra, rb = a.run(progress=False), b.run(progress=False)
    assert fused == []
    assert (ra.status, ra.error, ra.counts) == (rb.status, rb.error, rb.counts)
    assert ra.status == ("success" if on_invalid == "skip" and case != "empty" else "failed"), ra.error
    assert ra.records().sort("id", nulls_last=True).equals(rb.records().sort("id", nulls_last=True))
    fa, fb = dest_state(str(tmp_path / "fused.duckdb")), dest_state(str(tmp_path / "staged.duckdb"))
    assert fa[0] == fb[0] and "t__dfsync_load" not in (fa[0] or ())  # no file if nothing was sent, as staged
    assert (fa[1] is None and fb[1] is None) or fa[1].equals(fb[1])
    ws.close()


def test_a_table_already_there_is_loaded_the_staged_way(tmp_path, ws_target, fused):
    path = str(tmp_path / "d.duckdb")
    con = duckdb.connect(path)
    con.execute("CREATE TABLE t (id BIGINT PRIMARY KEY, name VARCHAR, value DOUBLE, day DATE, tags BIGINT[], extra INT)")
    con.close()
    ws = dfsync.Workspace(ws_target)
    sync = ws.create_sync("s", source=dfsync.sources.frame(rows(30)), primary_key="id",
                          destination=dfsync.destinations.duckdb(path, table="t"))
    run = sync.run(progress=False)
    assert run.status == "success" and run.counts["sent"] == 30 and fused == []
    assert dest_state(path)[1].drop("extra").equals(rows(30))
    ws.close()


def test_a_load_table_left_by_a_dead_run_is_dropped(tmp_path, ws_target, fused):
    """A run that died between the load's two commits leaves ``t__dfsync_load`` (never ``t``): the
    next run creating ``t`` drops it, fused or staged."""
    ws = dfsync.Workspace(ws_target)
    for name, extra in (("f", {}), ("s", {"batch_size": 100})):
        path = str(tmp_path / f"{name}.duckdb")
        con = duckdb.connect(path)
        con.execute("CREATE TABLE t__dfsync_load AS SELECT 1 AS id")
        con.close()
        run = ws.create_sync(name, source=dfsync.sources.frame(rows(10)), primary_key="id", **extra,
                             destination=dfsync.destinations.duckdb(path, table="t")).run(progress=False)
        assert run.status == "success", run.error
        tables, data, _, _ = dest_state(path)
        assert tables == ["_dfsync_batches", "t"] and data.equals(rows(10))
    assert len(fused) == 1
    ws.close()


@pytest.mark.parametrize("ask", ["pause", "abort"])
def test_a_pause_or_abort_asked_while_the_source_is_read_acts_before_anything_is_sent(tmp_path, ws_target, fused,
                                                                                    monkeypatch, ask):
    """The fused load is one batch: a pause or abort asked while the source is read acts before
    the batch is sent (nothing in the destination, the load's table gone); a paused run resumes."""
    ws = dfsync.Workspace(ws_target)
    path = str(tmp_path / "d.duckdb")
    sync = ws.create_sync("s", source=dfsync.sources.frame(rows(40)), primary_key="id",
                          destination=dfsync.destinations.duckdb(path, table="t"))

    def hook(point: str) -> None:
        if point == "fused_loaded":
            getattr(sync.current_run(), ask)()

    monkeypatch.setattr(_fused, "hook", hook)
    run = sync.run(progress=False)
    assert run.status == ("paused" if ask == "pause" else "failed") and run.counts["sent"] == 0, run.error
    assert dest_state(path)[0] == ["_dfsync_batches"]
    monkeypatch.setattr(_fused, "hook", lambda point: None)
    again = sync.run(progress=False)
    assert again.status == "success" and again.counts["sent"] == 40, again.error
    assert (again.id == run.id) == (ask == "pause")
    assert dest_state(path)[1].equals(rows(40))
    ws.close()


def test_a_pause_asked_while_the_batch_is_sent_acts_once_it_is_delivered(tmp_path, ws_target, fused, monkeypatch):
    ws = dfsync.Workspace(ws_target)
    path = str(tmp_path / "d.duckdb")
    sync = ws.create_sync("s", source=dfsync.sources.frame(rows(40)), primary_key="id",
                          destination=dfsync.destinations.duckdb(path, table="t"))
    monkeypatch.setattr(_fused, "hook", lambda point: point == "fused_committed" and sync.current_run().pause())
    run = sync.run(progress=False)
    assert run.status == "paused" and run.counts["sent"] == run.counts["succeeded"] == 40, run.error
    assert dest_state(path)[1].equals(rows(40))
    monkeypatch.setattr(_fused, "hook", lambda point: None)
    again = sync.run(progress=False)
    assert again.id == run.id and again.status == "success" and again.counts["sent"] == 40
    assert sync.run(progress=False).counts["sent"] == 0
    ws.close()
