"""Where a PostgreSQL workspace's store finds this host's copies of delivered states, and when it
lets them go.

The copy itself (what it holds, when a read may use it) is :mod:`dfsync.store._pgstatecache`'s;
how copies stay bounded is :mod:`dfsync.store._statecachegc`'s. This mixin ties them to the
store: each copy the store uses is held (a shared lock) until the store is closed; a sync's copy
is removed with the sync, its reset or ``sync.forget``; opening the workspace removes the copies
of its syncs that are gone and the copies beyond the cache's bounds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from ._delivery import state_table
from ._pgstatecache import StateCache, cacheable, gen, workspace_dir
from ._statecachegc import hold, limits, prune, release, remove_copy

__all__ = ["PgLocalCopy"]

log = logging.getLogger("dfsync.store")


class PgLocalCopy:
    """Mixed into :class:`dfsync.store._pgdelivery.PgDeliveryOps`."""

    # ------------------------------------------------------------------ where
    @property
    def state_cache_root(self) -> str | None:
        """Where this host keeps its copies of delivered states: ``DFSYNC_STATE_CACHE`` (``off``:
        nowhere), else ``~/.cache/dfsync/state``; a store's own (tests) when set on it."""
        if "_state_cache_root" in self.__dict__:
            return self.__dict__["_state_cache_root"]
        env = os.environ.get("DFSYNC_STATE_CACHE")
        if env is not None:
            return None if env.strip().lower() in ("", "off", "0", "no") else env
        return os.path.join(os.path.expanduser("~"), ".cache", "dfsync", "state")

    @state_cache_root.setter
    def state_cache_root(self, value: str | None) -> None:
        self.__dict__["_state_cache_root"] = value

    def _workspace_key(self, con: Any) -> str:
        ws_id = self.__dict__.get("_workspace_id")
        if ws_id is None:
            row = con.execute("SELECT value FROM workspace_meta WHERE key = 'id'").fetchall()
            ws_id = self.__dict__["_workspace_id"] = str(row[0][0]) if row else ""
        return ws_id

    def _state_cache(self, con: Any, sync_id: int, key: Sequence[str], types: dict[str, str] | None
                     ) -> StateCache | None:
        """This host's copy of the sync's state, when its key types read back exactly (else None);
        held by this store from its first use on (no other process removes it meanwhile)."""
        if self.state_cache_root is None or not cacheable(key, types):
            return None
        ws_id = self._workspace_key(con)
        if not ws_id:
            return None
        cache = StateCache(self.state_cache_root, ws_id, sync_id, key)
        self._hold(cache.dir)
        return cache

    # ------------------------------------------------------------------ holding
    @property
    def _holds(self) -> dict[str, int]:
        """copy directory -> the descriptor of this store's shared lock on it."""
        return self.__dict__.setdefault("_copy_holds", {})

    @property
    def _holds_lock(self) -> threading.Lock:
        return self.__dict__.setdefault("_copy_holds_lock", threading.Lock())

    def _hold(self, directory: str) -> None:
        with self._holds_lock:
            if directory not in self._holds:
                fd = hold(directory)
                if fd is not None:
                    self._holds[directory] = fd

    def _let_go(self, directory: str | None = None) -> None:
        """Release this store's hold on one copy (all, when None)."""
        with self._holds_lock:
            for d in [directory] if directory is not None else list(self._holds):
                release(self._holds.pop(d, None))

    def release_local_copies(self) -> None:
        """Let other processes remove the copies this store used (the store is being closed)."""
        self._let_go()

    # ------------------------------------------------------------------ bounds
    def prune_local_copies(self) -> list[str]:
        """Remove this host's copies that are not needed (docs/CONCURRENCY.md): this workspace's
        syncs that no longer exist, copies unused for ``DFSYNC_STATE_CACHE_DAYS``, the least
        recently used beyond ``DFSYNC_STATE_CACHE_SIZE``; never one a process holds. Best effort:
        a copy is only a cache, so nothing here fails a caller. Returns the directories removed."""
        root = self.state_cache_root
        if root is None or not os.path.isdir(root):
            return []
        max_bytes, max_age = limits()
        try:
            with self._connect() as con:  # type: ignore[attr-defined]
                ws_id = self._workspace_key(con)
                live = None
                if ws_id and os.path.isdir(os.path.join(root, workspace_dir(ws_id))):
                    live = {int(r[0]) for r in con.execute("SELECT id FROM syncs").fetchall()}
        except Exception as exc:  # the workspace's own state decides nothing here: bounds only
            log.debug("local copies: syncs not listed (%s)", exc)
            ws_id, live = None, None
        removed = prune(root, workspace=workspace_dir(ws_id) if ws_id else None, live=live,
                        max_bytes=max_bytes, max_age=max_age)
        if removed:
            log.info("removed %d local copies of delivered states under %s", len(removed), root)
        return removed

    # ------------------------------------------------------------------ a sync's copy
    def fold_local_copy(self, sync_id: int, key: Sequence[str]) -> None:
        """This host's copy as of the server's generation, its deltas folded into one base now
        (as the next read would: :meth:`StateCache.open`) when it leads there; else nothing."""
        st = state_table(sync_id)
        with self._connect() as con:  # type: ignore[attr-defined]
            if not self._has_table(con, st):  # type: ignore[attr-defined]
                return
            types = self._key_types(con, sync_id)  # type: ignore[attr-defined]
            cache = self._state_cache(con, sync_id, key, types)
            if cache is None:
                return
            schema = self._read_schema(con, st, key, types)  # type: ignore[attr-defined]
            g = gen(con, st, "get")
        reader = cache.open(g, schema) if g is not None else None
        if reader is not None:
            for _ in reader:  # written as the base of g as it is read
                pass

    def _drop_local_copy(self, sync_id: int, *, gone: bool = False) -> None:
        """Delete this host's copy of a sync's state (the keys it holds are erased or no longer
        needed), whoever uses it; ``gone`` (the sync is deleted): its directory too, unless
        another process still holds it (then the next open of the workspace removes it)."""
        if self.state_cache_root is None:
            return
        with self._connect() as con:  # type: ignore[attr-defined]
            cache = self._state_cache(con, sync_id, ["_"], {"_": "BIGINT"})
        if cache is None:
            return
        cache.clear()
        if gone:
            self._let_go(cache.dir)
            with contextlib.suppress(OSError):
                remove_copy(cache.dir)

    def forget_keys(self, sync_id: int, key: Sequence[str], keys: Sequence[tuple[Any, ...]]) -> dict[str, int]:
        counts = super().forget_keys(sync_id, key, keys)  # type: ignore[misc]
        self._drop_local_copy(sync_id)  # no copy on this host holds the forgotten keys
        return counts

    def reset_delivered(self, sync_id: int, detail: str, run_id: int | None = None) -> None:
        super().reset_delivered(sync_id, detail, run_id)  # type: ignore[misc]
        self._drop_local_copy(sync_id)

    def delete_sync(self, sync_id: int) -> None:
        super().delete_sync(sync_id)  # type: ignore[misc]
        self._drop_local_copy(sync_id, gone=True)
