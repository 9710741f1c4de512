"""Personal data in records: ``sensitive=`` fields kept as keyed hashes, ``record_retention`` and
``dfsync purge``, ``sync.forget(keys)``; on the DuckDB file workspace and the PostgreSQL one."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from datetime import timedelta

import duckdb
import polars as pl
import pytest

import dfsync
import dfsync.widgets
from dfsync._sensitive import keyed_hash, parse_retention, workspace_key
from tests.faulty import env_with_repo

WORKSPACE_STORES = ("duckdb", "postgres")

# rows 4 and 5 fail at the destination (age > 150 breaks its CHECK), row 6 is invalid (no '@')
EMAILS = ["ann@example.com", "bo@example.com", "cy@example.com", "dee.secret@example.com",
          "eve.secret@example.com", "fay.secret-example.com"]
PHONES = ["+1 555 0101", "+1 555 0102", "+1 555 0103", "+44 7700 900404", "+44 7700 900405", "+44 7700 900406"]
SECRETS = EMAILS + PHONES  # a small run keeps the records of its delivered rows too


@pytest.fixture(autouse=True)
def record_key(monkeypatch):
    monkeypatch.setenv("DFSYNC_RECORD_KEY", "test-record-key-0123456789")


def frame(ages=(30, 40, 50, 200, 300, 60)) -> pl.DataFrame:
    return pl.DataFrame({"id": [1, 2, 3, 4, 5, 6], "email": EMAILS, "phone": PHONES, "age": list(ages)})


def destination(tmp_path, extra="", check="CHECK (age < 150)"):
    path = str(tmp_path / "dest" / "d.duckdb")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    con = duckdb.connect(path)
    con.execute(f"CREATE TABLE IF NOT EXISTS people (id BIGINT PRIMARY KEY, email VARCHAR, phone VARCHAR, "
                f"age INTEGER {check}{extra})")
    con.close()
    return dfsync.destinations.duckdb(path, table="people")


def make_sync(ws, tmp_path, **kw):
    return ws.create_sync("people", source=dfsync.sources.frame(frame()), destination=destination(tmp_path),
                          primary_key="id", sensitive=["email", "phone"], on_invalid="skip", max_failed_rows=10,
                          checks=[dfsync.checks.matches("email", r"^[^@]+@[^@]+$")], **kw)


def test_sensitive_fields_are_kept_as_keyed_hashes_and_appear_nowhere_in_plain(ws_target, tmp_path, capfd,
                                                                                 caplog, request):
    ws = dfsync.Workspace(ws_target)
    sync = make_sync(ws, tmp_path)
    first = sync.run(progress=False)
    assert first.counts["failed"] == 2 and first.counts["invalid"] == 1 and first.counts["succeeded"] == 3
    recs = first.records()
    assert sorted(recs["_status"].to_list()) == ["failed", "failed", "invalid"] + ["succeeded"] * 3
    key = workspace_key(ws.store.ledger_id(sys.maxsize))
    by_id = {r["id"]: r for r in recs.to_dicts()}
    for i in (1, 4, 5, 6):
        assert by_id[i]["email"] == keyed_hash(EMAILS[i - 1], key)  # recognisable by whoever holds the key
        assert by_id[i]["phone"] == keyed_hash(PHONES[i - 1], key)
        assert by_id[i]["age"] == frame()["age"][i - 1]  # a field not named stays as it was
    second = sync.run(source=frame(), progress=False)  # the same values fail again: the same hashes
    again = {r["id"]: r["email"] for r in second.records().to_dicts()}
    assert again == {i: by_id[i]["email"] for i in (4, 5, 6)}
    from typer.testing import CliRunner

    from dfsync.cli import app

    cli = CliRunner().invoke(app, ["records", str(first.id), "-w", ws_target])
    assert cli.exit_code == 0 and "hmac:" in cli.output
    seen = [("repr", f"{ws!r} {sync!r} {first!r} {second!r}"), ("html", sync._repr_html_() + first._repr_html_()
            + second._repr_html_() + ws._repr_html_()), ("records", str(recs.to_dicts())),
            ("events", str(sync.events().to_dicts())), ("cli", cli.output),
            ("checks", str(ws.sql("SELECT * FROM checks").to_dicts())), ("runs", str(sync.runs().to_dicts()))]
    panels = [dfsync.widgets.SyncPanel(sync), dfsync.widgets.RunHistory(sync), dfsync.widgets.Dashboard(ws)]
    seen.append(("widgets", " ".join(p.snapshot_html() for p in panels)))
    for p in panels:
        p.close()
    out, err = capfd.readouterr()
    seen += [("output", out + err), ("logs", " ".join(r.getMessage() for r in caplog.records))]
    for what, text in seen:
        for s in SECRETS:
            assert s not in text, f"{s!r} in {what}"
    ws.close()
    if ws_target.startswith("postgresql://"):
        base, schema = ws_target.split("?schema=")
        blobs = {"pg_dump": request.getfixturevalue("pg_server").dump_schema(base, schema)}
        assert b"hmac:" in blobs["pg_dump"]
    else:  # the file after its checkpoint (close), and anything next to it
        folder = os.path.dirname(ws_target)
        blobs = {f: pathlib.Path(d, f).read_bytes() for d, _, fs in os.walk(folder) for f in fs
                 if not pathlib.Path(d).is_relative_to(tmp_path / "dest")}  # the destination holds them, rightly
        assert any(b"hmac:" in b for b in blobs.values())
    for what, blob in blobs.items():
        for s in SECRETS:
            assert s.encode() not in blob, f"{s!r} in {what}"


def test_an_error_quoting_another_rows_sensitive_value_is_scrubbed_in_every_record(ws, tmp_path):
    dest = destination(tmp_path, ", UNIQUE (email)")  # a whole batch fails with one row's e-mail in the error
    df = frame().with_columns(email=pl.Series([EMAILS[3]] * 2 + EMAILS[2:]))
    sync = ws.create_sync("people", source=dfsync.sources.frame(df), destination=dest, primary_key="id",
                          sensitive=["email"], max_failed_rows=10)
    run = sync.run(progress=False)
    errors = run.records("failed")["_error"].to_list()
    assert run.counts["failed"] >= 2 and any("duplicate key" in e for e in errors), errors
    key = workspace_key(ws.store.ledger_id(sys.maxsize))
    assert any(keyed_hash(EMAILS[3], key) in e for e in errors)
    texts = str(run.records().to_dicts()) + str(sync.events().to_dicts()) + str(sync.runs().to_dicts())
    assert not [e for e in EMAILS if e in texts]


def test_a_preview_of_a_sync_with_sensitive_fields_and_failing_checks_hashes_their_examples(ws, tmp_path):
    sync = make_sync(ws, tmp_path)  # row 6's e-mail fails the check
    preview = sync.preview()  # it raised AttributeError ('store.ledger_id is not for it')
    assert preview.counts["invalid"] == 1 and preview.counts["insert"] == 5
    assert EMAILS[5] not in str(preview.validation.to_dicts()) + repr(preview)
    key = workspace_key(ws.store.ledger_id(sys.maxsize))
    assert keyed_hash(EMAILS[5], key) in str(preview.validation["partial_unexpected_list"].to_list())
    run = sync.run(progress=False)  # the preview changed nothing
    assert run.counts["inserted"] == 5 and run.counts["invalid"] == 1


def test_preview_and_validate_show_sensitive_fields_masked_as_records_do(ws_target, tmp_path):
    """preview().records, its HTML (the panel's Preview button, a notebook's saved output: updates
    as before -> after) and validate()'s failing rows, check examples and HTML showed the e-mails
    and phones in plain, while run.records() and run.validation() showed their keyed hashes."""
    ws = dfsync.Workspace(ws_target)
    sync = ws.create_sync("people", source=dfsync.sources.frame(frame()), destination=destination(tmp_path),
                          primary_key="id", sensitive=["email", "phone"], on_invalid="skip",
                          checks=[dfsync.checks.matches("email", r"^[^@]+@[^@]+$"),
                                  dfsync.checks.in_set("phone", [PHONES[0]])])
    key = workspace_key(ws.store.ledger_id(sys.maxsize))
    preview = sync.preview()
    assert preview.counts["invalid"] == 5 and preview.counts["insert"] == 1
    panel = dfsync.widgets.SyncPanel(sync)
    panel._do_preview()
    validation = sync.validate()
    assert not validation.ok and validation.invalid.height == 5
    shown = {"preview.records": str(preview.records.to_dicts()), "preview html": preview._repr_html_(),
             "panel": panel.preview_box.value, "validate.invalid": str(validation.invalid.to_dicts()),
             "validate.checks": str(validation.checks.to_dicts()), "validate html": validation._repr_html_()}
    panel.close()
    run = sync.run(progress=False)
    later = frame().with_columns(email=pl.lit("zed.secret@example.com"), phone=pl.lit(PHONES[0]))
    update = sync.preview(source=later)  # an update shows the delivered value before the new one
    assert update.counts["update"] == 1, update.counts
    shown["update html"] = update._repr_html_()
    for what, text in shown.items():
        for s in [*SECRETS, "zed.secret"]:
            assert s not in text, f"{s!r} in {what}"
    # the same hashes as the stored records: a previewed invalid row is recognisable in run.records()
    stored = {r["id"]: (r["email"], r["phone"]) for r in run.records("invalid").to_dicts()}
    assert {r["id"]: (r["email"], r["phone"]) for r in validation.invalid.to_dicts()} == stored
    assert {r["id"]: (r["email"], r["phone"]) for r in preview.records.filter(pl.col("_status") == "invalid")
            .to_dicts()} == stored
    assert stored[6] == (keyed_hash(EMAILS[5], key), keyed_hash(PHONES[5], key))
    assert keyed_hash(PHONES[1], key) in shown["validate.checks"]
    assert keyed_hash("zed.secret@example.com", key) in shown["update html"]
    ws.close()


@pytest.mark.parametrize("check", [dfsync.checks.sql("CAST(phone AS INTEGER) > 0"),
                                   dfsync.checks.expression(pl.col("phone").cast(pl.Int64) > 0)], ids=["sql", "polars"])
def test_a_check_that_cannot_run_on_sensitive_values_does_not_store_them_in_the_run_error(ws, tmp_path, check):
    """DuckDB's and polars' errors quote the values that would not convert; the run's error (in the
    workspace's runs and events, the run's repr) held the phone numbers in plain."""
    sync = ws.create_sync("people", source=dfsync.sources.frame(frame()), destination=destination(tmp_path),
                          primary_key="id", sensitive=["email", "phone"], checks=[check])
    run = sync.run(progress=False)
    assert run.status == dfsync.RunStatus.FAILED and run.counts["sent"] == 0
    key = workspace_key(ws.store.ledger_id(sys.maxsize))
    assert keyed_hash(PHONES[0], key) in run.error and "phone" in run.error, run.error
    texts = run.error + repr(run) + str(sync.events().to_dicts()) + str(sync.runs().to_dicts())
    assert not [p for p in PHONES if p in texts]
    with pytest.raises(dfsync.ConfigError) as raised:
        sync.preview()
    assert not [p for p in PHONES if p in str(raised.value)] and raised.value.__cause__ is None


def test_a_long_error_cut_to_size_keeps_no_part_of_a_sensitive_value(ws, tmp_path):
    """A destination's error for a row was cut to 2,000 characters before its sensitive values were
    hashed, and the hashing looks for whole values: a value the cut went through stayed in plain."""
    long_email = "x" * 2990 + "@example.com"
    dest = destination(tmp_path, ", CHECK (CASE WHEN length(email) < 100 THEN true ELSE CAST(email AS INTEGER) > 0 END)",
                       check="")
    df = pl.DataFrame({"id": [1, 2], "email": [long_email, EMAILS[0]], "phone": PHONES[:2], "age": [30, 40]})
    sync = ws.create_sync("people", source=df, destination=dest, primary_key="id", sensitive=["email"],
                          max_failed_rows=10)
    run = sync.run(progress=False)
    (error,) = run.records("failed")["_error"].to_list()
    key = workspace_key(ws.store.ledger_id(sys.maxsize))
    assert keyed_hash(long_email, key) in error and len(error) <= 2000, error
    assert "x" * 20 not in str(run.records().to_dicts()) + str(sync.events().to_dicts())


def test_a_source_error_quoting_a_sensitive_value_stores_its_hash(ws, tmp_path):
    """A pandas frame whose e-mail column came to mix text and numbers after create_sync: the run
    failed before staging a row with an error quoting the first e-mail, stored in plain in the runs
    and events (the scrub looks values up in the staged rows, and there were none)."""
    import pandas as pd

    df = pd.DataFrame({"id": [1, 2], "email": EMAILS[:2], "phone": PHONES[:2], "age": [30, 40]}).astype({"email": object})
    sync = ws.create_sync("people", source=dfsync.sources.frame(df), destination=destination(tmp_path), primary_key="id",
                          sensitive=["email"])
    df.loc[1, "email"] = 12345  # edited in place: the next run reads it
    run = sync.run(progress=False)
    key = workspace_key(ws.store.ledger_id(sys.maxsize))
    assert run.status == dfsync.RunStatus.FAILED and f"text ({keyed_hash(EMAILS[0], key)})" in run.error, run.error
    assert EMAILS[0] not in run.error + str(sync.events().to_dicts()) + str(sync.runs().to_dicts())


def _workspace_text(ws) -> str:
    """Every row of every table of the workspace, as text."""
    tables = ws.sql("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
    return " ".join(str(ws.sql(f'SELECT * FROM "{t}"').to_dicts()) for t in tables["table_name"].to_list())


def _source_read_fails_quoting(ws, source, edit, value="bob.secret@example.com", field="email", parts=("bob.secret",
                                                                                                  "example.com")):
    """A sync with sensitive=[field] whose source, once ``edit``-ed, cannot be read for a value of
    ``field`` its reader's message quotes: the run's error and everything the workspace keeps show
    the value's hash only (no ``parts`` of it)."""
    sync = ws.create_sync("people", source=source, destination=dfsync.destinations.duckdb(
        str(pathlib.Path(ws.path).parent / "d.duckdb"), table="people"), primary_key="id", sensitive=[field])
    edit()
    run = sync.run(progress=False)
    key = workspace_key(ws.store.ledger_id(sys.maxsize))
    assert run.status == dfsync.RunStatus.FAILED and keyed_hash(value, key) in run.error, run.error
    texts = run.error + repr(run) + str(sync.events().to_dicts()) + _workspace_text(ws)
    assert not [p for p in parts if p in texts], run.error
    return run


