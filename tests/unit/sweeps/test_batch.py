"""A sweep's closed-form trials claimed and trained as one batch by one worker
(service/worker/batches.py's ``claim_trials`` and ``run_trials``: the first trial through
``run_job``, every other trial's end derived from it; the shared statistics and
trajectories in service/training/closed_form.py), held to the same trials run alone as
ordinary jobs (history, model, checkpoint and metrics), and finished together: one sync for
their checkpoints, one transaction for their ends, nothing recorded without its file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load

from service.store import artifacts as artifacts_module
from service.store.sweeps import SweepRecords
from service.store.tables import ModelRow
from service.training import closed_form
from service.worker import batches as batches_module
from service.worker.batches import claim_trials, run_trials
from service.worker.runner import run_job
from tests.helpers import make_linear_data, seed_example

SEED = seed_example()


def _queue_trials(client, services, job: dict, space: dict) -> list[str]:
    r = client.post("/v1/sweeps", json={"job": job, "search_space": space, "strategy": "grid"})
    assert r.status_code == 202, r.text
    services.extra["sweep_controller"].step()  # every trial queued (a grid: all at once)
    jobs = client.get(f"/v1/jobs?sweep={r.json()['id']}&status=queued&limit=500").json()
    return [j["id"] for j in jobs["data"]]


def _outcome(client, job_id: str) -> tuple[dict, dict, dict | None]:
    job = client.get(f"/v1/jobs/{job_id}").json()
    history = client.get(f"/v1/jobs/{job_id}/history").json()
    model = client.get(f"/v1/models/{job['model_id']}").json() if job["model_id"] else None
    return job, history, model


@pytest.mark.parametrize("data,job,space", [
    ({"x": SEED["x"], "y": SEED["y"]}, {"epochs": 2000, "seed": 0}, {
        "optimizer.lr": {"choice": [0.005, 0.05]},
        "optimizer.momentum": {"choice": [0, 0.9]},
        "optimizer.weight_decay": {"choice": [0, 0.01]},
        "epochs": {"choice": [500, 2000]}}),
    ("multi", {"epochs": 300, "seed": 3, "validation_fraction": 0.2, "log_every": 7}, {
        "optimizer.lr": {"log_uniform": [0.01, 0.3], "steps": 3},
        "optimizer.momentum": {"choice": [0, 0.5]},
        "optimizer.nesterov": {"choice": [False, True]}}),
])
def test_a_batch_of_trials_gives_each_trial_its_numbers_alone(client, services, monkeypatch,
                                                               data, job, space):
    if data == "multi":
        x, y = make_linear_data(200, np.array([[1.5, -2.0, 0.5], [0.3, 0.0, 1.0]]),
                                np.array([0.2, -1.0]), 0.1, seed=1)
        data = {"x": x.tolist(), "y": y.tolist()}
    ids = _queue_trials(client, services, {**data, **job}, space)
    passes, eighs = [], []
    inner_stats, inner_eigh = closed_form._sufficient_stats, np.linalg.eigh
    monkeypatch.setattr(closed_form, "_sufficient_stats",
                        lambda *a: passes.append(1) or inner_stats(*a))
    monkeypatch.setattr(np.linalg, "eigh", lambda g: eighs.append(1) or inner_eigh(g))
    alone, inner_alone = [], closed_form._trajectory
    monkeypatch.setattr(closed_form, "_trajectory",
                        lambda *a: alone.append(1) or inner_alone(*a))

    syncs, fsyncs, commits = [], [], []
    inner_sync, inner_fsync = artifacts_module._sync_all, os.fsync
    monkeypatch.setattr(artifacts_module, "_sync_all", lambda fds: syncs.append(len(fds))
                        or inner_sync(fds))
    monkeypatch.setattr(os, "fsync", lambda fd: fsyncs.append(fd) or inner_fsync(fd))
    early = []
    monkeypatch.setattr(artifacts_module, "flush_early", lambda folder: early.append(folder))
    inner_finish = SweepRecords.finish_batch
    monkeypatch.setattr(SweepRecords, "finish_batch", lambda self, *a: commits.append(1)
                        or inner_finish(self, *a))

    ran_alone, inner_run = [], batches_module.run_job
    monkeypatch.setattr(batches_module, "run_job",
                        lambda job, *a: ran_alone.append(job.id) or inner_run(job, *a))

    first = services.meta.claim_next("w")
    batch = claim_trials(services.meta, first, "w")
    assert sorted(j.id for j in batch) == sorted(ids)  # one worker claimed them all
    statuses = run_trials(batch, "w", services.meta, services.artifacts)
    assert set(statuses) <= {"succeeded", "failed"} and statuses.count("succeeded") > 4
    # one pass over the training rows (and one over the validation rows), one eigh
    assert len(passes) == (2 if job.get("validation_fraction") else 1) and len(eighs) == 1
    assert alone == []  # every trajectory came from the batch's arrays
    # one trial ran through run_job (the template) and those the closed form declines
    # (their recurrence grows: the loop decides); every other trial's end followed from it
    declined = [i for i in ids if _outcome(client, i)[0]["engine_used"] != "closed_form"]
    assert len(ran_alone) == 1 + len(declined) and set(declined) <= set(ran_alone)
    # the batch finished together: its checkpoints made durable at once (one sync, then
    # one directory fsync), every trial's end in one transaction
    assert syncs == [statuses.count("succeeded")] and len(fsyncs) <= 1 and commits == [1]
    # the filesystem's unwritten data set going before the batch computed, under its root
    assert early == [Path(services.artifacts.root) / "checkpoints"]
    batched = {i: _outcome(client, i) for i in ids}
    monkeypatch.undo()

    for job_id in ids:  # the same trial as an ordinary job
        b_job, b_hist, b_model = batched[job_id]
        r = client.post("/v1/jobs", json={**data, **b_job["hyperparameters"]})
        alone_id = r.json()["id"]
        row = services.meta.claim_next("w")
        assert row.id == alone_id
        assert run_job(row, "w", services.meta, services.artifacts) == b_job["status"]
        a_job, a_hist, a_model = _outcome(client, alone_id)
        assert b_job["engine_used"] == a_job["engine_used"]
        assert b_hist["epoch"] == a_hist["epoch"]
        np.testing.assert_allclose(b_hist["loss"], a_hist["loss"], rtol=1e-5)
        if a_hist["val_loss"] is not None:
            np.testing.assert_allclose(b_hist["val_loss"], a_hist["val_loss"], rtol=1e-5)
        assert b_job["device_used"] == a_job["device_used"]
        assert b_job["stopped_early"] == a_job["stopped_early"]
        assert b_job["progress"]["epoch"] == a_job["progress"]["epoch"]
        if a_model is not None:
            np.testing.assert_allclose(b_model["weight"], a_model["weight"], atol=1e-4)
            np.testing.assert_allclose(b_model["bias"], a_model["bias"], atol=1e-4)
            assert b_model["metrics"]["train_loss"] == pytest.approx(
                a_model["metrics"]["train_loss"], rel=1e-6)
            _same_model(client, b_model, a_model)
        else:
            assert b_job["error"]["type"] == a_job["error"]["type"] == "diverged"


def _same_model(client, batched: dict, alone: dict) -> None:
    """A trial's model as the batch recorded it and the same trial's as a job alone: every
    field alike (numbers within float rounding), the checkpoint's tensors and metadata too."""
    differs = {"id", "created_at", "job_id", "checkpoint_sha256", "parameters", "metrics", "weight",
               "bias", "coefficients"}
    assert batched.keys() == alone.keys()
    assert {k: v for k, v in batched.items() if k not in differs} == \
        {k: v for k, v in alone.items() if k not in differs}
    assert batched["metrics"].keys() == alone["metrics"].keys()
    for name, value in alone["metrics"].items():
        if value is None:
            assert batched["metrics"][name] is None, name
        else:
            assert batched["metrics"][name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    files = []
    for model in (batched, alone):
        r = client.get(f"/v1/models/{model['id']}/checkpoint")
        assert r.status_code == 200
        metadata = safe_open_bytes(r.content)
        files.append(metadata)
    (b_tensors, b_meta), (a_tensors, a_meta) = files
    assert b_meta.pop("job_id") == batched["job_id"] and a_meta.pop("job_id") == alone["job_id"]
    assert b_meta == a_meta
    assert b_tensors.keys() == a_tensors.keys()
    for name, tensor in a_tensors.items():
        assert b_tensors[name].dtype == tensor.dtype and b_tensors[name].shape == tensor.shape
        np.testing.assert_allclose(b_tensors[name], tensor, atol=1e-4)


def safe_open_bytes(blob: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A safetensors file's tensors and metadata (never unpickled)."""
    header = json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")])
    return load(blob), header.get("__metadata__", {})


def test_only_trials_that_share_their_work_are_batched(client, services):
    ids = _queue_trials(client, services, {"x": SEED["x"], "y": SEED["y"], "epochs": 50}, {
        "optimizer.lr": {"choice": [0.001, 0.002]}, "seed": {"choice": [0, 1]}})
    first = services.meta.claim_next("w")
    batch = claim_trials(services.meta, first, "w")
    seeds = {services.meta.get_job(j.id, None).spec["seed"] for j in batch}
    assert len(batch) == 2 and len(seeds) == 1  # another seed: other initial weights
    assert client.get("/v1/jobs?status=queued").json()["count"] == 2
    # not a closed-form trial (adam), or not a trial at all: alone
    adam = client.post("/v1/jobs", json={"x": SEED["x"], "y": SEED["y"], "epochs": 5,
                                         "optimizer": "adam"}).json()
    row = services.meta.get_job(adam["id"], None)
    assert claim_trials(services.meta, row, "w") == [row]
    assert [j["id"] for j in client.get("/v1/jobs?status=queued").json()["data"]] == [
        adam["id"], *[i for i in ids if i not in {j.id for j in batch}]][:3]
    assert closed_form.batch_key(closed_form.TrainingSpec(batch_size=4)) is None


def test_two_workers_share_a_sweeps_batch_evenly(client, services):
    ids = _queue_trials(client, services, {"x": SEED["x"], "y": SEED["y"], "epochs": 20,
                                           "seed": 0},
                        {"optimizer.lr": {"choice": [0.001, 0.002, 0.003, 0.004, 0.005]}})
    sizes = []
    for worker in ("w1", "w2"):
        job = services.meta.claim_next(worker)
        sizes.append(len(claim_trials(services.meta, job, worker, parts=2)))
    assert sizes == [3, 2] and sum(sizes) == len(ids)


def _seed_grid(client, services) -> list[str]:
    return _queue_trials(client, services, {"x": SEED["x"], "y": SEED["y"], "epochs": 500,
                                            "seed": 0},
                         {"optimizer.lr": {"choice": [0.001, 0.002, 0.004, 0.008]}})


def _checkpoints(services) -> list[Path]:
    return sorted((Path(services.artifacts.root) / "checkpoints").glob("*"))


def _models(services) -> int:
    with services.meta.session() as s:
        return s.query(ModelRow).count()


def test_a_batch_that_fails_at_its_commit_ends_no_trial_and_leaves_no_file(client, services,
                                                                           monkeypatch):
    ids = _seed_grid(client, services)
    batch = claim_trials(services.meta, services.meta.claim_next("w"), "w")
    assert len(batch) == len(ids)

    def crash(self, *a):
        raise ConnectionError("the database went away")

    monkeypatch.setattr(SweepRecords, "finish_batch", crash)
    with pytest.raises(ConnectionError):
        run_trials(batch, "w", services.meta, services.artifacts)
    # nothing recorded, and the checkpoints written for it (durable already) removed
    assert {services.meta.get_job(i, None).status for i in ids} == {"running"}
    assert _models(services) == 0 and _checkpoints(services) == []

    # a crash while the files are synced: none of them is visible, nothing recorded
    monkeypatch.undo()

    def full(fds):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifacts_module, "_sync_all", full)
    with pytest.raises(OSError):
        run_trials(batch, "w", services.meta, services.artifacts)
    assert {services.meta.get_job(i, None).status for i in ids} == {"running"}
    assert _models(services) == 0
    assert list((Path(services.artifacts.root) / "checkpoints").glob("*")) == []


def test_a_trial_taken_from_the_batch_meanwhile_is_not_recorded_by_it(client, services,
                                                                      monkeypatch):
    ids = _seed_grid(client, services)
    batch = claim_trials(services.meta, services.meta.claim_next("w"), "w")
    taken = batch[1].id
    inner = SweepRecords.finish_batch

    def reaped_first(self, worker, ends):  # the reaper requeued one trial before the commit
        services.meta.requeue_running(["w"], 5)
        services.meta.claim_batch([taken], "other")
        services.meta.claim_batch([j.id for j in batch if j.id != taken], "w")
        return inner(self, worker, ends)

    monkeypatch.setattr(SweepRecords, "finish_batch", reaped_first)
    statuses = run_trials(batch, "w", services.meta, services.artifacts)
    assert statuses[1] == "running" and statuses.count("succeeded") == len(ids) - 1
    job = services.meta.get_job(taken, None)
    assert job.status == "running" and job.worker == "other" and job.model_id is None
    # every recorded trial has its file; the taken one's file is gone
    assert _models(services) == len(ids) - 1 == len(_checkpoints(services))
    for i in ids:
        row = services.meta.get_job(i, None)
        if row.model_id is not None:
            assert (Path(services.artifacts.root) / "checkpoints"
                    / f"{row.model_id}.safetensors").exists()


@pytest.mark.parametrize("taken", [3, 4])  # some of what it asked for, or all of it
def test_a_worker_that_loses_a_race_for_its_share_still_claims_its_share_at_once(
        client, services, monkeypatch, taken):
    ids = _queue_trials(client, services, {"x": SEED["x"], "y": SEED["y"], "epochs": 20,
                                           "seed": 0},
                        {"optimizer.lr": {"choice": [0.001 * i for i in range(1, 11)]}})
    order = sorted(ids, key=lambda i: (services.meta.get_job(i, None).created_at, i))
    w1 = services.meta.claim_next("w1")
    first = services.meta.claim_next("w2")
    inner, stolen, calls = services.meta.claim_batch, [], []

    def racing(job_ids, worker, most=None):  # w1 claims some of them before w2's UPDATE
        calls.append(worker)
        if worker == "w2" and not stolen:
            assert most == 4  # its share of the 10 (its own trial the fifth)
            stolen.extend(inner(list(job_ids)[:taken], "w1"))
        return inner(job_ids, worker, most)

    monkeypatch.setattr(services.meta, "claim_batch", racing)
    batch = claim_trials(services.meta, first, "w2", parts=2)
    assert len(stolen) == taken
    assert calls == ["w2"]  # one claim, not one more after the race
    assert len(batch) == len(ids) // 2  # its share of the 10, none of them w1's
    assert len({j.id for j in batch}) == len(batch)
    assert all(services.meta.get_job(j.id, None).worker == "w2" for j in batch)
    assert not {j.id for j in batch} & {j.id for j in stolen}
    left = [i for i in order if i not in {w1.id, first.id, *(j.id for j in stolen)}]
    assert [j.id for j in batch[1:]] == left[:4]  # the oldest still queued, in order


def test_a_claim_of_the_oldest_takes_only_what_is_still_queued(client, services):
    ids = _queue_trials(client, services, {"x": SEED["x"], "y": SEED["y"], "epochs": 20,
                                           "seed": 0},
                        {"optimizer.lr": {"choice": [0.001 * i for i in range(1, 7)]}})
    order = sorted(ids, key=lambda i: (services.meta.get_job(i, None).created_at, i))
    assert [j.id for j in services.meta.claim_batch(order[1:3], "a")] == order[1:3]
    got = services.meta.claim_batch(list(reversed(order)), "b", most=3)
    assert [j.id for j in got] == [order[4], order[3], order[0]]  # the three oldest left,
    assert services.meta.claim_batch(order, "c", most=0) == []  # in the order asked
    assert [j.id for j in services.meta.claim_batch(order, "c", most=5)] == [order[5]]
    assert {services.meta.get_job(i, None).worker for i in order} == {"a", "b", "c"}


@pytest.mark.parametrize("change", ["a field it does not know", "another history"])
def test_a_template_that_does_not_follow_run_job_leaves_every_trial_to_run_job(
        client, services, monkeypatch, change):
    ids = _seed_grid(client, services)
    if change == "a field it does not know":  # as if run_job recorded a new field
        monkeypatch.setattr(batches_module, "_MODEL_FIELDS",
                            batches_module._MODEL_FIELDS - {"parent_id"})
    else:  # as if run_job stored the history otherwise than the template derives it
        inner = batches_module.history_values
        monkeypatch.setattr(batches_module, "history_values",
                            lambda e, loss, v: inner(e, loss * 2, v))
    ran_alone, inner_run = [], batches_module.run_job
    monkeypatch.setattr(batches_module, "run_job",
                        lambda job, *a: ran_alone.append(job.id) or inner_run(job, *a))
    batch = claim_trials(services.meta, services.meta.claim_next("w"), "w")
    assert run_trials(batch, "w", services.meta, services.artifacts) == ["succeeded"] * 4
    assert sorted(ran_alone) == sorted(ids)  # none derived: each as alone
    for job_id in ids:
        history = client.get(f"/v1/jobs/{job_id}/history").json()
        assert len(history["loss"]) == 500


def test_a_trial_cancelled_before_its_end_is_cancelled_and_the_others_follow(
        client, services, monkeypatch):
    ids = _seed_grid(client, services)
    ran_alone, inner_run = [], batches_module.run_job
    monkeypatch.setattr(batches_module, "run_job",
                        lambda job, *a: ran_alone.append(job.id) or inner_run(job, *a))
    batch = claim_trials(services.meta, services.meta.claim_next("w"), "w")
    assert sorted(j.id for j in batch) == sorted(ids)
    services.meta.request_cancel(batch[2].id, "default")  # as the controller prunes one
    statuses = run_trials(batch, "w", services.meta, services.artifacts)
    assert statuses == ["succeeded", "succeeded", "cancelled", "succeeded"]
    assert ran_alone == [batch[0].id, batch[2].id]  # the template, and the cancelled one
    cancelled, history, model = _outcome(client, batch[2].id)
    assert cancelled["error"]["type"] == "cancelled" and model is None
    assert _models(services) == 3 == len(_checkpoints(services))
