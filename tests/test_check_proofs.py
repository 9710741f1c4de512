"""A uniqueness check's proof outlives its process: a run that proves a column's values
distinct by their hashes stores the hashes' digest with the check's result, and the next run
of the same sync and definition (a fresh process: the CLI, cron, a scheduler) whose hashes
digest the same skips their sort. Any other hashes are tested in full, and the results stay
exact. Observed through the proof each run stores (``sorted``: whether this run sorted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import polars as pl
import pytest

import dfsync
from dfsync import _checks_sql
from dfsync import checks as dc

N = 3000


def _rows(n: int = N) -> pl.DataFrame:
    return pl.DataFrame({"id": list(range(n)), "email": [f"u{i}@example.com" for i in range(n)],
                         "age": [i % 90 for i in range(n)]})


def _proof(ws: dfsync.Workspace, run_id: int, check: str = "email unique") -> dict | None:
    got = ws.sql("SELECT CAST(proof AS VARCHAR) AS p FROM checks WHERE run_id = ? AND check_name = ?",
                 [run_id, check])["p"].to_list()
    assert len(got) == 1, got
    return json.loads(got[0]) if got[0] else None


def _fresh_process(monkeypatch) -> None:
    """This process forgets the proofs its tests made, as a new process would have none."""
    monkeypatch.setattr(_checks_sql, "PROOFS", _checks_sql.Proofs(1024))


def _cli_run(ws_target: str, name: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-m", "dfsync", "run", name, "-w", ws_target], capture_output=True,
                         text=True, env=env, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.workspaces("duckdb", "postgres")
def test_a_fresh_process_skips_the_sort_only_for_the_hashes_a_run_proved(ws_target, tmp_path, monkeypatch):
    src = tmp_path / "people.parquet"
    df = _rows()
    df.write_parquet(src)
    ws = dfsync.Workspace(ws_target)
    kw = dict(source=dfsync.sources.files(str(src), skip_unchanged=False),
              destination=dfsync.destinations.duckdb(str(tmp_path / "dest.duckdb"), table="t"),
              primary_key="id", destination_mode="mirror", on_invalid="fail",
              checks=[dc.row_count_between(100), dc.unique("email")])
    sync = ws.create_sync("people", **kw)
    _fresh_process(monkeypatch)
    first = sync.run(progress=False)
    assert first.status == "success", first.error
    p1 = _proof(ws, first.id)
    assert p1["sorted"] is True and p1["values"] == N and len(p1["sha256"]) == 64
    assert _proof(ws, first.id, "row_count_between") is None

    # other columns of 3 rows change; a new process (the CLI) runs the sync: the emails' hashes
    # digest as the first run's did, so it does not sort them
    df = df.with_columns(age=pl.when(pl.col("id") < 3).then(99).otherwise(pl.col("age")))
    df.write_parquet(src)
    ws.close()
    _cli_run(ws_target, "people")
    ws = dfsync.Workspace(ws_target)
    sync = ws.sync("people")
    second = ws.sql("SELECT max(id) AS id FROM runs")["id"].item()
    assert second != first.id
    assert ws.sql("SELECT status FROM runs WHERE id = ?", [second])["status"].item() == "success"
    assert _proof(ws, second) == {**p1, "sorted": False, "from_run": first.id}

    def run_fresh():
        _fresh_process(monkeypatch)
        r = sync.run(progress=False)
        return r, _proof(ws, r.id)

    # one email changes into a value no other row has: other hashes, sorted, still distinct
    df = df.with_columns(email=pl.when(pl.col("id") == 1000).then(pl.lit("new@example.com")).otherwise(pl.col("email")))
    df.write_parquet(src)
    run, proof = run_fresh()
    assert run.status == "success" and proof["sorted"] is True and proof["sha256"] != p1["sha256"]
    run, again = run_fresh()  # nothing changed since: the proof of the run before holds
    assert again == {**proof, "sorted": False, "from_run": run.id - 1}

    # the rows only in another order: the same values, other hashes in sequence: sorted again
    df.reverse().write_parquet(src)
    run, reordered = run_fresh()
    assert run.status == "success" and reordered["sorted"] is True and reordered["sha256"] != proof["sha256"]

    # a duplicate: not proved; the check fails naming both rows, and no proof is stored
    df.with_columns(email=pl.when(pl.col("id") == 7).then(pl.lit("u8@example.com"))
                    .otherwise(pl.col("email"))).write_parquet(src)
    run, dup = run_fresh()
    assert run.status == "failed" and dup is None
    res = run.validation().filter(pl.col("check_name") == "email unique").row(0, named=True)
    assert res["success"] is False and res["unexpected_count"] == 2
    assert run.records(status="invalid")["id"].to_list() == [7]  # the changed row; 8 was delivered

    # the last proof still stands for the data it was made on: back to it, no sort
    df.reverse().write_parquet(src)
    run, back = run_fresh()
    assert run.status == "success" and back == {**reordered, "sorted": False, "from_run": back["from_run"]}
    assert back["from_run"] is not None

    # the definition changes (a check added): the earlier definition's proofs are not offered,
    # though the hashes are the same
    kw["checks"] = [dc.row_count_between(100), dc.unique("email"), dc.not_null("age")]
    sync = ws.create_sync("people", if_exists="update", **kw)
    run, changed = run_fresh()
    assert run.status == "success" and changed == {**reordered, "sorted": True}
    run, next_one = run_fresh()
    assert next_one["sorted"] is False and next_one["from_run"] == run.id - 1
    ws.close()


def test_the_evaluation_says_which_proof_it_used_and_a_changed_check_has_other_hashes(monkeypatch):
    """The proofs handed to an evaluation are plain data keyed by check name; a check whose
    hashes differ (other columns) finds no match and sorts; a digest given for another count
    proves nothing."""
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT range AS _rid, 'v' || range AS v, range % 7 AS w FROM range(5000)")
    _fresh_process(monkeypatch)
    ev = dc.evaluate(con, "t", [dc.unique("v")])
    made = ev.proofs["v unique"]
    assert made["sorted"] is True and made["values"] == 5000
    known = {"v unique": {"sha256": made["sha256"], "values": 5000, "run_id": 41}}
    for check, proofs, reused in [
        (dc.unique("v"), known, True),
        (dc.unique("v"), {}, False),  # nothing known (and this process forgot its own)
        (dc.unique("v"), {"v unique": {**known["v unique"], "values": 4999}}, False),
        (dc.unique(["v", "w"], name="v unique"), known, False),  # the same name, other hashes
    ]:
        _fresh_process(monkeypatch)
        ev = dc.evaluate(con, "t", [check], proofs=proofs)
        assert ev.results[0]["success"] is True
        assert ev.proofs["v unique"]["sorted"] is (not reused)
        assert ev.proofs["v unique"].get("from_run") == (41 if reused else None)
    # within one process the proof of an earlier test holds without the workspace's
    ev = dc.evaluate(con, "t", [dc.unique(["v", "w"], name="v unique")])
    assert ev.proofs["v unique"] == {**ev.proofs["v unique"], "sorted": False, "from_run": None}
