"""A re-sync keyed by one integer column diffs by position (dfsync/_dense_diff.py), not by a
DuckDB join: the same counts, the same rows sent, the same refusals as the join, and the join
again wherever the positions cannot stand in for it.

Real workspace, source files and DuckDB destination. Each case runs twice, with the
positional diff and with it switched off, and both must agree with what the source holds.
"""

from __future__ import annotations

import datetime as dt
import decimal

import duckdb
import polars as pl
import pyarrow as pa
import pytest

import dfsync
from dfsync import _dense_diff

UTC = dt.timezone.utc


def _frame(ids: list[int | None], tag: str) -> pl.DataFrame:
    n = len(ids)
    return pl.DataFrame({
        "id": pl.Series(ids, dtype=pl.Int64),
        "qty": [None if i % 7 == 3 else i * 3 for i in range(n)],
        "price": [float("nan") if i % 11 == 5 else (None if i % 13 == 1 else i / 4) for i in range(n)],
        "name": [None if i % 9 == 2 else f"{tag}-é-{i}" * (1 + i % 3) for i in range(n)],
        "ok": [i % 2 == 0 if i % 5 else None for i in range(n)],
        "day": [dt.date(2020, 1, 1) + dt.timedelta(days=i % 400) for i in range(n)],
        "at": [dt.datetime(2021, 5, 1, 12, tzinfo=UTC) + dt.timedelta(microseconds=i * 1_000_001) for i in range(n)],
        "local": [dt.datetime(2022, 2, 2) + dt.timedelta(seconds=i) for i in range(n)],
        "amount": pl.Series([decimal.Decimal(i) / 100 for i in range(n)], dtype=pl.Decimal(12, 2)),
        "blob": [bytes([i % 256, 0, 255]) if i % 4 else None for i in range(n)],
        "clock": [dt.time(i % 24, i % 60, 0, i % 1000) for i in range(n)],
    })


def _v2(v1: pl.DataFrame) -> pl.DataFrame:
    """Updates (values to and from null, NaN), 7 keys deleted of which one comes back, and 4 new
    keys below and above the delivered range."""
    ids = v1["id"].to_list()
    keep = v1.filter(~pl.col("id").is_in(ids[5:12]))  # 7 deleted
    changed = keep.with_columns(
        pl.when(pl.col("id") % 10 == 0).then(pl.col("qty").fill_null(0) + 1).otherwise(pl.col("qty")).alias("qty"),
        pl.when(pl.col("id") % 17 == 0).then(None).otherwise(pl.col("name")).alias("name"),
        pl.when(pl.col("id") == ids[20]).then(float("nan")).otherwise(pl.col("price")).alias("price"),
    )
    new = _frame([-5, 0, ids[7], max(ids) + 1, max(ids) + 40], "new")
    return pl.concat([changed, new])


def _dest(path) -> pl.DataFrame:
    with duckdb.connect(str(path)) as con:
        return pl.from_arrow(con.sql("SELECT * FROM t ORDER BY id").to_arrow_table())


def _sync(tmp_path, name, v1, v2, positional, monkeypatch, **kw):
    """First load of v1, then the re-sync of v2 (read and diffed), then v2 again; returns (the
    first re-sync, the destination after it, diffs made by position, the second re-sync)."""
    used = []
    real = _dense_diff.stage_changed

    def spy(*a, **k):
        used.append(1)
        return real(*a, **k)

    monkeypatch.setattr("dfsync.staging.stage_changed", spy)
    if not positional:
        monkeypatch.setattr("dfsync.staging.DenseState.build", classmethod(lambda cls, *a: None))
    d = tmp_path / name
    d.mkdir()
    v1.write_parquet(d / "v1.parquet")
    v2.write_parquet(d / "v2.parquet")
    ws = dfsync.Workspace(d / "ws.duckdb")
    dest = dfsync.destinations.duckdb(d / "dest.duckdb", table="t")
    first = ws.create_sync("s", source=dfsync.sources.files(str(d / "v1.parquet")), destination=dest,
                           primary_key="id", destination_mode="mirror", **kw).run(progress=False)
    assert first.status == "success", first.error
    sync = ws.create_sync("s", source=dfsync.sources.files(str(d / "v2.parquet"), skip_unchanged=False),
                          destination=dest, primary_key="id", destination_mode="mirror", if_exists="update", **kw)
    schema = _dest(d / "dest.duckdb").schema
    run = sync.run(progress=False)
    out = _dest(d / "dest.duckdb")
    assert out.schema == schema
    by_position = len(used)
    again = sync.run(progress=False) if run.status == "success" else None
    ws.close()
    return run, out, by_position, again


