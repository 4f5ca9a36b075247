"""The scale-out deployment as processes: two APIs (``fitserve serve``) and two Celery workers
(``fitserve worker``), on one PostgreSQL database, one Redis prefix and one S3 bucket."""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest

from service.jobs.status import FINISHED
from service.store.artifacts import ObjectArtifactStore, open_artifacts
from service.store.metadata import MetadataStore
from tests.e2e.conftest import ServerProcess
from tests.helpers import make_linear_data, plain_torch_loop, seed_arrays, wait_for
from tests.integration.conftest import REDIS_URL, WorkerProcess, hostname, parent_pid

# one cluster for the module (its tests run on one xdist worker: --dist loadfile)
pytestmark = [pytest.mark.integration, pytest.mark.e2e]

# long enough to be caught running (a few seconds here, and with progress written every
# 50 ms still several updates long on a machine five times as fast), short enough to run twice
LONG_EPOCHS = 5_000


@dataclass
class Cluster:
    apis: list[ServerProcess]
    workers: list[WorkerProcess]
    http: list[httpx.Client]
    meta: MetadataStore
    artifacts: ObjectArtifactStore

    def finished(self, job_id: str, timeout: float = 60) -> Any:
        def check() -> Any:
            job = self.meta.get_job(job_id, tenant=None)
            return job if job.status in FINISHED else None

        return wait_for(check, timeout=timeout)

    def worker_of(self, job_id: str) -> WorkerProcess:
        """The worker whose pool process holds (or held) the job."""
        pid = int(self.meta.get_job(job_id, tenant=None).worker.rsplit(":", 1)[1])
        main = parent_pid(pid)
        return next(w for w in self.workers if w.proc is not None and w.proc.pid == main)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, new_database, new_prefix, redis_server, s3_server
            ) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    prefix = new_prefix()
    bucket = s3_server.bucket_url(f"fitserve-{secrets.token_hex(4)}")
    env = {
        "FITSERVE_QUEUE": "celery",
        "FITSERVE_DATABASE_URL": new_database(),
        "FITSERVE_BROKER_URL": REDIS_URL,
        "FITSERVE_BROKER_PREFIX": prefix,
        "FITSERVE_ARTIFACTS": bucket,
        "FITSERVE_ARTIFACTS_ENDPOINT_URL": s3_server.endpoint,
        # seconds instead of minutes, so that a lost worker is noticed within the test
        "FITSERVE_HEARTBEAT_INTERVAL_S": "0.5",
        "FITSERVE_HEARTBEAT_TIMEOUT_S": "10",
        "FITSERVE_REAPER_INTERVAL_S": "1",
        "FITSERVE_PROGRESS_INTERVAL_S": "0.05",
        "FITSERVE_VISIBILITY_TIMEOUT_S": "600",
        **s3_server.env,
    }
    apis = [ServerProcess(root / f"api{i}", 0, **env) for i in range(2)]
    workers = [WorkerProcess(root / f"worker{i}", f"w{i}-{prefix}@{hostname()}", redis_server,
                             **env) for i in range(2)]
    everyone: list[ServerProcess] = [*apis, *workers]
    meta = MetadataStore(env["FITSERVE_DATABASE_URL"])
    try:
        with ThreadPoolExecutor(len(everyone)) as pool:  # they start (and migrate) at once
            list(pool.map(lambda p: p.start(), everyone))
        http = [httpx.Client(base_url=a.url, timeout=30) for a in apis]
        artifacts = open_artifacts(bucket, s3_server.endpoint)
        assert isinstance(artifacts, ObjectArtifactStore)
        yield Cluster(apis, workers, http, meta, artifacts)
        for c in http:
            c.close()
    finally:
        for p in everyone:
            p.stop()
        meta.dispose()


def _objects(store: ObjectArtifactStore, sub: str) -> set[str]:
    try:
        return set(store.fs.ls(f"{store.root_key}/{sub}", refresh=True))
    except FileNotFoundError:
        return set()


