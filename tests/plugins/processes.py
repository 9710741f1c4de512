"""Fixtures that start real separate processes: the ``dfsync`` command and Python scripts.

Every child gets ``PYTHONPATH=<repo root>`` so it imports this checkout's dfsync, not an
installed one. Children still running when a test ends are killed (by their own pid).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("DFSYNC_WORKSPACE", None)
    env.update(extra)
    return env


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def dfsync_cli(tmp_path):
    """Run ``python -m dfsync ARGS`` to completion in tmp_path; returns (code, stdout, stderr)."""

    def run(*args: str, timeout: float = 240, **env: str) -> CliResult:
        p = subprocess.run([sys.executable, "-m", "dfsync", *args], cwd=tmp_path, env=child_env(**env),
                           capture_output=True, text=True, timeout=timeout)
        return CliResult(p.returncode, p.stdout, p.stderr)

    return run


@pytest.fixture
def spawn(tmp_path) -> Iterator:
    """Start a child process (``python -c CODE`` or ``python -m dfsync ...``) that the test watches."""
    children: list[subprocess.Popen] = []

    def start(*argv: str, code: str | None = None, **env: str) -> subprocess.Popen:
        cmd = [sys.executable, "-c", code] if code is not None else [sys.executable, "-m", "dfsync", *argv]
        p = subprocess.Popen(cmd, cwd=tmp_path, env=child_env(**env), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        children.append(p)
        return p

    yield start
    for p in children:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=60)
