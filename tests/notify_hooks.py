"""Callbacks importable by reference ("tests.notify_hooks:record"), for the notification tests."""

from __future__ import annotations

import json
import os


def record(run) -> None:
    path = os.environ["DFSYNC_TEST_HOOK_FILE"]
    with open(path, "a") as fh:
        fh.write(json.dumps({"run": run.id, "status": run.status.value, "failed": run.counts["failed"]}) + "\n")
