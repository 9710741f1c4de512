"""The ``delta`` target: a Delta Lake table in the test's temp directory, read back with polars."""

from __future__ import annotations

import os

import polars as pl

import dfsync

from .targets import Target, register_target


@register_target("delta")
def _delta_target(request, tmp_path) -> Target:
    root = tmp_path / "delta"

    def read(table: str) -> pl.DataFrame:
        path = root / table
        if not os.path.isdir(path / "_delta_log"):
            return pl.DataFrame()
        return pl.read_delta(str(path))

    return Target("delta", lambda table: dfsync.destinations.delta(str(root / table)), read)