def test_a_csv_value_polars_cannot_parse_is_stored_hashed(ws, tmp_path):
    """polars' "could not parse `bob.secret@example.com` as dtype `i64` at column 'email'" was
    stored in plain in runs and events: it is raised while reading, before any row is staged."""
    path = tmp_path / "people.csv"
    path.write_text("id,email\n1,5\n")
    src = dfsync.sources.files(str(path), schema_overrides={"email": pl.Int64})
    run = _source_read_fails_quoting(ws, src, lambda: path.write_text("id,email\n1,5\n2,bob.secret@example.com\n"))
    assert "column 'email'" in run.error and "`i64`" in run.error  # the rest of the message as it was
    import traceback

    sync = ws.sync("people")
    for show in (sync.preview, sync.validate):  # what they raise is shown (and kept in notebooks' outputs)
        with pytest.raises(dfsync.errors.SourceError) as raised:
            show()
        shown = "".join(traceback.format_exception(raised.value))
        assert "hmac:" in shown and "bob.secret" not in shown, shown


def test_a_csv_date_of_birth_quoted_by_the_day_first_check_is_stored_hashed(ws, tmp_path):
    """The refusal of dates that could be day or month first quotes the first one: a sensitive
    date of birth was stored in plain."""
    path = tmp_path / "people.csv"
    path.write_text("id,born\n1,1980-03-04\n")
    _source_read_fails_quoting(ws, dfsync.sources.files(str(path)), lambda: path.write_text(
        "id,born\n1,03/04/1980\n2,05/06/1981\n"), value="03/04/1980", field="born", parts=("03/04/1980",))