def _same_frames(a: pl.DataFrame, b: pl.DataFrame) -> None:
    assert a.columns == b.columns and a.height == b.height
    for c in a.columns:  # NaN equals NaN here, as the fingerprint takes it
        assert a[c].to_list() == b[c].to_list() or a[c].cast(pl.String).to_list() == b[c].cast(pl.String).to_list(), c


@pytest.mark.parametrize("positional", [True, False])
def test_a_re_sync_sends_exactly_the_changes_by_position_or_by_join(tmp_path, monkeypatch, positional):
    v1 = _frame(list(range(1, 301)), "v1")
    v2 = _v2(v1)
    run, out, used, again = _sync(tmp_path, "mixed", v1, v2, positional, monkeypatch)
    assert used == (1 if positional else 0)
    assert run.status == "success", run.error
    c = run.counts
    assert (c["inserted"], c["deleted"]) == (4, 6)
    assert c["updated"] > 30 and c["queried"] == v2.height == c["inserted"] + c["updated"] + c["unchanged"] + c["invalid"]
    assert c["sent"] == c["inserted"] + c["updated"] + c["deleted"]
    _same_frames(out, v2.sort("id"))
    # the same source read again: every row unchanged, nothing sent
    assert (again.counts["unchanged"], again.counts["sent"], again.counts["queried"]) == (v2.height, 0, v2.height)


@pytest.mark.parametrize("positional", [True, False])
def test_a_repeated_delivered_key_fails_the_run_before_anything_is_sent(tmp_path, monkeypatch, positional):
    v1 = _frame(list(range(1, 101)), "v1")
    v2 = pl.concat([v1, v1.filter(pl.col("id") == 42)])  # key 42 twice, both rows unchanged
    run, out, used, again = _sync(tmp_path, "dup", v1, v2, positional, monkeypatch)
    assert used == (1 if positional else 0)
    assert run.status == "failed" and "42 (2 times)" in str(run.error), run.error
    assert (run.counts["invalid"], run.counts["sent"]) == (2, 0)
    _same_frames(out, v1)


@pytest.mark.parametrize("positional", [True, False])
def test_null_and_repeated_new_keys_are_quarantined_by_either_diff(tmp_path, monkeypatch, positional):
    v1 = _frame(list(range(1, 101)), "v1")
    v2 = pl.concat([v1.filter(pl.col("id") != 50), _frame([None, 500, 500, 501], "new")])
    run, out, used, again = _sync(tmp_path, "nulls", v1, v2, positional, monkeypatch, on_invalid="skip")
    assert used == (1 if positional else 0)
    assert run.status == "success", run.error
    c = run.counts
    assert (c["invalid"], c["inserted"], c["deleted"], c["unchanged"]) == (3, 1, 1, 99)
    assert c["queried"] == v2.height == c["inserted"] + c["updated"] + c["unchanged"] + c["invalid"]
    assert sorted(out["id"].to_list()) == [i for i in range(1, 101) if i != 50] + [501]


def test_keys_too_sparse_for_positions_are_joined(tmp_path, monkeypatch):
    v1 = _frame([1, 10**12, 7, 3], "v1")
    v2 = _frame([1, 10**12, 7, 4], "v2")
    run, out, used, again = _sync(tmp_path, "sparse", v1, v2, True, monkeypatch)
    assert used == 0 and run.status == "success", run.error
    assert (run.counts["inserted"], run.counts["deleted"], run.counts["updated"]) == (1, 1, 2)  # id 7: null name in both, the same row
    _same_frames(out, v2.sort("id"))


