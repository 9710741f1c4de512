"""Personal data in stored records: ``sensitive=[...]`` fields kept as keyed hashes.

The records of failed, invalid and skipped rows are kept in the workspace (``run.records()``).
A field named in a sync's ``sensitive`` is stored there as ``hmac:`` and 32 hex digits: an
HMAC-SHA256 of the value under a per-workspace key, so the same value is recognisable across
runs (and can be looked up by whoever holds the key: :func:`keyed_hash`) but cannot be read
back. The destination error text of such a record has the value replaced by its hash too, and
so have the example values a check stores for a sensitive column.

The key is never stored in the workspace. It is derived from a secret of the host:

* ``DFSYNC_RECORD_KEY`` (any string; give every host that shares a workspace the same one, as
  an ``env:`` secret of your scheduler), else
* a random key kept in ``$XDG_CONFIG_HOME/dfsync/record.key`` (``~/.config/dfsync/record.key``),
  created on first use, readable by its owner only (``0600``, directory ``0700``),

and the workspace's own id, so two workspaces never share hashes.

>>> h = keyed_hash("ann@example.com", b"k" * 32)
>>> h.startswith("hmac:") and len(h) == 37 and h == keyed_hash("ann@example.com", b"k" * 32)
True
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import timedelta
from typing import Any

import polars as pl
import pyarrow as pa

from ._paths import FILE_MODE, private_dir
from .errors import ANY_COLUMN, ConfigError, DfsyncError

__all__ = ["KEY_ENV", "PREFIX", "check_sensitive", "key_file", "key_text", "keyed_hash", "map_examples",
           "parse_retention", "protect_checks", "protect_evaluation", "protect_records", "retention_delta", "scrubber",
           "workspace_key"]

KEY_ENV = "DFSYNC_RECORD_KEY"
PREFIX = "hmac:"
_MIN_SCRUB = 3  # a value this short is not searched for in error texts (it would mangle them)
ERROR_CAP = 2000  # characters of a destination's error kept with a record


def key_file() -> str:
    """Where this user's record key is kept when ``DFSYNC_RECORD_KEY`` is not set."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "dfsync", "record.key")


def _host_secret() -> bytes:
    given = os.environ.get(KEY_ENV)
    if given:
        return given.encode()
    path = key_file()
    try:
        with open(path, "rb") as fh:
            return fh.read().strip()
    except FileNotFoundError:
        pass
    private_dir(os.path.dirname(path))
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
    except FileExistsError:  # another process made it first: use theirs
        with open(path, "rb") as fh:
            return fh.read().strip()
    key = secrets.token_hex(32).encode()
    with os.fdopen(fd, "wb") as fh:
        fh.write(key + b"\n")
    return key


def workspace_key(workspace_id: str) -> bytes:
    """The key hashing the sensitive fields of one workspace's records."""
    return hmac.new(_host_secret(), b"dfsync-records:" + workspace_id.encode(), hashlib.sha256).digest()


def keyed_hash(value: Any, key: bytes) -> str:
    """``hmac:`` and the first 32 hex digits of HMAC-SHA256(key, str(value))."""
    return PREFIX + hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest()[:32]


def store_key(store: Any) -> bytes:
    """The record key of the workspace ``store`` opens (from its own id)."""
    return workspace_key(store.workspace_id())


def cap_error(text: str | None) -> str | None:
    """A destination's error for one row cut to :data:`ERROR_CAP` characters: the one place that
    decides the cap (:func:`protect` cuts stored records with it, the run's staging its own copy)."""
    return None if text is None else text[:ERROR_CAP]


def protect(records: pa.Table | None, sensitive: Sequence[str], store: Any) -> pa.Table | None:
    """Records about to be stored in ``store``, their ``sensitive`` fields hashed, then their
    ``_error`` texts cut to :data:`ERROR_CAP` characters (after the hashing, which finds whole
    values only: a value cut in half would stay in plain)."""
    if records is not None and sensitive:
        records = protect_records(records, sensitive, store_key(store))
    if records is not None and "_error" in records.column_names:
        import pyarrow.compute as pc

        cut = pc.utf8_slice_codeunits(records.column("_error"), 0, ERROR_CAP)
        records = records.set_column(records.column_names.index("_error"), "_error", cut)
    return records


