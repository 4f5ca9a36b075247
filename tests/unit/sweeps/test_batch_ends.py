"""A closed-form batch's end records its trials too (``SweepRecords.finish_batch`` ->
``record_trial_ends``), in the transaction that ends their jobs, and ends their sweep when
they were its last open trials (``end_with_best``), with what the sweep controller would
have recorded: the same statuses, values and winner, the winner's model registered under
the sweep's name. A sweep with a pruner, or one being cancelled, is left to its controller."""

from __future__ import annotations

from typing import Any

import pytest

from service.jobs.sweeps.controller import sweep_records
from service.worker.batches import claim_trials, run_trials
from service.worker.runner import moves_catalog
from tests.helpers import seed_example
from tests.unit.sweeps.drive import drive, run_jobs

SEED = seed_example()
LRS = [0.001, 0.002, 0.004, 0.008]


def _sweep(client, services, **extra: Any) -> str:
    dataset = client.post("/v1/datasets", json={"x": SEED["x"], "y": SEED["y"]}).json()["id"]
    body = {"job": {"dataset_id": dataset, "epochs": 300, "seed": 0},
            "search_space": {"optimizer.lr": {"choice": LRS}}, "strategy": "grid",
            "objective": "train_loss", "seed": 0, **extra}
    r = client.post("/v1/sweeps", json=body)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _batch(services, worker: str = "w", parts: int = 1) -> tuple[list[str], list[dict]]:
    """One worker's batch of the queued trials, run; (its jobs, the events it sent)."""
    events: list[dict] = []

    def notify(event: dict) -> None:
        events.append(event)
        services.on_event(event)

    batch = claim_trials(services.meta, services.meta.claim_next(worker), worker, parts)
    assert len(batch) > 1
    assert run_trials(batch, worker, services.meta, services.artifacts,
                      notify=notify) == ["succeeded"] * len(batch)
    return [j.id for j in batch], events


def _trials(client, sweep_id: str) -> list[dict]:
    return client.get(f"/v1/sweeps/{sweep_id}").json()["trials"]


def _rows(services, sweep_id: str) -> list[tuple]:
    """Each trial as stored: (number, status, value, seq, error, finished_at)."""
    return [(t.number, t.trial.status, t.trial.value, t.trial.seq, t.trial.error,
             t.trial.finished_at) for t in sweep_records(services).trials(sweep_id)]


def test_the_last_batch_ends_the_sweep_as_its_controller_would(client, services,
                                                              monkeypatch):
    ctl = services.extra["sweep_controller"]
    by_worker = _sweep(client, services, model_name="winner")
    ctl.step()  # the trials queued
    woken: list[str] = []
    inner = services.waiters.finished
    monkeypatch.setattr(services.waiters, "finished", lambda key: woken.append(key)
                        or inner(key))
    jobs, events = _batch(services)
    assert woken[0] == by_worker  # its long polls answer first, from its event alone
    sweep = client.get(f"/v1/sweeps/{by_worker}").json()
    assert sweep["status"] == "succeeded"  # no controller step since
    trials = _trials(client, by_worker)
    assert [t["status"] for t in trials] == ["succeeded"] * len(LRS)
    assert sorted(t["job_id"] for t in trials) == sorted(jobs)
    for t in trials:  # each value its model's own metric
        model = client.get(f"/v1/models/{t['model_id']}").json()
        assert t["value"] == model["metrics"]["train_loss"]
    best = min(trials, key=lambda t: (t["value"], t["number"]))
    assert sweep["best"]["trial"] == best["number"] and sweep["model_id"] == best["model_id"]
    model = client.get(f"/v1/models/{best['model_id']}").json()  # registered: version 1
    assert (model["name"], model["version"]) == ("winner", 1)
    answer = client.post("/predict", json={"model": "winner", "x": [[3.3]]}).json()
    assert answer["model_id"] == best["model_id"]
    assert {"event": "sweep_finished", "sweep_id": by_worker, "status": "succeeded",
            "registered": best["model_id"]} in events
    # the trials are numbered in the order they ended, once each
    stored = _rows(services, by_worker)
    assert sorted(seq for *_, seq, _, _ in stored) == list(range(1, len(LRS) + 1))
    ctl.step()  # the controller finds nothing to do: nothing recorded twice
    assert _rows(services, by_worker) == stored
    assert client.get(f"/v1/sweeps/{by_worker}").json() == sweep

    # the same sweep, its trials run one by one and recorded by the controller
    by_controller = _sweep(client, services, model_name="winner")
    drive(services)
    again = client.get(f"/v1/sweeps/{by_controller}").json()
    assert again["status"] == "succeeded" and again["best"]["trial"] == best["number"]
    assert [(t["number"], t["status"], t["value"]) for t in _trials(client, by_controller)] \
        == [(t["number"], t["status"], t["value"]) for t in trials]
    model = client.get(f"/v1/models/{again['model_id']}").json()
    assert (model["name"], model["version"]) == ("winner", 2)