def test_a_value_changed_on_its_way_through_arrow_makes_the_diff_join_again(tmp_path, monkeypatch):
    """The kept rows leave DuckDB as Arrow and come back: staged values that do not hash as read
    are not sent; the diff is made again by the join, and the destination gets the source's values."""
    real = _dense_diff._kept
    altered = []

    def alter(batches):
        tbl = real(batches)
        altered.append(tbl.num_rows)
        names = tbl.column("name").to_pylist()
        return tbl.set_column(tbl.schema.get_field_index("name"), "name", pa.array(["altered"] + names[1:]))

    monkeypatch.setattr(_dense_diff, "_kept", alter)
    v1 = _frame(list(range(1, 201)), "v1")
    v2 = _v2(v1)
    run, out, used, again = _sync(tmp_path, "altered", v1, v2, True, monkeypatch)
    assert used == 1 and altered, "the positional diff ran and its kept rows were altered"
    assert run.status == "success", run.error
    assert "altered" not in out["name"].to_list()
    _same_frames(out, v2.sort("id"))
    c = run.counts
    assert (c["inserted"], c["deleted"]) == (4, 6) and c["queried"] == v2.height


@pytest.mark.parametrize("dtype", [pl.Int32, pl.UInt32, pl.Int16])
def test_narrower_integer_keys_diff_by_position(tmp_path, monkeypatch, dtype):
    v1 = _frame(list(range(1, 201)), "v1").with_columns(pl.col("id").cast(dtype))
    v2 = pl.concat([v1.filter(pl.col("id") > 3).with_columns(
        pl.when(pl.col("id") % 4 == 0).then(pl.col("name") + "!").otherwise(pl.col("name")).alias("name")),
        _frame([500, 2], "new").with_columns(pl.col("id").cast(dtype))])
    run, out, used, again = _sync(tmp_path, "narrow", v1, v2, True, monkeypatch)
    assert used == 1 and run.status == "success", run.error
    c = run.counts
    assert (c["inserted"], c["deleted"], c["queried"]) == (1, 2, v2.height) and c["updated"] >= 40  # 2 comes back
    assert out["id"].dtype == dtype
    _same_frames(out, v2.sort("id"))


def _late_changes(v1: pl.DataFrame) -> pl.DataFrame:
    """v1 with its first 100 rows as they were; after them updates (to and from null), 3 rows
    deleted and 2 new keys."""
    changed = v1.filter(~pl.col("id").is_in([150, 151, 260])).with_columns(
        pl.when((pl.col("id") > 100) & (pl.col("id") % 10 == 0)).then(pl.col("qty").fill_null(0) + 1)
        .otherwise(pl.col("qty")).alias("qty"),
        pl.when((pl.col("id") > 100) & (pl.col("id") % 17 == 0)).then(None).otherwise(pl.col("name")).alias("name"))
    return pl.concat([changed, _frame([1000, 1001], "new")])


@pytest.fixture
def narrow(monkeypatch):
    """The first 32 rows decide (in batches of 8), so that a small source's first rows can; counts
    the narrow reads."""
    monkeypatch.setattr(_dense_diff, "_BATCH_ROWS", 8)
    monkeypatch.setattr(_dense_diff, "_PROBE_ROWS", 32)
    used = []
    real = _dense_diff._narrow

    def spy(*a, **k):
        used.append(1)
        return real(*a, **k)

    monkeypatch.setattr(_dense_diff, "_narrow", spy)
    return used


def test_an_unchanged_first_batch_reads_keys_and_fingerprints_then_fetches_the_changed_rows(tmp_path, monkeypatch, narrow):
    v1 = _frame(list(range(1, 301)), "v1")
    v2 = _late_changes(v1)
    run, out, used, again = _sync(tmp_path, "late", v1, v2, True, monkeypatch)
    assert used == 1 and len(narrow) == 2, "the re-sync and the run after it read narrow"
    assert run.status == "success", run.error
    c = run.counts
    assert (c["inserted"], c["deleted"]) == (2, 3) and c["updated"] > 20
    assert c["queried"] == v2.height == c["inserted"] + c["updated"] + c["unchanged"]
    assert c["sent"] == c["inserted"] + c["updated"] + c["deleted"]
    _same_frames(out, v2.sort("id"))
    assert (again.counts["unchanged"], again.counts["sent"]) == (v2.height, 0)