def protect_results(results: list[dict[str, Any]], sensitive: Sequence[str], store: Any) -> list[dict[str, Any]]:
    """Check results about to be stored in ``store``, the examples of sensitive columns hashed."""
    return protect_checks(results, sensitive, store_key(store)) if sensitive else results


def protect_records(records: pa.Table, sensitive: Sequence[str], key: bytes) -> pa.Table:
    """``records`` with each ``sensitive`` column replaced by its keyed hashes (a string column;
    nulls stay null), and every such value of the batch replaced by its hash in ``_error`` (a
    destination's error for a whole batch quotes one row's value in every row's record)."""
    cols = [c for c in sensitive if c in records.column_names]
    if not cols or not records.num_rows:
        return records
    swaps: dict[str, str] = {}
    for c in cols:
        values = records.column(c).to_pylist()
        hashed = [None if v is None else keyed_hash(v, key) for v in values]
        swaps.update((str(v), h) for v, h in zip(values, hashed, strict=True)
                     if v is not None and len(str(v)) >= _MIN_SCRUB)
        records = records.set_column(records.column_names.index(c), c, pa.array(hashed, pa.string()))
    if "_error" in records.column_names and swaps:
        found = sorted(swaps, key=len, reverse=True)  # the longest first: one value may hold another
        errors = pl.Series(records.column("_error").to_pylist(), dtype=pl.String)
        scrubbed = errors.str.replace_many(found, [swaps[v] for v in found])  # one pass (Aho-Corasick)
        records = records.set_column(records.column_names.index("_error"), "_error", scrubbed.to_arrow().cast(pa.string()))
    return records


def mask_frame(rows: pl.DataFrame, sensitive: Sequence[str], key: bytes) -> pl.DataFrame:
    """Rows shown to the user but never stored (a preview's, a validation's) with each
    ``sensitive`` column as its keyed hashes, as the stored records show them."""
    if not any(c in rows.columns for c in sensitive):
        return rows
    from ._arrow import to_polars

    return to_polars(protect_records(rows.to_arrow(), sensitive, key))


def mask_preview(preview: Any, sensitive: Sequence[str], store: Any) -> None:
    """A preview's records, samples and the updates' before values with their ``sensitive``
    fields masked in place: they are shown in reprs, panels and notebooks' saved outputs as
    ``run.records()`` are, never in plain."""
    if not sensitive:
        return
    key = store_key(store)
    preview.records = mask_frame(preview.records, sensitive, key)
    samples = getattr(preview, "samples", None) or {}
    preview.samples = {a: mask_frame(df, sensitive, key) for a, df in samples.items()}
    names = set(sensitive)
    preview.before = {k: {c: keyed_hash(v, key) if c in names and v is not None else v for c, v in row.items()}
                      for k, row in (getattr(preview, "before", None) or {}).items()}


def scrubber(sensitive: Sequence[str], store: Any) -> Callable[[Any, Sequence[str], str], str] | None:
    """For a sync with ``sensitive`` fields (else None): ``scrub(con, relations, text)``, the text
    with each value of those fields that ``relations`` (on the DuckDB connection ``con``) hold
    replaced by its keyed hash, for an engine's message about the rows (a check that could not
    run: "could not convert string 'ann@example.com' to INT32")."""
    if not sensitive:
        return None

    def scrub(con: Any, relations: Sequence[str], text: str) -> str:
        from ._ident import quote

        swaps: dict[str, str] = {}
        for rel in relations:
            have = {r[0] for r in con.execute(f"DESCRIBE {quote(rel)}").fetchall()}
            for col in (c for c in sensitive if c in have):
                v = f"CAST({quote(col)} AS VARCHAR)"
                found = con.execute(f"SELECT DISTINCT {v} FROM {quote(rel)} WHERE length({v}) >= {_MIN_SCRUB} "
                                    f"AND contains(?, {v})", [text]).fetchall()
                swaps.update((s, "") for (s,) in found)
        if swaps:
            key = store_key(store)
            for s in sorted(swaps, key=len, reverse=True):  # the longest first: one value may hold another
                text = text.replace(s, keyed_hash(s, key))
        return text

    return scrub


@contextlib.contextmanager
def quoted_hashed(defn: Any, store: Any) -> Iterator[None]:
    """An error raised inside (``sync.preview()``, ``sync.validate()``: a source that could not be
    read) with the row values it quotes of the sync's sensitive columns replaced by their keyed
    hashes, as :func:`scrub_quoted` stores them; its cause (the engine's own error, quoting them
    in plain) is left out of its traceback."""
    try:
        yield
    except DfsyncError as exc:
        text = scrub_quoted(defn, store, exc)
        if text != str(exc):
            exc.args = (text,)
            exc.__cause__, exc.__suppress_context__ = None, True
        raise


