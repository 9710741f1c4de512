"""What users touch: :class:`Workspace`, :class:`Sync`, :class:`SyncRun`, :class:`Preview`.

These are thin handles over the workspace file: every property reads the store, so a
handle never goes stale and a run started in another process shows up here too.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import polars as pl
import psutil

from . import _html
from ._registry import ACTIVE, LIVE
from ._schema import check_destination_types, check_policy, schema_frame
from .destinations.base import Destination, destination_from_config
from .errors import (
    ConfigError,
    DfsyncError,
    SessionOnlyError,
    SourceError,
    SyncAlreadyRunning,
    SyncDisabledError,
)
from .mapping import Mapping
from .run import Preview, SyncRun, _results_frame
from .runner import Runner, delivered_state, sync_lock
from .sources.base import Source, source_from_config
from .states import DestinationMode, RunStatus, SyncMode, SyncStatus
from .store import open_store, owner_token

__all__ = ["Preview", "Sync", "SyncRun", "Workspace"]  # SyncRun and Preview live in dfsync.run

DEFAULT_PATH = os.path.join(".dfsync", "workspace.duckdb")
ON_INVALID = ("fail", "skip", "warn")

_LIVE = LIVE
_ACTIVE = ACTIVE  # runs executing in this process (the widgets follow them)


def resolve_callback(ref: str, what: str) -> Callable[..., Any]:
    """Import a callback named as ``"package.module:function"``."""
    import importlib

    mod_name, _, attr = ref.partition(":")
    try:
        fn = importlib.import_module(mod_name)
        for part in attr.split("."):
            fn = getattr(fn, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{what}={ref!r} cannot be imported ({exc}); write it as 'package.module:function'") from None
    if not attr or not callable(fn):
        raise ConfigError(f"{what}={ref!r} is not a callable; write it as 'package.module:function'")
    return fn  # type: ignore[return-value]


class _LazyCallback:
    """A stored callback reference, imported when the run ends."""

    def __init__(self, ref: str, what: str) -> None:
        self.ref, self.what = ref, what

    def __call__(self, run: Any) -> Any:
        return resolve_callback(self.ref, self.what)(run)

    def __repr__(self) -> str:
        return f"<callback {self.ref}>"


def _record_schema(source: Source, mapper: Mapping, keys: list[str], cursor_field: str | None,
                   what: str = "") -> pl.Schema:
    """The records' schema (after mapping); the primary key and cursor must be among its fields."""
    try:
        src_schema = source.schema()
    except DfsyncError:
        raise
    except Exception as exc:
        raise SourceError(f"could not read the schema of {source.describe()}: {str(exc).splitlines()[0]}") from exc
    schema = mapper.validate(src_schema)
    fields = list(schema.names())
    missing = [k for k in keys if k not in fields]
    if missing:
        raise ConfigError(
            f"primary_key {missing[0]!r} is not a field of the records{what}; the fields (after mapping) are: "
            f"{', '.join(fields)}")
    if cursor_field and cursor_field not in fields:
        raise ConfigError(f"cursor_field {cursor_field!r} is not a field of the records{what}; "
                          f"the fields are: {', '.join(fields)}")
    return schema


