"""The ``dfsync`` command line: operate the syncs of a workspace from a terminal or cron.

Every command takes ``--workspace PATH``, before or after it (default ``./.dfsync/workspace.duckdb``; a
``postgresql://user:env:NAME@host/db?schema=dfsync`` URI opens a PostgreSQL workspace; or the
``DFSYNC_WORKSPACE`` environment variable) and ``--json`` for scripts.

Exit codes: 0 success; 1 a run failed or paused, or could not start (already running,
workspace busy); 2 a usage or configuration problem (unknown sync, bad option, a
session-only sync, no workspace at that path). Errors are one line on stderr.

    dfsync syncs
    dfsync run customers --preview
    dfsync run customers
    dfsync runs customers --json
    dfsync records customers --status failed   # its last run (or a run id: dfsync records 12)
    dfsync reset customers      # the next run is a first load
    dfsync abort customers      # give up its running or paused run (it ends failed)
    dfsync purge                # remove records past their record_retention
    dfsync scheduler            # runs due syncs until Ctrl-C
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import typer

from ._cliout import (
    VALIDATE_SCOPES,
    checks_summary,
    echo_checks,
    echo_run,
    not_started_summary,
    print_json,
    print_table,
    run_summary,
    utc,
)
from ._settings import setting
from ._words import for_cli, plural
from .errors import (
    ConfigError,
    DfsyncError,
    InvalidTransition,
    SyncDisabledError,
    SyncNotFoundError,
    WorkspaceBusy,
    WorkspaceError,
)

if TYPE_CHECKING:
    import polars as pl

    from .workspace import SyncRun, Workspace

DEFAULT_WORKSPACE = os.path.join(".dfsync", "workspace.duckdb")
EXIT_FAILED, EXIT_USAGE = 1, 2  # exit codes (0: done)
#: problems the user fixes by changing the command or the configuration
USAGE_ERRORS = (ConfigError, SyncNotFoundError, SyncDisabledError, InvalidTransition)

app = typer.Typer(help="dfsync: keep a destination in sync with your data.", no_args_is_help=True,
                  add_completion=False)

WorkspaceOpt = typer.Option(
    DEFAULT_WORKSPACE, "--workspace", "-w", envvar="DFSYNC_WORKSPACE",
    help="the workspace file (created from Python with dfsync.Workspace(PATH)), or a PostgreSQL "
         "workspace's URI: postgresql://USER:env:VAR@HOST/DB?schema=S")
JsonOpt = typer.Option(False, "--json", help="print JSON for scripts instead of a table")
EngineOpt = typer.Option(None, "--engine", help="where a partitioned sync runs its buckets: local, local:N, ray, "
                         "ray:auto or ray:ray://HOST:PORT (default: one after another in this process)")


# ---------------------------------------------------------------------- helpers
def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"dfsync: {message}", err=True)
    return typer.Exit(code)


@contextlib.contextmanager
def _errors(name: str | None = None) -> Iterator[None]:
    """DfsyncError -> one line on stderr and exit 2 (usage/config) or 1 (anything else), the Python
    calls it names written as the commands that do it for sync ``name``."""
    try:
        yield
    except WorkspaceBusy as exc:
        raise _fail(for_cli(str(exc), name), EXIT_FAILED) from None
    except (*USAGE_ERRORS, WorkspaceError) as exc:
        raise _fail(for_cli(str(exc), name), EXIT_USAGE) from None
    except DfsyncError as exc:
        raise _fail(for_cli(str(exc), name), EXIT_FAILED) from None


def _engine(spec: str | None) -> Any:
    if not spec:
        return None
    from .engines import from_spec

    return from_spec(spec)


def _open(path: str) -> Workspace:
    """Open an existing workspace; a missing file is a usage error, not a new empty workspace."""
    if path != ":memory:" and "://" not in path and not os.path.exists(path):  # a URI: Workspace() judges it
        raise _fail(
            f"no workspace at {path}. Pass --workspace PATH (or set DFSYNC_WORKSPACE) to the file your "
            f"notebook uses: dfsync.Workspace(PATH)", EXIT_USAGE)
    from .workspace import Workspace

    timeout = setting("busy_timeout")
    return Workspace(path, busy_timeout=timeout, create=False)  # the CLI never makes a workspace


def _run_of(ws: Workspace, spec: str) -> tuple[SyncRun, str | None]:
    """The run a command names: a run id, or a sync's name for its last run (with the note saying which run
    that is). A number that is both a run id and a sync's name is refused as ambiguous."""
    from .errors import RunNotFoundError

    run = sync = None
    if spec.strip().isdigit():
        with contextlib.suppress(RunNotFoundError):
            run = ws.run(int(spec))
    with contextlib.suppress(SyncNotFoundError):
        sync = ws.sync(spec)
    if run is not None and sync is not None and run.sync_name != spec:
        raise ConfigError(f"{spec!r} is both the id of a run of {run.sync_name!r} and the name of a sync; "
                          f"'dfsync runs {spec}' lists that sync's run ids, pass one of them")
    if run is not None:
        return run, None
    if sync is None:
        if spec.strip().isdigit():
            raise ConfigError(f"no run with id {spec} and no sync named {spec!r} in this workspace; "
                              f"'dfsync runs NAME' lists a sync's run ids, 'dfsync syncs' the syncs")
        ws.sync(spec)  # SyncNotFoundError with its suggestions
    last = sync.last_run()
    if last is None:
        raise ConfigError(f"sync {spec!r} has not run yet: 'dfsync run {spec}' runs it")
    return last, f"run {last.id} of {spec!r} (its last run; 'dfsync runs {spec}' lists the others)"


