"""Shared by the security tests: one bounded, reproducible hypothesis profile, and real
servers whose environment and client headers are fixtures (``server_env``, ``auth_headers``),
so that the same tests run with auth on: ``FITSERVE_TEST_AUTH=true pytest tests/security``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, settings

from tests.e2e.conftest import ServerProcess

# derandomized: a failure found once is found on every run and on every machine
settings.register_profile(
    "security",
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SECURITY = settings.get_profile("security")


# FITSERVE_TEST_AUTH=true runs every real-server test here with FITSERVE_AUTH=true and an
# admin key; by default they run as a loopback-only deployment does, with auth off
AUTH = os.environ.get("FITSERVE_TEST_AUTH", "").lower() in ("1", "true")


@pytest.fixture
def server_env() -> dict[str, str]:
    """Extra FITSERVE_* variables of every server the security tests start."""
    return {"FITSERVE_AUTH": "true"} if AUTH else {}


@pytest.fixture
def auth_headers(tmp_path: Path) -> dict[str, str]:
    """Headers every client of those servers sends: with auth on, an admin key created
    with ``fitserve keys create`` in the data directory the servers use."""
    if not AUTH:
        return {}
    made = subprocess.run(
        [sys.executable, "-m", "service.cli", "keys", "create", "--tenant", "security",
         "--scope", "admin"],
        env={**os.environ, "FITSERVE_DATA_DIR": str(tmp_path / "data")},
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
    )
    assert made.returncode == 0, made.stderr
    return {"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}


StartServer = Callable[..., ServerProcess]


@pytest.fixture
def start_server(tmp_path: Path, server_env: dict[str, str]) -> Iterator[StartServer]:
    """``start_server(workers=1, data_dir=None, **env)``: a started server, stopped at the end
    (killed ones too); the same ``data_dir`` again restarts on the same data."""
    started: list[ServerProcess] = []

    def start(workers: int = 1, data_dir: Path | None = None, **env: str) -> ServerProcess:
        s = ServerProcess(data_dir or tmp_path / "data", workers, **{**server_env, **env})
        started.append(s)
        s.start()
        if AUTH:  # the switch really is on: no key, no access
            assert httpx.get(f"{s.url}/v1/datasets", timeout=30).status_code == 401
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def client_for(auth_headers: dict[str, str]) -> Iterator[Callable[[ServerProcess], httpx.Client]]:
    clients: list[httpx.Client] = []

    def make(server: ServerProcess) -> httpx.Client:
        c = httpx.Client(base_url=server.url, headers=auth_headers, timeout=30)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()
