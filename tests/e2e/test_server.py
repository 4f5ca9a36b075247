"""End to end: the real server, over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import ServerProcess, module_server
from tests.helpers import finished_job, seed_example, wait_for

pytestmark = pytest.mark.e2e

# a job caught running before it ends: a few seconds here (some 450 us an epoch), and with
# progress written every 50 ms still several updates long on a machine five times as fast
FAST_PROGRESS = {"FITSERVE_PROGRESS_INTERVAL_S": "0.05"}


def _finished(http: httpx.Client, job_id: str, timeout: float = 60) -> dict:
    return finished_job(http, job_id, timeout)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the tests that leave it serving (a killed training worker is restarted
    by the server itself); the tests that restart or kill the server start their own."""
    yield from module_server(tmp_path_factory, "shared", 1, **FAST_PROGRESS)


@pytest.fixture
def http(shared: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared.url, timeout=30) as c:
        yield c


def test_seed_walkthrough_across_restarts(server_factory):
    """The seed job committed by a server that trains nothing, killed with no shutdown at
    all, runs on the next server (once); its model is still served after a third start.
    (A killed worker, or a server killed or stopped while a job runs, at each step of the
    job's life: tests/faults/.)"""
    idle = server_factory(workers=0).start()  # accepts jobs, trains none
    d = seed_example()
    with httpx.Client(base_url=idle.url, timeout=30) as http:
        ds = http.post("/v1/datasets", json={"name": "seed", "x": d["x"], "y": d["y"]}).json()
        r = http.post("/v1/jobs", json={"dataset_id": ds["id"], "seed": 0, "model_name": "seed"})
        assert r.status_code == 202 and r.headers["location"].endswith(r.json()["id"])
        assert r.json()["status"] == "queued"
    idle.kill()  # no shutdown at all: the job was committed before the 202

    server = server_factory(workers=1, data_dir=idle.data_dir).start()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        job = _finished(http, r.json()["id"])
        assert job["status"] == "succeeded" and job["attempts"] == 1, job
        model = http.get(f"/v1/models/{job['model_id']}").json()
        assert model["weight"][0][0] == pytest.approx(0.25999, abs=1e-4)
        assert model["bias"][0] == pytest.approx(0.74765, abs=1e-3)
        history = http.get(f"/v1/jobs/{job['id']}/history").json()
        assert len(history["loss"]) == 10_000
        assert history["loss"][19] == pytest.approx(0.1723215, rel=1e-5)
        before = http.post("/predict", json={"model": "seed", "x": [[3.3], [7.0]]}).json()
        assert before["model_id"] == model["id"] and before["version"] == 1

    server.stop()
    again = server_factory(workers=0, data_dir=server.data_dir).start()  # serving only
    with httpx.Client(base_url=again.url, timeout=30) as http:
        after = http.post(f"/v1/models/{model['id']}/predict", json={"x": [[3.3], [7.0]]})
        assert after.status_code == 200 and after.json()["y"] == before["y"]
        assert http.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"


def test_api_answers_while_training_and_cancel_stops_it(http):
    d = seed_example()
    first = http.post("/v1/jobs", json={"x": d["x"], "y": d["y"], "epochs": 50, "seed": 0})
    assert _finished(http, first.json()["id"])["status"] == "succeeded"  # a model to predict
    long = http.post("/v1/jobs", json={"x": d["x"], "y": d["y"], "epochs": 1_000_000,
                                       "engine": "autograd"}).json()
    wait_for(lambda: http.get(f"/v1/jobs/{long['id']}").json()["progress"]["epoch"] > 0)
    # the API answers while the job trains (how fast: bench/, "predict 1 row while a large
    # job trains")
    for _ in range(20):
        assert http.get("/healthz").status_code == 200
        assert http.post("/predict", json={"x": [[1.0]]}).status_code == 200
    running = http.get(f"/v1/jobs/{long['id']}").json()
    assert running["status"] == "running"

    r = http.post(f"/v1/jobs/{long['id']}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested"] is True, r.text
    job = _finished(http, long["id"])
    assert job["status"] == "cancelled" and job["model_id"] is None
    assert 0 < job["progress"]["epoch"] < 1_000_000