def test_an_ndjson_value_polars_cannot_parse_is_stored_hashed(ws, tmp_path):
    path = tmp_path / "people.ndjson"
    path.write_text('{"id": 1, "email": 5}\n')
    src = dfsync.sources.files(str(path), schema_overrides={"email": pl.Int64})
    _source_read_fails_quoting(ws, src, lambda: path.write_text(
        '{"id": 1, "email": 5}\n{"id": 2, "email": "bob.secret@example.com"}\n'))


def test_a_duckdb_error_quoting_a_value_with_an_apostrophe_is_stored_hashed_whole(ws, tmp_path):
    """DuckDB quotes a value as it is ("Could not convert string 'o'brien.secret@example.com' to
    INT32"): a literal must not end at the value's own apostrophe, leaving the rest in plain."""
    db = str(tmp_path / "src.duckdb")
    with duckdb.connect(db) as con:
        con.execute("CREATE TABLE src (id BIGINT, email VARCHAR); INSERT INTO src VALUES (1, '5')")
    src = dfsync.sources.duckdb_query("SELECT id, email::INTEGER AS email FROM src", database=db)

    def edit():
        with duckdb.connect(db) as con:
            con.execute("INSERT INTO src VALUES (2, 'o''brien.secret@example.com')")
    _source_read_fails_quoting(ws, src, edit, value="o'brien.secret@example.com", parts=("brien.secret", "example.com"))


