"""A local Ray cluster for the slow Ray tests (``local_ray``), and the processes of its workers.

The cluster is started once per test session with ``ray start --head --num-cpus=2`` and joined
as ``address="auto"`` (by the tests' own process and by driver subprocesses), then stopped.
``DFSYNC_TEST_RAY_RUNNING=1``: a cluster already started on this host is used and left running.
Without Ray the tests are skipped, except under ``CI=true`` where they FAIL.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from tests.faulty import env_with_repo


def ray_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    # on a busy host Ray's agents start slowly, and its raylet gives up on them after ~15 s
    # (ray-project/ray#65983): as root, start them at a higher priority
    nice = ["nice", "-n", "-10"] if os.geteuid() == 0 else []
    return subprocess.run([*nice, ray_bin, *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test using the cluster runs on one xdist worker (under ``--dist loadgroup``, as CI
    runs the slow suite): the cluster is one per host (``address="auto"``, ``ray stop --force``
    at the end), so two workers' sessions must not start and stop it under each other."""
    for item in items:
        if "local_ray" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("ray"))


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """A local Ray cluster with 2 CPUs, started with `ray start` and joined as address="auto"
    (DFSYNC_TEST_RAY_RUNNING=1: one already running on this host, left running)."""
    if os.environ.get("CI") == "true":
        import ray  # noqa: F401 - under CI a missing Ray fails the test
    else:
        pytest.importorskip("ray")
    import ray

    if os.environ.get("DFSYNC_TEST_RAY_RUNNING"):  # a cluster already started on this host (ray start --head)
        yield
        ray.shutdown()
        return
    env = {**env_with_repo(), "RAY_USAGE_STATS_ENABLED": "0", "RAY_agent_register_timeout_ms": "120000"}
    out = None
    for _ in range(3):
        out = ray_cli("start", "--head", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                      "--object-store-memory=200000000", env=env)
        if out.returncode == 0:
            break
        ray_cli("stop", "--force", env=env)
    assert out is not None and out.returncode == 0, f"ray start failed: {out.stderr[-2000:] if out else ''}"
    try:
        yield
    finally:
        ray.shutdown()
        ray_cli("stop", "--force", env=env)


def ray_task_workers(*tasks: str) -> list[psutil.Process]:
    """The Ray worker processes of this user running a task of one of the functions ``tasks`` now
    (Ray titles a worker ``ray::<function>`` while it runs a task, ``ray::IDLE`` between tasks),
    found under the raylets of this host."""
    found = []
    for raylet in psutil.process_iter(["name", "uids"]):
        try:
            if raylet.info["name"] != "raylet" or raylet.info["uids"].real != os.getuid():
                continue
            children = raylet.children(recursive=True)
        except psutil.Error:
            continue
        for p in children:
            try:
                title = " ".join(p.cmdline())
            except psutil.Error:
                continue
            if any(title.startswith(f"ray::{task}") for task in tasks):
                found.append(p)
    return found
