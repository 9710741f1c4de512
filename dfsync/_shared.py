"""Two syncs of one workspace writing the same destination place (table, Parquet directory,
Delta table, HTTP endpoint): decided here, once, when a sync is defined (``create_sync``).

Each sync keeps its own delivered state, so each believes the rows it sent are there. Syncs
that only insert, update or delete the keys they send (``insert``, ``upsert``, ``update``,
``mirror``) can share a table when their keys are apart: a warning names the other syncs,
since a key both send holds whichever ran last, and a mirror sync deletes a key its source
lost even when another sync wrote it since. A ``replace`` run rewrites the whole table as its
own source is: it would remove every row the other sync delivered, and that sync would take
them as still delivered and never send them again. So ``replace`` next to another sync on the
same place is refused (``ConfigError``, nothing stored), naming the other sync and the ways
out. Syncs of other workspaces are not seen (each workspace knows only its own syncs).
"""

from __future__ import annotations

import json
import warnings
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
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
    defined. Raise ConfigError when it or another sync on its place is in ``replace`` mode; warn
    when others write its place."""
    place = spec.destination.identity()
    others = [(r["name"], DestinationMode(r["definition"].get("destination_mode", "upsert")))
              for r in rows if r["name"] != name and _place(r.get("state_key")) == place]
    if not others:
        return
    where = spec.destination.describe()
    mode = DestinationMode(spec.destination_mode)
    replacing = [n for n, m in others if m == DestinationMode.REPLACE]
    if mode == DestinationMode.REPLACE or replacing:
        other = (replacing or [others[0][0]])[0]
        if mode == DestinationMode.REPLACE:
            head = (f"sync {name!r} would write {where} in destination_mode='replace', and sync {other!r} of this "
                    f"workspace writes it too")
        else:
            head = f"sync {name!r} would write {where}, which sync {other!r} of this workspace writes in replace mode"
        victim = other if mode == DestinationMode.REPLACE else name
        raise ConfigError(
            f"{head}: a replace run rewrites the whole table as its own source is, removing the rows sync {victim!r} "
            f"delivered, and {victim!r} would take them as still delivered and not send them again. Nothing was "
            f"stored. Give each sync a table of its own, or let the replacing sync use destination_mode='upsert' or "
            f"'mirror' (each changes or deletes only the keys it sends), or delete the other sync first "
            f"(ws.delete_sync({other!r})).")
    listed = ", ".join(repr(n) for n, _ in others)
    warnings.warn(
        f"sync {name!r} writes {where}, which {'sync' if len(others) == 1 else 'syncs'} {listed} of this workspace "
        f"{'writes' if len(others) == 1 else 'write'} too. Each sync keeps its own delivered state: keep their "
        f"keys apart. A key both send holds whichever ran last, and a sync in mirror mode deletes a key its "
        f"source no longer has even when another sync wrote it since.", stacklevel=5)
