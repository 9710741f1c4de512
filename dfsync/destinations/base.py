"""The small protocol every destination implements.

A destination is a *description* (picklable, JSON-configurable, no open connection);
``open(ctx)`` gives a :class:`DestinationSession` that lives for one run:

    session.prepare(schema)        create the table if missing, or check the records fit it
                                   (raise SchemaMismatchError before anything is sent)
    session.committed_batches()    the ledger: {batch_no: [keys the batch did NOT deliver]}
                                   for batches of this run the destination has committed
    session.write(batch)           apply one batch atomically *together with its ledger entry*;
                                   return a BatchResult naming rows that failed or were skipped
    session.holds_rows()           does the table exist with a row in it (None: cannot tell)?
    session.finish()               end of run: swap a replaced table / rewrite a file set
    session.close()

Row-level rejections are returned, not raised. A destination raises
``TransientDestinationError`` when an outage outlasted its retries (the run pauses) and
``DestinationError`` for terminal problems (the run fails).

A batch is an Arrow table of the records as sent (mapped columns) plus a ``_action``
column: ``insert``, ``update`` or ``delete``. The runner already applied the
destination mode's choice of what to send (insert mode never sends updates, only mirror
sends deletes, replace sends every row as ``insert``); the session decides *how*:
``insert`` rows are appended in insert/replace mode and upserted in upsert/mirror mode,
``update`` rows are upserted (update mode: updated where they exist, else skipped).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa

from .._arrow import holds, is_bytes, is_nested, refuse_struct_names, string_scalar
from .._kinds import Kinds
from ..errors import ConfigError, MissingDependencyError, SchemaMismatchError
from ..states import DestinationMode

__all__ = [
    "ACTION_COLUMN",
    "EXISTS_MESSAGE",
    "BatchResult",
    "Destination",
    "DestinationContext",
    "DestinationSession",
    "WriteBatch",
    "bisect_failures",
    "rows_where",
    "destination_from_config",
    "register_destination",
]

ACTION_COLUMN = "_action"
LEDGER_TABLE = "_dfsync_batches"
#: insert mode's one reason for a row whose key the destination already holds (a table that had
#: rows before the sync's first run, or a sync reset): the row is a failed row, not written, on
#: every destination and whether or not the table declares a key
EXISTS_MESSAGE = "a row with this key is already in the destination (insert mode only adds new keys)"


@dataclass(frozen=True)
class DestinationContext:
    """What a destination session knows about the run it serves."""

    sync_id: int
    sync_name: str
    run_id: int
    mode: DestinationMode
    primary_key: tuple[str, ...]
    #: the run read its source more than once (it resumed after its staged rows were lost), so
    #: two of its batches may carry the same key: the later batch's version is the one to keep
    requeried: bool = False
    #: the workspace's id ("" for runs begun before workspaces had one)
    workspace_id: str = ""
    #: the sync's schema policy: "evolve" adds missing columns and widens types without loss,
    #: "freeze" refuses any change of an existing table (see dfsync._schema)
    schema: str = "evolve"
    #: the epoch of this run's claim in the workspace (None: no fence). A SQL destination keeps the
    #: highest one in its ledger (fence row, batch_no -2) and refuses the commit of an older one: an
    #: owner stopped and taken over meanwhile cannot apply a batch after the new owner settled
    owner_epoch: int | None = None
    #: a look only (``dfsync._settle.notice_lost_rows``): one attempt to reach the destination, no
    #: retries. An outage is then waited out once, by the run's transfer, not twice
    look: bool = False

    @property
    def run_key(self) -> str:
        """This run's key in a destination's ledger: unique across workspaces."""
        base = f"{self.sync_name}#{self.sync_id}/{self.run_id}"
        return f"{base}@{self.workspace_id}" if self.workspace_id else base

    @property
    def run_tag(self) -> str:
        """A short, file- and header-safe form of ``run_key``."""
        base = f"s{self.sync_id}-r{self.run_id}"
        return f"{base}-w{self.workspace_id[:12]}" if self.workspace_id else base


@dataclass
class WriteBatch:
    batch_no: int
    data: pa.Table  # record columns + ACTION_COLUMN

    @property
    def num_rows(self) -> int:
        return self.data.num_rows

    def records(self) -> pa.Table:
        """The batch without the action column."""
        return self.data.drop_columns([ACTION_COLUMN])


@dataclass
class BatchResult:
    """Row-level outcome of one batch. Row numbers index ``WriteBatch.data``."""

    failed: dict[int, str] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)


class DestinationSession(ABC):
    #: how many batches may be written at once, each by a ``fork()`` of this session on a
    #: connection of its own (batches of one run never share a key, and each commits with
    #: its own ledger entry, so their order at the destination does not matter)
    parallel_writes: int = 1

    def __init__(self, destination: Destination, ctx: DestinationContext) -> None:
        self.destination = destination
        self.ctx = ctx
        #: (column, what prepare() did to it) for an existing table: added or widened columns, for the run's events
        self.schema_changes: list[tuple[str, str]] = []
        #: columns whose source type widened since the sync last delivered (set by the runner):
        #: prepare() widens them in an existing table where the database can
        self.widen_columns: set[str] = set()
        #: of those, the columns the sync delivered only NULLs to so far (polars' Null type): prepare()
        #: gives such a column the new type when it still holds only NULLs (dfsync._schema.plan_table)
        self.typed_columns: set[str] = set()

    def fork(self) -> DestinationSession:
        """A session for the same run, prepared like this one, on its own connection."""
        raise NotImplementedError(f"{type(self).__name__} writes one batch at a time")

    @abstractmethod
    def prepare(self, schema: pa.Schema) -> None: ...

    def committed_batches(self) -> dict[int, list[list[Any]]]:
        """Batches of this run the destination confirmed, with the keys they did not deliver.

        Destinations that cannot know (HTTP) return {}: in-flight batches are then sent
        again, and such a destination derives idempotency keys from the records themselves
        (not the batch number) so a receiver can recognise a repeat.
        """
        return {}

    @abstractmethod
    def write(self, batch: WriteBatch) -> BatchResult: ...

    def finish(self) -> None:  # noqa: B027 - optional hook
        """Called once when every batch of the run was written."""

    def abandon(self) -> None:  # noqa: B027 - optional hook
        """The run failed: drop anything prepared for it (e.g. a replace table)."""

    def holds_rows(self) -> bool | None:
        """Does the sync's table (file, Delta table) exist and hold at least one row? One cheap
        look, no count; None: this destination cannot tell (HTTP). ``dfsync._settle.notice_lost_rows``
        asks it before a run reads its source."""
        return None

    def applied(self) -> bool:
        """Did a destination that applies a run at its end already apply this one (its final
        swap happened, say just before its process died)? Such a run's batches must never be
        discarded. Destinations that apply each batch at once answer False."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> DestinationSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Destination(ABC):
    """Base class: subclasses set ``kind`` and implement ``open`` and ``config``."""

    kind: ClassVar[str]
    #: True when each batch commits atomically with its ledger entry (exactly once).
    transactional: ClassVar[bool] = True
    #: The longest column name the database keeps as it is (PostgreSQL would silently cut a
    #: longer one to 63 bytes): (limit, 'bytes' or 'characters'); None: no limit
    max_name: ClassVar[tuple[int, str] | None] = None
    #: True when a committed batch is visible in the destination at once; False when the run's
    #: batches only take effect in ``finish()`` (a failed run then delivered nothing).
    applies_per_batch: ClassVar[bool] = True
    #: its sessions answer ``holds_rows()`` (a table or file to look at): a new run asks before it
    #: reads its source whether the destination still holds rows (``dfsync._settle.notice_lost_rows``)
    tells_rows: ClassVar[bool] = False
    #: Rows per batch when the sync's ``batch_size`` is None (its default): each destination's
    #: own best size (bench/RESULTS.md, issue 22).
    default_batch_size: ClassVar[int] = 100_000
    #: one writer at a time (a database file): a partitioned run's buckets write it one after another
    one_writer: ClassVar[bool] = False
    #: a partitioned run's worker may keep a session open between two waves of one run's batches
    #: (every operation of the session commits: an idle one holds no lock)
    reusable_sessions: ClassVar[bool] = False

    @property
    def literal_secret(self) -> bool:
        """Holds a secret given as a literal (kept in this process only, never in its config)."""
        return bool(getattr(self, "_literal_password", None)) or bool(getattr(self, "session_only", False))
    #: Destination modes this destination supports.
    modes: ClassVar[frozenset[DestinationMode]] = frozenset(DestinationMode)
    #: the optional package it writes with (module, pip name, dfsync extra, what for): missing, it is a
    #: MissingDependencyError at create_sync, not a failed run
    needs: ClassVar[tuple[str, str, str, str] | None] = None

    @abstractmethod
    def open(self, ctx: DestinationContext) -> DestinationSession: ...

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-safe configuration; secrets only as ``env:NAME`` references."""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Destination:
        return cls(**config)

    def identity(self) -> str:
        """What makes two destinations the same place (delivered state is kept per place)."""
        return json.dumps({"kind": self.kind, **self.config()}, sort_keys=True, default=str)

    def validate(self, columns: Sequence[str], primary_key: Sequence[str], mode: DestinationMode) -> None:
        """Raise ConfigError at create_sync for settings this destination cannot honour."""
        if self.needs is not None:
            import importlib.util

            module, package, extra, purpose = self.needs
            if importlib.util.find_spec(module) is None:
                raise MissingDependencyError(package, extra, purpose)
        if mode not in self.modes:
            choices = ", ".join(sorted(m.value for m in self.modes))
            raise ConfigError(
                f"the {self.kind} destination does not support destination_mode={mode.value!r}; "
                f"choose one of {choices}"
            )

    def column_type(self, t: pa.DataType) -> str | None:
        """The column type this destination makes for Arrow type ``t``; raise SchemaMismatchError
        (naming the fix) for a type it cannot hold. None: no declared types (files, JSON)."""
        return None

    def writes_json(self, t: pa.DataType) -> bool:
        """True when a list/struct/map of Arrow type ``t`` is written as JSON text (a JSON or jsonb
        column, an HTTP body), which holds no NaN or infinity (``_schema_values.check_values``) and
        no bytes (``check_schema`` refuses such a column, naming it)."""
        return False

    def name_problem(self, name: str) -> str | None:
        """Why the database refuses ``name`` as a column name (None: it takes it as it is)."""
        return None

    def check_schema(self, schema: pa.Schema) -> None:
        """Refuse, naming the column, a field type this destination cannot hold (at create_sync
        when the source's schema is known, else before anything is sent)."""
        refuse_struct_names(schema)
        for f in schema:
            if self.max_name is not None:
                limit, unit = self.max_name
                size = len(f.name.encode()) if unit == "bytes" else len(f.name)
                if size > limit:
                    raise SchemaMismatchError(
                        f"column name {f.name!r} is {size} {unit} long; {self.kind} keeps at most {limit} "
                        f"(a longer name would be cut or refused). Give it a shorter name in the sync's "
                        f"mapping, e.g. mapping={{'a_shorter_name': {f.name!r}, ...}}.")
            why = self.name_problem(f.name)
            if why:
                raise SchemaMismatchError(
                    f"column name {f.name!r} {why}. Give it another name in the sync's mapping, e.g. "
                    f"mapping={{'a_new_name': {f.name!r}, ...}}.")
            if is_nested(f.type) and self.writes_json(f.type) and holds(f.type, is_bytes):
                raise SchemaMismatchError(
                    f"column {f.name!r} ({f.type}): {self.kind} writes it as JSON, and bytes inside a list or "
                    f"struct have no JSON form (they would arrive as escaped text, not bytes); encode them as "
                    f"base64 text in the sync's mapping, e.g. pl.col(c).list.eval(pl.element().bin.encode("
                    f"'base64')) for a list, pl.col(c).struct.with_fields(pl.field(f).bin.encode('base64')) for "
                    f"a struct field f")
            try:
                self.column_type(f.type)
            except SchemaMismatchError as exc:
                raise SchemaMismatchError(f"column {f.name!r} ({f.type}): {exc}") from None

    def describe(self) -> str:
        """One line for reprs and widgets (no secrets)."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if v is not None)
        return f"{self.kind}({args})"

    def __repr__(self) -> str:
        return f"<dfsync destination {self.describe()}>"


def batch_actions(data: pa.Table) -> set[str]:
    """The actions present in a batch (a first load is all inserts: one vectorised compare)."""
    import pyarrow.compute as pc

    if data.num_rows == 0:
        return set()
    col = data.column(ACTION_COLUMN)
    if not pc.any(pc.not_equal(col, string_scalar("insert"))).as_py():
        return {"insert"}
    return set(col.unique().to_pylist())


_KINDS: Kinds[Destination] = Kinds("destination", [f"dfsync.destinations.{m}" for m in ("_duckdb", "_parquet", "_delta", "_postgres", "_mysql", "_sqlite", "_http")])


def destination_class(kind: str) -> type[Destination] | None:
    """The destination class of a stored ``kind`` (None: unknown here), without building one."""
    return _KINDS.class_of(kind)
register_destination = _KINDS.register
destination_from_config = _KINDS.from_config


def rows_where(sub: pa.Table, column: str, sql_column: str) -> str:
    """The SQL condition picking the rows of ``sub`` (an ``attempt`` of :func:`bisect_failures`) by
    their row numbers in ``column``: their range, less the numbers it skips (rows found failing,
    or rejected before the search)."""
    import numpy as np

    nums = sub.column(column).to_numpy()
    lo, hi = int(nums.min()), int(nums.max())
    cond = f"{sql_column} BETWEEN {lo} AND {hi}"
    if len(nums) < hi - lo + 1:
        gaps = np.setdiff1d(np.arange(lo, hi + 1), nums)
        cond += f" AND {sql_column} NOT IN ({', '.join(str(int(g)) for g in gaps)})"
    return cond


def bisect_failures(
    rows: pa.Table, attempt: Callable[[pa.Table], str | None], *, offset: int = 0
) -> dict[int, str]:
    """Find the rows of ``rows`` that make ``attempt`` fail, by halving.

    ``attempt(sub_table)`` tries to apply the rows (and rolls back); it returns None if
    they would be accepted, else the error text. A sub-table is a slice, or rows taken around
    those found failing (:func:`rows_where` picks them by row number). Costs O(bad * log n)
    attempts. No rows (every row of the batch was already rejected before the search) have no
    failures to find.
    """
    if rows.num_rows == 0:
        return {}
    error = attempt(rows)
    if error is None:
        return {}
    if rows.num_rows == 1:
        return {offset: error}
    mid = rows.num_rows // 2
    found = bisect_failures(rows.slice(0, mid), attempt, offset=offset)
    found.update(bisect_failures(rows.slice(mid), attempt, offset=offset + mid))
    if not found:  # the rows only fail together (e.g. duplicate keys inside the batch)
        return {offset + i: error for i in range(rows.num_rows)}
    # rows that fail only together may sit in both halves (a pair breaking a UNIQUE constraint)
    # beside a row found alone: the rest is tried again, else its commit fails the whole batch
    rest = [i for i in range(rows.num_rows) if offset + i not in found]
    if rest:
        more = bisect_failures(rows.take(rest), attempt)
        found.update({offset + rest[j]: why for j, why in more.items()})
    return found
