"""CSV dates and timestamps polars parses (try_parse_dates), and integers written with leading zeros,
keep what their text says."""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl
import pytest

import dfsync


def monthly(path):
    """US-style monthly figures: 02/01/2024 is 1 February; no first number above 12."""
    path.write_text("month_start,sales\n" + "".join(f"{m:02d}/01/2024,{m * 100}\n" for m in range(1, 13)))
    return str(path)


def rows(dest, table):
    with duckdb.connect(str(dest)) as con:
        return con.sql(f"SELECT * FROM {table} ORDER BY ALL").fetchall()


def test_dates_that_read_day_or_month_first_are_refused_until_the_sync_says_which(tmp_path):
    """They arrived as 2024-01-02 for 02/01/2024 (day first) and the run said success."""
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    csv, dest = monthly(tmp_path / "m.csv"), tmp_path / "d.duckdb"
    with pytest.raises(dfsync.errors.SourceError) as err:
        ws.create_sync("m", source=dfsync.sources.files(csv), primary_key="month_start",
                       destination=dfsync.destinations.duckdb(dest, table="m"))
    msg = str(err.value)
    assert "'month_start'" in msg and "'01/01/2024'" in msg and "str.to_date('%m/%d/%Y')" in msg
    # the way out given in the message
    sync = ws.create_sync("m", source=dfsync.sources.files(csv, schema_overrides={"month_start": pl.String}),
                          destination=dfsync.destinations.duckdb(dest, table="m"), primary_key="month_start",
                          mapping={"month_start": pl.col("month_start").str.to_date("%m/%d/%Y"), "sales": "sales"})
    assert sync.run(progress=False).status == "success"
    assert rows(dest, "m") == [(dt.date(2024, m, 1), m * 100) for m in range(1, 13)]
    # a file that gains such a column later fails its run before sending
    other = tmp_path / "o.csv"
    other.write_text("id,d\n1,2024-01-05\n")
    later = ws.create_sync("o", source=dfsync.sources.files(str(other)), primary_key="id",
                           destination=dfsync.destinations.duckdb(dest, table="o"))
    assert later.run(progress=False).status == "success"
    other.write_text("id,d\n1,05/01/2024\n")
    run = later.run(progress=False)
    assert run.status == "failed" and "'d'" in run.error and "day first" in run.error
    assert rows(dest, "o") == [(1, dt.date(2024, 1, 5))]
    ws.close()


def test_day_first_dates_that_settle_it_and_iso_dates_are_read_as_before(tmp_path):
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    csv, dest = tmp_path / "e.csv", tmp_path / "d.duckdb"
    csv.write_text("id,d,iso\n1,01/02/2024,2024-03-04 00:00:00\n2,13/02/2024,2024-03-05 10:00:00\n")
    sync = ws.create_sync("e", source=dfsync.sources.files(str(csv)), primary_key="id",
                          destination=dfsync.destinations.duckdb(dest, table="e"))
    assert sync.run(progress=False).status == "success"
    assert rows(dest, "e") == [(1, dt.date(2024, 2, 1), dt.datetime(2024, 3, 4)),
                               (2, dt.date(2024, 2, 13), dt.datetime(2024, 3, 5, 10))]
    ws.close()


def test_timestamps_finer_than_microseconds_are_refused_or_read_as_nanoseconds(tmp_path):
    """09:30:00.123456789 arrived as 09:30:00.123456."""
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    csv, dest = tmp_path / "t.csv", tmp_path / "d.duckdb"
    csv.write_text("id,at\n1,2024-01-01 09:30:00.5\n2,2024-01-01 09:30:00.123456789\n")
    with pytest.raises(dfsync.errors.SourceError, match=r"'at'.*pl.Datetime\('ns'\)"):
        ws.create_sync("t", source=dfsync.sources.files(str(csv)), primary_key="id",
                       destination=dfsync.destinations.duckdb(dest, table="t"))
    sync = ws.create_sync("t", source=dfsync.sources.files(str(csv), schema_overrides={"at": pl.Datetime("ns")}),
                          primary_key="id", destination=dfsync.destinations.duckdb(dest, table="t"))
    assert sync.run(progress=False).status == "success"
    with duckdb.connect(str(dest)) as con:
        assert con.sql("SELECT strftime(\"at\", '%S.%n') FROM t ORDER BY id").fetchall() == [
            ("00.500000000",), ("00.123456789",)]
    ws.close()