def test_a_sweep_ends_with_its_last_batch_not_before(client, services):
    sweep_id = _sweep(client, services)
    services.extra["sweep_controller"].step()
    first, events = _batch(services, "w1", parts=2)
    assert len(first) == len(LRS) // 2
    # every trial asked for: their sweep's controller has nothing to do for these, and is
    # not woken by them
    created = [e for e in events if e["event"] == "model_created"]
    assert sorted(e["job_id"] for e in created) == sorted(first)
    assert all(e.get("settled") for e in created)
    stored = {n: status for n, status, *_ in _rows(services, sweep_id)}
    assert sorted(stored.values()) == ["open"] * 2 + ["succeeded"] * 2
    assert client.get(f"/v1/sweeps/{sweep_id}").json()["status"] == "running"
    _, events = _batch(services, "w2")  # the rest
    assert client.get(f"/v1/sweeps/{sweep_id}").json()["status"] == "succeeded"
    assert [e for e in events if e["event"] == "sweep_finished"] == [
        {"event": "sweep_finished", "sweep_id": sweep_id, "status": "succeeded",
         "registered": None}]


@pytest.mark.parametrize("case", ["pruning", "cancel"])
def test_a_pruned_or_cancelled_sweep_is_ended_by_its_controller(client, services, case):
    ctl = services.extra["sweep_controller"]
    if case == "pruning":  # its pruner judges each trial's history first
        sweep_id = _sweep(client, services,
                          pruning={"name": "median", "grace_period": 100, "interval": 100})
    else:
        sweep_id = _sweep(client, services)
    ctl.step()
    batch = claim_trials(services.meta, services.meta.claim_next("w"), "w")
    if case == "cancel":  # asked while the batch runs
        sweep_records(services).request_cancel(sweep_id, "default")
    events: list[dict] = []
    run_trials(batch, "w", services.meta, services.artifacts, notify=events.append)
    assert events and not any(e.get("settled") for e in events)  # its controller steps
    stored = _rows(services, sweep_id)
    expected = "open" if case == "pruning" else "succeeded"
    assert {status for _, status, *_ in stored} == {expected}
    assert client.get(f"/v1/sweeps/{sweep_id}").json()["status"] == "running"
    ctl.step()
    sweep = client.get(f"/v1/sweeps/{sweep_id}").json()
    assert sweep["status"] == ("succeeded" if case == "pruning" else "cancelled")
    assert all(t["status"] in ("succeeded", "pruned") for t in _trials(client, sweep_id))


def test_a_tpe_sweep_asks_the_same_trials_whoever_records_their_ends(client, services):
    """Past its random start-up, TPE asks from the values told: trials a worker's batch
    recorded are told to the study before the controller asks again, as those it records
    itself."""
    ctl = services.extra["sweep_controller"]
    space = {"optimizer.lr": {"log_uniform": [1e-3, 2e-2]}}
    body = {"search_space": space, "strategy": "tpe", "seed": 3, "max_trials": 14,
            "max_parallel": 2}

    def params(by_batches: bool) -> list[float]:
        sweep_id = _sweep(client, services, **body)
        for _ in range(50):
            ctl.step()
            if by_batches:
                _, events = _batch(services)
                if client.get(f"/v1/sweeps/{sweep_id}").json()["progress"]["created"] < 14:
                    assert not any(e.get("settled") for e in events)  # more to ask for
            else:
                run_jobs(services)
            if client.get(f"/v1/sweeps/{sweep_id}").json()["status"] != "running":
                break
        sweep = client.get(f"/v1/sweeps/{sweep_id}").json()
        assert sweep["status"] == "succeeded", sweep
        return [t["params"]["optimizer.lr"] for t in _trials(client, sweep_id)]

    assert params(by_batches=True) == params(by_batches=False)