def test_a_database_error_quoting_a_value_is_stored_hashed(ws, pg_uri):
    """PostgreSQL's 'invalid input syntax for type integer: "bob.secret@example.com"' (a cast in the
    source query) quotes a value dfsync never saw: with sensitive fields, every literal the
    driver's message quotes is stored as its hash."""
    import psycopg

    with psycopg.connect(pg_uri, autocommit=True) as con:
        con.execute("CREATE TABLE src_people (id bigint PRIMARY KEY, email text)")
        con.execute("INSERT INTO src_people VALUES (1, '5')")
    src = dfsync.sources.database(pg_uri, "SELECT id, email::integer AS email FROM src_people")

    def edit():
        with psycopg.connect(pg_uri, autocommit=True) as con:
            con.execute("INSERT INTO src_people VALUES (2, 'bob.secret@example.com')")
    run = _source_read_fails_quoting(ws, src, edit)
    assert "invalid input syntax for type integer" in run.error


def test_a_buckets_error_quoting_a_sensitive_value_stores_its_hash(ws, pg_uri):
    """A partitioned run's bucket refused by its destination with a message quoting a row's value
    (a trigger's RAISE) kept that message in plain in run.buckets() and in its 'bucket N failed'
    event, while the run's own error showed the hash."""
    import psycopg

    with psycopg.connect(pg_uri, autocommit=True) as con:
        con.execute("CREATE TABLE people (id bigint PRIMARY KEY, email text, phone text, age integer)")
        con.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.age > 150 THEN "
                    "RAISE EXCEPTION 'refused %', NEW.email; END IF; RETURN NEW; END $$")
        con.execute("CREATE TRIGGER refuse BEFORE INSERT ON people FOR EACH ROW EXECUTE FUNCTION refuse()")
    sync = ws.create_sync("people", source=frame(), destination=dfsync.destinations.postgres(pg_uri, table="people"),
                          primary_key="id", sensitive=["email", "phone"], partitions=2)
    run = sync.run(progress=False)
    assert run.status == dfsync.RunStatus.FAILED
    key = workspace_key(ws.store.ledger_id(sys.maxsize))
    errors = [e for e in run.buckets()["error"].to_list() if e]
    assert errors and all(f"refused {keyed_hash(EMAILS[3], key)}" in e or f"refused {keyed_hash(EMAILS[4], key)}" in e
                          for e in errors), errors
    texts = run.error + str(run.buckets().to_dicts()) + str(sync.events().to_dicts()) + str(sync.runs().to_dicts())
    assert not [e for e in EMAILS if e in texts]


