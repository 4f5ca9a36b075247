from __future__ import annotations

import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# the service (and torch with it) is imported by the fixtures, not here: every pytest process
# loads this file, the xdist controller too, which runs no test
if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from service.config import Settings
    from service.services import Services


def pytest_configure(config: pytest.Config) -> None:
    _one_tls_context_per_process()


def _one_tls_context_per_process() -> None:
    """Every httpx client of a test process shares one default TLS context. httpx builds a
    context for each client (each ``httpx.get`` makes a client too), and loading certifi's
    bundle into it is some 35 ms of CPU: 50 threads each with its own client spent 1.5 s
    on it. The tests speak plain HTTP to loopback; an SSLContext is made
    to be shared. A client that asks for something else (verify=False, a context, a
    certificate) still gets its own."""
    import httpx._transports.default as transport

    make = transport.create_ssl_context
    shared: list[ssl.SSLContext] = []

    def create_ssl_context(verify: Any = True, cert: Any = None,
                           trust_env: bool = True) -> ssl.SSLContext:
        if verify is True and cert is None and trust_env:
            if not shared:
                shared.append(make(verify=True, cert=None, trust_env=True))
            return shared[0]
        return make(verify=verify, cert=cert, trust_env=trust_env)

    transport.create_ssl_context = create_ssl_context


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that start real servers first, in collection order otherwise: with xdist's
    ``--dist loadfile --no-loadscope-reorder`` the long files start at once and the short
    ones fill in around them, instead of a long file starting last and running alone."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """One intra-op thread in each test process: xdist runs a process per core, and more
    threads only spin against each other (the servers the tests start set their own)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def skm():
    """scikit-learn's metrics, the tests' reference for fitserve's: imported by the tests
    that compare against them, not at collection (half a second of each test process)."""
    from sklearn import metrics

    return metrics


@pytest.fixture(scope="session")
def _migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store the migrations brought to head, once per test process: each app
    fixture starts from a copy of it (its start then finds the schema at head) instead of
    running every migration again, some 0.1 s of CPU an app. tests/unit/store/test_migrate.py
    runs the migrations themselves."""
    from sqlalchemy import create_engine

    from service.store.migrate import upgrade

    path = tmp_path_factory.mktemp("schema") / "fitserve.db"
    engine = create_engine(f"sqlite:///{path}")
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return path


@pytest.fixture
def settings(tmp_path: Path, _migrated_store: Path) -> Settings:
    from service.config import Settings

    data = tmp_path / "data"
    data.mkdir()
    shutil.copyfile(_migrated_store, data / "fitserve.db")
    return Settings(data_dir=data, workers=0, device="cpu")


@pytest.fixture
def app(settings: Settings):
    from service.main import create_app

    return create_app(settings, start_workers=False)


@pytest.fixture
def services(app) -> Services:
    return app.state.services


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    from fastapi.testclient import TestClient

    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


@pytest.fixture
def run_queued(services: Services):
    """Run every queued job in this process, the way a worker would; returns their statuses."""
    from service.worker.runner import run_job

    def run() -> list[str]:
        done = []
        while (job := services.meta.claim_next("test-worker")) is not None:
            done.append(run_job(job, "test-worker", services.meta, services.artifacts,
                                notify=services.on_event))
        return done

    return run