def scrub_quoted(defn: Any, store: Any, exc: Any) -> str:
    """The text of ``exc``, with the row values it quotes (``DfsyncError.quoted``: a source that
    could not be read, before any row was staged) of the source columns behind the sync's sensitive
    fields replaced by their keyed hashes; so are the literals a reader's or driver's message quotes
    (``ANY_COLUMN``: its column is not known)."""
    text = str(exc)
    quoted = getattr(exc, "quoted", ())
    if not quoted or not defn.sensitive:
        return text
    mapper, columns = defn.mapping, set()
    for f in defn.sensitive:  # the source columns a sensitive field is taken or computed from
        value = (mapper.spec or {}).get(f)
        columns.update([mapper.source_column(f) or f] if not isinstance(value, pl.Expr) or mapper.source_column(f)
                       else value.meta.root_names())
    key = store_key(store)
    swaps = {shown: keyed_hash(value, key) for column, shown, value in quoted
             if (column in columns or column == ANY_COLUMN) and len(shown) >= _MIN_SCRUB}
    if not swaps:
        return text
    found = sorted(swaps, key=len, reverse=True)  # one pass, the longest first: a hash is never searched again
    return re.sub("|".join(map(re.escape, found)), lambda m: swaps[m.group(0)], text)


def scrub_run_texts(runner: Any, *texts: str) -> tuple[str, ...]:
    """A run's own texts (its error, the detail of its event) before they are stored, with each
    value of the sync's sensitive fields among the run's staged rows replaced by its keyed hash:
    a refusal before sending ("column 'card' holds 18446744073709551000, above ...") or a
    destination's error for a whole batch ('duplicate key "ann@example.com"') quotes a row's value.
    Without sensitive fields, or before any row is staged, the texts are returned as they are."""
    scrub = scrubber(runner.defn.sensitive, runner.store)
    staging = getattr(runner, "staging", None)
    if scrub is None or staging is None or not texts:
        return texts
    con = staging.con
    try:  # the run's end is recorded whatever happens here
        if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'stg' AND NOT temporary").fetchone()[0]:
            return texts
        return tuple(scrub(con, ["stg"], t) if t else t for t in texts)
    except Exception:
        return texts


def protect_checks(results: Iterable[dict[str, Any]], sensitive: Sequence[str], key: bytes) -> list[dict[str, Any]]:
    """Check results with the example values of sensitive columns hashed (see :func:`map_examples`:
    the examples of a check on a sensitive column, and in ``{column: value}`` entries the values
    of sensitive columns)."""
    names = set(sensitive)

    def hashed(field: str | None, value: Any) -> Any:
        return keyed_hash(value, key) if field in names else value

    return [map_examples(r, hashed) for r in results] if names else list(results)


def protect_evaluation(evaluation: Any, sensitive: Sequence[str], store: Any) -> list[dict[str, Any]]:
    """An evaluation's results with the values of ``sensitive`` columns hashed (:func:`protect_results`),
    set as its results, so that what is stored and what its summary says (the run's error, its
    events, the warning) and what GX actions get all show them hashed; returned for storing."""
    evaluation.results = protect_results(evaluation.results, sensitive, store)
    return evaluation.results