def test_a_refusal_before_sending_that_quotes_a_sensitive_value_stores_its_hash(ws, tmp_path):
    """The run's error quoting a row's value (here: an unsigned 64-bit card number SQLite cannot
    store, named by the check before anything is sent; a destination's error for a whole batch
    likewise) was stored in plain in the runs and events and shown by the panel and `dfsync status`."""
    card = 18446744073709551000
    df = pl.DataFrame({"id": [1, 2], "card": pl.Series([12, card], dtype=pl.UInt64)})
    sync = ws.create_sync("cards", source=df, primary_key="id", sensitive=["card"],
                          destination=dfsync.destinations.sqlite(str(tmp_path / "d.sqlite"), table="cards"))
    run = sync.run(progress=False)
    assert run.status == dfsync.RunStatus.FAILED and run.counts["sent"] == 0
    key = workspace_key(ws.store.ledger_id(sys.maxsize))
    assert f"column 'card' holds {keyed_hash(card, key)}, above the largest integer" in run.error, run.error
    texts = (run.error + repr(run) + run._repr_html_() + str(sync.events().to_dicts()) + str(sync.runs().to_dicts())
             + dfsync.widgets.SyncPanel(sync).snapshot_html())
    assert str(card) not in texts


def test_an_aggregate_checks_observed_value_of_a_sensitive_column_is_hashed_everywhere(ws, tmp_path):
    """A min, max or most common value is one row's value: a failing GX aggregate on a sensitive
    column put it in plain into the run's error ('observed 300', "observed ['ann@...']"), its
    events, runs and stored check results (validate, preview, run.validation())."""
    gx = pytest.importorskip("great_expectations")
    E = gx.expectations
    checks = [E.ExpectColumnMaxToBeBetween(column="age", max_value=100),
              E.ExpectColumnMostCommonValueToBeInSet(column="email", value_set=["nobody@example.com"]),
              E.ExpectColumnUniqueValueCountToBeBetween(column="email", max_value=2)]
    sync = ws.create_sync("people", source=dfsync.sources.frame(frame(ages=(30, 40, 50, 61, 72, 987654))),
                          destination=destination(tmp_path, check=""), primary_key="id",
                          sensitive=["email", "age"], checks=checks)
    plain = ["987654", *EMAILS]
    validation, preview = sync.validate(), sync.preview()
    run = sync.run(progress=False)
    assert run.status == dfsync.RunStatus.FAILED and run.counts["sent"] == 0
    key = workspace_key(ws.store.ledger_id(sys.maxsize))
    assert keyed_hash(987654, key) in run.error and "age expect_column_max_to_be_between" in run.error
    texts = {"error": run.error + repr(run), "events": str(sync.events().to_dicts()),
             "runs": str(sync.runs().to_dicts()), "validation": str(run.validation().to_dicts()),
             "validate": str(validation.checks.to_dicts()), "preview": str(preview.validation.to_dicts())}
    assert {k: [p for p in plain if p in t] for k, t in texts.items()} == {k: [] for k in texts}
    counts = {r["check_name"]: json.loads(r["result"])["observed_value"] for r in run.validation().to_dicts()}
    assert counts["email expect_column_unique_value_count_to_be_between"] == 6  # a count is no row's value
    ws.close()


def test_sensitive_is_checked_at_definition_and_old_definitions_stay_equal(ws, tmp_path):
    src, dest = dfsync.sources.frame(frame()), destination(tmp_path)
    with pytest.raises(dfsync.ConfigError, match="'mail' is not a field.*email"):
        ws.create_sync("x", source=src, destination=dest, primary_key="id", sensitive=["mail"])
    with pytest.raises(dfsync.ConfigError, match="primary key"):
        ws.create_sync("x", source=src, destination=dest, primary_key="id", sensitive=["id"])
    with pytest.raises(dfsync.ConfigError, match="30 days"):
        ws.create_sync("x", source=src, destination=dest, primary_key="id", record_retention="a month")
    # an incremental sync's cursor: its greatest delivered value is kept as it is (sync.cursor, runs), so a
    # sensitive cursor stayed in plain in the workspace while the definition said it was hashed
    with pytest.raises(dfsync.ConfigError, match="'age' is the cursor_field"):
        ws.create_sync("x", source=src, destination=dest, primary_key="id", sensitive=["email", "age"],
                       sync_mode="incremental", cursor_field="age")
    plain = ws.create_sync("plain", source=src, destination=dest, primary_key="id")
    assert "sensitive" not in plain.definition and "record_retention" not in plain.definition
    s = ws.create_sync("s", source=src, destination=dest, primary_key="id", sensitive="email",
                       record_retention=30)
    assert s.definition["sensitive"] == ["email"] and s.definition["record_retention"] == "30 days"
    assert parse_retention("12 Hours") == "12 hours"


def _workspace_blobs(ws_target, tmp_path, request) -> dict[str, bytes]:
    """What the (closed) workspace holds: a ``pg_dump`` of its schema, or its files' bytes."""
    if ws_target.startswith("postgresql://"):
        base, schema = ws_target.split("?schema=")
        return {"pg_dump": request.getfixturevalue("pg_server").dump_schema(base, schema)}
    return {f: pathlib.Path(d, f).read_bytes() for d, _, fs in os.walk(os.path.dirname(ws_target)) for f in fs
            if not pathlib.Path(d).is_relative_to(tmp_path / "dest")}  # the destination holds them, rightly


