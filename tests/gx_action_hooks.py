"""Custom Great Expectations actions, importable by other processes (tests/test_gx_actions.py)."""

from __future__ import annotations

import json
import os
from typing import Literal

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from great_expectations.checkpoint.actions import (  # noqa: E402
    ActionContext,
    UpdateDataDocsAction,
    ValidationAction,
)


class RecordAction(ValidationAction):
    """Appends what it received to a JSON-lines file: one line per checkpoint result."""

    type: Literal["dfsync_test_record"] = "dfsync_test_record"
    path: str

    def run(self, checkpoint_result, action_context: ActionContext | None = None) -> dict:
        suites = []
        for key, res in checkpoint_result.run_results.items():
            suites.append({
                "suite": res.suite_name,
                "key_suite": key.expectation_suite_identifier.name,
                "run_name": key.run_id.run_name,
                "success": res.success,
                "statistics": res.statistics,
                "unexpected": {r.expectation_config.meta.get("dfsync_check"): r.result.get("unexpected_count")
                               for r in res.results},
                "types": sorted(r.expectation_config.type for r in res.results),
                "observed": {r.expectation_config.meta.get("dfsync_check"): r.result.get("observed_value")
                             for r in res.results if "observed_value" in r.result},
            })
        docs = action_context.filter_results(UpdateDataDocsAction) if action_context else []
        line = {"checkpoint": checkpoint_result.name, "success": checkpoint_result.success, "suites": suites,
                "described": checkpoint_result.describe_dict()["statistics"], "pid": os.getpid(),
                "docs_pages": [page for result in docs for pages in result.values() for page in pages.values()]}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(line) + "\n")
        return {"recorded": True}


class RaisingAction(ValidationAction):
    type: Literal["dfsync_test_raise"] = "dfsync_test_raise"

    def run(self, checkpoint_result, action_context: ActionContext | None = None) -> dict:
        raise RuntimeError("pager service is down")


def read(path) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]
