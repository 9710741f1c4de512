"""A destination wrapper that injects faults into a real destination, for tests.

``FaultyDestination(inner, ...)`` behaves exactly like ``inner`` (same delivered-state
identity, same ledger) but can raise KeyboardInterrupt before or after a given batch,
sleep per batch, or touch a marker file once a batch has committed — so tests can
interrupt or SIGKILL a run at a known point. Importing this module registers the kind.
"""

from __future__ import annotations

import os
import pathlib
import time
from typing import Any

from dfsync.destinations.base import (
    Destination,
    DestinationContext,
    DestinationSession,
    destination_from_config,
    register_destination,
)


@register_destination
class FaultyDestination(Destination):
    kind = "faulty"

    def __init__(self, inner: Destination | dict[str, Any], *, interrupt_before: int | None = None,
                 interrupt_after: int | None = None, sleep: float = 0.0, marker: str | None = None,
                 marker_after: int | None = None, raise_after: int | None = None) -> None:
        self.inner = inner if isinstance(inner, Destination) else destination_from_config(inner)
        self.interrupt_before = interrupt_before
        self.interrupt_after = interrupt_after
        self.raise_after = raise_after
        self.sleep = sleep
        self.marker = marker
        self.marker_after = marker_after
        self.transactional = self.inner.transactional  # type: ignore[misc]
        self.applies_per_batch = getattr(self.inner, "applies_per_batch", True)
        self.modes = self.inner.modes  # type: ignore[misc]

    def config(self) -> dict[str, Any]:
        return {"inner": {"kind": self.inner.kind, **self.inner.config()},
                "interrupt_before": self.interrupt_before, "interrupt_after": self.interrupt_after,
                "raise_after": self.raise_after, "sleep": self.sleep, "marker": self.marker,
                "marker_after": self.marker_after}

    def identity(self) -> str:
        return self.inner.identity()

    def validate(self, columns, primary_key, mode) -> None:
        self.inner.validate(columns, primary_key, mode)

    def open(self, ctx: DestinationContext) -> DestinationSession:
        return FaultySession(self, ctx, self.inner.open(ctx))


class FaultySession(DestinationSession):
    destination: FaultyDestination

    def __init__(self, destination: FaultyDestination, ctx: DestinationContext, inner: DestinationSession) -> None:
        super().__init__(destination, ctx)
        self.inner = inner
        self.calls = 0

    def prepare(self, schema):
        return self.inner.prepare(schema)

    def committed_batches(self):
        return self.inner.committed_batches()

    def write(self, batch):
        d = self.destination
        self.calls += 1
        if d.interrupt_before is not None and self.calls == d.interrupt_before:
            d.interrupt_before = None  # once
            raise KeyboardInterrupt
        if d.sleep:
            time.sleep(d.sleep)
        result = self.inner.write(batch)
        if d.marker and d.marker_after is not None and self.calls >= d.marker_after:
            pathlib.Path(d.marker).write_text(str(batch.batch_no))
        if d.interrupt_after is not None and self.calls == d.interrupt_after:
            d.interrupt_after = None
            raise KeyboardInterrupt
        if d.raise_after is not None and self.calls == d.raise_after:
            d.raise_after = None
            raise RuntimeError("injected failure after the destination committed")
        return result

    def finish(self):
        return self.inner.finish()

    def abandon(self):
        return self.inner.abandon()

    def close(self):
        return self.inner.close()


def env_with_repo() -> dict[str, str]:
    env = dict(os.environ)
    root = str(pathlib.Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