def test_a_last_batch_of_failures_registers_an_earlier_winner_and_predict_follows(
        client, services):
    """The last batch's trials all diverge: the sweep's winner is an earlier batch's, which
    this batch's end registers under the name; predict, which served version 1 of the name,
    serves the winner after the batch's ``sweep_finished`` event (no model of its own moved
    the catalog)."""
    dataset = client.post("/v1/datasets", json={"x": SEED["x"], "y": SEED["y"]}).json()["id"]
    job = client.post("/v1/jobs", json={"dataset_id": dataset, "epochs": 50,
                                        "model_name": "kept"}).json()
    run_jobs(services)
    first = client.get(f"/v1/jobs/{job['id']}").json()["model_id"]
    assert client.post("/predict", json={"model": "kept", "x": [[1.0]]}).json()[
        "model_id"] == first  # version 1, now resolved by predict
    r = client.post("/v1/sweeps", json={
        "job": {"dataset_id": dataset, "epochs": 200, "seed": 0}, "strategy": "grid",
        "search_space": {"optimizer.lr": {"choice": [0.001, 0.002, 5.0, 9.0]}},
        "objective": "train_loss", "seed": 0, "model_name": "kept"})
    sweep_id = r.json()["id"]
    services.extra["sweep_controller"].step()
    by_lr = {t["params"]["optimizer.lr"]: t["job_id"] for t in _trials(client, sweep_id)}
    for lrs, expected in (([0.001, 0.002], "succeeded"), ([5.0, 9.0], "failed")):
        batch = services.meta.claim_batch([by_lr[lr] for lr in lrs], "w")
        events: list[dict] = []
        statuses = run_trials(batch, "w", services.meta, services.artifacts,
                              notify=lambda e, got=events: got.append(e)
                              or services.on_event(e))
        assert statuses == [expected] * 2
        if expected == "succeeded":  # still version 1, resolved again after these models
            assert client.post("/predict", json={"model": "kept", "x": [[1.0]]}).json()[
                "model_id"] == first
    sweep = client.get(f"/v1/sweeps/{sweep_id}").json()
    assert sweep["status"] == "succeeded" and sweep["best"]["params"]["optimizer.lr"] in (
        0.001, 0.002)
    assert not any(e["event"] == "model_created" for e in events)
    # first (its long polls answer before the trials' events are read), and the workers'
    # catalog counter moves for it
    assert events[0] == {"event": "sweep_finished", "sweep_id": sweep_id,
                         "status": "succeeded", "registered": sweep["model_id"]}
    assert moves_catalog(events[0])
    model = client.get(f"/v1/models/{sweep['model_id']}").json()
    assert (model["name"], model["version"]) == ("kept", 2)
    assert client.post("/predict", json={"model": "kept", "x": [[1.0]]}).json()[
        "model_id"] == sweep["model_id"]


@pytest.mark.parametrize("pushed,pruning,quiet", [
    (True, None, True),  # every trial queued, events wake it: it steps once a second
    (True, {"name": "median", "grace_period": 100, "interval": 100}, False),  # rungs to read
    (False, None, False),  # no events where it runs: it polls
])
def test_a_controller_polls_only_sweeps_that_need_it(client, services, monkeypatch, pushed,
                                                      pruning, quiet):
    from service.jobs.sweeps.controller import IDLE_S, POLL_S

    monkeypatch.setattr(services.waiters, "pushed", pushed)
    ctl = services.extra["sweep_controller"]
    sweep_id = _sweep(client, services, **({"pruning": pruning} if pruning else {}))
    waits: list[float] = []
    monkeypatch.setattr(ctl._wake, "wait", lambda t: waits.append(t) or ctl._stop.set())
    ctl._run()  # one step, then the wait it chose
    assert waits == [IDLE_S if quiet else POLL_S]
    assert client.get(f"/v1/sweeps/{sweep_id}").json()["progress"]["queued"] == len(LRS)
