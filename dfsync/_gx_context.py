"""Great Expectations, imported on demand, and the per-process GX Data Contexts dfsync uses.

``great_expectations`` costs seconds to import: nothing imports it before a GX check or
checkpoint needs it, and :func:`gx_available` answers without importing it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

from dfsync.errors import MissingDependencyError


def gx_available() -> bool:
    if "great_expectations" in sys.modules:
        return sys.modules["great_expectations"] is not None
    try:
        return importlib.util.find_spec("great_expectations") is not None
    except (ImportError, ValueError):
        return False


def import_gx() -> Any:
    """Import great_expectations (quietly), or raise MissingDependencyError naming the extra."""
    if not gx_available():
        raise MissingDependencyError("great_expectations", "validation", "Great Expectations checks")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    try:
        import great_expectations
    except ImportError as exc:
        raise MissingDependencyError("great_expectations", "validation", "Great Expectations checks") from exc
    return great_expectations


CONTEXTS: dict[str, Any] = {}  # per process: the ephemeral context, its batch definition, file contexts by root


def batch_definition() -> Any:
    """The one in-memory pandas batch definition GX validates staged rows through (made once)."""
    if "bd" not in CONTEXTS:
        gx = import_gx()
        ctx = CONTEXTS["ctx"] = gx.get_context(mode="ephemeral")
        try:  # no "Calculating Metrics" bars in the user's notebook or terminal
            from great_expectations.data_context.types.base import ProgressBarsConfig

            ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        except Exception:  # an older/newer GX without this setting: bars are cosmetic
            pass
        asset = ctx.data_sources.add_pandas("dfsync").add_dataframe_asset("staged")
        CONTEXTS["bd"] = asset.add_batch_definition_whole_dataframe("rows")
    return CONTEXTS["bd"]


def file_context(root: str) -> Any:
    """The file Data Context at ``root`` (opened once per process)."""
    key = f"ctx:{root}"
    if key not in CONTEXTS:
        CONTEXTS[key] = import_gx().get_context(context_root_dir=root)
    return CONTEXTS[key]


def ephemeral_context() -> Any:
    """dfsync's own in-memory Data Context (the one its batch definition lives in)."""
    batch_definition()
    return CONTEXTS["ctx"]
