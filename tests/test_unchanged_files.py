"""A full refresh of files that did not change since everything was delivered is not read again."""

from __future__ import annotations

import os

import duckdb
import polars as pl
import pytest

import dfsync


def write(path, df):
    df.write_parquet(path)
    return str(path)


def dest_rows(path):
    with duckdb.connect(str(path)) as con:
        return con.sql("SELECT id, v FROM t ORDER BY id").fetchall()


@pytest.fixture
def setup(tmp_path):
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    src = tmp_path / "data"
    src.mkdir()
    write(src / "a.parquet", pl.DataFrame({"id": [1, 2, 3], "v": ["a", "b", "c"]}))
    write(src / "b.parquet", pl.DataFrame({"id": [4, 5], "v": ["d", "e"]}))
    yield ws, src, tmp_path / "dest.duckdb"
    ws.close()


def notes(ws, run):
    return ws.sql("SELECT detail FROM events WHERE run_id = ? ORDER BY id", [run.id])["detail"].to_list()


def test_unchanged_files_are_not_read_again_and_changed_ones_are(setup):
    ws, src, dest = setup
    sync = ws.create_sync("files", source=dfsync.sources.files(str(src / "*.parquet")),
                          destination=dfsync.destinations.duckdb(dest, table="t"), primary_key="id",
                          destination_mode="mirror")
    first = sync.run(progress=False)
    assert first.status == "success" and first.counts["inserted"] == 5
    assert not any("not read again" in n for n in notes(ws, first))

    same = sync.run(progress=False)
    assert same.status == "success"
    c = same.counts
    assert (c["queried"], c["unchanged"], c["sent"], c["inserted"]) == (5, 5, 0, 0)
    assert any("not read again" in n for n in notes(ws, same))
    assert len(dest_rows(dest)) == 5

    # one file rewritten (new content, new mtime): everything is read and diffed again
    write(src / "b.parquet", pl.DataFrame({"id": [4, 6], "v": ["D", "f"]}))
    changed = sync.run(progress=False)
    c = changed.counts
    assert (c["inserted"], c["updated"], c["deleted"], c["unchanged"]) == (1, 1, 1, 3)
    assert not any("not read again" in n for n in notes(ws, changed))
    assert dest_rows(dest) == [(1, "a"), (2, "b"), (3, "c"), (4, "D"), (6, "f")]

    # a new file matching the glob is a change too
    write(src / "c.parquet", pl.DataFrame({"id": [7], "v": ["g"]}))
    assert sync.run(progress=False).counts["inserted"] == 1
    assert sync.run(progress=False).counts["unchanged"] == 6

    # so is a file that disappeared
    os.remove(src / "c.parquet")
    gone = sync.run(progress=False)
    assert gone.counts["deleted"] == 1 and not any("not read again" in n for n in notes(ws, gone))


def test_a_changed_definition_or_opting_out_reads_again(setup):
    ws, src, dest = setup
    kw = dict(destination=dfsync.destinations.duckdb(dest, table="t"), primary_key="id")
    sync = ws.create_sync("files", source=dfsync.sources.files(str(src / "*.parquet")), **kw)
    sync.run(progress=False)
    assert any("not read again" in n for n in notes(ws, sync.run(progress=False)))

    sync = ws.create_sync("files", source=dfsync.sources.files(str(src / "*.parquet")), batch_size=7, **kw)
    run = sync.run(progress=False)
    assert run.counts["unchanged"] == 5 and not any("not read again" in n for n in notes(ws, run))

    sync = ws.create_sync("files", source=dfsync.sources.files(str(src / "*.parquet"), skip_unchanged=False), **kw)
    for _ in range(2):
        run = sync.run(progress=False)
        assert run.counts["unchanged"] == 5 and not any("not read again" in n for n in notes(ws, run))
    # the option survives a reload of the stored definition
    assert dfsync.Workspace(ws.path).sync("files").source.skip_unchanged is False


def test_failed_rows_are_retried_even_when_the_files_did_not_change(setup):
    ws, src, dest = setup
    with duckdb.connect(str(dest)) as con:  # the destination rejects v = 'b'
        con.execute("CREATE TABLE t (id BIGINT, v VARCHAR CHECK (v <> 'b'))")
    sync = ws.create_sync("files", source=dfsync.sources.files(str(src / "*.parquet")),
                          destination=dfsync.destinations.duckdb(dest, table="t"), primary_key="id",
                          max_failed_rows=5)
    run = sync.run(progress=False)
    assert run.status == "success" and run.counts["failed"] == 1
    again = sync.run(progress=False)
    assert again.counts["retried"] == 1 and again.counts["failed"] == 1
    assert not any("not read again" in n for n in notes(ws, again))


