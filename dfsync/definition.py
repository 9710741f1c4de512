"""A sync's definition as plain data: what ``create_sync`` checks and the workspace stores.

:class:`SyncDefinition` holds the settings of one sync (source, destination, primary key,
mapping, modes, checks, thresholds, schedule, callbacks). ``validate()`` checks every
argument the way ``Workspace.create_sync`` promises (a bad setting fails at definition time,
not mid-run) and puts each in its stored form; ``to_json()`` is the JSON kept in the
workspace's ``syncs.definition`` column and ``from_json()`` reads it back. The runner
receives a definition, never the user-facing handles.

>>> d = SyncDefinition(source=dfsync.sources.files("data/customers_v1.parquet"),
...     destination=dfsync.destinations.duckdb("warehouse.duckdb", table="customers"),
...     primary_key="id").validate()
>>> d.to_json()["primary_key"]
['id']
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from ._callbacks import module_allowed, not_allowed_message, parse_ref, resolve_callback
from ._schema import check_destination_types, check_policy
from ._sensitive import check_sensitive, parse_retention
from .destinations.base import Destination, destination_from_config
from .errors import ConfigError, DfsyncError, SourceError
from .mapping import Mapping
from .sources.base import Source, source_from_config
from .states import DestinationMode, SyncMode, check_failed_rows_setting

ON_INVALID = ("fail", "skip", "warn")
CALLBACKS = ("on_success", "on_failure", "on_paused")
MAX_PARTITIONS = 4096
#: built from the stored configs on first use when a definition is read back (a rebuilt source
#: may need a frame of another session, GX checks a heavy import)
_BUILT_ON_USE = ("source", "destination", "checks")


def record_schema(source: Source, mapper: Mapping, keys: list[str], cursor_field: str | None,
                  what: str = "") -> pl.Schema:
    """The records' schema (after mapping); the primary key and cursor must be among its fields."""
    try:
        src_schema = source.schema()
    except DfsyncError:
        raise
    except Exception as exc:
        msg = str(exc).splitlines()[0]
        if re.search(r"valid utf-?8", msg, re.IGNORECASE):  # the source names the file and line, says what to do
            raise SourceError(source.read_error(msg).replace("could not read ", "could not read the schema of ", 1)) from exc
        raise SourceError(f"could not read the schema of {source.describe()}: {msg}") from exc
    schema = mapper.validate(src_schema)
    fields = list(schema.names())
    from ._stage_input import no_case_clash, refuse_reserved

    no_case_clash(refuse_reserved(fields))  # at create_sync, not mid-run: 'Name' and 'name' cannot both be staged
    missing = [k for k in keys if k not in fields]
    if missing:
        raise ConfigError(
            f"primary_key {missing[0]!r} is not a field of the records{what}; the fields (after mapping) are: "
            f"{', '.join(fields)}")
    if cursor_field and cursor_field not in fields:
        raise ConfigError(f"cursor_field {cursor_field!r} is not a field of the records{what}; "
                          f"the fields are: {', '.join(fields)}")
    return schema