def test_fifty_jobs_through_two_apis_each_run_once(cluster):
    a, b = cluster.http
    x, y = make_linear_data(40, [[2.0, -1.0]], [0.5], 0.01, seed=3)
    body = {"name": "shared", "x": x.tolist(), "y": y.tolist()}
    first, second = a.post("/v1/datasets", json=body), b.post("/v1/datasets", json=body)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert len(_objects(cluster.artifacts, "datasets")) == 1  # stored once, for both APIs
    checkpoints_before = _objects(cluster.artifacts, "checkpoints")

    ids = []
    for i in range(50):
        r = (a, b)[i % 2].post("/v1/jobs", json={
            "dataset_id": first.json()["id"], "epochs": 200, "seed": i, "model_name": "fifty"})
        assert r.status_code == 202, r.text
        assert r.json()["waiting_reason"] is None  # cpu workers are live
        ids.append(r.json()["id"])
    jobs = [cluster.finished(job_id) for job_id in ids]

    assert [j.status for j in jobs] == ["succeeded"] * 50
    assert [j.attempts for j in jobs] == [1] * 50
    assert len({j.model_id for j in jobs}) == 50
    models = [b.get(f"/v1/models/{j.model_id}").json() for j in jobs]
    assert sorted(m["version"] for m in models) == list(range(1, 51))  # no version twice
    assert {m["job_id"] for m in models} == set(ids)
    assert len(_objects(cluster.artifacts, "checkpoints") - checkpoints_before) == 50
    # both workers took part, each through its own pool process
    assert {cluster.worker_of(j.id).name for j in jobs} == {w.name for w in cluster.workers}

    # a model trained through one API is served by the other, from the shared store
    model = models[0]
    r = b.post(f"/v1/models/{model['id']}/predict", json={"x": x[:3].tolist()})
    want = x[:3] @ np.array(model["weight"]).T + np.array(model["bias"])
    assert r.status_code == 200 and np.allclose(r.json()["y"], want, atol=1e-5)


def test_a_new_version_is_served_at_once_by_the_api_that_did_not_train_it(cluster):
    a, b = cluster.http
    x, y = seed_arrays()
    data = {"x": x.tolist(), "y": y.tolist(), "epochs": 50, "model_name": "relay"}
    one = a.post("/v1/jobs", json={**data, "seed": 1}).json()
    assert cluster.finished(one["id"]).status == "succeeded"
    assert b.post("/predict", json={"model": "relay", "x": [[1.0]]}).json()["version"] == 1
    two = a.post("/v1/jobs", json={**data, "seed": 2}).json()
    assert cluster.finished(two["id"]).status == "succeeded"
    # b cached "relay" -> version 1, and its cache has no expiry: only the catalog counter
    # (polled in the background) tells it a newer one exists
    wait_for(lambda: b.post("/predict", json={"model": "relay", "x": [[1.0]]})
             .json()["version"] == 2, timeout=30)


def test_an_alias_moved_through_one_api_is_followed_by_the_other_within_a_second(cluster):
    a, b = cluster.http
    x, y = seed_arrays()
    data = {"x": x.tolist(), "y": y.tolist(), "epochs": 20, "model_name": "canary"}
    for seed in (1, 2):
        job = a.post("/v1/jobs", json={**data, "seed": seed}).json()
        assert cluster.finished(job["id"]).status == "succeeded"
    body = {"model": "canary@champion", "x": [[1.0]]}
    assert a.put("/v1/model-names/canary/aliases/champion", json={"version": 1}).is_success
    assert b.post("/predict", json=body).json()["version"] == 1  # b caches the alias
    assert a.put("/v1/model-names/canary/aliases/champion", json={"version": 2}).is_success
    # b learns of the move only through the catalog counter (Redis, polled every 50 ms)
    wait_for(lambda: b.post("/predict", json=body).json()["version"] == 2, timeout=1.0,
             every=0.02)


