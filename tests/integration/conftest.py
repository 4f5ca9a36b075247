"""Real services for the scale-out tests: PostgreSQL and Redis as they run on this machine
(a database and a key prefix of this test session's own), and an S3-compatible server
(moto's server mode) started on loopback.

A service that is missing skips these tests with a message naming it; with ``CI=true`` it
fails them instead, so CI cannot pass without having run them.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, make_url, text

from tests.e2e.conftest import ServerProcess, free_port
from tests.helpers import probe, wait_for

POSTGRES_URL = os.environ.get(
    "FITSERVE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("FITSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "fitserve-test", "AWS_SECRET_ACCESS_KEY": "fitserve-test",
                  "AWS_DEFAULT_REGION": "us-east-1"}


def require(service: str, error: BaseException) -> None:
    message = f"{service} is not available ({type(error).__name__}: {error})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI=true, so the integration tests must run", pytrace=False)
    pytest.skip(f"{message}; the integration tests need it")


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Any]:
    engine = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as e:  # noqa: BLE001 - any failure means: no usable server
        engine.dispose()
        require(f"PostgreSQL at {make_url(POSTGRES_URL).host}:{make_url(POSTGRES_URL).port}", e)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def new_database(postgres_admin: Any) -> Iterator[Callable[[], str]]:
    """Makes a fresh database ``fitserve_test_<random>``; all are dropped at the end."""
    made: list[str] = []

    def make() -> str:
        name = f"fitserve_test_{secrets.token_hex(5)}"
        with postgres_admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        made.append(name)
        return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)

    yield make
    with postgres_admin.connect() as conn:
        for name in made:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# ---------------------------------------------------------------- Redis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Any]:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as e:  # noqa: BLE001
        require(f"Redis at {REDIS_URL}", e)
    yield client
    client.close()


@pytest.fixture(scope="session")
def new_prefix(redis_server: Any) -> Iterator[Callable[[], str]]:
    """Makes a broker key prefix of this session's own; its keys are deleted at the end."""
    made: list[str] = []

    def make() -> str:
        prefix = f"fitserve-test-{secrets.token_hex(5)}"
        made.append(prefix)
        return prefix

    yield make
    for prefix in made:
        keys = list(redis_server.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            redis_server.delete(*keys)


# ---------------------------------------------------------------- S3 (moto server)


@dataclass
class S3Server:
    endpoint: str
    env: dict[str, str]

    def bucket_url(self, name: str) -> str:
        return f"s3://{name}/artifacts"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    try:
        import moto.server  # noqa: F401
    except ImportError as e:
        require("moto's S3 server (pip install 'moto[server]')", e)
    port = free_port()
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **S3_CREDENTIALS},
        )
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in S3_CREDENTIALS}

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"moto server exited: {log.read_text()[-2000:]}")
        try:
            return probe().get(endpoint, timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=60)
        os.environ.update(S3_CREDENTIALS)  # s3fs in this process reads them too
        yield S3Server(endpoint, dict(S3_CREDENTIALS))
    finally:
        proc.terminate()
        proc.wait(10)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# ---------------------------------------------------------------- processes


class WorkerProcess(ServerProcess):
    """``fitserve worker`` as a subprocess, in its own process group (its pool's children
    die with it when the test kills the group: a machine lost)."""

    new_session = True

    def __init__(self, data_dir: Path, name: str, redis_client: Any, **env: str) -> None:
        super().__init__(data_dir, 0, **env)
        self.name = name
        self.redis = redis_client
        self.command = ("worker", "--device", "cpu", "--concurrency", "1", "--name", name)

    def is_ready(self) -> bool:
        key = f"{self.env['FITSERVE_BROKER_PREFIX']}:workers:cpu"
        return self.redis.zscore(key, self.name) is not None

    def kill_group(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        pid = self.proc.pid if self.proc is not None else None
        super().stop()
        if pid is not None:
            try:  # pool children that outlived a slow shutdown
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def parent_pid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no parent for {pid}")


def hostname() -> str:
    return socket.gethostname()
