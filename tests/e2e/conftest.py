"""A real server: ``fitserve serve`` as a subprocess on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import probe, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PortTaken(Exception):
    """The server could not bind its port."""


class ServerProcess:
    command: tuple[str, ...] = ("serve",)
    """The ``fitserve`` command line it runs (subclasses run other commands)."""
    new_session = False
    """Start it as its own process group (to kill it with all its children at once)."""

    def __init__(self, data_dir: Path, workers: int = 1, **env: str) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.env = env
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        for _ in range(3):
            try:
                return self._start()
            except PortTaken:  # free_port's port was taken (by another xdist worker's
                self.port = free_port()  # server, say) before this one bound it: another
                self.log = self.data_dir.parent / f"server-{self.port}.log"
        return self._start()

    def _start(self) -> ServerProcess:
        env = {**os.environ, "FITSERVE_DATA_DIR": str(self.data_dir),
               "FITSERVE_WORKERS": str(self.workers), "FITSERVE_DEVICE": "cpu",
               "FITSERVE_PORT": str(self.port), **self.env}
        with self.log.open("ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service.cli", *self.command],
                env=env, stdout=out, stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parents[2], start_new_session=self.new_session,
            )

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                log = self.log.read_text()
                self.proc = None
                if "address already in use" in log.lower():
                    raise PortTaken(self.port)
                raise AssertionError(f"server exited: {log[-2000:]}")
            return self.is_ready()

        try:
            wait_for(ready, timeout=60)
        except BaseException:  # never ready: leave no server behind
            if self.proc is not None:
                self.proc.kill()
                self.proc.wait(5)
                self.proc = None
            raise
        return self

    def is_ready(self) -> bool:
        try:
            r = probe().get(f"{self.url}/readyz", timeout=1)
            return r.status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)
        self.proc = None


def module_server(tmp_path_factory: pytest.TempPathFactory, name: str, workers: int = 1,
                  **env: str) -> Iterator[ServerProcess]:
    """A server shared by a module's tests: its module-scoped fixture yields from this."""
    s = ServerProcess(tmp_path_factory.mktemp(name) / "data", workers, **env).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    started: list[ServerProcess] = []

    def make(workers: int = 1, data_dir: Path | None = None, **env: str) -> ServerProcess:
        s = ServerProcess(data_dir or tmp_path / "data", workers, **env)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def server(server_factory) -> ServerProcess:
    return server_factory().start()


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c
