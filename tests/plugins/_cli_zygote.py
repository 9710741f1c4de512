"""A warm parent for ``python -m dfsync ARGS`` children (the ``dfsync_cli`` fixture's engine).

Each ``dfsync`` command a test runs is a real process of its own, but importing dfsync (polars,
pyarrow, DuckDB) costs a fresh interpreter ~0.5 CPU-s, most of a short command, and the suite runs
a few hundred of them. This program imports dfsync once, then forks one child per request: the
child takes the request's working directory, environment and output files, runs the ``dfsync``
module as ``python -m dfsync`` does (``runpy``), and exits through the interpreter's normal
shutdown (atexit handlers, finalisers), so its exit code, output and files are those of a fresh
``python -m dfsync``. Nothing runs in this process but imports: no thread of polars' or DuckDB's
pools exists yet when it forks. A request whose interpreter settings differ (``PYTHON*``, locale,
``TZ``, ``LD_*``) is run by the fixture as a fresh process instead.

Protocol: one JSON request per line on stdin ``{"argv", "cwd", "env", "out", "err", "timeout"}``;
one JSON answer per line on the file descriptor given as argv[1]: ``{"code": n}`` or
``{"timeout": true}``.
"""

from __future__ import annotations

import json
import os
import sys
import time

import dfsync.cli  # noqa: F401  (the point: imported once, before any fork)


def _child(req: dict, answers: int) -> None:
    """Become ``python -m dfsync ARGV`` (never returns)."""
    import random
    import runpy

    os.close(answers)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, req["out"]), (2, req["err"])):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(f, fd)
        os.close(f)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    sys.stdout = sys.__stdout__  # fd 1: the request's file
    sys.path[0] = req["cwd"]  # as `python -m` sets it
    sys.argv = ["-m", *req["argv"]]  # runpy puts the module's path first
    random.seed()
    runpy.run_module("dfsync", run_name="__main__", alter_sys=True)
    raise SystemExit(0)  # out of the request loop: the interpreter's own exit, as a fresh process


def main() -> None:
    answers = int(sys.argv[1])
    sys.stdout = open(os.devnull, "w")  # nothing of this process is ever buffered when it forks
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(req, answers)
        deadline = time.monotonic() + req["timeout"]
        answer: dict
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                answer = {"code": os.waitstatus_to_exitcode(status)}
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                answer = {"timeout": True}
                break
            time.sleep(0.005)
        os.write(answers, (json.dumps(answer) + "\n").encode())


if __name__ == "__main__":
    main()