def test_a_first_batch_with_changes_keeps_the_whole_read(tmp_path, monkeypatch, narrow):
    v1 = _frame(list(range(1, 1001)), "v1")
    v2 = _v2(v1)  # changes from the first rows on: more than NARROW_ROWS, by the first batch
    run, out, used, again = _sync(tmp_path, "early", v1, v2, True, monkeypatch)
    assert used == 1 and len(narrow) == 1, "only the run after it (nothing changed) read narrow"
    assert run.status == "success", run.error
    _same_frames(out, v2.sort("id"))
    assert (again.counts["unchanged"], again.counts["sent"]) == (v2.height, 0)


def test_changes_after_the_first_batch_but_among_the_first_rows_keep_the_whole_read(tmp_path, monkeypatch, narrow):
    """The first 32 rows decide, whatever batches they come in: 10 of rows 17-31 changed (of 300
    rows: more than NARROW_ROWS projected), though the first two batches of 8 are unchanged."""
    v1 = _frame(list(range(1, 301)), "v1")
    v2 = v1.with_columns(pl.when(pl.col("id").is_between(18, 27)).then(pl.col("qty").fill_null(0) + 1)
                         .otherwise(pl.col("qty")).alias("qty"))
    run, out, used, again = _sync(tmp_path, "probe", v1, v2, True, monkeypatch)
    assert used == 1 and len(narrow) == 1, "only the run after it (nothing changed) read narrow"
    assert run.status == "success", run.error
    assert (run.counts["updated"], run.counts["sent"]) == (10, 10)
    _same_frames(out, v2.sort("id"))


@pytest.mark.parametrize("second", ["same", "changed"])
def test_a_repeated_key_found_by_the_narrow_read_fails_the_run(tmp_path, monkeypatch, narrow, second):
    """Key 200 twice: its second row as delivered or changed; either way no row is sent."""
    v1 = _frame(list(range(1, 301)), "v1")
    extra = v1.filter(pl.col("id") == 200)
    if second == "changed":
        extra = extra.with_columns(pl.lit(-1, dtype=pl.Int64).alias("qty"))
    v2 = pl.concat([_late_changes(v1), extra])
    run, out, used, again = _sync(tmp_path, "dup", v1, v2, True, monkeypatch)
    assert narrow, "the narrow read ran"
    assert run.status == "failed" and "200 (2 times)" in str(run.error), run.error
    assert run.counts["sent"] == 0
    _same_frames(out, v1)


def test_a_null_key_found_by_the_narrow_read_is_quarantined(tmp_path, monkeypatch, narrow):
    v1 = _frame(list(range(1, 301)), "v1")
    v2 = pl.concat([_late_changes(v1), _frame([None], "new")])
    run, out, used, again = _sync(tmp_path, "null", v1, v2, True, monkeypatch, on_invalid="skip")
    assert narrow, "the narrow read ran"
    assert run.status == "success", run.error
    c = run.counts
    assert (c["invalid"], c["inserted"], c["deleted"]) == (1, 2, 3)
    assert c["queried"] == v2.height == c["inserted"] + c["updated"] + c["unchanged"] + c["invalid"]
    _same_frames(out, v2.filter(pl.col("id").is_not_null()).sort("id"))


def test_a_file_rewritten_between_the_two_reads_is_diffed_again(tmp_path, monkeypatch, narrow):
    """The second read finds other values than the first one compared: nothing of either is
    trusted, the diff is made again by the join, and the destination gets the file as it is now."""
    v1 = _frame(list(range(1, 301)), "v1")
    v2 = _late_changes(v1)
    v3 = v2.with_columns(pl.when(pl.col("id") > 250).then(pl.lit("v3")).otherwise(pl.col("name")).alias("name"))
    real = _dense_diff._fetch
    fetched = []

    def rewrite(con, changed, *a, **k):
        if changed is not None:  # the re-sync's second read, not the unchanged run after it
            v3.write_parquet(tmp_path / "rewritten" / "v2.parquet")
            fetched.append(changed.num_rows)
        return real(con, changed, *a, **k)

    monkeypatch.setattr(_dense_diff, "_fetch", rewrite)
    run, out, used, again = _sync(tmp_path, "rewritten", v1, v2, True, monkeypatch)
    assert fetched, "the second read ran"
    assert run.status == "success", run.error
    _same_frames(out, v3.sort("id"))
    assert run.counts["queried"] == v3.height
