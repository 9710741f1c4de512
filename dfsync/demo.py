"""``python -m dfsync demo``: two real runs of two syncs over the sample data in ``data/``.

customers (Parquet) -> DuckDB table ``customers`` in mirror mode: run 1 inserts every row;
the source then moves to version 2 and run 2 sends only what changed (inserts, updates,
deletes). orders (CSV) -> DuckDB table ``orders``, incremental by ``updated_at``.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
from typing import TextIO

import duckdb

from . import destinations, sources
from .errors import ConfigError
from .workspace import Workspace

_SAMPLE = ("customers_v1.parquet", "customers_v2.parquet", "orders_v1.csv", "orders_v2.csv")



def _shown_path(path: str) -> str:
    """A path to type: relative when it is under the working directory, else absolute (a demo in
    /tmp/x run from a home directory showed '../../../tmp/x/...')."""
    rel = os.path.relpath(path)
    return os.path.abspath(path) if rel.startswith(os.pardir) else rel

def _find_data(data_dir: str | None) -> pathlib.Path:
    if data_dir:  # the directory asked for, or an error: not silently the bundled sample instead
        given = pathlib.Path(data_dir)
        missing = [f for f in _SAMPLE if not (given / f).is_file()]
        if missing:
            raise ConfigError(f"demo: --data {data_dir} does not hold the sample data ({', '.join(missing)} "
                              f"missing); leave --data out to use the sample dfsync carries")
        return given
    here = pathlib.Path(__file__).resolve().parent
    # a checkout's data/ (also an editable install), else the copy an installed wheel carries
    candidates = [pathlib.Path.cwd() / "data", here.parent / "data", here / "_demo_data"]
    for c in candidates:
        if (c / "customers_v1.parquet").exists():
            return c
    raise SystemExit(
        "dfsync demo: cannot find the sample data (data/customers_v1.parquet). Run it from the "
        "dfsync repository root or pass --data PATH."
    )


#: what a demo directory holds; the demo starts each time from a new one
_DEMO_FILES = {".dfsync", "source", "warehouse.duckdb", "warehouse.duckdb.wal"}


def _start_afresh(root: pathlib.Path) -> None:
    """Remove the directory of an earlier demo; refuse any other (``--directory .`` deleted whatever it held)."""
    if not root.exists():
        return
    if not root.is_dir():
        raise ConfigError(f"demo: {root} is a file, not a directory; pass --directory NEW_DIR")
    others = sorted(p.name for p in root.iterdir() if p.name not in _DEMO_FILES)
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise ConfigError(f"demo: {root} holds files the demo did not make ({shown}); the demo starts "
                         f"afresh each time and would delete them, so it left the directory alone. Pass "
                         f"--directory NEW_DIR (a directory that does not exist yet, or an earlier demo's)")
    shutil.rmtree(root)


def run_demo(directory: str = "dfsync-demo", data_dir: str | None = None, out: TextIO = sys.stdout) -> int:
    data = _find_data(data_dir)
    root = pathlib.Path(directory).resolve()
    _start_afresh(root)
    try:
        (root / "source").mkdir(parents=True)
    except OSError as exc:  # a working directory the user may not write, a path under a file
        raise ConfigError(f"demo: cannot create {root} ({exc.strerror}); pass --directory DIR, a directory "
                          f"you can write to") from None
    warehouse = root / "warehouse.duckdb"
    ws = Workspace(root / ".dfsync" / "workspace.duckdb")

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    customers_src = root / "source" / "customers.parquet"
    orders_src = root / "source" / "orders.csv"
    shutil.copy(data / "customers_v1.parquet", customers_src)
    shutil.copy(data / "orders_v1.csv", orders_src)
    customers = ws.create_sync(
        "customers", source=sources.files(str(customers_src)),
        destination=destinations.duckdb(str(warehouse), table="customers"),
        primary_key="id",
        mapping={"id": "customer_id", "email": "email", "first_name": "first_name", "last_name": "last_name",
                 "plan": "plan", "country": "country", "lifetime_value": "lifetime_value"},
        destination_mode="mirror",
    )
    orders = ws.create_sync(
        "orders", source=sources.files(str(orders_src)),
        destination=destinations.duckdb(str(warehouse), table="orders"),
        primary_key="order_id", sync_mode="incremental", cursor_field="updated_at", destination_mode="upsert",
    )
    say("dfsync demo: two syncs, two runs each, into a DuckDB file\n")
    say("  customers  source/customers.parquet -> warehouse.duckdb table customers, mirror mode (key id)")
    say("  orders     source/orders.csv -> table orders, incremental by updated_at, upsert (key order_id)")
    say("  run 1 and 2 load everything; then the sources change and runs 3 and 4 send only the changes\n")
    header = (f"{'sync':<10} {'run':>3}  {'status':<8} {'read':>5} {'inserted':>8} {'updated':>8} {'deleted':>8} "
              f"{'unchanged':>9} {'sent':>6}")
    say(header)
    say("-" * len(header))
    ok = True
    for step in (1, 2):
        if step == 2:
            shutil.copy(data / "customers_v2.parquet", customers_src)
            shutil.copy(data / "orders_v2.csv", orders_src)
        for sync in (customers, orders):
            run = sync.run(progress=False)
            c = run.counts
            ok &= run.status.value == "success"
            say(f"{sync.name:<10} {run.id:>3}  {run.status.value:<8} {c['queried']:>5} {c['inserted']:>8} "
                f"{c['updated']:>8} {c['deleted']:>8} {c['unchanged']:>9} {c['sent']:>6}")
            if run.error:
                say(f"   error: {run.error}")
    say("\nread: rows read from the source (orders' second run reads only rows at or past the last delivered "
        "updated_at);\nunchanged: rows whose fingerprint equals what the destination already has, so not sent; "
        "deleted: rows gone\nfrom the source (mirror mode); sent = inserted + updated + deleted")
    last = customers.last_run()
    assert last is not None
    say("\nstates of the last customers run:")
    for row in last.events().filter(last.events()["kind"] == "run").iter_rows(named=True):
        say(f"  {row['ts']:%H:%M:%S.%f}  {row['from_status'] or '-':>11} -> {row['to_status']:<11} {row['detail']}")
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        n_c = con.sql("SELECT count(*) FROM customers").fetchall()[0][0]
        n_o = con.sql("SELECT count(*) FROM orders").fetchall()[0][0]
    finally:
        con.close()
    say(f"\ndestination {warehouse}: customers={n_c} rows, orders={n_o} rows")
    say(f"workspace   {ws.path}")
    say("\ninspect it:")
    shown = _shown_path(ws.path)
    say(f"  python -c \"import dfsync; ws = dfsync.Workspace('{shown}'); print(ws.syncs()); print(ws.sync('customers').runs())\"")
    say(f"  dfsync runs customers --workspace {shown}")
    ws.close()
    return 0 if ok else 1
