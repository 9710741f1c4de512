"""What users touch: :class:`Workspace`, :class:`Sync`, :class:`SyncRun`, :class:`Preview`.

These are thin handles over the workspace file: every property reads the store, so a
handle never goes stale and a run started in another process shows up here too.
:class:`Sync` lives in :mod:`dfsync.sync`, :class:`SyncRun` and :class:`Preview` in
:mod:`dfsync.run`; a sync's definition as data in :mod:`dfsync.definition`.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import polars as pl
import psutil

from . import _html_history, _registry
from ._args import checked, row_limit
from ._registry import LIVE
from ._retention import compact, purge
from ._settings import check_settings, setting
from ._settings import use as use_settings
from ._shared import check_shared_destination
from .definition import SyncDefinition, stored_cursor_column
from .destinations.base import Destination
from .errors import ArgumentError, ConfigError, SyncAlreadyRunning
from .run import Preview, SyncRun
from .sources.base import Source
from .states import UNFINISHED_RUNS, RunStatus, SyncStatus
from .store import hostname, open_store, owner_token
from .sync import Sync

__all__ = ["Preview", "Sync", "SyncRun", "Workspace"]

DEFAULT_PATH = os.path.join(".dfsync", "workspace.duckdb")


def _owner_alive(ws_key: str) -> Callable[[int, int, str, str], bool]:
    me = owner_token()
    host = hostname()

    def alive(run_id: int, pid: int, owner_host: str, token: str) -> bool:
        if token == me:
            return _registry.owned_run_alive(ws_key, run_id)
        if owner_host != host:
            return True  # another machine: we cannot tell, so we leave it alone
        try:
            proc = psutil.Process(pid)
            started_ns = int(token.rsplit(":", 1)[1])
            return proc.create_time() * 1e9 <= started_ns + 1e9 and proc.status() != psutil.STATUS_ZOMBIE
        except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError, IndexError):
            return False

    return alive


class Workspace:
    """A DuckDB file holding syncs, runs, events, counters and delivered state.

    >>> ws = dfsync.Workspace(":memory:")
    >>> ws.syncs().height
    0
    """

    @checked("dfsync.Workspace")
    def __init__(self, path: str | os.PathLike[str] | None = None, *, busy_timeout: float | None = 30.0,
                 create: bool = True, staging_memory: str | None = None, destination_memory: str | None = None,
                 workspace_memory: str | None = None, postgres_writers: int | None = None,
                 mysql_writers: int | None = None, allowed_callbacks: Sequence[str] | str | None = None,
                 record_retention: Any = None) -> None:
        """Open the workspace at ``path`` (made if missing; ``create=False``: open only an existing
        one). A DuckDB file holding other tables is refused (``WorkspaceError``) and left unchanged.

        The resource settings (memory sizes such as ``"2GB"``, writer connections) apply to this
        workspace's runs; each not given comes from its ``DFSYNC_*`` environment variable
        (``staging_memory``: ``DFSYNC_STAGING_MEMORY``, ...), else its default.

        ``allowed_callbacks`` (else ``DFSYNC_ALLOWED_CALLBACKS``, comma-separated; default none):
        the modules (a package allows its submodules) whose stored ``"module:function"``
        callbacks this host imports and runs; a stored callback from any other module is not
        imported and the run notes it. Callables passed in this Python session always run.

        ``record_retention`` (else ``DFSYNC_RECORD_RETENTION``; default: kept): how long the
        stored records of a sync without its own ``record_retention`` are kept, e.g. ``"30 days"``."""
        self.settings = check_settings({
            "staging_memory": staging_memory, "destination_memory": destination_memory,
            "workspace_memory": workspace_memory, "postgres_writers": postgres_writers,
            "mysql_writers": mysql_writers, "allowed_callbacks": allowed_callbacks,
            "record_retention": record_retention, "busy_timeout": busy_timeout})
        timeout = self.settings.pop("busy_timeout", None)  # None: DFSYNC_BUSY_TIMEOUT, else the default
        if not isinstance(create, bool):
            raise ArgumentError(f"dfsync.Workspace(create={create!r}): create takes True (make the workspace if "
                                f"missing) or False (open only an existing one), not {type(create).__name__}")
        if path is not None and not isinstance(path, (str, os.PathLike)) or path == "":
            raise ArgumentError(f"dfsync.Workspace(path): path is a file path (str or pathlib.Path) or a "
                                f"postgresql:// URI, or None for {DEFAULT_PATH}; not {path!r}")
        # runs whose process died are settled on the connection that opened the workspace
        self.store = open_store(os.path.expanduser(os.fspath(path)) if path is not None else DEFAULT_PATH,
                                busy_timeout=setting("busy_timeout", {"busy_timeout": timeout}), create=create,
                                memory_limit=self.settings.get("workspace_memory"),
                                then=lambda store: store.recover_orphans(_owner_alive(store.key)))
        self.path = self.store.path  # a postgresql:// URI keeps an env:NAME password, never a literal one

    # .............................................................. housekeeping
    @checked("Workspace.recover")
    def recover(self) -> list[tuple[int, str, str]]:
        """Move runs whose process died: in_progress -> paused, earlier states -> failed."""
        return self.store.recover_orphans(_owner_alive(self.store.key))

    def staging_dir(self, run_id: int) -> str:
        base = getattr(self.store, "staging_root", None) or (
            os.path.join(os.path.dirname(os.path.abspath(self.path)), "staging") if not self.store.memory
            else os.path.join(os.path.expanduser("~"), ".cache", "dfsync", "staging"))
        return os.path.join(base, f"run-{os.getpid()}-{run_id}")

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # .............................................................. syncs
    @checked("Workspace.create_sync")
    def create_sync(
        self,
        name: str,
        *,
        source: Source,
        destination: Destination,
        primary_key: str | Sequence[str],
        mapping: dict[str, Any] | None = None,
        sync_mode: str = "full_refresh",
        cursor_field: str | None = None,
        destination_mode: str = "upsert",
        checks: Any = None,
        on_invalid: str = "fail",
        max_failed_rows: int | float = 0,
        batch_size: int | None = None,
        schedule: str | None = None,
        on_success: Callable[[SyncRun], Any] | None = None,
        on_failure: Callable[[SyncRun], Any] | None = None,
        on_paused: Callable[[SyncRun], Any] | None = None,
        failed_rows_alert: int | float | None = None,
        allow_empty: bool = False,
        if_exists: str = "update",
        lookback: Any = None,
        initial_cursor: Any = None,
        schema: str = "evolve",
        partitions: int | None = None,
        sensitive: Sequence[str] | str | None = None,
        record_retention: Any = None,
    ) -> Sync:
        """Define a sync (or, with the same name, change its definition: a new version is recorded).

        Everything is validated here, so a bad setting fails now rather than mid-run.

        ``sensitive=["email", "phone"]``: fields (after mapping, not the primary key) that the
        stored records of failed, invalid and skipped rows keep only as keyed hashes
        (``hmac:...``; see docs/SECURITY.md for the key). ``record_retention="30 days"``: the
        records of runs that finished longer ago are purged at the next run and by ``dfsync
        purge`` (default: the workspace's ``record_retention`` setting, else kept).

        >>> sync = ws.create_sync("customers", source=dfsync.sources.files("data/customers_v1.parquet"),
        ...     destination=dfsync.destinations.duckdb("warehouse.duckdb", table="customers"),
        ...     primary_key="id")
        """
        if not isinstance(name, str) or not name.strip():
            raise ConfigError("a sync needs a non-empty name")
        if if_exists not in ("update", "error"):
            raise ConfigError("if_exists must be 'update' (change the existing sync) or 'error'")
        with use_settings(self.settings):  # this host's allowed_callbacks decide what validation imports
            spec = SyncDefinition(
                source=source, destination=destination, primary_key=primary_key, mapping=mapping,
                sync_mode=sync_mode, cursor_field=cursor_field, destination_mode=destination_mode, checks=checks,
                on_invalid=on_invalid, max_failed_rows=max_failed_rows, batch_size=batch_size, schedule=schedule,
                on_success=on_success, on_failure=on_failure, on_paused=on_paused,
                failed_rows_alert=failed_rows_alert, allow_empty=allow_empty, lookback=lookback,
                initial_cursor=initial_cursor, schema=schema, partitions=partitions, sensitive=sensitive,
                record_retention=record_retention).validate()
        refuse = getattr(destination, "refuse_workspace_file", None)
        if refuse is not None and not self.store.memory and os.path.isfile(self.store.path):
            refuse(self.store.path)  # (a PostgreSQL workspace's path is its URI)
        with self.store.lease():  # the definition's lookups and write, then the sync's first read
            self._store_definition(name, spec, if_exists)
            return Sync(self, name)

    def _store_definition(self, name: str, spec: SyncDefinition, if_exists: str) -> None:
        """A new sync, or the next version of one (``if_exists='error'`` refuses a name in use)."""
        definition = spec.to_json()
        # a scheduled sync that never ran is due at once: the scheduler's first pass runs it (a first
        # `dfsync scheduler --once` from cron found nothing due for a whole interval); then intervals
        # count from the end of each run, cron times are the wall clock's
        now = datetime.now().astimezone()
        first_run = now if spec.schedule is not None else None
        store = self.store
        with store.lease():  # one workspace connection for the lookups and the write, not four
            check_shared_destination(store.all_syncs(), name, spec)  # another sync on its table: a warning
            if not store.sync_exists(name):
                store.require("create")
                store.create_sync(name, definition, spec.state_key(), spec.schedule, first_run, spec.session_only)
            else:
                old = store.sync_row(name)
                next_run = first_run if store.run_count(old["id"]) == 0 else spec.next_run_after(now)
                changed = [k for k in sorted(set(definition) | set(old["definition"]))
                           if definition.get(k) != old["definition"].get(k)]
                if if_exists == "error":
                    what = (f"with a different definition ({', '.join(changed)} differ)" if changed
                            else "with this definition")
                    raise ConfigError(
                        f"a sync named {name!r} already exists {what}. if_exists='update' (the default) stores "
                        f"the new definition as its next version and keeps what it delivered, so only changes "
                        f"are sent; or pick another name, or ws.delete_sync({name!r}) first")
                if changed or old["schedule"] != spec.schedule:  # the same definition again changes nothing
                    store.require("change", old["id"])
                # a cursor of another column says nothing of this one (a sync that keeps none leaves it)
                forget_cursor = spec.cursor_column() not in (None, stored_cursor_column(old["definition"]))
                version, reset = store.update_definition(old["id"], definition, spec.state_key(), spec.schedule,
                                                         next_run, spec.session_only, forget_cursor=forget_cursor)
                if version != old["definition_version"]:
                    import warnings

                    then = ("the destination or primary key changed, so every row is sent again once" if reset
                            else "what it delivered is kept, so only changes are sent")
                    if forget_cursor and not reset and old.get("cursor_value") is not None:  # one was stored
                        then += ("; its cursor is another column now, so the last cursor is forgotten and the next "
                                 "run reads the whole source (from initial_cursor, if set)")
                    warnings.warn(
                        f"sync {name!r} already existed: its definition changed ({', '.join(changed) or 'schedule'}) "
                        f"and is now version {version}; {then}. (if_exists='update' does this; "
                        f"if_exists='error' refuses a name in use.)", stacklevel=3)
            LIVE[(store.key, name)] = spec.live_objects()

    @checked("Workspace.sync")
    def sync(self, name: str) -> Sync:
        """An existing sync by name (``SyncNotFoundError`` lists the names that exist)."""
        if not isinstance(name, str):
            raise ArgumentError(f"Workspace.sync(name): a sync's name is a string (ws.syncs() lists them), "
                                f"not {name!r}")
        self.store.sync_row(name)
        return Sync(self, name)

    @checked("Workspace.syncs")
    def syncs(self) -> pl.DataFrame:
        """One row per sync: status, source and destination kinds, schedule, last run.
        ``next_run_at`` is empty for a disabled sync: it does not run until enabled."""
        df = self.store.syncs_frame()
        unscheduled = [s.value for s in SyncStatus if not s.scheduled]
        return df.with_columns(pl.when(pl.col("status").is_in(unscheduled)).then(None)
                               .otherwise(pl.col("next_run_at")).alias("next_run_at"))

    @checked("Workspace.runs")
    def runs(self, limit: int | None = None) -> pl.DataFrame:
        """Every run of every sync, newest first, with counters."""
        return self.store.runs_frame(limit=row_limit("Workspace.runs", limit))

    @checked("Workspace.run")
    def run(self, run_id: int) -> SyncRun:
        """A run by id (as shown in ``sync.runs()``); :class:`dfsync.RunNotFoundError` if there is none."""
        try:
            if isinstance(run_id, bool):
                raise TypeError
            run_id = int(run_id.strip()) if isinstance(run_id, str) else operator.index(run_id)
        except (TypeError, ValueError):
            raise ConfigError(f"a run id is a whole number (the run_id column of sync.runs()), not {run_id!r}") from None
        row = self.store.run_row(run_id)
        return SyncRun(self, int(run_id), self.store.sync_row(sync_id=row["sync_id"])["name"])

    @checked("Workspace.delete_sync")
    def delete_sync(self, name: str) -> None:
        """Remove a sync, its runs and its delivered state (the destination is untouched). Refused while
        a run of it is going on or paused (abort a paused one first)."""
        row = self.store.sync_row(name)
        self.store.require("delete", row["id"])
        unfinished = self.store.latest_run_id(row["id"], list(UNFINISHED_RUNS))  # one look: running or paused
        if unfinished is not None and self.store.run_row(unfinished)["status"] != RunStatus.PAUSED.value:
            raise SyncAlreadyRunning(f"sync {name!r} is running; abort or wait for the run before deleting it")
        if unfinished is not None:  # it holds batches aside (a replace rewrite) and staged rows: abort() gives them up
            raise SyncAlreadyRunning(f"cannot delete sync {name!r} while run {unfinished} of it is paused: finish it "
                                     f"(sync.run() resumes it) or abort it (ws.run({unfinished}).abort()), then delete it")
        self.store.delete_sync(row["id"])
        LIVE.pop((self.store.key, name), None)

    @checked("Workspace.purge")
    def purge(self, older_than: Any = None) -> dict[str, int]:
        """Remove stored records past their retention, for every sync: the records of runs that
        finished longer ago than ``older_than`` (``"30 days"``), else the sync's
        ``record_retention``, else this workspace's; returns how many each sync lost (``dfsync purge``)."""
        with use_settings(self.settings):
            counts, removed = {}, []
            for row in self.store.all_syncs():
                self.store.require("purge", row["id"])
                counts[row["name"]] = purge(Sync(self, row["name"]), older_than, compact_file=False)
                if counts[row["name"]]:
                    removed.append(row["id"])
            if removed:  # one compaction of the file for all of them
                compact(self.store, removed[0])
            return counts

    @checked("Workspace.sql")
    def sql(self, query: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        """Query the workspace tables (syncs, runs, events, batches, checks) with SQL: one statement
        that only reads, in a read-only transaction. A write, or a query that fails, raises
        ``WorkspaceQueryError`` (with the database's message) and changes nothing."""
        return self.store.sql(query, params)

    def scheduler(self, **kwargs: Any) -> Any:
        """Run due syncs on their schedules in a background thread (see ``dfsync.schedule``)."""
        import inspect

        from ._args import refuse_unknown
        from .schedule import Scheduler

        refuse_unknown("Workspace.scheduler()", kwargs, [p for p in inspect.signature(Scheduler).parameters if p != "ws"])
        sched = Scheduler(self, **kwargs)
        sched.start()
        return sched

    def __repr__(self) -> str:
        return f"<dfsync.Workspace {self.path!r}>"

    def _repr_html_(self) -> str:
        return _html_history.workspace_html(self)