def _owner_alive(ws_key: str) -> Callable[[int, int, str, str], bool]:
    me = owner_token()
    host = socket.gethostname()

    def alive(run_id: int, pid: int, owner_host: str, token: str) -> bool:
        if token == me:
            return (ws_key, run_id) in _ACTIVE
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

    def __init__(self, path: str | os.PathLike[str] | None = None, *, busy_timeout: float = 30.0,
                 create: bool = True) -> None:
        """Open the workspace at ``path`` (made if missing; ``create=False``: open only an existing
        one). A DuckDB file holding other tables is refused (``WorkspaceError``) and left unchanged."""
        self.store = open_store(os.fspath(path) if path is not None else DEFAULT_PATH,
                                busy_timeout=busy_timeout, create=create)
        self.path = self.store.path  # a postgresql:// URI keeps an env:NAME password, never a literal one
        self.recover()

    # .............................................................. housekeeping
    def recover(self) -> list[tuple[int, str, str]]:
        """Move runs whose process died: in_progress -> paused, earlier states -> failed."""
        return self.store.recover_orphans(_owner_alive(self.store._key))

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
        batch_size: int = 100_000,
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
    ) -> Sync:
        """Define a sync (or, with the same name, change its definition: a new version is recorded).

        Everything is validated here, so a bad setting fails now rather than mid-run.

        >>> sync = ws.create_sync("customers", source=dfsync.sources.files("data/customers_v1.parquet"),
        ...     destination=dfsync.destinations.duckdb("warehouse.duckdb", table="customers"),
        ...     primary_key="id")
        """
        if not isinstance(name, str) or not name.strip():
            raise ConfigError("a sync needs a non-empty name")
        if if_exists not in ("update", "error"):
            raise ConfigError("if_exists must be 'update' (change the existing sync) or 'error'")
        if not isinstance(source, Source):
            raise ConfigError(f"source= must be a dfsync source (dfsync.sources.files/frame/duckdb_query/database), not {type(source).__name__}")
        if not isinstance(destination, Destination):
            raise ConfigError(f"destination= must be a dfsync destination (dfsync.destinations.duckdb/parquet/postgres/sqlite/http), not {type(destination).__name__}")
        policy = check_policy(schema)
        smode = SyncMode.parse(sync_mode, "sync_mode")
        dmode = DestinationMode.parse(destination_mode, "destination_mode")
        if on_invalid not in ON_INVALID:
            raise ConfigError(f"unknown on_invalid {on_invalid!r}; choose one of {', '.join(map(repr, ON_INVALID))}")
        keys = [primary_key] if isinstance(primary_key, str) else list(primary_key or [])
        if not keys or not all(isinstance(k, str) and k for k in keys):
            raise ConfigError("primary_key must be a column name or a list of column names (as sent, after mapping)")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, not {batch_size!r}")
        if isinstance(max_failed_rows, bool) or not isinstance(max_failed_rows, (int, float)) or max_failed_rows < 0 \
                or (isinstance(max_failed_rows, float) and max_failed_rows >= 1 and not max_failed_rows.is_integer()):
            raise ConfigError("max_failed_rows must be a row count (int >= 0) or a fraction of sent rows (0.0 to 1.0)")
        callbacks = {"on_success": on_success, "on_failure": on_failure, "on_paused": on_paused}
        for cb_name, cb in callbacks.items():
            if isinstance(cb, str):
                resolve_callback(cb, cb_name)  # "package.module:function" — fail now if it does not import
            elif cb is not None and not callable(cb):
                raise ConfigError(f"{cb_name} must be a callable receiving the SyncRun, or a "
                                  f"'package.module:function' string (which also works from the CLI and scheduler)")
        if failed_rows_alert is not None and (isinstance(failed_rows_alert, bool) or
                                              not isinstance(failed_rows_alert, (int, float)) or failed_rows_alert < 0):
            raise ConfigError("failed_rows_alert must be a row count (int >= 0) or a fraction of sent rows (0.0 to 1.0)")
        if smode == SyncMode.INCREMENTAL and not cursor_field:
            raise ConfigError("sync_mode='incremental' needs cursor_field='<column>' (e.g. an updated_at timestamp)")
        if smode == SyncMode.INCREMENTAL and dmode in (DestinationMode.MIRROR, DestinationMode.REPLACE):
            raise ConfigError(
                f"destination_mode={dmode.value!r} needs sync_mode='full_refresh': an incremental read cannot "
                f"see rows deleted from the source. Use 'upsert' with incremental syncs.")
        mapper = Mapping(mapping)
        record_schema = _record_schema(source, mapper, keys, cursor_field)
        fields = list(record_schema.names())
        window: dict[str, Any] = {}
        if (lookback is not None or initial_cursor is not None) and smode != SyncMode.INCREMENTAL:
            raise ConfigError("lookback= and initial_cursor= are for sync_mode='incremental' (with cursor_field=)")
        if cursor_field and smode == SyncMode.INCREMENTAL:
            from ._window import check_window

            window = check_window(cursor_field, record_schema[cursor_field], lookback, initial_cursor)
        destination.validate(fields, keys, dmode)
        check_destination_types(destination, record_schema)
        check_objs: list[Any] = []
        if checks is not None:
            from . import checks as checks_mod

            check_objs = checks_mod.normalize_checks(checks)
            checks_mod.validate_checks(check_objs, fields)
            if any(c.kind.startswith("gx:") for c in check_objs):
                from . import gx

                gx.check_arguments(check_objs, pl.DataFrame(schema=record_schema).to_pandas())
        next_run = None
        if schedule is not None:
            from .schedule import parse_schedule

            next_run = parse_schedule(schedule).next_after(datetime.now().astimezone())
        definition = {
            "source": {"kind": source.kind, **source.config()},
            "destination": {"kind": destination.kind, **destination.config()},
            "primary_key": keys,
            "mapping": mapper.config(),
            "sync_mode": smode.value,
            "cursor_field": cursor_field,
            "destination_mode": dmode.value,
            "checks": [c.config() for c in check_objs],
            "on_invalid": on_invalid,
            "max_failed_rows": max_failed_rows,
            "batch_size": batch_size,
            "schedule": schedule,
            "failed_rows_alert": failed_rows_alert,
            "allow_empty": allow_empty,
            "schema": policy,
            "callbacks": {k: v for k, v in callbacks.items() if isinstance(v, str)},
            **window,  # lookback / initial_cursor, only when set (older definitions stay equal)
        }
        state_key = json.dumps({"destination": destination.identity(), "primary_key": keys})
        # only this process can run it: an in-memory frame, a literal secret / lambda in the destination,
        # or a GX action with a literal secret or a class defined in __main__
        session_only = bool(source.session_only or getattr(destination, "session_only", False)
                            or any(getattr(c, "session_only", False) for c in check_objs))
        store = self.store
        with store.lease():  # one workspace connection for the lookups and the write, not four
            if store.sync_exists(name):
                old = store.sync_row(name)
                changed = [k for k in sorted(set(definition) | set(old["definition"]))
                           if definition.get(k) != old["definition"].get(k)]
                if if_exists == "error":
                    what = (f"with a different definition ({', '.join(changed)} differ)" if changed
                            else "with this definition")
                    raise ConfigError(
                        f"a sync named {name!r} already exists {what}. if_exists='update' (the default) stores "
                        f"the new definition as its next version and keeps what it delivered, so only changes "
                        f"are sent; or pick another name, or ws.delete_sync({name!r}) first")
                version, reset = store.update_definition(old["id"], definition, state_key, schedule, next_run,
                                                         session_only)
                if version != old["definition_version"]:
                    import warnings

                    then = ("the destination or primary key changed, so every row is sent again once" if reset
                            else "what it delivered is kept, so only changes are sent")
                    warnings.warn(
                        f"sync {name!r} already existed: its definition changed ({', '.join(changed) or 'schedule'}) "
                        f"and is now version {version}; {then}. (if_exists='update' does this; "
                        f"if_exists='error' refuses a name in use.)", stacklevel=2)
            else:
                store.create_sync(name, definition, state_key, schedule, next_run, session_only)
            _LIVE[(store._key, name)] = {
                "source": source, "destination": destination, "checks": check_objs, "mapping": mapper,
                **{k: v for k, v in callbacks.items() if v is not None and not isinstance(v, str)},
            }
            return Sync(self, name)

    def sync(self, name: str) -> Sync:
        """An existing sync by name (``SyncNotFoundError`` lists the names that exist)."""
        self.store.sync_row(name)
        return Sync(self, name)

    def syncs(self) -> pl.DataFrame:
        """One row per sync: status, source and destination kinds, schedule, last run."""
        return self.store.syncs_frame()

    def runs(self, limit: int | None = None) -> pl.DataFrame:
        """Every run of every sync, newest first, with counters."""
        return self.store.runs_frame(limit=limit)

    def run(self, run_id: int) -> SyncRun:
        """A run by id (as shown in ``sync.runs()``)."""
        return self._run_handle(int(run_id))

    def _run_handle(self, run_id: int) -> SyncRun:
        row = self.store.run_row(run_id)
        name = self.store.sync_row(sync_id=row["sync_id"])["name"]
        return SyncRun(self, run_id, name)

    def delete_sync(self, name: str) -> None:
        """Remove a sync, its runs and its delivered state (the destination is untouched)."""
        row = self.store.sync_row(name)
        if self.store.latest_run_id(row["id"], ["started", "querying", "queued", "in_progress"]):
            raise SyncAlreadyRunning(f"sync {name!r} is running; abort or wait for the run before deleting it")
        self.store.delete_sync(row["id"])
        _LIVE.pop((self.store._key, name), None)

    def sql(self, query: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        """Query the workspace tables (syncs, runs, events, batches, checks) with SQL."""
        with self.store.connect() as con:
            return pl.from_arrow(con.sql(query, params=list(params) if params else None).to_arrow_table())  # type: ignore[return-value]

    def scheduler(self, **kwargs: Any) -> Any:
        """Run due syncs on their schedules in a background thread (see ``dfsync.schedule``)."""
        from .schedule import Scheduler

        sched = Scheduler(self, **kwargs)
        sched.start()
        return sched

    def __repr__(self) -> str:
        return f"<dfsync.Workspace {self.path!r}>"

    def _repr_html_(self) -> str:
        return _html.workspace_html(self)


class Sync:
    """A saved sync definition; run it with :meth:`run`."""

    def __init__(self, workspace: Workspace, name: str) -> None:
        self.workspace = workspace
        self.name = name
        self._one_run_source: Source | None = None  # source= of one run or preview
        self._load()

    def _load(self) -> None:
        row = self.workspace.store.sync_row(self.name)
        self.id: int = row["id"]
        d = row["definition"]
        self.definition = d
        self.definition_version: int = row["definition_version"]
        live = _LIVE.get((self.workspace.store._key, self.name), {})
        self.primary_key: list[str] = list(d["primary_key"])
        self.sync_mode = SyncMode(d["sync_mode"])
        self.cursor_field: str | None = d.get("cursor_field")
        self.destination_mode = DestinationMode(d["destination_mode"])
        self.on_invalid: str = d["on_invalid"]
        self.max_failed_rows = d["max_failed_rows"]
        self.batch_size: int = d["batch_size"]
        self.schedule: str | None = d.get("schedule")
        self.failed_rows_alert = d.get("failed_rows_alert")
        self.allow_empty: bool = bool(d.get("allow_empty"))
        self.schema_policy: str = d.get("schema") or "evolve"
        stored = d.get("callbacks") or {}
        for cb_name in ("on_success", "on_failure", "on_paused"):
            cb = live.get(cb_name)
            if cb is None and cb_name in stored:
                cb = _LazyCallback(stored[cb_name], cb_name)
            setattr(self, cb_name, cb)
        self._live = live

    @property
    def source(self) -> Source:
        if self._one_run_source is not None:
            return self._one_run_source
        if "source" in self._live:
            return self._live["source"]
        return source_from_config(self.definition["source"])

    @property
    def destination(self) -> Destination:
        if "destination" not in self._live:
            self._live["destination"] = destination_from_config(self.definition["destination"])
        return self._live["destination"]

    @property
    def mapping(self) -> Mapping:
        if "mapping" not in self._live:
            self._live["mapping"] = Mapping.from_config(self.definition.get("mapping"))
        return self._live["mapping"]

    @property
    def checks(self) -> list[Any]:
        if "checks" not in self._live:
            cfg = self.definition.get("checks") or []
            if cfg:
                from . import checks as checks_mod

                self._live["checks"] = checks_mod.checks_from_config(cfg)
            else:
                self._live["checks"] = []
        return self._live["checks"]

    @property
    def status(self) -> SyncStatus:
        return SyncStatus(self.workspace.store.sync_row(self.name)["status"])

    @property
    def session_only(self) -> bool:
        return bool(self.workspace.store.sync_row(self.name)["session_only"])

    @property
    def next_run_at(self) -> datetime | None:
        return self.workspace.store.sync_row(self.name)["next_run_at"]

    # .............................................................. running
    def run(self, *, progress: bool | Callable[[str, dict[str, Any]], Any] = True, background: bool = False,
            trigger: str = "manual", source: Any = None, raise_on_failure: bool = False) -> SyncRun:
        """Run the sync (or resume its paused run) and return the run.

        Blocking by default; ``background=True`` returns at once and the run goes on in a
        thread (``run.wait()``). ``progress`` shows a live panel in a notebook and a progress
        bar in a terminal; ``progress=False`` is silent; a callable ``(status, run_row)`` is called
        at every state change and batch instead.

        ``source=`` (a frame or a dfsync source) is read by this run instead of the sync's own
        source; the saved definition is unchanged and its mapping, keys and checks still apply.
        ``raise_on_failure=True`` raises :class:`dfsync.SyncRunFailed` when the run ends
        ``failed`` (a ``paused`` run is not a failure: the next run resumes it).
        """
        one_run = self._source_for_run(source)
        with self.workspace.store.lease():
            run = self._run(progress=progress, background=background, trigger=trigger, source=one_run)
        if raise_on_failure:
            if background:
                run.wait()
            if run.status == RunStatus.FAILED:
                run.raise_for_status()
        return run

    def _source_for_run(self, source: Any) -> Source | None:
        """``source=`` of run/preview as a checked Source (a frame is wrapped), or None."""
        if source is None:
            return None
        if not isinstance(source, Source):
            from .sources import frame

            source = frame(source)
        self._load()
        _record_schema(source, self.mapping, self.primary_key, self.cursor_field,
                       what=f" read from {source.describe()} (source= of this run)")
        return source

    def _with_source(self, source: Source | None) -> Sync:
        """This sync reading ``source`` for one run (or preview): a handle of its own."""
        if source is None:
            return self
        other = Sync(self.workspace, self.name)
        other._one_run_source = source
        return other

    def _run(self, *, progress: Any, background: bool, trigger: str, source: Source | None = None) -> SyncRun:
        ws, store = self.workspace, self.workspace.store
        self._load()
        if self.status == SyncStatus.DISABLED:
            raise SyncDisabledError(f"sync {self.name!r} is disabled; call sync.enable() to run it again")
        if self.session_only and "source" not in self._live and source is None:
            raise SessionOnlyError(
                f"sync {self.name!r} can only run in the Python session that created it: it reads an in-memory "
                f"frame, its destination holds a literal secret or a function, or a GX checkpoint action does. "
                f"Run it there, or recreate it with a files, duckdb_query or database source, secrets written "
                f"as 'env:NAME' (GX actions: '${{NAME}}') and GX action classes in an importable module")
        if source is None:
            self.source  # noqa: B018 - fail now if the source cannot be rebuilt
        lock = sync_lock(store, self.id)
        if not lock.acquire(blocking=False):
            raise SyncAlreadyRunning(f"sync {self.name!r} is already running in this process; wait for it (run.wait())")
        try:
            ws.recover()
            paused = store.latest_run_id(self.id, ["paused"])
            if paused is not None:
                store.claim_run(paused, self.id)
                run_id = paused
            else:
                run_id = store.create_run(self.id, self.definition_version, trigger)
        except BaseException:
            lock.release()
            raise
        reporter = None
        if callable(progress):
            reporter = progress  # a callable(status, run_row) of the caller's own
        elif progress:
            from ._progress import make_reporter

            reporter = make_reporter(self, run_id, background=background)
        if source is not None:
            store.note(self.id, run_id, f"this run reads {source.describe()} (sync.run(source=...)); "
                       f"the saved definition is unchanged")
        runner = Runner(self._with_source(source), run_id, resume=paused is not None, progress=reporter)
        key = (store._key, run_id)

        def work() -> None:
            try:
                with store.lease():
                    runner.execute()
            finally:
                _ACTIVE.pop(key, None)
                lock.release()
                if reporter is not None and hasattr(reporter, "close"):
                    reporter.close()

        if background:
            thread = threading.Thread(target=work, name=f"dfsync-run-{run_id}", daemon=True)
            _ACTIVE[key] = (runner, thread)
            thread.start()
        else:
            _ACTIVE[key] = (runner, None)
            work()
        return SyncRun(ws, run_id, self.name)

    def preview(self, *, source: Any = None) -> Preview:
        """Query, diff and check like a run, but send nothing and change no state.

        ``source=`` previews another frame or source against this sync (as ``run(source=)``).
        """
        one_run = self._source_for_run(source)
        if one_run is not None:
            return self._with_source(one_run).preview()
        from .staging import Staging

        self._load()
        store = self.workspace.store
        staging = Staging()
        try:
            result = staging.load(
                self.source, self.mapping, self.primary_key, cursor=self._read_from(),
                detect_deletes=self.sync_mode == SyncMode.FULL_REFRESH,
                state=delivered_state(store, self.id, self.primary_key),
                quarantine_keys=True, keep_unchanged=True)
            validation = None
            if self.checks:
                from . import checks as checks_mod

                evaluation = checks_mod.evaluate_staged(staging, self.checks)
                if self.on_invalid != "warn":  # warn sends failing rows: the counts say what a run would do
                    staging.add_invalid(evaluation.failures_table, evaluation.dataset_failures)
                validation = _results_frame(evaluation.results) if evaluation.results else None
            c = staging.valid_counts()  # quarantined rows count once, as invalid
            counts = {"insert": c["insert"], "update": c["update"],
                      "delete": c["delete"] if self.destination_mode in (DestinationMode.MIRROR, DestinationMode.REPLACE) else 0,
                      "unchanged": c["unchanged"], "invalid": c["invalid"]}
            records = pl.from_arrow(staging.records(include_unchanged=True))
            if counts["delete"] == 0 and c["delete"]:
                records = records.filter(pl.col("_action") != "delete")
            sends_unchanged = self.destination_mode == DestinationMode.REPLACE
            skips_updates = self.destination_mode == DestinationMode.INSERT
            records = records.drop("_batch", "_error").with_columns(
                pl.when(pl.col("_status") == "invalid").then(pl.lit("invalid"))
                .when((pl.col("_action") == "unchanged") & (not sends_unchanged)).then(pl.lit("unchanged"))
                .when((pl.col("_action") == "update") & skips_updates).then(pl.lit("skipped"))
                .otherwise(pl.lit("pending")).alias("_status"))
            preview = Preview(self.name, counts, records, validation, result.key_problems)  # type: ignore[arg-type]
            from ._changes import attach_samples

            attach_samples(preview, self)
            return preview
        finally:
            staging.close()
            import shutil

            shutil.rmtree(staging.temp_dir, ignore_errors=True)

    def validate(self) -> Any:
        """Every check over the whole current source; nothing sent, no state changed.

        Returns a ``ValidationResult``: ``.ok``, ``.checks`` (per-check summary with its scope)
        and ``.invalid`` (the failing rows), e.g. to see which delivered rows a new check rejects.
        """
        from ._validate import validate

        self._load()
        return validate(self)

    def _read_from(self) -> Any:
        """The cursor condition the next incremental read uses (lookback / initial_cursor applied)."""
        from ._window import read_from

        return read_from(self.definition, self.cursor)

    @property
    def cursor(self) -> Any:
        """The last delivered cursor value (incremental syncs), or None."""
        from .runner import _cursor_from_json

        if self.sync_mode != SyncMode.INCREMENTAL:
            return None
        return _cursor_from_json(self.workspace.store.sync_row(self.name)["cursor_value"])

    # .............................................................. control
    def reset(self) -> None:
        """Forget what was delivered and the cursor: the next run is a first load (every row is
        sent again; an incremental sync starts at ``initial_cursor``). The destination is not
        touched. An event records who reset it. Refused while a run is going on or paused."""
        import getpass

        try:
            user = getpass.getuser()
        except Exception:  # no user name (some containers): the process still says who
            user = "unknown user"
        self.workspace.store.reset_delivered(
            self.id, f"delivered state and cursor forgotten by {user} on {socket.gethostname()} "
                     f"(pid {os.getpid()}): the next run is a first load; the destination was not touched")

    def disable(self) -> None:
        """Stop the sync from running (manually or on schedule); a transferring run pauses."""
        store = self.workspace.store
        store.set_sync_status(self.id, "disable", "disabled by the user")
        active = store.latest_run_id(self.id, ["in_progress"])
        if active is not None:
            entry = _ACTIVE.get((store._key, active))
            if entry is not None:
                entry[0].stop_event.set()

    def enable(self) -> None:
        """Allow the sync to run again; its status goes back to what its last finished run says."""
        self.workspace.store.set_sync_status(self.id, "enable", "enabled by the user")

    def runs(self, limit: int | None = None) -> pl.DataFrame:
        """Run history, newest first: status, times, counters, definition version, error."""
        return self.workspace.store.runs_frame(self.id, limit)

    def last_run(self) -> SyncRun | None:
        rid = self.workspace.store.latest_run_id(self.id)
        return SyncRun(self.workspace, rid, self.name) if rid else None

    def current_run(self) -> SyncRun | None:
        """The run that is going on or paused, if any."""
        rid = self.workspace.store.latest_run_id(self.id, ["started", "querying", "queued", "in_progress", "paused"])
        return SyncRun(self.workspace, rid, self.name) if rid else None

    def events(self) -> pl.DataFrame:
        return self.workspace.store.events_frame(sync_id=self.id)

    def schema(self) -> pl.DataFrame:
        """The destination's fields as the sync knows them: field, type, nullable, key, in_source.

        Before the first delivery: the fields the source would send now (after mapping).
        ``in_source`` is False for a field the source no longer sends (the destination keeps it).
        """
        return schema_frame(self)

    def delivered(self) -> pl.DataFrame:
        """The delivered state: key and fingerprint of every row the destination confirmed."""
        tbl = delivered_state(self.workspace.store, self.id, self.primary_key)
        return pl.from_arrow(tbl) if tbl is not None else pl.DataFrame()  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (f"<dfsync.Sync {self.name!r} {self.status.value}: {self.source.describe() if 'source' in self._live else self.definition['source']['kind']}"
                f" -> {self.destination.describe()} [{self.destination_mode.value}]>")

    def _repr_html_(self) -> str:
        return _html.sync_html(self)
