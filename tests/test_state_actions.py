"""The delivered state of a DuckDB workspace is written narrow (dfsync/store/_delivery.py), as the
PostgreSQL store's is: an insert's ``_action`` is NULL, read back as 'insert'; rows an older
version wrote ('insert' spelled out) count the same. And staging keeps its actions as an ENUM,
read out as text (the records and the batches sent carry strings as before).

Real workspace and destination files; each test checks what the state table holds and that
the rows synced are exact (a paused first load resumed: every row in the destination once).
"""

from __future__ import annotations

import duckdb
import polars as pl
import pyarrow as pa
import pytest

import dfsync
import tests.faulty  # noqa: F401 - registers the faulty destination
from tests.faulty import paused_first_load


def _actions(ws_path, sync_id: int, set_insert: bool = False) -> dict[str | None, int]:
    with duckdb.connect(str(ws_path)) as con:
        if set_insert:  # what a state written before held: the action spelled out
            con.execute(f"UPDATE state_{sync_id} SET _action = 'insert' WHERE _action IS NULL")
        return dict(con.execute(f"SELECT _action, count(*) FROM state_{sync_id} GROUP BY 1").fetchall())


@pytest.mark.parametrize("written_by", ["this version", "an older version"])
def test_inserts_are_stored_without_their_action_and_a_paused_first_load_resumes(tmp_path, written_by):
    wsp = tmp_path / "ws.duckdb"
    ws = dfsync.Workspace(wsp)
    sync, run_id, dest = paused_first_load(ws, tmp_path)
    sync_id = sync.id
    ws.close()
    actions = _actions(wsp, sync_id, set_insert=written_by == "an older version")
    assert set(actions) == ({None} if written_by == "this version" else {"insert"}) and sum(actions.values()) >= 20
    ws = dfsync.Workspace(wsp)
    done = ws.store.run_delivered(sync_id, run_id, ["id"])
    assert done.num_rows >= 20 and set(done.column("_action").to_pylist()) == {"insert"}
    sync = ws.sync("s")
    assert sync.run(progress=False).status == "success"  # resumed: the delivered batches adopted, not resent
    with duckdb.connect(str(dest), read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT id), sum(v) FROM t").fetchone() == (60, 60, 17700)
    ws.close()


def test_a_re_sync_writes_only_its_changes_actions_and_records_carry_text(tmp_path):
    src, dest, wsp = tmp_path / "src.parquet", tmp_path / "d.duckdb", tmp_path / "ws.duckdb"
    pl.DataFrame({"id": list(range(60)), "v": [i * 10 for i in range(60)]}).write_parquet(src)
    ws = dfsync.Workspace(wsp)
    sync = ws.create_sync("m", source=dfsync.sources.files(str(src)),
                          destination=dfsync.destinations.duckdb(str(dest), table="t"),
                          primary_key="id", destination_mode="mirror", batch_size=10)
    assert sync.run(progress=False).status == "success"
    new = {i: i * 10 + (i % 2) for i in range(10, 70)}  # 10 deleted, 25 updated, 25 kept, 10 new
    pl.DataFrame({"id": list(new), "v": list(new.values())}).write_parquet(src)
    again = sync.run(progress=False)
    assert again.status == "success" and again.counts["sent"] == 45
    recs = again.records()
    assert recs.schema["_action"] in (pl.String, pl.Utf8)
    assert recs.group_by("_action").len().sort("_action").rows() == [("delete", 10), ("insert", 10), ("update", 25)]
    sync_id = sync.id
    ws.close()
    actions = _actions(wsp, sync_id)
    assert actions.pop("update") == 25 and actions == {None: 35}  # deletes leave no row
    with duckdb.connect(str(dest), read_only=True) as con:
        assert dict(con.execute("SELECT id, v FROM t").fetchall()) == new
        assert con.execute("SELECT data_type FROM duckdb_columns() WHERE table_name = 't' AND column_name = 'v'"
                           ).fetchone()[0] == "BIGINT"
    ws = dfsync.Workspace(wsp)
    assert ws.sync("m").run(progress=False).counts["sent"] == 0
    ws.close()


def test_staging_hands_out_actions_as_text(tmp_path):
    from dfsync.mapping import Mapping
    from dfsync.staging import Staging
    from dfsync.states import DestinationMode

    src = tmp_path / "src.parquet"
    pl.DataFrame({"id": [1, 2, 3], "v": ["a", "b", "c"]}).write_parquet(src)
    st = Staging()
    try:
        st.load(dfsync.sources.files(str(src)), Mapping(None),
                ["id"], cursor=None, detect_deletes=True, state=None)
        assert st.arrow_schema().field("_action").type == pa.string()
        batch = st.batches(DestinationMode.MIRROR, 10).read_all()
        assert batch.column("_action").type == pa.string() and batch.column("_action").to_pylist() == ["insert"] * 3
        assert st.records().column("_action").type == pa.string()
    finally:
        st.close()


