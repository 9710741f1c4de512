"""Values at the edges of what a destination stores: dates and timestamps outside its range are
refused before anything is sent, naming the column, the value and a mapping that works; the
sign of a zero (-0.0) is kept where the destination keeps it and reads back as an equal zero
elsewhere (docs/SCHEMA.md)."""

from __future__ import annotations

import math

import polars as pl
import pytest

import dfsync
from tests.test_schema_drift import _http_target  # noqa: F401 - the HTTP server fixture's target
from tests.test_type_table import BOTH_DUCKDB, Dest, read_rows

DAY_US = 86_400_000_000
#: (kind, column): a value the destination cannot store, one day inside its range
OUTSIDE = {
    # PostgreSQL's dates and timestamps start at 4714-11-24 BC (polars year -4713)
    ("postgres", "d"): (pl.Series([-2_440_589, 0]).cast(pl.Date), pl.date(-4713, 11, 24)),
    ("postgres", "ts"): (pl.Series([-2_440_589 * DAY_US, 0]).cast(pl.Datetime("us")), pl.datetime(-4713, 11, 24)),
    ("postgres", "tz"): (pl.Series([-200_000 * 365 * DAY_US, 0]).cast(pl.Datetime("us", "UTC")),
                         pl.datetime(-4713, 11, 24, time_zone="UTC")),
    ("postgres", "d_max"): (pl.Series([2_147_000_000, 0]).cast(pl.Date), None),
    # SQLite's ISO text and Delta Lake's readers: years 1 to 9999
    ("sqlite", "d"): (pl.Series([-719_893, 0]).cast(pl.Date), pl.date(1, 1, 1)),
    ("sqlite", "ts"): (pl.Series([3_660_000 * DAY_US, 0]).cast(pl.Datetime("us")), None),
    ("delta", "d"): (pl.Series([3_660_000, 0]).cast(pl.Date), None),
    ("delta", "tz"): (pl.Series([-800_000 * DAY_US, 0]).cast(pl.Datetime("us", "UTC")), None),
}


@pytest.mark.parametrize("kind,col", sorted(OUTSIDE))
def test_dates_and_timestamps_outside_the_destinations_range_are_refused_before_sending(kind, col, request, tmp_path):
    """PostgreSQL failed the run with libpq's raw 'date out of range' (naming nothing), SQLite with the
    driver's 'Could not format date -3000000', and Delta Lake wrote a table its own reader cannot open
    (deltalake's to_pyarrow_table: "Invalid isoformat string: '+11990-09-28'")."""
    values, lowest = OUTSIDE[(kind, col)]
    df = pl.DataFrame({"id": [1, 2], col: values})
    dest = Dest(kind, request, tmp_path)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    sync = ws.create_sync("s", source=dfsync.sources.frame(df), destination=dest.make(), primary_key="id")
    run = sync.run(progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0, (run.status, run.error)
    assert f"column {col!r} holds " in run.error and "Nothing was sent" in run.error, run.error
    # the mapping the message gives runs and sends NULL for the value; the rest reads back equal
    fix = run.error.split("mapping={", 1)[1].split(": ", 1)[1].rsplit("}), or choose", 1)[0]
    fixed = ws.create_sync("s2", source=dfsync.sources.frame(df), destination=dest.make(), primary_key="id",
                           mapping={"id": "id", col: eval(fix, {"pl": pl})})  # noqa: S307 - the message's own text
    run = fixed.run(progress=False)
    assert run.status == "success", run.error
    if lowest is not None:  # the first value inside the range goes in as it is
        for name in ("s", "s2"):  # a replace sync has its table to itself
            ws.delete_sync(name)
        edge = pl.DataFrame({"id": [1], col: pl.select(lowest.alias(col)).to_series()})
        run = ws.create_sync("edge", source=dfsync.sources.frame(edge), destination=dest.make(),
                             primary_key="id", destination_mode="replace").run(progress=False)
        assert run.status == "success", run.error


@pytest.mark.parametrize("kind", BOTH_DUCKDB)
def test_negative_zero_reads_back_as_an_equal_zero_and_its_sign_where_the_destination_keeps_it(kind, request, tmp_path):
    """-0.0 is a zero: it reads back equal everywhere, with its sign on DuckDB, Parquet, Delta Lake,
    PostgreSQL and HTTP; SQLite and MariaDB store 0.0 (docs/SCHEMA.md). A change from 0.0 to -0.0
    is no change of value: a second run sends nothing."""
    df = pl.DataFrame({"id": [1, 2], "f64": [-0.0, 1.5], "f32": pl.Series([-0.0, 2.5], dtype=pl.Float32),
                       "l": [[-0.0, 1.0], []]})
    dest = Dest(kind, request, tmp_path)
    kind = dest.kind
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    sync = ws.create_sync("z", source=dfsync.sources.frame(df), destination=dest.make(), primary_key="id",
                          **dest.sync_options)
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    got = read_rows(kind, dest, ["f64", "f32", "l"])
    assert [(r["f64"], r["f32"], list(r["l"])) for r in got] == [(0.0, 0.0, [0.0, 1.0]), (1.5, 2.5, [])]
    signs = {math.copysign(1, got[0]["f64"]), math.copysign(1, got[0]["f32"]), math.copysign(1, got[0]["l"][0])}
    assert signs == ({1.0, -1.0} if kind in ("sqlite", "mysql") else {-1.0}), (kind, got[0])
    again = sync.run(progress=False)  # the same values: nothing to send
    assert again.status == "success" and again.counts["sent"] == 0, again.counts


@pytest.mark.parametrize("kind", ["duckdb", "duckdb-staged", "sqlite", "postgres"])
def test_a_duration_beyond_292_years_is_refused_before_sending(kind, request, tmp_path):
    """A duration travels as an Arrow interval whose nanoseconds are 64-bit: 1,000,000 days arrived
    as -67520 days 02:07:11.452242 in DuckDB, SQLite and PostgreSQL, and the run said success."""
    from datetime import timedelta

    df = pl.DataFrame({"id": [1, 2], "dur": pl.Series([timedelta(days=100_000), timedelta(days=1_000_000)],
                                                      dtype=pl.Duration("us"))})
    dest = Dest(kind, request, tmp_path)
    kind = dest.kind
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    run = ws.create_sync("s", source=dfsync.sources.frame(df), destination=dest.make(),
                         primary_key="id", **dest.sync_options).run(progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0, (run.status, run.error)
    assert "column 'dur' holds the duration 24000000:00:00" in run.error and "Nothing was sent" in run.error
    fixed = ws.create_sync("s", source=dfsync.sources.frame(df.head(1)), destination=dest.make(),
                           primary_key="id", **dest.sync_options).run(progress=False)  # 274 years: sent as it is
    assert fixed.status == "success", fixed.error
    assert read_rows(kind, dest, ["dur"])[0]["dur"] in (timedelta(days=100_000), "2400000:00:00")
