"""Files of a DuckDB workspace are its owner's only: the file, its journal, the directories
dfsync makes and the staging spill directories; another OS user gets a clear error."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap

import polars as pl
import pytest

import dfsync
from dfsync.staging import Staging
from tests.faulty import env_with_repo


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_workspace_its_journal_and_directories_are_owner_only(tmp_path):
    old = os.umask(0o022)  # the usual umask: what DuckDB alone would create readable by all
    try:
        path = tmp_path / "made" / "by" / "dfsync" / "ws.duckdb"
        ws = dfsync.Workspace(path)
        try:
            assert mode(path) == 0o600
            assert mode(tmp_path / "made") == mode(tmp_path / "made" / "by") == 0o700
            sync = ws.create_sync("s", source=dfsync.sources.frame(pl.DataFrame({"id": [1, 2]})),
                                  destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"),
                                  primary_key="id", batch_size=10)  # staged (a first load in place spills there too)
            with ws.store.lease():  # a connection held open: its journal stays on disk
                sync.disable()
                wal = str(path) + ".wal"
                assert os.path.exists(wal) and mode(wal) == 0o600
            sync.enable()
            assert sync.run(progress=False).status == "success"
            assert mode(path) == 0o600 and mode(path.parent / "staging") == 0o700
        finally:
            ws.close()
    finally:
        os.umask(old)


def test_staging_spill_directories_are_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        staging = Staging(temp_dir=str(tmp_path / "staging" / "run-1"))
        try:
            assert mode(tmp_path / "staging") == mode(tmp_path / "staging" / "run-1") == 0o700
        finally:
            staging.close()
        staging = Staging()  # no directory given: a fresh private one in the system's temp directory
        try:
            assert mode(staging.temp_dir) == 0o700
        finally:
            staging.close()
    finally:
        os.umask(old)


def test_staging_directories_in_the_temp_directory_do_not_pile_up(tmp_path, monkeypatch):
    """Empty /tmp/dfsync-staging-* directories piled up: a Staging made without a directory (a
    preview's, a validation's, a caller's own) left its mkdtemp directory behind when closed. Its
    close() now removes it, and one left by a killed process (its pid is in the name) is removed
    by the next one made; a live process's is kept."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    os.mkdir(tmp_path / "tmp")

    def left() -> list[str]:
        return sorted(n for n in os.listdir(tmp_path / "tmp") if n.startswith("dfsync-staging-"))

    staging = Staging()
    assert os.path.dirname(staging.temp_dir) == str(tmp_path / "tmp") and len(left()) == 1
    staging.close()
    assert left() == []
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    sync = ws.create_sync("s", source=pl.DataFrame({"id": [1, 2], "v": ["a", "b"]}), primary_key="id",
                          destination=dfsync.destinations.duckdb(str(tmp_path / "wh.duckdb"), "t"))
    sync.preview(), sync.validate(), sync.run(progress=False)
    assert left() == []
    ws.close()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for pid in (int(dead.stdout), os.getppid()):  # a killed process's, a live one's
        os.makedirs(tmp_path / "tmp" / f"dfsync-staging-{pid}-x" / "sub")
    Staging().close()
    assert left() == [f"dfsync-staging-{os.getppid()}-x"]


OPEN_AS_NOBODY = textwrap.dedent("""
    import os, sys, pwd, psutil
    import dfsync, dfsync.workspace  # imported as root: the interpreter may live in root's home
    os.setgid({gid}); os.setuid({uid})
    try:
        dfsync.Workspace(sys.argv[1])
    except dfsync.DfsyncError as exc:
        print(type(exc).__name__, "|", exc)
""")


@pytest.mark.parametrize("where", ["private directory", "shared directory"])
def test_another_os_user_gets_a_clear_error(tmp_path, where):
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("this test switches to another OS user, which needs root; CI must run it as root")
        pytest.skip("switching to another OS user needs root")
    nobody = pwd.getpwnam("nobody")
    # a shared directory (/tmp-like): the file's owner decides; a private one: not even visible
    base = tmp_path if where == "private directory" else tempfile.mkdtemp(prefix="dfsync-shared-")
    try:
        if where == "shared directory":
            os.chmod(base, 0o755)
        path = os.path.join(base, "ws.duckdb")
        dfsync.Workspace(path).close()
        before = sorted(os.listdir(base)), os.path.getmtime(path)
        out = subprocess.run([sys.executable, "-c", OPEN_AS_NOBODY.format(uid=nobody.pw_uid, gid=nobody.pw_gid),
                              path], capture_output=True, text=True, env=env_with_repo() | {"HOME": "/tmp"},
                             cwd="/", timeout=120)
        assert out.returncode == 0, out.stderr
        name, _, message = out.stdout.strip().partition(" | ")
        assert name == "WorkspaceError", out.stdout + out.stderr
        assert path in message and "run dfsync as that user" in message
        assert ("belongs to the OS user 'root'" if where == "shared directory" else "permission denied") in message
        assert (sorted(os.listdir(base)), os.path.getmtime(path)) == before  # nothing changed
    finally:
        if base != tmp_path:
            shutil.rmtree(base, ignore_errors=True)