@pytest.mark.workspaces("duckdb", "postgres", slow=("postgres",))
def test_an_incremental_sync_sends_failed_rows_again_with_their_real_values(ws_target, tmp_path, request):
    ws = dfsync.Workspace(ws_target)
    src = frame().with_columns(updated=pl.Series([1, 2, 3, 4, 5, 6]))
    sync = ws.create_sync("people", source=dfsync.sources.frame(src),
                          destination=destination(tmp_path, ", updated BIGINT"), primary_key="id",
                          sensitive=["email", "phone"], sync_mode="incremental", cursor_field="updated",
                          max_failed_rows=10)
    first = sync.run(progress=False)
    assert first.counts["failed"] == 2 and first.counts["succeeded"] == 4  # rows 4 and 5 (age over 150)
    key = workspace_key(ws.store.ledger_id(sys.maxsize))
    failed = first.records("failed").to_dicts()
    assert sorted(r["email"] for r in failed) == sorted(keyed_hash(e, key) for e in EMAILS[3:5])
    dest = str(tmp_path / "dest" / "d.duckdb")
    with duckdb.connect(dest) as con:  # the destination is fixed: it takes any age now
        con.execute("CREATE TABLE old AS SELECT * FROM people; DROP TABLE people")
    destination(tmp_path, ", updated BIGINT", check="")
    with duckdb.connect(dest) as con:
        con.execute("INSERT INTO people SELECT * FROM old; DROP TABLE old")
    # row 5 left the source meanwhile; row 7 is new. The cursor (6) reads rows 6 and 7 only:
    # row 4 comes from the source again by its key (its record keeps only hashes)
    src2 = pl.concat([src.filter(pl.col("id") != 5), pl.DataFrame(
        {"id": [7], "email": ["gil.secret@example.com"], "phone": ["+1 555 0107"], "age": [70], "updated": [7]})])
    second = sync.run(source=src2, progress=False)
    assert second.status == "success", second.error
    assert second.counts["failed"] == 0 and second.counts["retried"] == 1
    assert second.counts["inserted"] == 2 and second.counts["succeeded"] == 2  # rows 4 and 7
    with duckdb.connect(dest, read_only=True) as con:
        rows = {r[0]: r[1:] for r in con.execute("SELECT id, email, phone, age FROM people").fetchall()}
    assert rows[4] == (EMAILS[3], PHONES[3], 200) and 5 not in rows and rows[7][0] == "gil.secret@example.com"
    assert not [v for r in rows.values() for v in r if str(v).startswith("hmac:")]  # no hash sent as a value
    notes = " ".join(second.events().filter(pl.col("kind") == "note")["detail"].to_list())
    assert "1 row to send again" in notes and "no longer in the source" in notes and "sent as values: id=5." in notes
    third = sync.run(source=src2, progress=False)  # row 5 is still gone: said again, never sent
    assert third.counts["failed"] == 0 and third.counts["succeeded"] == 0
    ws.close()
    for what, blob in _workspace_blobs(ws_target, tmp_path, request).items():
        for s in SECRETS + ["gil.secret@example.com", "+1 555 0107"]:
            assert s.encode() not in blob, f"{s!r} in {what}"


def _age_runs(ws, sync, days):
    """Make the sync's finished runs ``days`` older (as if they ran then)."""
    for run_id in sync.runs()["run_id"].to_list():
        finished = ws.run(run_id).finished_at
        ws.store.set_run_fields(run_id, finished_at=finished - timedelta(days=days))


