"""What the ``dfsync`` command prints: tables, times, a run's outcome and its checks, JSON.

A message the command shows (an error, a run's error, a preview's problem) goes through
:func:`dfsync._words.for_cli`, so it names the ``dfsync`` command to type, not the Python call.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import typer

from ._jsonout import json_text
from ._words import for_cli, plural

if TYPE_CHECKING:
    import polars as pl

    from .workspace import SyncRun


def print_json(obj: Any) -> None:
    typer.echo(json_text(obj))


def print_table(df: pl.DataFrame, empty: str) -> None:
    import polars as pl

    if df.height == 0:
        typer.echo(empty)
        return
    # humans read times to the second, in UTC so two machines' output compares
    df = df.with_columns(_fmt_time(pl.col(c), t) for c, t in df.schema.items() if isinstance(t, pl.Datetime))
    df = df.with_columns(pl.col(c).round(2) for c, t in df.schema.items() if t.is_float())
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True,
                   tbl_formatting="ASCII_MARKDOWN", fmt_str_lengths=60, tbl_width_chars=10_000):
        typer.echo(str(df))


def _fmt_time(col: pl.Expr, dtype: Any) -> pl.Expr:
    if not dtype.time_zone:  # a naive time (the user's data) is no UTC instant: shown as it is, no Z
        return col.dt.strftime("%Y-%m-%d %H:%M:%S")
    return col.dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%d %H:%M:%SZ")


def utc(dt: datetime) -> str:
    from datetime import timezone

    return f"{dt.astimezone(timezone.utc):%Y-%m-%d %H:%M:%SZ}"


#: what a check looked at: in a run, a row-level check judges the rows it sends; `dfsync validate`
#: sends nothing, and judges each row of the source
SCOPES = {"rows": "rows sent", "dataset": "whole data set"}
VALIDATE_SCOPES = {"rows": "each row", "dataset": "whole data set"}


def checks_summary(frame: pl.DataFrame, scopes: dict[str, str] = SCOPES) -> list[dict[str, Any]]:
    """Each check: name, scope (rows sent, or each row / whole data set), success, failing rows."""
    import polars as pl

    if frame is None or frame.is_empty():
        return []
    scope = frame["scope"] if "scope" in frame.columns else pl.Series([None] * frame.height)
    return [{"check": r["check_name"], "scope": scopes.get(sc, sc), "success": r["success"],
             "unexpected_count": r["unexpected_count"]} for r, sc in zip(frame.iter_rows(named=True), scope, strict=True)]


def echo_checks(checks: list[dict[str, Any]], only_failed: bool) -> None:
    for ch in checks:
        if only_failed and ch["success"]:
            continue
        rows = "" if ch["unexpected_count"] is None else f", {plural(ch['unexpected_count'], 'row')}"
        typer.echo(f"  check {ch['check']!r} [{ch['scope']}]: {'passed' if ch['success'] else 'FAILED'}{rows}")


def _bucket_states(run: SyncRun) -> dict[str, int] | None:
    """A partitioned run's buckets per state (done, running, waiting, failed); None without buckets."""
    return run.workspace.store.bucket_states([run.id]).get(run.id)


def run_summary(run: SyncRun) -> dict[str, Any]:
    return {"run_id": run.id, "sync": run.sync_name, "status": run.status.value, "counts": run.counts,
            "buckets": _bucket_states(run), "error": run.error and for_cli(run.error, run.sync_name, run.id), "checks": checks_summary(run.validation())}


def not_started_summary(name: str, why: str, problem: bool) -> dict[str, Any]:
    """A due sync the scheduler did not start, in the shape of :func:`run_summary` (no run: ``run_id``
    and ``counts`` null, ``status`` "not_started", ``error`` why); ``problem``: it makes the exit
    code 1 (false: it is running elsewhere, which is left to finish)."""
    return {"run_id": None, "sync": name, "status": "not_started", "counts": None, "buckets": None,
            "error": for_cli(why, name), "checks": [], "problem": problem}


def echo_run(run: SyncRun) -> None:
    c = run.counts
    typer.echo(f"run {run.id} of {run.sync_name!r}: {run.status.value}  inserted={c['inserted']} "
               f"updated={c['updated']} deleted={c['deleted']} unchanged={c['unchanged']} "
               f"sent={c['sent']} failed={c['failed']} invalid={c['invalid']}"
               # sent = succeeded + failed + skipped: rows an update mode found missing, or insert skipped
               + (f" skipped={c['skipped']}" if c.get("skipped") else ""))
    from .store import bucket_summary

    states = _bucket_states(run)
    if states:
        typer.echo(f"  buckets: {bucket_summary(states)} (dfsync buckets {run.id} lists them)")
    echo_checks(checks_summary(run.validation()), only_failed=True)
    if run.error:
        typer.echo(f"  error: {for_cli(run.error, run.sync_name, run.id)}")