def _at_most(fetch: Callable[[int | None], pl.DataFrame], limit: int) -> tuple[pl.DataFrame, bool]:
    """``fetch(n)``'s rows for ``--limit`` (0: all; a negative one is ``fetch``'s to refuse), and
    whether rows were left out: one more than the limit is asked for, so a list cut short says so."""
    df = fetch(limit + 1 if limit > 0 else (limit or None))
    more = limit > 0 and df.height > limit
    return (df.head(limit) if more else df), more


# ---------------------------------------------------------------------- commands
@app.command()
def syncs(workspace: str = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """List the syncs: status, source and destination, schedule, next and last run."""
    with _errors():
        df = _open(workspace).syncs()
        if as_json:
            print_json(df.to_dicts())
            return
        print_table(df.select("name", "status", "source", "destination", "destination_mode", "schedule",
                               "next_run_at", "last_run_id", "last_run_status", "last_run_finished_at"),
                     "no syncs in this workspace yet")


@app.command()
def status(name: str | None = typer.Argument(None, help="the sync (without one: every sync, as `dfsync syncs`)"),
           workspace: str = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """One sync: its status, definition, schedule, and its last and current run (no name: every sync)."""
    if name is None:
        syncs(workspace, as_json)
        return
    with _errors(name):
        sync = _open(workspace).sync(name)
        last, current = sync.last_run(), sync.current_run()
        info = {"name": sync.name, "status": sync.status.value, "schedule": sync.schedule,
                "next_run_at": sync.next_run_at, "session_only": sync.session_only,
                "definition_version": sync.definition_version, "definition": sync.definition,
                "cursor": sync.cursor,
                "last_run": run_summary(last) if last else None,
                "current_run": run_summary(current) if current else None}
        if as_json:
            print_json(info)
            return
        d = sync.definition
        typer.echo(f"sync {sync.name!r}: {info['status']}")
        settings = ", ".join(f"{k}={v}" for k, v in d["source"].items() if k != "kind" and v is not None)
        typer.echo(f"  source       {d['source']['kind']}" + (f": {settings}" if settings else ""))
        typer.echo(f"  destination  {sync.describe_destination()} [{d['destination_mode']}]")
        typer.echo(f"  primary key  {', '.join(d['primary_key'])}   mode {d['sync_mode']}"
                   + (f"   partitions {d['partitions']}" if d.get("partitions") else ""))
        if d.get("cursor_field"):
            at = info["cursor"]
            typer.echo(f"  cursor       {d['cursor_field']} = {at.isoformat() if hasattr(at, 'isoformat') else at}"
                       if at is not None else f"  cursor       {d['cursor_field']}: nothing delivered yet (next run is a first load)")
        nxt = info["next_run_at"]
        typer.echo(f"  schedule     {sync.schedule or 'manual'}"
                   + (f"   next run {utc(nxt)}" if nxt else ""))
        if sync.session_only:
            typer.echo("  session-only: it reads an in-memory frame or holds a literal secret; run it from the "
                       "Python session that made it")
        for label, run in (("last run", last), ("current run", current)):
            if run is not None and (label == "last run" or current.id != last.id):  # type: ignore[union-attr]
                typer.echo(f"  {label}:")
                typer.echo("    ", nl=False)
                echo_run(run)


@app.command()
def run(
    name: str,
    preview: bool = typer.Option(False, "--preview", help="show what would change; send nothing"),
    limit: int = typer.Option(None, "--limit", help="with --preview: how many changed rows to show (0: all; default 20)"),
    engine: str = EngineOpt,
    workspace: str = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Run a sync now (or resume its paused run); exit code 1 if the run does not succeed."""
    with _errors(name):
        if limit is not None and not preview:  # `run --limit 5` would otherwise send every changed row
            raise _fail(f"--limit goes with --preview (how many changed rows it shows); a run sends every changed row: "
                        f"dfsync run {name} --preview --limit {limit}, or dfsync run {name}", EXIT_USAGE)
        if (limit or 0) < 0:
            raise _fail(f"--limit {limit}: give a whole number of rows >= 0 (0: all)", EXIT_USAGE)
        sync = _open(workspace).sync(name)
        run_engine = _engine(engine)
        if preview:
            p = sync.preview()
            changes = p.changes if limit == 0 else p.changes.head(20 if limit is None else limit)  # 0: all, as for runs
            if as_json:
                print_json({"sync": name, "counts": p.counts, "problems": [for_cli(x, name) for x in p.problems],
                             "changes": changes.to_dicts()})
                return
            typer.echo(f"preview of {name!r} (nothing sent): " + " ".join(f"{k}={v}" for k, v in p.counts.items()))
            for problem in p.problems:
                typer.echo(f"  problem: {for_cli(problem, name)}")
            if changes.height < p.changes.height:  # a list cut short says so
                typer.echo(f"the first {plural(changes.height, 'changed row')} of {p.changes.height:,} (--limit 0 shows all)")
            print_table(changes, "no changes")
            return
        try:
            # the command prints the run's outcome itself: a progress bar only where there is a terminal
            result = sync.run(progress=not as_json and sys.stderr.isatty(), trigger="cli", engine=run_engine)
        except KeyboardInterrupt:
            current = sync.current_run()
            what = f"run {current.id} is {current.status.value}" if current else "the run stopped"
            raise _fail(f"interrupted: {what}; `dfsync run {name}` resumes a paused run", 130) from None
        if as_json:
            print_json(run_summary(result))
        else:
            echo_run(result)
        if result.status.value != "success":
            raise typer.Exit(EXIT_FAILED)


@app.command()
def validate(name: str, workspace: str = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """Run every check over the whole current source (nothing sent); exit code 1 if one fails."""
    with _errors(name):
        result = _open(workspace).sync(name).validate()
        checks = checks_summary(result.checks, VALIDATE_SCOPES)  # it sends nothing: no "rows sent"
        problems = [for_cli(x, name) for x in result.problems]
        if as_json:
            print_json({"sync": name, "ok": result.ok, "rows": result.rows, "checks": checks,
                         "problems": problems, "invalid": result.invalid.head(100).to_dicts()})
        else:
            typer.echo(f"validate {name!r} over {plural(result.rows, 'row')} (nothing sent): "
                       f"{'ok' if result.ok else 'FAILED'}; {plural(result.invalid.height, 'invalid row')}")
            echo_checks(checks, only_failed=False)
            for problem in problems:
                typer.echo(f"  problem: {problem}")
            print_table(result.invalid.head(20), "no invalid rows")
        if not result.ok:
            raise typer.Exit(EXIT_FAILED)


@app.command()
def runs(
    name: str,
    limit: int = typer.Option(20, "--limit", help="newest N runs (0: all)"),
    workspace: str = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Run history of a sync, newest first, with counters."""
    with _errors(name):
        import polars as pl

        from .store import bucket_summary

        ws = _open(workspace)
        df, more = _at_most(lambda n: ws.sync(name).runs(limit=n), limit)
        states = ws.store.bucket_states(df["run_id"].to_list()) if df.height else {}
        df = df.with_columns(error=pl.Series([for_cli(e, name, r) if e else e for e, r in
                                              zip(df["error"].to_list(), df["run_id"].to_list())], dtype=pl.String))
        cols = ["run_id", "status", "trigger", "started_at", "duration_s", "inserted", "updated", "deleted",
                "unchanged", "sent", "failed", "invalid", "error"]
        if states:  # partitioned runs: their buckets done / running / waiting / failed
            df = df.with_columns(pl.Series("buckets", [bucket_summary(states[r]) if r in states else None
                                                       for r in df["run_id"].to_list()], dtype=pl.String))
            cols.insert(-1, "buckets")
        if as_json:
            print_json(df.to_dicts())
            return
        if more:  # a history cut short says so
            typer.echo(f"the newest {plural(limit, 'run')} of sync {name!r}; there are older ones (--limit 0 shows them all)")
        print_table(df.select(cols), f"sync {name!r} has not run yet")


@app.command()
def buckets(
    run_id: str = typer.Argument(..., metavar="RUN_ID|NAME", help="a run id, or a sync's name for its last run"),
    workspace: str = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """The buckets of a partitioned run: each one's state, attempts, counters and last error."""
    from .store import bucket_summary

    with _errors():
        run, _ = _run_of(_open(workspace), run_id)
        run_id = str(run.id)
        df = run.buckets()
        if as_json:
            print_json(df.to_dicts())
            return
        if df.height:
            typer.echo(f"run {run_id} of {run.sync_name!r}: {run.status.value}; buckets "
                       f"{bucket_summary(dict(df.group_by('state').len().iter_rows()))}")
        if df.height or not run.sync.definition.get("partitions"):
            print_table(df, f"run {run_id} has no buckets (its sync is not partitioned: create_sync(..., partitions=N))")
        else:  # a partitioned sync's run that sent nothing (or stopped before sending) made no buckets
            typer.echo(f"run {run_id} of {run.sync_name!r} has no buckets: a partitioned run makes them when it starts "
                       "sending, and this one had no changed rows to send or stopped before sending")


@app.command()
def records(
    run_id: str = typer.Argument(..., metavar="NAME|RUN_ID", help="a sync's name for its last run, or a run id "
                                 "(dfsync runs NAME lists them)"),
    status: str = typer.Option(None, "--status",
                               help="pending, succeeded, failed, invalid or skipped (default: all kept)"),
    limit: int = typer.Option(100, "--limit", help="at most N records (0: all)"),
    workspace: str = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Records of a run with their action, status and error (failed rows stay after a run).

    Give a sync's name for its last run, or a run id for any run (dfsync runs NAME lists them).
    """
    with _errors():
        run, which = _run_of(_open(workspace), run_id)
        df, more = _at_most(lambda n: run.records(status, limit=n), limit)
        if as_json:
            print_json(df.to_dicts())
            return
        if which:
            typer.echo(which)
        if more:  # a table cut short says so: its rows are not all the run's records
            typer.echo(f"the first {plural(limit, (status + ' ' if status else '') + 'record')} of run {run.id}; "
                       f"there are more (--limit 0 shows them all)")
        print_table(df, f"no {status + ' ' if status else ''}records kept for run {run.id}")


@app.command()
def purge(
    name: str = typer.Argument(None, help="only this sync (default: every sync)"),
    older_than: str = typer.Option(None, "--older-than",
                                   help="e.g. '30 days': instead of each sync's record_retention"),
    workspace: str = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Remove stored records (failed, invalid, skipped rows) past their retention.

    A sync keeps the records of runs that finished within its record_retention (create_sync(..., record_retention="30 days"); else the DFSYNC_RECORD_RETENTION setting; else they are kept). A run also does this for its own sync before it starts.
    """
    with _errors(name):
        ws = _open(workspace)
        counts = ({name: ws.sync(name).purge_records(older_than)} if name else ws.purge(older_than))
        if as_json:
            print_json(counts)
            return
        kept = older_than is None and not setting("record_retention", ws.settings)  # nothing expires their records
        for sync_name, n in counts.items():
            why = "" if not kept or ws.sync(sync_name).spec.record_retention else " (no record_retention: all kept; see --older-than)"
            typer.echo(f"{sync_name}: {plural(n, 'record')} purged{why}")
        if not counts:
            typer.echo("no syncs in this workspace yet")


def _set_enabled(name: str, workspace: str, as_json: bool, enable: bool) -> None:
    with _errors(name):
        sync = _open(workspace).sync(name)
        sync.enable() if enable else sync.disable()
        st = sync.status.value
        if as_json:
            print_json({"name": name, "status": st})
        else:
            typer.echo(f"sync {name!r}: {st}")


@app.command()
def enable(name: str, workspace: str = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """Allow a sync to run again (manually and on its schedule)."""
    _set_enabled(name, workspace, as_json, True)


@app.command()
def disable(name: str, workspace: str = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """Stop a sync from running; a run it is transferring (in any process) pauses at its next batch."""
    _set_enabled(name, workspace, as_json, False)


@app.command()
def reset(name: str, workspace: str = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """Forget what a sync delivered and its cursor: its next run is a first load (sends every row).

    The destination is not touched. Refused while a run of the sync is going on or paused (`dfsync run NAME` resumes a paused run; `dfsync abort NAME` gives it up).
    """
    with _errors(name):
        sync = _open(workspace).sync(name)
        sync.reset()
        if as_json:
            print_json({"name": name, "reset": True})
        else:
            typer.echo(f"sync {name!r}: delivered state and cursor forgotten; its next run is a first load "
                       f"(the destination was not touched)")


@app.command()
def abort(name: str, workspace: str = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """Give up a sync's running or paused run: it ends failed (as run.abort() in Python).

    A paused run fails at once; a run going on in another process stops at its next batch boundary. What was delivered stays delivered; the next `dfsync run NAME` starts a new run. Exit code 2 if the sync has no running or paused run.
    """
    with _errors(name):
        sync = _open(workspace).sync(name)
        run = sync.current_run()
        if run is None:
            last = sync.last_run()
            raise InvalidTransition(f"sync {name!r} has no running or paused run to abort"
                                    + (f" (its last run, {last.id}, ended {last.status.value})" if last else ""))
        was = run.status.value
        run.abort()
        now = run.status.value
        if as_json:
            print_json({"run_id": run.id, "sync": name, "was": was, "status": now})
        elif now == "failed":
            typer.echo(f"run {run.id} of {name!r}: {was} -> failed (aborted); the next `dfsync run {name}` starts a new run")
        else:
            typer.echo(f"run {run.id} of {name!r} is {now} in another process: asked to stop, it ends failed at its "
                       f"next batch boundary (`dfsync status {name}` shows it)")


def _cli_words(record: logging.LogRecord) -> bool:
    """A scheduler's log line (``sync %r: ...``, the sync's name first) with the Python calls it names
    written as the commands that do it."""
    args = record.args if isinstance(record.args, tuple) else ()
    record.msg, record.args = for_cli(record.getMessage(), args[0] if args and isinstance(args[0], str) else None), ()
    return True


@app.command()
def scheduler(
    poll: float = typer.Option(5.0, "--poll", help="seconds between looks at the schedules"),
    once: bool = typer.Option(False, "--once", help="run what is due now (a sync that never ran is due), then exit (for cron)"),
    engine: str = typer.Option(None, "--engine", help="where partitioned syncs run their buckets: local, local:N, "
                               "ray, ray:auto or ray:ray://HOST:PORT (other syncs run here as always)"),
    workspace: str = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Run due syncs on their schedules until Ctrl-C (or once, with --once).

    A sync that never ran is due at the first pass; then every interval after its last run, or at its cron times. A run interrupted by Ctrl-C or SIGTERM pauses and resumes on its next run. With --once the exit code is 1 if any run did not succeed, or a due sync could not start (one running elsewhere is left to it). With --once --json: a list of the runs started, then of the due syncs not started (status "not_started", run_id null, error: why; problem: false when it runs elsewhere).
    """
    from .schedule import Scheduler

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # its log names commands too, not Python calls
        handler.addFilter(_cli_words)
    with _errors():
        ws = _open(workspace)
        sched = Scheduler(ws, poll_seconds=poll, engine=_engine(engine))
        if once:
            started = sched.run_pending()
            if as_json:
                print_json([run_summary(r) for r in started]  # then the due syncs not started, and why
                           + [not_started_summary(*n) for n in sched.not_started])
            else:
                for r in started:
                    echo_run(r)
                for name, why, _problem in sched.not_started:  # due, but not started: not "nothing due"
                    typer.echo(f"sync {name!r}: not run, {for_cli(why, name)}")
                if not started and not sched.not_started:
                    typer.echo("nothing due")
            if any(r.status.value != "success" for r in started) or any(p for *_, p in sched.not_started):
                raise typer.Exit(EXIT_FAILED)
            return
        planned = ws.syncs().filter(ws.syncs()["schedule"].is_not_null())
        typer.echo(f"dfsync scheduler: {ws.path}, {plural(planned.height, 'scheduled sync')}, polling every {poll}s "
                   f"(Ctrl-C stops)", err=True)

        def _term(signum: int, frame: Any) -> None:
            # as Ctrl-C, so a running sync pauses cleanly: through the SIGINT handler, which a run
            # inside a DuckDB statement has replaced (a KeyboardInterrupt raised here, DuckDB would
            # make RuntimeError('Query interrupted'): the run failed and the scheduler went on)
            signal.raise_signal(signal.SIGINT)

        signal.signal(signal.SIGTERM, _term)
        try:
            sched.run_forever()
        except KeyboardInterrupt:
            typer.echo("dfsync scheduler: stopped", err=True)


@app.command()
def demo(
    directory: str = typer.Option("dfsync-demo", help="where to put the demo workspace and warehouse"),
    data: str = typer.Option(None, help="the sample data directory (default: ./data)"),
) -> None:
    """Run a real two-run sync of the sample data into a DuckDB file and show what happened."""
    from .demo import run_demo

    with _errors():
        code = run_demo(directory, data)
    raise typer.Exit(code)


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"dfsync {__version__}")
        raise typer.Exit()


@app.callback()
def _root(workspace: str = typer.Option(
        None, "--workspace", "-w",
        help="the workspace for every command, given before it (dfsync --workspace PATH_OR_URI runs NAME); "
             "a command's own --workspace wins"),
          version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="print dfsync's version and exit")) -> None:
    """dfsync: keep a destination in sync with your data.

    Exit codes: 0 success, 1 a run failed (or could not start), 2 a usage or configuration error.
    """
    if workspace:  # the commands' --workspace reads DFSYNC_WORKSPACE when not given after them
        os.environ["DFSYNC_WORKSPACE"] = workspace
    if logging.lastResort is not None:  # a run's warning (on_invalid='warn') names commands, not Python calls
        logging.lastResort.addFilter(_cli_words)


def main() -> None:
    app()
