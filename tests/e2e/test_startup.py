"""A real server starting and stopping: "ready" once the port is bound, a busy port in one
line, a SIGTERM that leaves nothing behind, migrations in one line (issue 16)."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from service.store.upkeep import LOCK_NAME
from tests.e2e.conftest import ServerProcess
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


class GroupServer(ServerProcess):
    """A server in a process group of its own: its workers and multiprocessing's resource
    tracker are in it too, so "all of them gone" can be waited for."""

    new_session = True


def _live_in_group(pgid: int) -> list[int]:
    """Processes of group ``pgid`` still running (zombies left out)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            live.append(int(stat.parent.name))
    return live


def _log_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_busy_port_is_one_line_and_exit_code_1_and_starts_nothing(tmp_path: Path):
    data = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "FITSERVE_DATA_DIR": str(data), "FITSERVE_WORKERS": "1",
               "FITSERVE_DEVICE": "cpu", "FITSERVE_PORT": str(port)}
        proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=env,
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    stderr = err.decode()
    plain = [line for line in stderr.splitlines() if not line.startswith("{")]
    assert proc.returncode == 1, stderr
    assert plain == [f"fitserve: cannot listen on 127.0.0.1:{port}: address already in use; "
                     "stop the other server there or set FITSERVE_PORT (or --port)"], stderr
    assert out == b""
    logged = _log_lines(stderr)
    assert not [e for e in logged if "ready" in e["message"] or e["level"] == "error"], logged
    # no worker was started, none outlives the server, and the data dir is free again
    assert wait_for(lambda: not _live_in_group(proc.pid), timeout=10)
    with (data / LOCK_NAME).open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_ready_once_bound_one_migration_line_and_a_clean_sigterm(tmp_path: Path):
    server = GroupServer(tmp_path / "data", workers=1).start()
    try:
        assert server.proc is not None
        pid = server.proc.pid
        logged = _log_lines(server.log.read_text())
        ready = [e["message"] for e in logged if "ready on" in e["message"]]
        assert len(ready) == 1 and ready[0].endswith(f" ready on 127.0.0.1:{server.port}")
        migrations = [e for e in logged if e["logger"].startswith(("alembic", "service.store"))]
        assert [e["message"] for e in migrations] == [
            f"database at revision {_head()} (new)"], migrations
    finally:
        server.stop()  # SIGTERM: the pool stops its worker, uvicorn then raises the signal
    # the resource tracker says what leaked when it ends, after the server: wait for it
    wait_for(lambda: not _live_in_group(pid), timeout=15)
    text = server.log.read_text()
    assert "leaked" not in text and "Traceback" not in text, text[-3000:]


def _head() -> str:
    from alembic.script import ScriptDirectory

    from service.store.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""
