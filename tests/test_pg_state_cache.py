"""This host's copy of a PostgreSQL workspace's delivered state (dfsync/store/_pgstatecache.py).

A read uses the copy only when it is provably the server's rows: every writer that changes the
delivered state renews the state's generation on the server (triggers), and a copy that does not
lead to the server's generation is never read. Each test makes the local copy *wrong on purpose*
(a row the server does not have) after it became current, then changes the state by one writer
path: the next read must be the server's rows, never the doctored copy.
"""

from __future__ import annotations

import logging
import os

import polars as pl
import pyarrow as pa
import pytest

import dfsync

pytestmark = pytest.mark.postgres

FAKE = -424242  # a key the source never has: seen in a read only if the doctored copy was used


def _server_view(pg_server, uri: str, sync_id: int) -> set[tuple[int, int]]:
    rows = pg_server.execute(
        f"SELECT id, _fp FROM ws.state_{sync_id} WHERE _ok AND (_run, _batch) NOT IN "
        f"(SELECT run_id, batch_no FROM ws.batches WHERE status = 'inflight')", dbname=uri.rsplit("/", 1)[1])
    return {(int(i), int(fp) & (2**64 - 1)) for i, fp in rows}


def _read(sync) -> set[tuple[int, int]]:
    reader = sync.workspace.store.delivered(sync.id, ["id"])
    if reader is None:
        return set()
    t = reader.read_all()
    return set(zip(t.column("id").to_pylist(), t.column("_fp").to_pylist(), strict=True))


def _frame(n: int, shift: int = 0, upd: int = 0) -> pl.DataFrame:
    ids = list(range(shift, shift + n))
    return pl.DataFrame({"id": ids, "v": [i * 10 + (1 if i < shift + upd else 0) for i in ids]})


@pytest.fixture
def cached(pg_server, pg_uri, tmp_path):
    """A synced workspace whose local copy is current, then doctored: (ws, sync, uri, doctor())."""
    ws = dfsync.Workspace(f"{pg_uri}?schema=ws")
    ws.store.state_cache_root = str(tmp_path / "cache")
    src = tmp_path / "src.parquet"
    _frame(300).write_parquet(src)
    sync = ws.create_sync("s", source=dfsync.sources.files(str(src)),
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"),
                          primary_key="id", destination_mode="mirror", batch_size=100)
    assert sync.run().status == "success"

    def doctor() -> None:
        """Add a row the server does not have to the copy the next read would use."""
        _read(sync)  # the copy is current: a base named by the server's generation
        d = next(os.path.join(r, f) for r, _, fs in os.walk(ws.store.state_cache_root) for f in fs
                 if f.startswith("base-"))
        with pa.OSFile(d, "rb") as src:
            t = pa.ipc.open_file(src).read_all()
        fake = pa.table({"id": pa.array([FAKE], t.schema.field("id").type),
                         "_fp": pa.array([7], t.schema.field("_fp").type)})
        t = pa.concat_tables([t, fake])
        with pa.OSFile(d + ".new", "wb") as sink, pa.ipc.new_file(sink, t.schema) as w:
            w.write_table(t)
        os.replace(d + ".new", d)
        assert (FAKE, 7) in _read(sync)  # the copy is what a read returns while it is current

    sync.src = src  # each step rewrites the source file
    yield ws, sync, pg_uri, doctor
    ws.close()


def test_runs_keep_the_local_copy_exact_and_reads_use_it(pg_server, cached, caplog):
    ws, sync, uri, _ = cached
    steps = [_frame(300, upd=30), _frame(280, shift=20, upd=50), _frame(320, shift=5, upd=0), _frame(320, shift=5)]
    for i, df in enumerate(steps):
        df.write_parquet(sync.src)
        with caplog.at_level(logging.DEBUG, logger="dfsync.store"):
            caplog.clear()
            run = sync.run()
        assert run.status == "success"
        # the run read this host's copy (its first run left a chain of changes from an empty state)
        assert any("read from this host's copy" in r.getMessage() for r in caplog.records), i
        assert _read(sync) == _server_view(pg_server, uri, sync.id)
        assert {k for k, _ in _read(sync)} == set(df["id"].to_list())
    # the next run sends nothing: the copy's fingerprints are the server's
    assert sync.run().counts["sent"] == 0


def test_a_first_load_leaves_its_copy_folded_into_one_base(pg_server, cached):
    ws, sync, uri, _ = cached  # a first load of three batches: a delta each, folded at the transfer's end
    files = [f for _, _, fs in os.walk(ws.store.state_cache_root) for f in fs]
    assert len([f for f in files if f.startswith("base-")]) == 1, files
    assert len([f for f in files if f.startswith("delta-")]) <= 1, files  # the run's end, after the fold
    assert not [f for f in files if f.endswith(".tmp")], files
    assert _read(sync) == _server_view(pg_server, uri, sync.id) and len(_read(sync)) == 300


