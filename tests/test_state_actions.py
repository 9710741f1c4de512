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