def test_a_job_for_a_device_no_worker_serves_waits_and_says_why(cluster):
    a, b = cluster.http
    r = a.post("/v1/jobs", json={"x": [[1], [2]], "y": [[1], [2]], "device": "cuda"})
    assert r.status_code == 202 and r.json()["device"] == "cuda"
    job = b.get(f"/v1/jobs/{r.json()['id']}").json()
    assert job["status"] == "queued"
    assert "no worker serves the cuda queue" in job["waiting_reason"]
    listed = {j["id"]: j for j in b.get("/v1/jobs?status=queued").json()["data"]}
    assert listed[job["id"]]["waiting_reason"] == job["waiting_reason"]
    auto = a.post("/v1/jobs", json={"x": [[1], [2]], "y": [[1], [2]], "device": "auto"}).json()
    assert auto["device"] == "cpu"  # the best kind a live worker serves
    assert b.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    assert cluster.finished(auto["id"]).status == "succeeded"


def test_a_running_job_is_cancelled_through_the_api_that_did_not_submit_it(cluster):
    a, b = cluster.http
    x, y = seed_arrays()
    job = a.post("/v1/jobs", json={"x": x.tolist(), "y": y.tolist(), "epochs": 1_000_000,
                                   "engine": "autograd"}).json()
    wait_for(lambda: b.get(f"/v1/jobs/{job['id']}").json()["progress"]["epoch"] > 0)
    r = b.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    done = cluster.finished(job["id"])
    assert done.status == "cancelled" and done.model_id is None
    assert 0 < a.get(f"/v1/jobs/{job['id']}").json()["progress"]["epoch"] < 1_000_000


def test_a_job_whose_pool_process_is_killed_runs_again_without_waiting_for_the_reaper(cluster):
    a, _ = cluster.http
    x, y = seed_arrays()
    job = a.post("/v1/jobs", json={"x": x.tolist(), "y": y.tolist(), "epochs": LONG_EPOCHS,
                                   "seed": 0, "engine": "autograd"}).json()
    wait_for(lambda: a.get(f"/v1/jobs/{job['id']}").json()["progress"]["epoch"] > 0)
    holder = int(cluster.meta.get_job(job["id"], None).worker.rsplit(":", 1)[1])
    os.kill(holder, signal.SIGKILL)  # the worker's main process lives on and redelivers
    wait_for(lambda: cluster.meta.get_job(job["id"], None).attempts == 2, timeout=30)
    # taken over on the message's redelivery (the worker that took it says so; any worker
    # may get the requeued message), not by the reaper
    said = f"job {job['id']}: its process"
    wait_for(lambda: any(said in w.log.read_text() for w in cluster.workers), timeout=30)
    done = cluster.finished(job["id"])
    assert done.status == "succeeded" and done.attempts == 2
    assert len(a.get(f"/v1/jobs/{job['id']}/history").json()["loss"]) == LONG_EPOCHS


def test_a_job_whose_worker_is_killed_completes_once_on_the_other(cluster):
    a, b = cluster.http
    x, y = seed_arrays()
    job = a.post("/v1/jobs", json={"x": x.tolist(), "y": y.tolist(), "epochs": LONG_EPOCHS,
                                   "seed": 0, "engine": "autograd"}).json()
    wait_for(lambda: a.get(f"/v1/jobs/{job['id']}").json()["progress"]["epoch"] > 0)
    victim = cluster.worker_of(job["id"])
    victim.kill_group()  # kill -9, the worker and its pool: as if its machine went away

    done = cluster.finished(job["id"], timeout=60)
    assert done.status == "succeeded" and done.attempts == 2
    assert cluster.worker_of(job["id"]) is not victim
    history = b.get(f"/v1/jobs/{job['id']}/history").json()
    assert history["epoch"] == list(range(1, LONG_EPOCHS + 1))  # one whole run, from epoch 1
    reference, _, _ = plain_torch_loop(x, y, 200, seed=0)
    assert np.allclose(history["loss"][:200], reference, rtol=1e-5)
    assert b.get("/v1/models", params={"limit": 500}).json()["data"][0]["job_id"] == job["id"]