def map_examples(result: dict[str, Any], fn: Callable[[str | None, Any], Any]) -> dict[str, Any]:
    """A check result with ``fn(column, value)`` applied to every example value it keeps: the
    non-null items of ``partial_unexpected_list`` and of every list inside ``result`` (their
    column: the check's ``column_name``; an item that is a list, of a check on several columns,
    position by position), and in a list's dict entries ``{"value": v, "count": n}`` the value
    and ``{column: value}`` the values; and the ``observed_value`` of a check on one column (a min, max,
    mean: it can be a row's value) unless the check counts rows or values (a row or distinct-value
    count, a proportion). Counts, percentages and other scalars stay as they are."""
    column = result.get("column_name")
    columns = column.split(", ") if isinstance(column, str) else []

    def item(v: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, dict):
            return {k: x if x is None else fn(column if k == "value" else k, x) for k, x in v.items()}
        if isinstance(v, list) and len(columns) > 1 and len(v) == len(columns):
            return [x if x is None else fn(c, x) for c, x in zip(columns, v, strict=True)]
        return fn(column, v)

    def walk(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: walk(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [item(v) for v in obj]
        return obj

    inner = walk(result.get("result"))
    observed = inner.get("observed_value") if isinstance(inner, dict) else None
    if (observed is not None and not isinstance(observed, (list, dict)) and len(columns) == 1
            and not any(w in str(result.get("kind")) for w in _NOT_VALUES)):
        inner = {**inner, "observed_value": fn(column, observed)}  # a min, a max, a median: a row's value
    return {**result, "partial_unexpected_list": walk(result.get("partial_unexpected_list")), "result": inner}


#: in a check's kind: its observed value is a count or a share of the rows, never one of their values
_NOT_VALUES = ("count", "proportion")


def key_text(columns: Sequence[str], values: Sequence[Any]) -> str:
    """How dfsync names a row's primary key in event texts and errors: ``id=4``, ``(a='x', b=2)``.
    ``sync.forget`` finds a key value of under 3 characters in a text only in such a rendering
    (``id=4``, ``id: 4``, ``(id)=(4)``, ``"id": 4``), never as any "4".

    >>> key_text(["id"], [4]), key_text(["a", "b"], ["x", 2])
    ('id=4', "(a='x', b=2)")
    """
    parts = [f"{c}={v!r}" if isinstance(v, str) else f"{c}={v}" for c, v in zip(columns, values, strict=True)]
    return parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ")"


# ------------------------------------------------------------------ settings
_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}
_RETENTION_RE = re.compile(r"^\s*(\d+)\s*(second|minute|hour|day|week)s?\s*$", re.IGNORECASE)


def parse_retention(value: Any, what: str = "record_retention") -> str | None:
    """``"30 days"`` (seconds, minutes, hours, days, weeks), a number of days or a timedelta, in
    its stored form (``"30 days"``); None: records are kept until a later run delivers their rows.

    >>> parse_retention("2 Weeks"), parse_retention(1), parse_retention(timedelta(hours=12))
    ('2 weeks', '1 day', '43200 seconds')
    """
    if value is None:
        return None
    if isinstance(value, timedelta):
        n, unit = int(value.total_seconds()), "second"
    elif isinstance(value, int) and not isinstance(value, bool):
        n, unit = value, "day"
    else:
        m = _RETENTION_RE.match(str(value))
        if not m:
            raise ConfigError(f"{what}={value!r}: write it as a number and a unit, e.g. '30 days', '12 hours' "
                              f"or '2 weeks' (or a number of days)")
        n, unit = int(m.group(1)), m.group(2).lower()
    if n <= 0:
        raise ConfigError(f"{what}={value!r}: give a positive duration (e.g. '30 days')")
    return f"{n} {unit}{'s' if n != 1 else ''}"


def retention_delta(stored: str) -> timedelta:
    """The timedelta of a stored retention (``"30 days"``)."""
    n, unit = stored.split()
    return timedelta(seconds=int(n) * _UNITS[unit.rstrip("s")])


def check_sensitive(value: Any, fields: Sequence[str], key: Sequence[str], cursor: str | None = None) -> list[str]:
    """``sensitive=`` as a list of field names, each a field of the records (after mapping), not a
    primary key column nor ``cursor`` (an incremental sync's cursor_field). (An incremental sync reads the
    rows it sends again from the source by key: their records keep those fields only as hashes, see
    :mod:`dfsync._retry`.)"""
    names = [value] if isinstance(value, str) else list(value or [])
    for n in names:
        if not isinstance(n, str) or n not in fields:
            raise ConfigError(f"sensitive field {n!r} is not a field of the records; the fields (after mapping) "
                              f"are: {', '.join(fields)}")
        if n in key:
            raise ConfigError(f"sensitive field {n!r} is a primary key column: the workspace needs keys as they are "
                              f"to compare and retry rows; key the sync on another column, or erase a key's traces "
                              f"with sync.forget(keys)")
        if n == cursor:
            raise ConfigError(f"sensitive field {n!r} is the cursor_field of this incremental sync: the workspace keeps "
                              f"the greatest value it delivered as it is (sync.cursor, the run history) to know where "
                              f"the next run reads from; use another cursor (an updated_at timestamp), or leave {n!r} "
                              f"out of sensitive")
    return list(dict.fromkeys(names))
