"""Rows a destination mode skipped are not skipped again while they stay as they are.

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

from typing import Any

import polars as pl
import pyarrow as pa

from .states import DestinationMode

__all__ = ["state_for_diff"]

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
