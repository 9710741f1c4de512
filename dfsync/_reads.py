"""Parallel reads of a partitioned run on an engine (``sync.run(engine=...)``).

The driver plans the source's splits (:mod:`dfsync.sources._split`: Parquet by files and row
groups, CSV/NDJSON by file, a database by key ranges in one snapshot), the engine's workers
read them side by side into files in the run's staging directory, and the driver's staging
reads those files in place of the source: the same rows, types and values as reading the
source here, so staging, the diff, the gates and the checks are unchanged and stay global.
A worker that dies is dispatched again (its split is written whole or not at all). A source
that cannot be split safely is read on the driver, as without an engine, and the run's
events say why.

Split reads pay only when the workers are on other hosts: staging stays on the driver, so on
its own host a split read adds a write and a read of every row to what the driver's own
(multi-threaded) read does. :func:`why_not_split` is the one place deciding it.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import shutil
from typing import TYPE_CHECKING, Any

from ._bucket import kill_point
from ._settings import setting
from ._words import plural
from .engines import Engine, WorkerLost, finished
from .errors import SourceError
from .sources._split import Plan, SplitSource, plan, read_split

if TYPE_CHECKING:
    from .runner import Runner
    from .sources.base import CursorFilter, Source

MAX_ATTEMPTS = 3


def read_task(task: dict[str, Any]) -> int:
    """A worker's read of one split (``DFSYNC_TEST_KILL_WORKER="read:split:0:once-file"`` kills it, tests only)."""
    kill_point("read", task, 0)
    return read_split(task)


def source_for(runner: Runner, cursor: CursorFilter | None) -> Source:
    """What the run's staging reads: the source itself, or the files its splits were read into."""
    defn, engine = runner.defn, runner.engine
    source = defn.source
    if not defn.partitions or engine is None or not engine.remote or runner.dry or runner.staging is None:
        return source
    why = why_not_split(engine)
    if why:
        runner.store.note(runner.sync_id, runner.run_id, f"read on the driver, not split: {why}")
        return source
    engine.start()
    workdir = os.path.join(runner.staging.temp_dir, "reads")
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    planned = plan(source, defn.mapping, cursor, list(defn.primary_key), max(defn.partitions, engine.slots()),
                   workdir)
    if not isinstance(planned, Plan) or len(planned.tasks) < 2:
        if isinstance(planned, Plan) and planned.close is not None:
            planned.close()
        why = planned if isinstance(planned, str) else "a single split"
        runner.store.note(runner.sync_id, runner.run_id, f"read on the driver, not split: {why}")
        return source
    try:
        retried = _dispatch(engine, planned)
        changed = planned.check() if planned.check is not None else None
    finally:
        if planned.close is not None:
            planned.close()
    if changed:
        shutil.rmtree(workdir, ignore_errors=True)
        runner.store.note(runner.sync_id, runner.run_id, f"read on the driver after all: {changed}")
        return source
    again = f"; {retried} split reads dispatched again after their worker died" if retried else ""
    runner.store.note(runner.sync_id, runner.run_id, f"read in {planned.detail}, on {engine!r}{again}")
    return SplitSource(source, planned)


def why_not_split(engine: Engine) -> str | None:
    """Why a partitioned run on ``engine`` reads its source on the driver rather than in
    splits, or None to split. ``DFSYNC_SPLIT_READS`` (or the workspace's ``split_reads``): ``auto``
    (the default) splits only when some of the engine's workers are on other hosts than the
    driver's; ``1`` always (a source that serves several readers faster than one); ``0`` never."""
    mode = setting("split_reads")
    if mode == "auto":
        engine.start()
        if engine.other_hosts():
            return None
        return ("the engine's workers are all on this host, where a split read costs more than the "
                "driver's own read (DFSYNC_SPLIT_READS=1 forces split reads)")
    return None if mode else "split_reads is off"


def _dispatch(engine: Engine, planned: Plan) -> int:
    """Every split read by the engine's workers; returns how many were dispatched again."""
    tasks = planned.tasks
    kill = os.environ.get("DFSYNC_TEST_KILL_WORKER")
    for i, t in enumerate(tasks):
        t.update(bucket=i, test_kill=kill)
    waiting = list(range(len(tasks)))
    attempts = dict.fromkeys(waiting, 0)
    running: dict[cf.Future[Any], int] = {}
    error: BaseException | None = None
    retried = 0
    slots = engine.slots()
    try:
        while waiting or running:
            while waiting and len(running) < slots and error is None:
                i = waiting.pop(0)
                attempts[i] += 1
                running[engine.submit(read_task, tasks[i])] = i
            if not running:
                break
            for i, _, exc in finished(running):
                if isinstance(exc, WorkerLost):
                    if attempts[i] >= MAX_ATTEMPTS:
                        error = error or SourceError(
                            f"the worker reading split {i} of the source died {plural(attempts[i], 'time')} ({exc}); "
                            f"nothing was sent. Run the sync again (or without an engine).")
                    else:
                        retried += 1
                        waiting.insert(0, i)
                elif exc is not None:  # the source's own error, as a read here would raise it
                    error = error or exc
    finally:
        if running:  # Ctrl-C or an error: no read goes on writing into a staging directory about to go
            cf.wait(list(running))
    if error is not None:
        raise error
    return retried
