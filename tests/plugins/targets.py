"""The parametrised ``target`` fixture: one destination kind per parameter.

A target knows how to make a destination for a table name and how to read that table back
as a polars DataFrame, so behaviour tests are written once for every destination.
Backends register themselves with :func:`register_target` from their own plugin module
(e.g. ``tests/plugins/postgres.py`` registers ``postgres``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl
import pytest

import dfsync


@dataclass
class Target:
    kind: str
    make: Callable[[str], Any]  # table name -> Destination
    read: Callable[[str], pl.DataFrame]  # table name -> current contents
    exactly_once: bool = True


#: kind -> factory(request, tmp_path) -> Target
TARGETS: dict[str, Callable[[Any, Any], Target]] = {}


def register_target(kind: str):
    def deco(fn):
        TARGETS[kind] = fn
        return fn

    return deco


@register_target("duckdb")
def _duckdb_target(request, tmp_path) -> Target:
    import duckdb

    path = str(tmp_path / "dest.duckdb")

    def read(table: str) -> pl.DataFrame:
        if not os.path.exists(path):
            return pl.DataFrame()
        con = duckdb.connect(path, read_only=True)
        try:
            return pl.from_arrow(con.sql(f'SELECT * FROM "{table}"').to_arrow_table())
        finally:
            con.close()

    return Target("duckdb", lambda table: dfsync.destinations.duckdb(path, table=table), read)


@register_target("parquet")
def _parquet_target(request, tmp_path) -> Target:
    root = tmp_path / "lake"

    def read(table: str) -> pl.DataFrame:
        f = root / table / "data.parquet"
        return pl.read_parquet(f) if f.exists() else pl.DataFrame()

    return Target("parquet", lambda table: dfsync.destinations.parquet(str(root / table)), read)


def pytest_generate_tests(metafunc):
    if "target" in metafunc.fixturenames:
        kinds = getattr(metafunc.function, "target_kinds", None) or sorted(TARGETS)
        metafunc.parametrize("target", kinds, indirect=True)


@pytest.fixture
def target(request, tmp_path) -> Target:
    return TARGETS[request.param](request, tmp_path)
