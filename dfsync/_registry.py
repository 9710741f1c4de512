"""Per-process registries shared by the workspace handles, the runner's callers and the widgets."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runner import Runner

#: (store key, sync name) -> live objects that cannot be stored (frames, callbacks, functions)
LIVE: dict[tuple[str, str], dict[str, Any]] = {}
#: (store key, run id) -> (Runner, Thread | None) for runs executing in this process
ACTIVE: dict[tuple[str, int], tuple[Runner, threading.Thread | None]] = {}