def test_a_batch_of_dictionary_encoded_actions_is_told_from_its_indices_and_stored_as_it_says(tmp_path):
    """The write-ahead reads which actions a batch holds from a dictionary's indices (the 10M
    actions of a first load are not decoded): a dictionary listing 'update' that no row uses is
    a batch of inserts, one row using it is not; plain strings are read as they are."""
    from dfsync._arrow import distinct_values

    acts = pa.DictionaryArray.from_arrays(pa.array([0, 0, 2, None], pa.int8()), pa.array(["insert", "update", "delete"]))
    assert distinct_values(acts) == {"insert", "delete", None}
    assert distinct_values(pa.chunked_array([acts.slice(0, 2), acts.slice(2)])) == {"insert", "delete", None}
    assert distinct_values(pa.chunked_array([pa.array(["insert"]), pa.array(["update", None])])) == {"insert", "update", None}
    pl.DataFrame({"id": [1]}).write_parquet(tmp_path / "x.parquet")
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    sync = ws.create_sync("s", source=dfsync.sources.files(str(tmp_path / "x.parquet")),
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"), primary_key="id")
    run_id = ws.store.create_run(sync.id, 1, "manual")
    ws.store.ensure_state_table(sync.id, {"id": "BIGINT"})
    unused = pa.DictionaryArray.from_arrays(pa.array([0, 0, 0], pa.int8()), pa.array(["insert", "update"]))
    used = pa.DictionaryArray.from_arrays(pa.array([0, 1, 2], pa.int8()), pa.array(["insert", "update", "delete"]))
    for batch, actions in ((1, unused), (2, used)):
        rows = pa.table({"id": pa.array([batch * 10 + i for i in range(3)], pa.int64()),
                         "_fp": pa.array([1, 2, 3], pa.uint64()), "_action": actions})
        ws.store.write_ahead(sync.id, run_id, batch, rows, ["id"], "_action")
    ws.close()
    with duckdb.connect(str(tmp_path / "ws.duckdb"), read_only=True) as con:
        got = con.execute(f"SELECT id, _action FROM state_{sync.id} ORDER BY id").fetchall()
    assert got == [(10, None), (11, None), (12, None), (20, None), (21, "update"), (22, "delete")]


def test_a_lone_batch_into_an_empty_state_is_kept_apart_until_confirmed_then_becomes_the_state(tmp_path):
    """A fused first load's one batch (``write_ahead(alone=True)``) goes to a table of its own,
    already ``_ok``: nothing counts it delivered before its confirmation, which makes it the state
    (the keys the destination did not take left out); discarded or settled as not landed, it goes;
    settled as landed, it is confirmed; into a state that has rows, it is written as any batch."""
    pl.DataFrame({"id": [1]}).write_parquet(tmp_path / "x.parquet")
    wsp = tmp_path / "ws.duckdb"
    ws = dfsync.Workspace(wsp)
    sync = ws.create_sync("s", source=dfsync.sources.files(str(tmp_path / "x.parquet")),
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"), primary_key="id")
    store, sid = ws.store, sync.id
    store.ensure_state_table(sid, {"id": "BIGINT"})

    def batch(ids):
        return pa.table({"id": pa.array(ids, pa.int64()), "_fp": pa.array([i * 7 for i in ids], pa.uint64()),
                         "_action": pa.DictionaryArray.from_arrays(pa.array([0] * len(ids), pa.int8()), pa.array(["insert"]))})

    def tables():
        with store._connect() as con:
            return sorted(r[0] for r in con.execute("SHOW TABLES").fetchall() if r[0].endswith(f"_{sid}"))

    counters = dict(sent=0, succeeded=0, failed=0, batches=1)
    run = store.create_run(sid, 1, "manual")
    store.write_ahead(sid, run, 1, batch([1, 2, 3, 4]), ["id"], "_action", alone=True)
    assert tables() == [f"ahead_{sid}", f"state_{sid}"]
    assert not store.has_delivered(sid) and store.delivered_count(sid) == 0 and store.inflight_batches(sid) == [(run, 1)]
    store.discard(sid, run, 1)  # a batch not sent: gone
    assert tables() == [f"state_{sid}"] and store.delivered_count(sid) == 0

    store.write_ahead(sid, run, 2, batch([1, 2, 3, 4]), ["id"], "_action", alone=True)
    store.confirm_batch(sid, run, 2, ["id"], [[3]], False, counters)  # key 3 not delivered
    assert tables() == [f"state_{sid}"]
    got = store.delivered(sid, ["id"]).read_all()
    assert sorted(zip(got.column("id").to_pylist(), got.column("_fp").to_pylist(), strict=True)) == [(1, 7), (2, 14), (4, 28)]

    store.write_ahead(sid, run, 3, batch([5, 6]), ["id"], "_action", alone=True)  # the state has rows: as any batch
    assert tables() == [f"state_{sid}"] and store.delivered_count(sid) == 3
    store.settle_inflight(sid, run, [3], {3: []}, ["id"], False)
    assert store.delivered_count(sid) == 5
    store.discard(sid, run)  # the whole run undone: nothing of it delivered
    assert store.delivered_count(sid) == 0

    sync2 = ws.create_sync("s2", source=dfsync.sources.files(str(tmp_path / "x.parquet")),
                           destination=dfsync.destinations.duckdb(str(tmp_path / "d2.duckdb"), table="t"), primary_key="id")
    sid = sync2.id
    store.ensure_state_table(sid, {"id": "BIGINT"})
    run = store.create_run(sid, 1, "manual")
    for b, landed in ((1, False), (2, True)):  # left in flight by a dead process, settled from the destination's ledger
        store.write_ahead(sid, run, b, batch([8, 9]), ["id"], "_action", alone=True)
        store.settle_inflight(sid, run, [b], {b: []} if landed else {}, ["id"], False)
        assert tables() == [f"state_{sid}"] and store.delivered_count(sid) == (2 if landed else 0)
    ws.close()
