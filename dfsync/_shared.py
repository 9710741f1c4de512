"""Two syncs of one workspace writing the same destination place (table, Parquet directory,
Delta table, HTTP endpoint): decided here, once, when a sync is defined (``create_sync``).

Each sync keeps its own delivered state, so each believes the rows it sent are there. Sharing a
place is allowed (tables shared on purpose exist, and a sync redefined under a new name is a common
step), with a warning naming the other syncs and what sharing costs: syncs that only insert,
update or delete the keys they send (``insert``, ``upsert``, ``update``, ``mirror``) must keep
their keys apart, since a key both send holds whichever ran last and a mirror sync deletes a key
its source lost even when another sync wrote it since; a ``replace`` run rewrites the whole table
as its own source is, removing every row the other syncs delivered, which they take as still
delivered and do not send again until they are reset (``sync.reset()``) or the table is emptied.
Syncs of other workspaces are not seen (each workspace knows only its own syncs).
"""

from __future__ import annotations

import json
import warnings
from typing import TYPE_CHECKING, Any

from .states import DestinationMode

if TYPE_CHECKING:
    from .definition import SyncDefinition

__all__ = ["check_shared_destination"]


def _place(state_key: Any) -> str | None:
    try:
        return json.loads(state_key)["destination"]
    except (TypeError, ValueError, KeyError):
        return None


def check_shared_destination(rows: list[dict[str, Any]], name: str, spec: SyncDefinition) -> None:
    """``rows``: the workspace's syncs (``store.all_syncs()``); ``name``/``spec``: the sync being
    defined. Warn when other syncs write its place, saying what a ``replace`` among them removes."""
    place = spec.destination.identity()
    others = [(r["name"], DestinationMode(r["definition"].get("destination_mode", "upsert")))
              for r in rows if r["name"] != name and _place(r.get("state_key")) == place]
    if not others:
        return
    where = spec.destination.describe()
    mode = DestinationMode(spec.destination_mode)
    replacing = [n for n, m in others if m == DestinationMode.REPLACE]
    listed = ", ".join(repr(n) for n, _ in others)
    one = len(others) == 1
    head = (f"sync {name!r} writes {where}, which {'sync' if one else 'syncs'} {listed} of this workspace "
            f"{'writes' if one else 'write'} too. Each sync keeps its own delivered state")
    if mode == DestinationMode.REPLACE or replacing:
        victims = listed if mode == DestinationMode.REPLACE else repr(name)
        replacer = repr(name) if mode == DestinationMode.REPLACE else ", ".join(repr(n) for n in replacing)
        warnings.warn(
            f"{head}: a replace run of {replacer} rewrites the whole table as its own source is, removing the rows "
            f"{victims} delivered, and {victims} would take them as still delivered and not send them again "
            f"(until sync.reset()). Give each sync a table of its own, use destination_mode='upsert' or 'mirror' "
            f"(each changes or deletes only the keys it sends), or delete the other sync (ws.delete_sync(...)).",
            stacklevel=5)
        return
    warnings.warn(
        f"{head}: keep their keys apart. A key both send holds whichever ran last, and a sync in mirror mode "
        f"deletes a key its source no longer has even when another sync wrote it since.", stacklevel=5)
