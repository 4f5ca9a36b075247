"""kill -9 of a worker while a sweep's closed-form batch waits at its commit (service/
worker/batches.py's ``batch_commit`` point): every checkpoint of the batch is durable, no
trial's end is recorded. The worker's trials are recovered and run again: each trial ends
once, succeeded, with one model and its history, and the killed batch's files go as
orphans."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.faults.invariants import check_invariants
from tests.faults.pauses import FAST_SWEEP
from tests.helpers import seed_example, wait_for

pytestmark = pytest.mark.e2e

LRS = [0.002, 0.004, 0.006, 0.008]
EPOCHS = 300


def _paused_batch(folder: Path) -> tuple[str, int]:
    """The job whose batch stands at its commit, and the pid of the worker holding it."""
    def marker() -> Path | None:
        found = [m for m in folder.glob("*.batch_commit") if m.read_text().strip()]
        return found[0] if found else None

    m = wait_for(marker, timeout=60)
    return m.name.split(".", 1)[0], int(m.read_text())


def test_a_worker_killed_at_a_batch_commit_ends_each_trial_once(server_factory, tmp_path):
    folder = tmp_path / "pauses"
    server: ServerProcess = server_factory(
        1, FITSERVE_FAULT_PAUSE="batch_commit", FITSERVE_FAULT_DIR=str(folder),
        **FAST_SWEEP).start()
    d = seed_example()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post("/v1/sweeps", json={
            "job": {"x": d["x"], "y": d["y"], "epochs": EPOCHS, "seed": 0},
            "search_space": {"optimizer.lr": {"choice": LRS}}, "strategy": "grid",
            "objective": "train_loss"})
        assert r.status_code == 202, r.text
        sweep_id = r.json()["id"]
        first, pid = _paused_batch(folder)
        trials = http.get("/v1/jobs", params={"sweep": sweep_id, "limit": 50}).json()["data"]
        ids = [t["id"] for t in trials]
        assert len(ids) == len(LRS) and first in ids
        assert {t["status"] for t in trials} == {"running"}  # one batch holds them all
        checkpoints = server.data_dir / "checkpoints"
        assert len(list(checkpoints.glob("mdl_*.safetensors"))) == len(LRS)  # durable first
        assert http.get("/v1/models").json()["count"] == 0  # ... and nothing recorded

        os.kill(pid, signal.SIGKILL)
        for job_id in ids:  # the rerun passes the point
            (folder / f"{job_id}.go").write_text("")

        def ended() -> dict | None:
            sweep = http.get(f"/v1/sweeps/{sweep_id}", params={"wait": 2}).json()
            return sweep if sweep["status"] not in ("queued", "running") else None

        sweep = wait_for(ended, timeout=60)
        assert sweep["status"] == "succeeded", sweep
        assert sweep["progress"]["succeeded"] == len(LRS)
    jobs = check_invariants(server, ids)  # one model per trial, no orphan file left
    for job_id in ids:
        job = jobs[job_id]
        assert job["status"] == "succeeded" and job["model_id"], job
        assert job["attempts"] == 2, job  # the killed batch's attempt, then the rerun
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for job_id in ids:
            history = http.get(f"/v1/jobs/{job_id}/history").json()
            assert len(history["loss"]) == EPOCHS
        by_lr = {t["params"]["optimizer.lr"]: t for t in sweep["trials"]}
        assert sorted(by_lr) == LRS and all(t["value"] is not None for t in by_lr.values())
