from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app
from service.services import Services
from service.worker.runner import run_job


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", workers=0, device="cpu")


@pytest.fixture
def app(settings: Settings):
    return create_app(settings, start_workers=False)


@pytest.fixture
def services(app) -> Services:
    return app.state.services


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


@pytest.fixture
def run_queued(services: Services):
    """Run every queued job in this process, the way a worker would; returns their statuses."""

    def run() -> list[str]:
        done = []
        while (job := services.meta.claim_next("test-worker")) is not None:
            done.append(run_job(job, "test-worker", services.meta, services.artifacts,
                                notify=services.on_event))
        return done

    return run
