"""The rows an incremental run sends again: those that failed at the destination, or that a run
that did not fail found invalid, and that this run's cursor read does not bring.

They come from the sync's stored records (:meth:`Store.retry_rows`). A sync with ``sensitive=``
fields keeps those fields in its records only as keyed hashes (:mod:`dfsync._sensitive`), and a
hash must never reach the destination as a value: for such a sync the rows are read again from
the source by their keys (from the oldest cursor value among them on, else the whole source),
and a row the source no longer has is not sent again; an event of the run says which.

The stored records also say which rows a destination mode skipped (:func:`state_for_diff`):
``insert`` mode never sends a change to a delivered row, and ``update`` mode's destination skips
a row it does not hold. Such a row's fingerprint is not the delivered one (the destination does
not hold that version), so without more every later run would find it changed again and hand
it over to be skipped again: ``sent`` and ``skipped`` grew on runs where nothing changed. Its
record (status ``skipped``, with the fingerprint) says which version was skipped: for the diff,
that version stands in for the delivered one, so the row is ``unchanged`` until it changes
again. Only records of the sync's current definition (a change of mode, mapping or destination
forgets them: the row is looked at afresh) since its last ``sync.reset()`` count, and only in
the mode that skipped them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from ._sensitive import key_text
from ._window import source_cursor
from ._words import plural
from .errors import SourceError
from .sources.base import CursorFilter
from .states import RECORD_META, DestinationMode, SyncMode

if TYPE_CHECKING:
    from .definition import SyncDefinition

__all__ = ["retry_rows", "state_for_diff"]

#: how many keys of rows the source no longer has an event names
_NAMED = 10


def retry_rows(store: Any, defn: SyncDefinition, sync_id: int,
               run_id: int | None) -> tuple[pa.Table | None, pa.Table | None]:
    """(rows to send again, the distinct keys of failed rows), as :meth:`Store.retry_rows`; for an
    incremental sync with sensitive fields the rows carry the source's values, never the hashes."""
    rows, keys = store.retry_rows(sync_id, defn.primary_key, RECORD_META)
    if (not defn.sensitive or defn.sync_mode != SyncMode.INCREMENTAL or rows is None or not rows.num_rows):
        return rows, keys
    with store.released():  # reading the source can take long: let other processes in
        fresh = reread(defn, rows)
    key = list(defn.primary_key)
    wanted = pl.DataFrame(pl.from_arrow(rows.select(key)))
    got = pl.DataFrame(pl.from_arrow(fresh.select(key))).cast(dict(wanted.schema), strict=False)
    gone = wanted.unique(maintain_order=True).join(got, on=key, how="anti")
    if gone.height:
        named = ", ".join(key_text(key, r) for r in gone.head(_NAMED).rows())
        more = f" and {gone.height - _NAMED} more" if gone.height > _NAMED else ""
        store.note(sync_id, run_id, f"{plural(gone.height, 'row')} to send again (they failed or were invalid before) "
                   f"{'is' if gone.height == 1 else 'are'} no "
                   f"longer in the source {defn.source.describe()}, so they are not sent again: their records keep "
                   f"the sensitive fields ({', '.join(defn.sensitive)}) only as hashes, which are never sent as "
                   f"values: {named}{more}. Erase them with sync.forget(keys) if they "
                   f"are gone for good.")
    return fresh, keys


def reread(defn: SyncDefinition, rows: pa.Table) -> pa.Table:
    """The source's current rows (after mapping) with the primary keys of ``rows``: read from the
    oldest cursor value of ``rows`` on when the cursor field is kept as is, else (or when a key
    is not found from there: its cursor went back) from the whole source."""
    key = list(defn.primary_key)
    wanted = pl.DataFrame(pl.from_arrow(rows.select(key)))
    field, cursor = defn.cursor_field, None
    if field and field in rows.column_names and field not in defn.sensitive:
        values = rows.column(field).to_pylist()
        if values and None not in values:
            cursor = CursorFilter(source_cursor(defn), min(values))  # the source is filtered before mapping
    found = _read(defn, wanted, cursor)
    if cursor is not None and found.height < wanted.unique().height:
        found = _read(defn, wanted, None)
    return found.to_arrow()


def _read(defn: SyncDefinition, wanted: pl.DataFrame, cursor: CursorFilter | None) -> pl.DataFrame:
    key = list(wanted.columns)
    try:
        lf = defn.source.scan(cursor).select(defn.mapping.polars_exprs())
        schema = lf.collect_schema()
        wanted = wanted.cast({k: schema[k] for k in key}, strict=False).drop_nulls()
        return lf.join(wanted.lazy(), on=key, how="semi").collect()
    except SourceError:
        raise
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise SourceError(f"could not read {defn.source.describe()} again for the rows to send again (their "
                          f"records keep the sensitive fields only as hashes): {str(exc).splitlines()[0]}. Check "
                          f"that the source exists, then run the sync again; nothing was sent.") from exc


#: the modes whose rule skips rows (insert: changed rows; update: rows the destination lacks)
_SKIPPING = (DestinationMode.INSERT, DestinationMode.UPDATE)


def state_for_diff(store: Any, defn: Any, sync_id: int, definition_version: int) -> pa.RecordBatchReader | pa.Table | None:
    """The delivered state (``store.delivered``), with the skipped versions of rows over it."""
    key = list(defn.primary_key)
    state = store.delivered(sync_id, key)
    if defn.destination_mode not in _SKIPPING:
        return state
    skipped = store.skipped_versions(sync_id, key, definition_version)
    if skipped is None or not skipped.num_rows:
        return state
    skipped = skipped.select([*key, "_fp"]).cast(pa.schema(
        [skipped.schema.field(k) for k in key] + [pa.field("_fp", pa.uint64())]))
    if state is None:
        return skipped
    held = state.read_all() if isinstance(state, pa.RecordBatchReader) else state
    over = pl.DataFrame(pl.from_arrow(skipped))
    base = pl.DataFrame(pl.from_arrow(held))
    try:
        over = over.cast({k: base.schema[k] for k in key}).drop_nulls(key)
    except pl.exceptions.PolarsError:  # the records' key no longer casts to the state's: nothing skipped counts
        return held
    merged = pl.concat([base.join(over, on=key, how="anti", nulls_equal=False), over.select(base.columns)])
    return merged.to_arrow().cast(held.schema)