def _writer_paths():
    def sql_delete(ws, sync, pg_server, uri):
        pg_server.execute(f"DELETE FROM ws.state_{sync.id} WHERE id = 5", dbname=uri.rsplit("/", 1)[1])

    def sql_update_fp(ws, sync, pg_server, uri):
        pg_server.execute(f"UPDATE ws.state_{sync.id} SET _fp = 1 WHERE id = 6", dbname=uri.rsplit("/", 1)[1])

    def truncate(ws, sync, pg_server, uri):
        pg_server.execute(f"TRUNCATE ws.state_{sync.id}", dbname=uri.rsplit("/", 1)[1])

    def batch_status(ws, sync, pg_server, uri):  # a batch back in flight: its rows stop counting
        pg_server.execute("UPDATE ws.batches SET status = 'inflight' WHERE batch_no = 1", dbname=uri.rsplit("/", 1)[1])

    def batch_deleted(ws, sync, pg_server, uri):
        pg_server.execute("DELETE FROM ws.batches WHERE batch_no = 2", dbname=uri.rsplit("/", 1)[1])

    def forget(ws, sync, pg_server, uri):
        assert sync.forget([{"id": 7}])["delivered"] == 1
        # this host's copy, which held the key, is gone from its disk (the empty lock file of the
        # store's hold on it stays: dfsync/store/_statecachegc.py)
        assert [f for _, _, fs in os.walk(ws.store.state_cache_root) for f in fs] == [".lock"]

    def reset(ws, sync, pg_server, uri):
        sync.reset()

    def discard_run(ws, sync, pg_server, uri):
        run_id = sync.runs()["run_id"].to_list()[-1] if "run_id" in sync.runs().columns else sync.runs()["id"][-1]
        ws.store.discard(sync.id, int(run_id))

    def keep_applied(ws, sync, pg_server, uri):
        run_id = sync.runs()["run_id"].to_list()[-1] if "run_id" in sync.runs().columns else sync.runs()["id"][-1]
        ws.store.keep_applied_run(sync.id, int(run_id), replace=True)

    def other_host_runs(ws, sync, pg_server, uri):  # a run by a process with copies of its own
        other = dfsync.Workspace(f"{uri}?schema=ws")
        other.store.state_cache_root = os.path.join(ws.store.state_cache_root, "..", "other-host")
        s2 = other.sync("s")
        _frame(300, upd=40).write_parquet(sync.src)
        assert s2.run().status == "success"
        other.close()

    def trigger_disabled(ws, sync, pg_server, uri):  # an operator writing with the trigger off
        db = uri.rsplit("/", 1)[1]
        pg_server.execute(f"ALTER TABLE ws.state_{sync.id} DISABLE TRIGGER dfsync_state_gen", dbname=db)
        pg_server.execute(f"DELETE FROM ws.state_{sync.id} WHERE id = 8", dbname=db)

    def replication_role(ws, sync, pg_server, uri):  # triggers fire for a replication session too
        db = uri.rsplit("/", 1)[1]
        pg_server.execute(f"SET session_replication_role = replica; DELETE FROM ws.state_{sync.id} WHERE id = 9",
                          dbname=db)

    return [sql_delete, sql_update_fp, truncate, batch_status, batch_deleted, forget, reset, discard_run,
            keep_applied, other_host_runs, trigger_disabled, replication_role]


@pytest.mark.parametrize("writer", _writer_paths(), ids=lambda f: f.__name__)
def test_every_writer_path_makes_the_local_copy_unusable(pg_server, cached, writer):
    ws, sync, uri, doctor = cached
    doctor()
    writer(ws, sync, pg_server, uri)
    got = _read(sync)
    assert (FAKE, 7) not in got
    if sync.workspace.store.delivered(sync.id, ["id"]) is not None:
        assert got == _server_view(pg_server, uri, sync.id)


def test_a_confirmation_that_rolls_back_records_nothing(pg_server, cached, monkeypatch):
    """The state changed inside a confirmation that then failed: the copy follows the server."""
    ws, sync, uri, _ = cached
    store = ws.store
    real_confirm, real_add = store._confirm, store._add_counters
    inside = []

    def confirm(*a, **kw):
        inside.append(True)
        return real_confirm(*a, **kw)

    def add(*a, **kw):
        if inside:
            raise RuntimeError("the transaction fails after the state changed")
        return real_add(*a, **kw)

    monkeypatch.setattr(store, "_confirm", confirm)
    monkeypatch.setattr(store, "_add_counters", add)
    _frame(300, upd=10).write_parquet(sync.src)
    assert sync.run().status != "success"
    assert inside
    monkeypatch.setattr(store, "_confirm", real_confirm)
    monkeypatch.setattr(store, "_add_counters", real_add)
    assert _read(sync) == _server_view(pg_server, uri, sync.id)
    run = sync.run()
    assert run.status == "success"
    assert _read(sync) == _server_view(pg_server, uri, sync.id)
    assert {k for k, _ in _read(sync)} == set(range(300))
    assert sync.run().counts["sent"] == 0