def test_a_file_rewritten_with_other_columns_between_runs_is_refused(tmp_path):
    """The check that files read together agree is not repeated for files whose paths, sizes and
    modification times it passed; a file rewritten with other types between two runs of the same
    sync (one Source object) is checked again, and the run fails before anything is sent."""
    d = tmp_path / "in"
    d.mkdir()
    first = pl.DataFrame({"id": [1, 2], "v": [1, 2]})
    first.write_parquet(d / "a.parquet")
    pl.DataFrame({"id": [3], "v": [3]}).write_parquet(d / "b.parquet")
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    dest = str(tmp_path / "dest.duckdb")
    sync = ws.create_sync("s", source=dfsync.sources.files(str(d / "*.parquet")),
                          destination=dfsync.destinations.duckdb(dest, table="t"), primary_key="id")
    sync.run(progress=False).raise_for_status()
    pl.DataFrame({"id": [3], "v": [3.5]}).write_parquet(d / "b.parquet")
    run = sync.run(progress=False)
    assert run.status == "failed" and "'v' is double there but int64" in run.error and run.counts["sent"] == 0
    con = duckdb.connect(dest, read_only=True)
    try:
        assert con.execute("SELECT id, v FROM t ORDER BY id").fetchall() == [(1, 1), (2, 2), (3, 3)]
    finally:
        con.close()


def test_the_same_files_read_with_other_reader_options_are_read_again(tmp_path):
    """sync.run(source=files(same paths, schema_overrides=...)) reads the files the new way: the
    run said success with every row 'unchanged' and read nothing, so the codes stayed numbers."""
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    csv = tmp_path / "codes.csv"
    pl.DataFrame({"id": [1, 2], "code": ["7", "10"]}).write_csv(csv)  # no leading zero: read as numbers
    dest = tmp_path / "dest.duckdb"
    sync = ws.create_sync("codes", source=dfsync.sources.files(str(csv)),
                          destination=dfsync.destinations.duckdb(dest, table="t"), primary_key="id")
    assert sync.run(progress=False).status == "success"
    as_text = dfsync.sources.files(str(csv), schema_overrides={"code": pl.String})
    run = sync.run(source=as_text, progress=False)
    assert not any("not read again" in n for n in notes(ws, run))
    # the codes are text now: a change that could alter values, refused naming the column
    assert run.status == "failed" and "'code'" in run.error and run.counts["queried"] == 2
    again = sync.run(source=as_text, progress=False)
    assert again.status == "failed" and again.counts["queried"] == 2
    with duckdb.connect(str(dest)) as con:
        assert con.sql("SELECT code FROM t ORDER BY id").fetchall() == [(7,), (10,)]
    ws.close()


@pytest.mark.parametrize("mode", ["upsert", "insert"])
def test_unchanged_files_count_the_rows_the_source_holds_not_the_delivered_keys(setup, mode):
    """Upsert and insert keep the keys of rows that left the source (they are not deleted): a run
    that skips unchanged files reported the delivered keys as read (queried 5 for a 3-row source)."""
    ws, src, dest = setup
    sync = ws.create_sync("files", source=dfsync.sources.files(str(src / "*.parquet")),
                          destination=dfsync.destinations.duckdb(dest, table="t"), primary_key="id",
                          destination_mode=mode)
    assert sync.run(progress=False).counts["inserted"] == 5
    os.remove(src / "b.parquet")  # rows 4 and 5 leave the source; upsert/insert keep them delivered
    read = sync.run(progress=False)
    assert (read.counts["queried"], read.counts["unchanged"]) == (3, 3)
    same = sync.run(progress=False)
    assert any("not read again" in n for n in notes(ws, same))
    c = same.counts
    assert (c["queried"], c["unchanged"], c["sent"]) == (3, 3, 0)
    assert c["queried"] == c["inserted"] + c["updated"] + c["unchanged"] + c["invalid"]
    assert sync.run(progress=False).counts["queried"] == 3  # and again, after a skipped run
    assert len(dest_rows(dest)) == 5
