"""A sweep's trials as batches in the scale-out mode: one API and one Celery worker
(``fitserve worker``) on PostgreSQL and Redis, the artifacts in a directory both share. The
worker's pool process is killed -9 while a batch waits at its commit (its checkpoints
written and durable, nothing recorded yet): the batch runs again, and every trial ends
once, with one model and its file."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from service.store.metadata import MetadataStore
from service.store.tables import ModelRow
from tests.e2e.conftest import ServerProcess
from tests.helpers import seed_example, wait_for
from tests.integration.conftest import REDIS_URL, WorkerProcess, hostname

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


@dataclass
class Cluster:
    api: ServerProcess
    worker: WorkerProcess
    http: httpx.Client
    meta: MetadataStore
    artifacts: Path
    faults: Path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, new_database, new_prefix, redis_server) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("batches")
    artifacts, faults = root / "artifacts", root / "faults"
    env = {
        "FITSERVE_QUEUE": "celery",
        "FITSERVE_DATABASE_URL": new_database(),
        "FITSERVE_BROKER_URL": REDIS_URL,
        "FITSERVE_BROKER_PREFIX": new_prefix(),
        "FITSERVE_ARTIFACTS": str(artifacts),
        "FITSERVE_HEARTBEAT_INTERVAL_S": "0.5",
        "FITSERVE_HEARTBEAT_TIMEOUT_S": "10",
        "FITSERVE_REAPER_INTERVAL_S": "1",
        "FITSERVE_VISIBILITY_TIMEOUT_S": "600",
    }
    api = ServerProcess(root / "api", 0, **env)
    # the worker's batches stop at their commit until the test lets them pass
    worker = WorkerProcess(root / "worker", f"w-batches@{hostname()}", redis_server,
                           FITSERVE_FAULT_PAUSE="batch_commit", FITSERVE_FAULT_DIR=str(faults),
                           **env)
    meta = MetadataStore(env["FITSERVE_DATABASE_URL"])
    try:
        api.start()
        worker.start()
        with httpx.Client(base_url=api.url, timeout=90) as http:
            yield Cluster(api, worker, http, meta, artifacts, faults)
    finally:
        worker.stop()
        api.stop()
        meta.dispose()


def test_a_killed_workers_batch_runs_again_and_no_trial_counts_twice(cluster):
    d = seed_example()
    lrs = [0.001, 0.002, 0.003, 0.004, 0.006, 0.008]
    r = cluster.http.post("/v1/sweeps", json={
        "job": {"x": d["x"], "y": d["y"], "epochs": 2000, "seed": 0},
        "search_space": {"optimizer.lr": {"choice": lrs},
                         "optimizer.momentum": {"choice": [0, 0.5]}},
        "strategy": "grid", "objective": "train_loss"})
    assert r.status_code == 202, r.text
    sweep_id = r.json()["id"]
    trials = len(lrs) * 2

    # a batch reached its commit: its pool process waits there (the marker names it)
    marker = wait_for(lambda: next(cluster.faults.glob("*.batch_commit"), None), timeout=90)
    paused_job, pid = marker.name.split(".")[0], int(marker.read_text())
    holder = f"{hostname()}:{pid}"
    jobs = cluster.http.get("/v1/jobs", params={"sweep": sweep_id, "limit": 100}).json()
    ids = [j["id"] for j in jobs["data"]]
    assert len(ids) == trials
    batch = [i for i in ids if cluster.meta.get_job(i, None).worker == holder]
    assert paused_job in batch and len(batch) == trials  # one process took them all
    assert {cluster.meta.get_job(i, None).status for i in batch} == {"running"}
    # its checkpoints are durable already, but none is recorded
    written = list((cluster.artifacts / "checkpoints").glob("*.safetensors"))
    assert len(written) == trials
    with cluster.meta.session() as s:
        assert s.scalar(select(func.count()).select_from(ModelRow)) == 0

    for job_id in ids:  # the rerun passes; the killed process stays at its marker
        if job_id != paused_job:
            (cluster.faults / f"{job_id}.go").touch()
    os.kill(pid, signal.SIGKILL)
    (cluster.faults / f"{paused_job}.go").touch()

    sweep = wait_for(lambda: (lambda s: s if s["status"] not in ("queued", "running")
                              else None)(cluster.http.get(f"/v1/sweeps/{sweep_id}",
                                                          params={"wait": 30}).json()),
                     timeout=120)
    assert sweep["status"] == "succeeded", sweep
    assert sweep["progress"]["succeeded"] == trials
    assert sorted(t["job_id"] for t in sweep["trials"]) == sorted(ids)
    for job_id in ids:  # each trial ended once: one model, its file there
        job = cluster.meta.get_job(job_id, None)
        assert job.status == "succeeded" and job.attempts == 2  # the killed run and the rerun
        with cluster.meta.session() as s:
            models = list(s.scalars(select(ModelRow).where(ModelRow.job_id == job_id)))
        assert [m.id for m in models] == [job.model_id]
        assert (cluster.artifacts / models[0].checkpoint).is_file()
    # the rerun was a batch too, claimed again after the take-over of the dead process
    log = cluster.worker.log.read_text()
    assert log.count("trials of its sweep") >= 2, log[-3000:]
    assert f"its process {holder} is gone" in log