def test_rejected_rows_and_a_two_column_key_keep_the_copy_exact(pg_server, pg_uri, tmp_path, http_server, caplog):
    """Rows the destination refused never count; a composite key is matched on both columns."""
    from tests.plugins.http_server import Reply

    refuse: set[int] = {3, 17, 42}

    def answer(req):
        return Reply(207, {"results": [{"id": r["id"], "status": 422, "error": "no"} if r["id"] in refuse
                                       else {"id": r["id"], "status": 200} for r in req.records]})

    http_server.handler = answer
    ws = dfsync.Workspace(f"{pg_uri}?schema=ws")
    ws.store.state_cache_root = str(tmp_path / "cache")
    src = tmp_path / "src.parquet"
    db = pg_uri.rsplit("/", 1)[1]

    def frame(n: int, bump: int = 0) -> pl.DataFrame:
        return pl.DataFrame({"id": list(range(n)), "part": [i % 3 for i in range(n)],
                             "v": [i + (bump if i % 4 == 0 else 0) for i in range(n)]})

    frame(60).write_parquet(src)
    dest = dfsync.destinations.http(http_server.url, batch_size=25, retry_initial_wait=0.01, retry_max_wait=0.05,
                                    max_retries=3, timeout=5.0, update="PUT /{id}", delete="DELETE /{id}")
    sync = ws.create_sync("s", source=dfsync.sources.files(str(src)), destination=dest, primary_key=["id", "part"],
                          destination_mode="mirror", max_failed_rows=10, batch_size=20)
    for n, bump, refused in ((60, 0, {3, 17, 42}), (55, 1, {8, 12}), (58, 2, set())):
        refuse.clear()
        refuse.update(refused)
        http_server.handler = answer
        frame(n, bump).write_parquet(src)
        with caplog.at_level(logging.DEBUG, logger="dfsync.store"):
            caplog.clear()
            assert sync.run(progress=False).status == "success"
        rows = pg_server.execute(
            f"SELECT id, part, _fp FROM ws.state_{sync.id} WHERE _ok AND (_run, _batch) NOT IN "
            f"(SELECT run_id, batch_no FROM ws.batches WHERE status = 'inflight')", dbname=db)
        server = {(int(i), int(p), int(fp) & (2**64 - 1)) for i, p, fp in rows}
        reader = ws.store.delivered(sync.id, ["id", "part"])
        t = reader.read_all()
        local = set(zip(t.column("id").to_pylist(), t.column("part").to_pylist(), t.column("_fp").to_pylist(),
                        strict=True))
        assert local == server
        if n == 60:  # a refused new row is not delivered (a refused update leaves the old version)
            assert not {i for i, _, _ in server} & refused
    assert any("read from this host's copy" in r.getMessage() for r in caplog.records)
    ws.close()


def test_a_chain_of_changes_replays_in_order(tmp_path):
    """A key added, taken out and added again over several deltas ends as the last delta left it."""
    from dfsync.store._pgstatecache import StateCache

    for key in (["id"], ["id", "part"]):
        cache = StateCache(str(tmp_path / "_".join(key)), "ws", 1, key)
        schema = pa.schema([*(pa.field(k, pa.int64()) for k in key), pa.field("_fp", pa.uint64())])

        def rows(ids, fp, key=key, schema=schema):
            return pa.table({**{k: [i for i in ids] for k in key}, "_fp": pa.array([fp] * len(ids), pa.uint64())},
                            schema=schema)

        model = {(i,) * len(key): 1 for i in range(10)}
        cache.keep_base("00000000-0000-4000-8000-000000000000", rows(range(10), 1))
        gens = [f"00000000-0000-4000-8000-{n:012d}" for n in range(1, 6)]
        steps = [([2, 3], [2, 11], 2), ([11, 4], [], 0), ([], [11, 4], 3), ([2], [2], 4), ([0], [], 0)]
        prev = "00000000-0000-4000-8000-000000000000"
        for g, (out, add, fp) in zip(gens, steps, strict=True):
            cache.keep_delta(prev, g, schema, rows(out, 0).select(key), rows(add, fp))
            for i in out:
                model.pop((i,) * len(key), None)
            for i in add:
                model[(i,) * len(key)] = fp
            prev = g
        t = cache.open(gens[-1], schema).read_all()
        got = {tuple(t.column(k)[j].as_py() for k in key): t.column("_fp")[j].as_py() for j in range(t.num_rows)}
        assert got == model and t.num_rows == len(model)
        assert cache.open("00000000-0000-4000-8000-999999999999", schema) is None  # no chain leads there
        assert oct(os.stat(cache.dir).st_mode & 0o777) == "0o700"
        assert all(oct(os.stat(os.path.join(cache.dir, f)).st_mode & 0o777) == "0o600" for f in os.listdir(cache.dir))
