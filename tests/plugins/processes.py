"""Fixtures that start real separate processes: the ``dfsync`` command and Python scripts.

Every child gets ``PYTHONPATH=<repo root>`` so it imports this checkout's dfsync, not an
installed one. Children still running when a test ends are killed (by their own pid).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
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


class _Zygote:
    """The warm parent of ``dfsync`` commands (tests/plugins/_cli_zygote.py), one per test process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.env: dict[str, str] = {}

    def _start(self) -> None:
        self.env = child_env()
        r, w = os.pipe()
        self.proc = subprocess.Popen([sys.executable, str(pathlib.Path(__file__).with_name("_cli_zygote.py")), str(w)],
                                     stdin=subprocess.PIPE, env=self.env, pass_fds=(w,), text=True)
        os.close(w)
        self.answers = os.fdopen(r)

    def fits(self, env: dict[str, str]) -> bool:
        """Whether a child of the warm interpreter starts as a fresh one would with this environment."""
        def startup(e: dict[str, str]) -> dict[str, str]:
            return {k: v for k, v in e.items() if k.startswith(_STARTUP)}
        return startup(env) == startup(self.env or child_env())

    def run(self, argv: list[str], cwd: str, env: dict[str, str], timeout: float) -> CliResult:
        with self.lock, tempfile.TemporaryDirectory() as tmp:
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
            req = {"argv": argv, "cwd": cwd, "env": env, "out": out, "err": err, "timeout": timeout}
            assert self.proc is not None and self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            line = self.answers.readline()
            if not line:  # the warm parent died (it runs nothing but imports): report it with the command
                raise RuntimeError(f"the dfsync_cli fixture's warm parent exited ({self.proc.wait()}) "
                                   f"while running dfsync {' '.join(argv)}")
            answer = json.loads(line)
            if answer.get("timeout"):
                raise subprocess.TimeoutExpired([sys.executable, "-m", "dfsync", *argv], timeout)
            text = [pathlib.Path(f).read_bytes().decode().replace("\r\n", "\n").replace("\r", "\n") for f in (out, err)]
            return CliResult(answer["code"], text[0], text[1])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)


# Variables read once when an interpreter starts: a child of the warm one would not see a change.
_STARTUP = ("PYTHON", "LC_", "LANG", "TZ", "LD_")
_ZYGOTE = _Zygote()


def pytest_unconfigure(config) -> None:
    _ZYGOTE.stop()


@pytest.fixture
def dfsync_cli(tmp_path):
    """Run ``python -m dfsync ARGS`` to completion in tmp_path; returns (code, stdout, stderr).

    Each command is a process of its own, forked from an interpreter that imported dfsync once
    (tests/plugins/_cli_zygote.py); an environment that changes the interpreter's start-up runs a
    fresh ``python -m dfsync``."""

    def run(*args: str, timeout: float = 240, **env: str) -> CliResult:
        full = child_env(**env)
        if _ZYGOTE.fits(full):
            return _ZYGOTE.run(list(args), str(tmp_path), full, timeout)
        p = subprocess.run([sys.executable, "-m", "dfsync", *args], cwd=tmp_path, env=full,
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