def test_record_retention_purges_on_the_next_run_and_by_dfsync_purge(ws_target, tmp_path):
    ws = dfsync.Workspace(ws_target)
    sync = make_sync(ws, tmp_path, record_retention="30 days")
    first = sync.run(progress=False)
    n = first.records().height
    assert n == 6
    _age_runs(ws, sync, 29)
    second = sync.run(progress=False)  # within 30 days: kept
    assert first.records().height == n and second.records().height == 3  # failed and invalid again
    _age_runs(ws, sync, 2)  # the first run is now 31 days old, the second 2 days
    third = sync.run(progress=False)
    assert first.records().height == 0 and second.records().height == 3 and third.records().height == 3
    notes = third.events().filter(pl.col("kind") == "note")["detail"].to_list()
    assert any(f"{n} records" in x and "record_retention 30 days" in x for x in notes), notes
    _age_runs(ws, sync, 40)
    ws.close()
    out = subprocess.run([sys.executable, "-m", "dfsync", "purge", "-w", ws_target], capture_output=True,
                         text=True, env=env_with_repo(), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "people: 6 records purged" in out.stdout
    ws = dfsync.Workspace(ws_target)
    try:
        assert ws.sql("SELECT count(*) AS n FROM rec_1")["n"][0] == 0
    finally:
        ws.close()


def test_purging_the_records_of_an_incremental_syncs_quarantined_rows_says_they_will_not_be_sent(ws_target, tmp_path):
    ws = dfsync.Workspace(ws_target)
    # an incremental sync sends its invalid rows again from their records (the cursor moved past
    # them): a retention purge of those records drops them, and must say so, not stay silent
    src = pl.DataFrame({"id": [1, 2, 3, 4], "ts": [1, 2, 3, 4], "email": ["a@x", None, "c@x", None]})
    sync = ws.create_sync("events", source=dfsync.sources.frame(src),
                          destination=dfsync.destinations.duckdb(str(tmp_path / "wh.duckdb"), table="events"),
                          primary_key="id", sync_mode="incremental", cursor_field="ts",
                          checks=[dfsync.checks.not_null("email")], on_invalid="skip", record_retention="30 days")
    assert sync.run(progress=False).counts["invalid"] == 2
    kept = sync.run(progress=False, source=src.with_columns(ts=pl.col("ts") + 0))  # within the retention
    assert kept.counts["invalid"] == 2
    assert not [d for d in kept.events()["detail"].to_list() if d and "will not be sent again" in d]
    _age_runs(ws, sync, 40)
    with pytest.warns(UserWarning, match="2 rows that failed or were invalid will not be sent again"):
        third = sync.run(progress=False, source=src.filter(pl.col("id") > 2))
    notes = third.events().filter(pl.col("kind") == "note")["detail"].to_list()
    assert any("2 rows that failed or were invalid will not be sent again" in x and "sync.reset()" in x
               for x in notes), notes
    assert third.counts["invalid"] == 1  # id 4 is read again by the cursor; id 2 is not
    ws.close()


def test_a_workspace_default_retention_and_purge_older_than(ws, tmp_path, monkeypatch):
    sync = make_sync(ws, tmp_path)
    run = sync.run(progress=False)
    assert ws.purge() == {"people": 0}  # no retention anywhere: records stay
    _age_runs(ws, sync, 10)
    assert ws.purge(older_than="11 days") == {"people": 0}
    monkeypatch.setenv("DFSYNC_RECORD_RETENTION", "7 days")
    assert ws.purge() == {"people": 6} and run.records().height == 0


def test_forget_removes_every_trace_and_the_next_run_sends_them_again(ws_target, tmp_path, request):
    ws = dfsync.Workspace(ws_target)
    sync = make_sync(ws, tmp_path)
    run = sync.run(progress=False)
    assert run.counts["succeeded"] == 3
    ws.store.note(sync.id, run.id, "support ticket about id 1234567 and dee.secret@example.com")
    src = pl.DataFrame({"id": [1234567, 1], "email": ["z@example.com", EMAILS[0]], "phone": ["1", PHONES[0]],
                        "age": [1, 30]})
    assert sync.run(source=src, progress=False).status == "success"
    sync.forget([1234567, 4, 3])
    delivered = sync.delivered()["id"].to_list()
    assert 1234567 not in delivered and 3 not in delivered and 1 in delivered
    assert all(4 not in r.records()["id"].to_list() for r in (run,))
    events = str(sync.events().to_dicts())
    assert "1234567" not in events and "[forgotten key]" in events
    again = sync.run(progress=False)  # 3 is new again: sent; 4 fails again
    assert again.counts["inserted"] == 1 + 2 and again.counts["succeeded"] == 1
    ws.close()
    if ws_target.startswith("postgresql://"):
        base, schema = ws_target.split("?schema=")
        assert b"1234567" not in request.getfixturevalue("pg_server").dump_schema(base, schema)


def test_forget_names_the_primary_key_when_given_something_else(ws, tmp_path):
    sync = make_sync(ws, tmp_path)
    sync.run(progress=False)
    with pytest.raises(dfsync.ConfigError, match="primary key"):
        sync.forget([{"email": "x"}])
    before = sync.delivered().height, sync.events().height
    with pytest.raises(dfsync.ConfigError, match="'id' holds int64 values.*Nothing was changed"):
        sync.forget([1, "abc"])
    for nothing in (None, [1, None], [(None,)]):  # a null key was never delivered: a slip, said so
        with pytest.raises(dfsync.ConfigError, match="never null"):
            sync.forget(nothing)
    assert (sync.delivered().height, sync.events().height) == before
    for wrong in ("yes", 1, []):  # progress takes True, False or a callable
        with pytest.raises(dfsync.ConfigError, match="progress="):
            sync.run(progress=wrong)
    assert sync.runs().height == 1


def test_forget_refuses_a_key_its_column_would_truncate_into_another(ws, tmp_path):
    # forget([2.5]) on an int key erased key 2, and a datetime at noon on a date key erased that date's
    # row: another row's traces gone and the next run sending it again, the call a success
    from datetime import date, datetime

    frame = pl.DataFrame({"id": [1, 2, 3], "day": [date(2024, 1, d) for d in (1, 2, 3)], "v": [1, 2, 3]})
    dest = dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t")
    by_id = ws.create_sync("by_id", source=frame, destination=dest, primary_key="id")
    by_day = ws.create_sync("by_day", source=frame, destination=dfsync.destinations.duckdb(
        str(tmp_path / "d.duckdb"), table="t2"), primary_key="day")
    for sync in (by_id, by_day):
        assert sync.run(progress=False).status == "success"
    for sync, given, named in ((by_id, [1, 2.5], r"'id' holds int64 values; \[2.5\] is not one"),
                               (by_day, [datetime(2024, 1, 2, 12)], r"'day' holds date32\[day\] values")):
        before = sync.delivered().sort(sync.primary_key), sync.events().height
        with pytest.raises(dfsync.ConfigError, match=named + ".*nothing was changed"):
            sync.forget(given)
        assert sync.delivered().sort(sync.primary_key).equals(before[0]) and sync.events().height == before[1]
    assert by_id.forget([1.0, 3])["delivered"] == 2  # a float that is an integer is that integer
    assert by_day.forget([date(2024, 1, 2)])["delivered"] == 1
    assert by_id.delivered()["id"].to_list() == [2] and by_day.delivered()["day"].to_list() == [date(2024, 1, 1),
                                                                                                  date(2024, 1, 3)]


@pytest.mark.workspaces("duckdb", "postgres", slow=("postgres",))
def test_forget_rewrites_check_examples_as_json_and_finds_short_keys_only_where_named(ws_target, tmp_path):
    ws = dfsync.Workspace(ws_target)
    sync = ws.create_sync("people", source=dfsync.sources.frame(frame()), destination=destination(tmp_path),
                          primary_key="id", sensitive=["email", "phone"], on_invalid="skip", max_failed_rows=10,
                          checks=[dfsync.checks.matches("email", r"^[^@]+@[^@]+$", name="email_ok"),
                                  dfsync.checks.between("id", max=5, name="id_small"),
                                  dfsync.checks.between("age", max=100, name="age_ok", mostly=0.1)])
    run = sync.run(progress=False)  # row 6 fails email_ok and id_small; rows 4 and 5 fail age_ok (allowed)
    assert run.counts["invalid"] == 1

    def checks() -> dict[str, tuple]:
        rows = ws.sql("SELECT check_name, CAST(partial_unexpected_list AS VARCHAR) AS l, CAST(result AS VARCHAR) "
                      "AS r, unexpected_count FROM checks").to_dicts()
        return {r["check_name"]: (json.loads(r["l"]), json.loads(r["r"]), r["unexpected_count"]) for r in rows}

    key = workspace_key(ws.store.ledger_id(sys.maxsize))
    was = checks()
    assert was["email_ok"][0] == [keyed_hash(EMAILS[5], key)] and was["id_small"][0] == [6]
    assert was["age_ok"][0] == [200, 300]
    text = "ticket: customer id=6 called about batch 6; Key (id)=(6) conflicted; 'id': 6 too; id=60 stays"
    ws.store.note(sync.id, run.id, text)
    ws.store.begin_buckets(sync.id, run.id, 2, "two buckets")  # as a partitioned run keeps them
    ws.store.set_bucket(sync.id, run.id, 1, "done", error="bucket 1 of 2: the row id=6 was rejected")
    other = sync.events().filter(~pl.col("detail").str.contains("id=6|Key"))
    counts = sync.forget([6, 4] + list(range(100, 1100)))  # one statement per table, however many keys
    # texts: the note, the bucket's event and the bucket's error
    assert counts["records"] == 2 and counts["checks"] == 3 and counts["texts"] == 3
    now = checks()
    assert now["email_ok"][0] == ["[forgotten key]"] and now["id_small"][0] == ["[forgotten key]"]
    assert now["age_ok"][0] == ["[forgotten key]", 300]  # 200: the value row 4's record holds
    assert now["id_small"][1]["partial_unexpected_list"] == ["[forgotten key]"]
    assert [c[2] for c in now.values()] == [c[2] for c in was.values()]  # counts stay
    assert {k: {f: v for f, v in c[1].items() if f != "partial_unexpected_list"} for k, c in now.items()} == \
        {k: {f: v for f, v in c[1].items() if f != "partial_unexpected_list"} for k, c in was.items()}
    details = sync.events()["detail"].to_list()
    assert ("ticket: customer id=[forgotten key] called about batch 6; Key (id)=([forgotten key]) conflicted; "
            "'id': [forgotten key] too; id=60 stays") in details
    assert set(other["detail"].to_list()) <= set(details)  # every other text as it was ("6 rows", run 6, ...)
    assert ws.store.buckets(run.id).filter(pl.col("bucket") == 1)["error"].to_list() == ["bucket 1 of 2: the row id=[forgotten key] was rejected"]
    ws.close()


@pytest.mark.slow
def test_skipped_records_of_an_insert_only_sync_keep_sensitive_fields_hashed(ws_target, tmp_path, request):
    ws = dfsync.Workspace(ws_target)
    sync = ws.create_sync("people", source=dfsync.sources.frame(frame(ages=[1, 2, 3, 4, 5, 6])),
                          destination=destination(tmp_path), primary_key="id", sensitive=["email", "phone"],
                          destination_mode="insert")
    assert sync.run(progress=False).counts["succeeded"] == 6
    changed = frame(ages=[1, 2, 3, 4, 5, 6]).with_columns(pl.col("phone") + " 99")
    run = sync.run(source=changed, progress=False)
    skipped = run.records("skipped")
    assert run.counts["skipped"] == 6 and skipped.height == 6
    key = workspace_key(ws.store.ledger_id(sys.maxsize))
    assert sorted(skipped["phone"].to_list()) == sorted(keyed_hash(p, key) for p in changed["phone"])
    ws.close()
    new = [p.encode() for p in changed["phone"]] + [e.encode() for e in EMAILS]
    if ws_target.startswith("postgresql://"):
        base, schema = ws_target.split("?schema=")
        blobs = [request.getfixturevalue("pg_server").dump_schema(base, schema)]
    else:
        blobs = [pathlib.Path(d, f).read_bytes() for d, _, fs in os.walk(os.path.dirname(ws_target)) for f in fs
                 if not pathlib.Path(d).is_relative_to(tmp_path / "dest")]
    assert not [e for e in new for b in blobs if e in b]