@dataclass(kw_only=True, eq=False)
class SyncDefinition:
    """Everything a sync's saved definition holds.

    Built from ``create_sync``'s arguments, a field may hold what the user passed (a column
    name or a list for ``primary_key``, a dict for ``mapping``, a string for the modes);
    :meth:`validate` checks them all and puts each in its stored form (a list of keys, a
    :class:`~dfsync.mapping.Mapping`, the mode enums, check objects, the JSON form of
    ``lookback``/``initial_cursor``). A callback is a callable of this session or a stored
    ``"package.module:function"`` reference. A definition read back with :meth:`from_json`
    builds its source, destination and checks on first use.
    """

    source: Source
    destination: Destination
    primary_key: Any
    mapping: Any = None
    sync_mode: Any = SyncMode.FULL_REFRESH
    cursor_field: str | None = None
    destination_mode: Any = DestinationMode.UPSERT
    checks: Any = field(default_factory=list)
    on_invalid: str = "fail"
    max_failed_rows: int | float = 0
    batch_size: int | None = None  # None: the destination's own best size (Destination.default_batch_size)
    schedule: str | None = None
    failed_rows_alert: int | float | None = None
    allow_empty: bool = False
    schema: str = "evolve"
    on_success: Any = None
    on_failure: Any = None
    on_paused: Any = None
    lookback: Any = None
    initial_cursor: Any = None
    #: buckets by a stable hash of the primary key (dfsync._partition); None: one run, no buckets
    partitions: int | None = None
    sensitive: Any = field(default_factory=list)  # fields kept as keyed hashes in stored records
    record_retention: Any = None  # "30 days": records of runs older than that are purged

    # .............................................................. validation
    def validate(self) -> SyncDefinition:
        """Check every setting (``ConfigError`` naming it and the way out) and put each in its
        stored form. Reads the source's schema, and asks the destination whether it takes the
        fields, keys and mode. Returns the definition."""
        source, destination = self.source, self.destination
        if not isinstance(source, Source) and type(source).__module__.split(".")[0] in ("polars", "pandas", "pyarrow"):
            from .sources import (
                frame,  # a frame given as it is: read each run, like sources.frame(df)
            )

            source = self.source = frame(source)
        if not isinstance(source, Source):
            raise ConfigError(f"source= must be a dfsync source (dfsync.sources.files/frame/duckdb_query/database) or a polars, pandas or Arrow frame, not {type(source).__name__}")
        if not isinstance(destination, Destination):
            raise ConfigError(f"destination= must be a dfsync destination (dfsync.destinations.duckdb/parquet/postgres/sqlite/http), not {type(destination).__name__}")
        self.schema = check_policy(self.schema)
        smode = self.sync_mode = SyncMode.parse(self.sync_mode, "sync_mode")
        dmode = self.destination_mode = DestinationMode.parse(self.destination_mode, "destination_mode")
        if self.on_invalid not in ON_INVALID:
            raise ConfigError(f"unknown on_invalid {self.on_invalid!r}; choose one of {', '.join(map(repr, ON_INVALID))}")
        pk = self.primary_key
        keys = self.primary_key = [pk] if isinstance(pk, str) else list(pk) if isinstance(pk, list | tuple) else [None]
        if not keys or not all(isinstance(k, str) and k for k in keys):
            raise ConfigError("primary_key must be a column name or a list of column names (as sent, after mapping)")
        if len(set(keys)) < len(keys):  # ["id", "id"]: staging and every destination refuse the column twice
            twice = sorted({k for k in keys if keys.count(k) > 1})
            raise ConfigError(f"primary_key names {', '.join(map(repr, twice))} more than once ({keys!r}); "
                              f"name each key column once")
        bs = self.batch_size
        if bs is not None and (not isinstance(bs, int) or isinstance(bs, bool) or bs < 1):
            raise ConfigError(f"batch_size must be a positive integer, not {bs!r}")
        check_failed_rows_setting(self.max_failed_rows, "max_failed_rows")
        for cb_name in CALLBACKS:
            cb = getattr(self, cb_name)
            if isinstance(cb, str):  # "package.module:function": fail now if it does not import
                if module_allowed(parse_ref(cb, cb_name)[0]):
                    resolve_callback(cb, cb_name)
                else:  # never import code this host does not allow, not even to check it
                    warnings.warn(not_allowed_message(cb, cb_name) + "; hosts that run this sync must "
                                  "allow it", stacklevel=3)
            elif cb is not None and not callable(cb):
                raise ConfigError(f"{cb_name} must be a callable receiving the SyncRun, or a "
                                  f"'package.module:function' string (which also works from the CLI and scheduler)")
        if self.failed_rows_alert is not None:
            check_failed_rows_setting(self.failed_rows_alert, "failed_rows_alert")
        if smode == SyncMode.INCREMENTAL and not self.cursor_field:
            raise ConfigError("sync_mode='incremental' needs cursor_field='<column>' (e.g. an updated_at timestamp)")
        if smode == SyncMode.INCREMENTAL and dmode.removes_missing:
            raise ConfigError(
                f"destination_mode={dmode.value!r} needs sync_mode='full_refresh': an incremental read cannot "
                f"see rows deleted from the source. Use 'upsert' with incremental syncs.")
        mapper = self.mapping = self.mapping if isinstance(self.mapping, Mapping) else Mapping(self.mapping)
        schema = record_schema(source, mapper, keys, self.cursor_field)
        fields = list(schema.names())
        if (self.lookback is not None or self.initial_cursor is not None) and smode != SyncMode.INCREMENTAL:
            raise ConfigError("lookback= and initial_cursor= are for sync_mode='incremental' (with cursor_field=)")
        if self.cursor_field and smode == SyncMode.INCREMENTAL:
            from ._window import check_window

            if mapper.source_column(self.cursor_field) is None:
                raise ConfigError(
                    f"cursor_field {self.cursor_field!r} is computed by the mapping; an incremental run reads "
                    f"the source from its last cursor before mapping, so the cursor must be a source column, "
                    f"taken as it is or renamed (mapping={{{self.cursor_field!r}: 'updated_at'}}). Compute it in "
                    f"the source (a query), or choose another cursor_field")

            problem = source.cursor_problem(mapper.source_column(self.cursor_field))
            if problem:
                raise ConfigError(problem)
            window = check_window(self.cursor_field, schema[self.cursor_field], self.lookback, self.initial_cursor,
                                  source=source, column=mapper.source_column(self.cursor_field))
            self.lookback, self.initial_cursor = window.get("lookback"), window.get("initial_cursor")
        self.sensitive = check_sensitive(self.sensitive, fields, keys,
                                         self.cursor_field if smode == SyncMode.INCREMENTAL else None)
        self.record_retention = parse_retention(self.record_retention)
        destination.validate(fields, keys, dmode)
        check_destination_types(destination, schema)
        check_objs: list[Any] = []
        if self.checks is not None and not (isinstance(self.checks, list) and not self.checks):
            from . import checks as checks_mod

            check_objs = checks_mod.normalize_checks(self.checks)
            checks_mod.validate_checks(check_objs, fields)
            checks_mod.check_types(check_objs, schema)
            if any(c.kind.startswith("gx:") for c in check_objs):
                from . import gx

                gx.check_arguments(check_objs, pl.DataFrame(schema=schema).to_pandas())
        self.checks = check_objs
        if self.schedule is not None:
            self.next_run_after(datetime.now().astimezone())  # fail now on a schedule that does not parse
        n = self.partitions
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_PARTITIONS):
            raise ConfigError(f"partitions must be a whole number from 1 to {MAX_PARTITIONS} (the buckets a run "
                              f"splits its rows into by a hash of the primary key), or None; not {n!r}")
        return self

    def next_run_after(self, now: datetime) -> datetime | None:
        """When the schedule next runs the sync after ``now`` (None: run by hand only)."""
        if self.schedule is None:
            return None
        from .schedule import parse_schedule

        return parse_schedule(self.schedule).next_after(now)

    # .............................................................. derived
    @property
    def session_only(self) -> bool:
        """Only this process can run it: an in-memory frame, a literal secret (a password in a
        source's or destination's URI, a Delta storage option, an HTTP token) or a lambda in the
        destination, or a GX action with a literal secret or a class defined in ``__main__``."""
        return bool(self.source.session_only or getattr(self.source, "literal_secret", False)
                    or getattr(self.destination, "literal_secret", False)
                    or any(getattr(c, "session_only", False) for c in self.checks) or self.mapping.session_only)

    def state_key(self) -> str:
        """What the delivered state belongs to: a change of it makes every row be sent again."""
        return json.dumps({"destination": self.destination.identity(), "primary_key": list(self.primary_key)})

    def cursor_column(self) -> str | None:
        """The source column the stored cursor is a value of (None: the sync keeps no cursor).
        Another one in a new version makes the old cursor meaningless: it is forgotten."""
        return stored_cursor_column(self.to_json())

    def live_objects(self) -> dict[str, Any]:
        """What only this session holds: the objects themselves and callable callbacks (the
        workspace keeps them per process, so handles of this session use them)."""
        return {"source": self.source, "destination": self.destination, "checks": self.checks,
                "mapping": self.mapping,
                **{k: v for k in CALLBACKS if (v := getattr(self, k)) is not None and not isinstance(v, str)}}

    def with_source(self, source: Source) -> SyncDefinition:
        """This definition reading ``source`` instead (one run's ``source=``); the rest is shared."""
        other = copy.copy(self)
        other.source = source
        return other

    # .............................................................. stored form
    def to_json(self) -> dict[str, Any]:
        """The JSON stored in the workspace (a validated definition, or one read back)."""
        stored = self.__dict__.get("_stored", {})

        def config(name: str) -> Any:
            if name in stored and name not in self.__dict__:  # not built: the stored config as it was
                return stored[name]
            obj = getattr(self, name)
            return [c.config() for c in obj] if name == "checks" else {"kind": obj.kind, **obj.config()}

        return {
            "source": config("source"),
            "destination": config("destination"),
            "primary_key": list(self.primary_key),
            "mapping": self.mapping.config(),
            "sync_mode": SyncMode(self.sync_mode).value,
            "cursor_field": self.cursor_field,
            "destination_mode": DestinationMode(self.destination_mode).value,
            "checks": config("checks"),
            "on_invalid": self.on_invalid,
            "max_failed_rows": self.max_failed_rows,
            "batch_size": self.batch_size,
            "schedule": self.schedule,
            "failed_rows_alert": self.failed_rows_alert,
            "allow_empty": self.allow_empty,
            "schema": self.schema,
            "callbacks": {k: v for k in CALLBACKS if isinstance(v := getattr(self, k), str)},
            # lookback / initial_cursor / partitions / sensitive / record_retention, only when set
            # (older definitions stay equal)
            **{k: v for k in ("lookback", "initial_cursor", "partitions", "sensitive", "record_retention")
               if (v := getattr(self, k)) is not None and v != []},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], live: dict[str, Any] | None = None) -> SyncDefinition:
        """A stored definition read back (definitions stored by earlier versions lack some keys:
        their defaults apply). ``live`` holds this session's objects (:meth:`live_objects`),
        used instead of rebuilding them; the rest are built from the stored configs on first use."""
        live = live or {}
        self = cls.__new__(cls)
        stored_callbacks = data.get("callbacks") or {}
        self.__dict__.update(
            _stored=data,
            primary_key=list(data["primary_key"]),
            mapping=live["mapping"] if "mapping" in live else Mapping.from_config(data.get("mapping")),
            sync_mode=SyncMode(data["sync_mode"]),
            cursor_field=data.get("cursor_field"),
            destination_mode=DestinationMode(data["destination_mode"]),
            on_invalid=data["on_invalid"],
            max_failed_rows=data["max_failed_rows"],
            batch_size=data["batch_size"],
            schedule=data.get("schedule"),
            failed_rows_alert=data.get("failed_rows_alert"),
            allow_empty=bool(data.get("allow_empty")),
            schema=data.get("schema") or "evolve",
            lookback=data.get("lookback"),
            initial_cursor=data.get("initial_cursor"),
            partitions=data.get("partitions"),
            sensitive=list(data.get("sensitive") or []),
            record_retention=data.get("record_retention"),
            **{k: live.get(k, stored_callbacks.get(k)) for k in CALLBACKS},
            **{k: live[k] for k in _BUILT_ON_USE if k in live},
        )
        return self

    def __getattr__(self, name: str) -> Any:
        # only reached when the attribute is missing: a definition read back builds its source,
        # destination and checks from the stored configs when asked for them (the latter two once)
        stored = self.__dict__.get("_stored")
        if stored is None or name not in _BUILT_ON_USE:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        if name == "source":  # built afresh on each use, as a new read (with_source() fixes one)
            return source_from_config(stored["source"])
        if name == "destination":
            value: Any = destination_from_config(stored["destination"])
        elif stored.get("checks"):
            from . import checks as checks_mod

            value = checks_mod.checks_from_config(stored["checks"])
        else:
            value = []
        self.__dict__[name] = value
        return value

    def __repr__(self) -> str:
        d = self.to_json()
        return (f"<dfsync.SyncDefinition {d['source']['kind']} -> {d['destination']['kind']} "
                f"[{d['sync_mode']}, {d['destination_mode']}] key {', '.join(d['primary_key'])}>")


def stored_cursor_column(data: dict[str, Any]) -> str | None:
    """:meth:`SyncDefinition.cursor_column` of a stored definition (an older version's too)."""
    field = data.get("cursor_field")
    if data.get("sync_mode") != SyncMode.INCREMENTAL.value or not field:
        return None
    entry = (data.get("mapping") or {}).get(field)
    if not entry:
        return field
    if "column" in entry:
        return entry["column"]
    try:  # pl.col("updated_at"), perhaps aliased
        return Mapping.from_config({field: entry}).source_column(field) or field
    except ConfigError:  # an entry this version cannot load: the stored entry itself tells versions apart
        return json.dumps(entry, sort_keys=True)