def test_types_given_by_position_are_read_as_given(tmp_path):
    """schema_overrides as a list (polars: the columns' types by position) is the user's choice."""
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    csv, dest = tmp_path / "p.csv", tmp_path / "d.duckdb"
    csv.write_text("id,d\n1,2024-01-05\n")
    sync = ws.create_sync("p", source=dfsync.sources.files(str(csv), schema_overrides=[pl.Int64, pl.Date]),
                          primary_key="id", destination=dfsync.destinations.duckdb(dest, table="p"))
    assert sync.run(progress=False).status == "success"
    assert rows(dest, "p") == [(1, dt.date(2024, 1, 5))]
    ws.close()


def test_a_text_cursor_that_does_not_sort_as_text_is_refused_before_anything_is_sent(tmp_path):
    """Dates a CSV holds as text ('9/30/2024', no leading zero: polars keeps them as text) made an
    incremental sync's cursor '9/30/2024', the greatest text; a later row of '10/5/2024' sorts below
    it, so it was never read and every run said success. Numbers held as text ('9', '10') the same."""
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    csv, dest = tmp_path / "in.csv", tmp_path / "d.duckdb"
    csv.write_text("id,name,updated\n1,a,9/30/2024\n2,b,10/1/2024\n3,c,12/31/2023\n")
    sync = ws.create_sync("c", source=dfsync.sources.files(str(csv)), primary_key="id", sync_mode="incremental",
                          cursor_field="updated", destination=dfsync.destinations.duckdb(dest, table="t"))
    assert any("'updated' is text holding dates" in p for p in sync.preview().problems)
    run = sync.run(progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0 and sync.cursor is None
    assert run.error.startswith("the cursor field 'updated' is text holding dates written month- or day-first "
                                "('10/1/2024', '9/30/2024', '12/31/2023')"), run.error
    assert "read_csv('file.csv', dateformat='%m/%d/%Y')" in run.error
    # the way out in the message: the dates read as dates, and a later row is read
    fixed = ws.create_sync("q", source=dfsync.sources.duckdb_query(
        f"SELECT * FROM read_csv('{csv}', dateformat='%m/%d/%Y')"), primary_key="id", sync_mode="incremental",
        cursor_field="updated", destination=dfsync.destinations.duckdb(dest, table="q"))
    assert fixed.run(progress=False).status == "success" and fixed.cursor == dt.date(2024, 10, 1)
    csv.write_text(csv.read_text() + "4,d,10/5/2024\n")
    assert fixed.run(progress=False).counts["inserted"] == 1
    assert [r[0] for r in rows(dest, "q")] == [1, 2, 3, 4]
    # numbers held as text; ISO 8601 text sorts as it should and runs as before
    nums = tmp_path / "n.ndjson"
    nums.write_text('{"id": 1, "seq": "9"}\n{"id": 2, "seq": "10"}\n')
    run = ws.create_sync("n", source=dfsync.sources.files(str(nums)), primary_key="id", sync_mode="incremental",
                         cursor_field="seq", destination=dfsync.destinations.duckdb(dest, table="n")).run(progress=False)
    assert run.status == "failed" and "'seq' is text holding numbers ('9', '10')" in run.error
    iso = tmp_path / "i.ndjson"
    iso.write_text('{"id": 1, "ts": "2024-09-30T10:00:00"}\n{"id": 2, "ts": "2024-10-01"}\n{"id": 3, "ts": null}\n')
    ok = ws.create_sync("i", source=dfsync.sources.files(str(iso)), primary_key="id", sync_mode="incremental",
                        cursor_field="ts", destination=dfsync.destinations.duckdb(dest, table="i"))
    assert ok.run(progress=False).status == "success" and ok.cursor == "2024-10-01"
    ws.close()


def test_integers_written_with_leading_zeros_are_read_as_text(tmp_path):
    """polars read a zip code column as integers: 01234 arrived as 1234 (a zero seen only after the
    rows polars infers from too), and the run said success. Such columns are read as the text the
    file writes; a column without a leading zero stays a number, and given types are kept."""
    body = "".join(f"{i},{90000 + i},{i}\n" for i in range(1, 201))
    (tmp_path / "a.csv").write_text("id,zip,n\n" + body + "201,01234,-0\n202,,7\n")
    (tmp_path / "b.csv").write_text("id,zip,n\n203,00501,8\n")
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    dest = tmp_path / "d.duckdb"
    src = dfsync.sources.files(str(tmp_path / "*.csv"))
    assert src.schema()["zip"] == pl.String and src.schema()["n"] == pl.Int64
    sync = ws.create_sync("z", source=src, primary_key="id",
                          destination=dfsync.destinations.duckdb(dest, table="z"))
    assert sync.run(progress=False).status == "success"
    got = rows(dest, "z")
    assert got[-3:] == [(201, "01234", 0), (202, None, 7), (203, "00501", 8)] and got[0] == (1, "90001", 1)
    given = dfsync.sources.files(str(tmp_path / "*.csv"), schema_overrides={"zip": pl.Int64})
    assert given.schema()["zip"] == pl.Int64


def test_numbers_with_more_digits_than_a_float_keeps_are_refused_naming_the_decimal_that_fits(tmp_path):
    """polars reads a CSV column of decimals as floats: 1234567890123456.78 arrived as
    1234567890123456.8, an integer above 2**53 among them rounded, and the run said success. Such a
    column is refused (at create_sync, or before anything is sent once the file gains such a value),
    naming the value, the file and a decimal type every value fits, which then reads back exact;
    floats a float holds as written (0.30000000000000004, 1e-20, inf) are read as before."""
    import decimal

    csv = tmp_path / "amounts.csv"
    csv.write_text("id,amount\n1,0.30000000000000004\n2,1e-20\n3,inf\n4,\n")
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    dest = tmp_path / "d.duckdb"
    sync = ws.create_sync("a", source=dfsync.sources.files(str(csv)), primary_key="id",
                          destination=dfsync.destinations.duckdb(dest, table="a"))
    assert sync.run(progress=False).status == "success"
    assert rows(dest, "a")[:3] == [(1, 0.30000000000000004), (2, 1e-20), (3, float("inf"))]
    csv.write_text("id,amount\n1,1.5\n2,1234567890123456.78\n3,-0.125\n")
    run = sync.run(progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0
    assert "'amount' holds '1234567890123456.78'" in run.error and str(csv) in run.error, run.error
    assert "pl.Decimal(19, 3)" in run.error, run.error
    with pytest.raises(dfsync.errors.SourceError, match="read as the float 1234567890123456.8"):
        ws.create_sync("b", source=dfsync.sources.files(str(csv)), primary_key="id",
                       destination=dfsync.destinations.duckdb(dest, table="b"))
    fixed = dfsync.sources.files(str(csv), schema_overrides={"amount": pl.Decimal(19, 3)})
    run = ws.create_sync("b", source=fixed, primary_key="id",
                         destination=dfsync.destinations.duckdb(dest, table="b")).run(progress=False)
    assert run.status == "success", run.error
    D = decimal.Decimal
    assert rows(dest, "b") == [(1, D("1.500")), (2, D("1234567890123456.780")), (3, D("-0.125"))]


def test_a_text_cursor_of_iso_date_times_written_two_ways_is_refused(tmp_path):
    """ISO 8601 text sorts as time only when written one way: with '2024-10-01T10:00:00' delivered as the
    cursor, a later row written '2024-10-01 11:00:00' (' ' < 'T') was never read and runs said success.
    Mixed separators or offsets among the rows a run sends are refused; one way throughout runs as before."""
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    dest = dfsync.destinations.duckdb(tmp_path / "d.duckdb", table="t")
    src = tmp_path / "in.ndjson"
    src.write_text('{"id": 1, "ts": "2024-09-30"}\n{"id": 2, "ts": "2024-10-01T10:00:00"}\n'
                   '{"id": 3, "ts": "2024-10-01 11:00:00"}\n')
    sync = ws.create_sync("m", source=dfsync.sources.files(str(src)), primary_key="id", sync_mode="incremental",
                          cursor_field="ts", destination=dest)
    run = sync.run(progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0 and sync.cursor is None
    assert "ISO 8601 date-times written in more than one way ('2024-10-01 11:00:00', '2024-10-01T10:00:00'" \
        in run.error, run.error
    src.write_text('{"id": 1, "ts": "2024-10-01T10:00:00+05:00"}\n{"id": 2, "ts": "2024-10-01T09:00:00Z"}\n')
    assert sync.run(progress=False).status == "failed"
    src.write_text('{"id": 1, "ts": "2024-09-30"}\n{"id": 2, "ts": "2024-10-01T10:00:00"}\n'
                   '{"id": 3, "ts": "2024-10-01T11:00:00.5"}\n')
    ok = sync.run(progress=False)
    assert ok.status == "success" and ok.counts["sent"] == 3 and sync.cursor == "2024-10-01T11:00:00.5"
    # the other way only in rows read later: compared with the delivered cursor's way, refused too
    src.write_text(src.read_text() + '{"id": 4, "ts": "2024-10-02 08:00:00"}\n')
    late = sync.run(progress=False)
    assert late.status == "failed" and "'2024-10-01T11:00:00.5', '2024-10-02 08:00:00'" in late.error, late.error
    ws.close()


def test_a_newer_row_written_another_way_below_the_text_cursor_is_read_and_refused_not_missed(tmp_path):
    """With '2024-10-01T10:00:00' delivered as a text cursor, a newer row written '2024-10-01 11:00:00'
    sorts below it as text: the next run read from the cursor as text, never read that row, and said
    success. A run of an ISO 8601 text cursor reads from the date 14 hours (the widest UTC offset) before
    it, so the row is read and the mix refused; rows it re-reads unchanged are not sent again. A first
    run's initial_cursor written another way than the rows is refused the same way."""
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    dest = tmp_path / "d.duckdb"
    src = tmp_path / "in.ndjson"
    src.write_text('{"id": 1, "ts": "2024-09-30T23:00:00"}\n{"id": 2, "ts": "2024-10-01T10:00:00"}\n')
    sync = ws.create_sync("m", source=dfsync.sources.files(str(src)), primary_key="id", sync_mode="incremental",
                          cursor_field="ts", destination=dfsync.destinations.duckdb(dest, table="t"))
    assert sync.run(progress=False).status == "success" and sync.cursor == "2024-10-01T10:00:00"
    src.write_text(src.read_text() + '{"id": 3, "ts": "2024-10-01T12:00:00"}\n')
    one_way = sync.run(progress=False)
    assert one_way.status == "success" and one_way.counts["queried"] == 3 and one_way.counts["sent"] == 1
    src.write_text(src.read_text() + '{"id": 4, "ts": "2024-10-01 13:00:00"}\n')
    run = sync.run(progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0, (run.status, run.counts)
    assert "written in more than one way ('2024-10-01 13:00:00', '2024-10-01T12:00:00'" in run.error, run.error
    assert sync.cursor == "2024-10-01T12:00:00" and [r[0] for r in rows(dest, "t")] == [1, 2, 3]
    first = ws.create_sync("f", source=dfsync.sources.files(str(src)), primary_key="id", sync_mode="incremental",
                           cursor_field="ts", initial_cursor="2024-10-01 00:00:00",
                           destination=dfsync.destinations.duckdb(dest, table="f"))
    src.write_text('{"id": 1, "ts": "2024-09-30T23:00:00"}\n{"id": 2, "ts": "2024-10-01T10:00:00"}\n')
    run = first.run(progress=False)
    assert run.status == "failed" and "'2024-10-01 00:00:00', '2024-10-01T10:00:00'" in run.error, run.error
    ws.close()
    from dfsync._cursor import iso_text_start  # where such a run reads from, as text, at the edges

    assert [iso_text_start(v) for v in ("2024-10-02T01:00:00+05:00", "2024-13-45 10:00", "0001-01-01T01:00:00",
                                        "9999-12-31T23:00:00-05:00", "2024-10-01")] == \
        ["2024-10-01", None, "0001-01-01", "9999-12-29", None]


def test_a_new_version_of_csv_files_is_checked_in_one_pass(tmp_path, monkeypatch):
    """The date check and the numbers check (leading zeros, digits a float loses) each inferred the
    schema and scanned the text of every new version of the files: two passes before the read. One
    pass holds both now; what they find is unchanged."""
    path = tmp_path / "a.csv"
    path.write_text("id,day,zip,x\n" + "".join(f"{i},2024-01-{i:02d},0{i}00,{i}.5\n" for i in range(1, 21)))
    src = dfsync.sources.files(str(path))
    scans = []
    real = pl.scan_csv
    monkeypatch.setattr(pl, "scan_csv", lambda *a, **k: scans.append(k) or real(*a, **k))
    got = src.scan().collect()
    assert got.schema["zip"] == pl.String and got.schema["day"] == pl.Date and got["zip"][0] == "0100"
    assert len(scans) == 3  # the columns as polars infers them, their text (both checks), the read
    scans.clear()
    src.scan().collect()  # the same version of the file: not checked again
    assert len(scans) == 1
    path.write_text("id,day\n1,02/01/2024\n")  # a new version is checked again, dates too
    with pytest.raises(dfsync.DfsyncError, match="day first or month first"):
        src.scan()
