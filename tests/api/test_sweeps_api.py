"""/v1/sweeps through the ASGI app, the controller stepped and the trials' jobs run in this
process (tests/unit/sweeps/drive.py)."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from httpx_sse import EventSource

from service.config import Settings
from service.main import create_app
from service.worker.batches import claim_trials, run_trials
from tests.helpers import seed_example
from tests.unit.sweeps.drive import drive, run_jobs

SEED = seed_example()
DATA = {"x": SEED["x"], "y": SEED["y"]}


def _sweep(client, **body) -> dict:
    r = client.post("/v1/sweeps", json=body)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/sweeps/{r.json()['id']}"
    return r.json()


def _run(client, services, sweep_id: str) -> dict:
    drive(services)
    return client.get(f"/v1/sweeps/{sweep_id}").json()


def test_a_grid_over_lr_finds_the_lowest_final_loss_of_the_same_jobs_run_alone(
        client, services):
    lrs = [0.001, 0.004, 0.008, 0.012]
    job = {**DATA, "epochs": 300, "seed": 0}
    sweep = _sweep(client, job=job, search_space={"optimizer.lr": {"choice": lrs}},
                   strategy="grid", objective="train_loss", model_name="seed-best")
    assert sweep["status"] == "queued" and sweep["max_trials"] == 4
    done = _run(client, services, sweep["id"])
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"trials": 4, "created": 4, "queued": 0, "running": 0,
                                "succeeded": 4, "pruned": 0, "failed": 0, "cancelled": 0}
    by_lr = {t["params"]["optimizer.lr"]: t for t in done["trials"]}
    assert sorted(by_lr) == lrs
    assert all(t["engine_used"] == "closed_form" and t["epochs"] == 300 for t in done["trials"])

    alone = {}  # the same trials as ordinary jobs
    for lr in lrs:
        r = client.post("/v1/jobs", json={**job, "lr": lr})
        assert r.status_code == 202
        run_jobs(services)
        model_id = client.get(f"/v1/jobs/{r.json()['id']}").json()["model_id"]
        alone[lr] = client.get(f"/v1/models/{model_id}").json()["metrics"]["train_loss"]
    for lr in lrs:
        assert by_lr[lr]["value"] == pytest.approx(alone[lr], rel=1e-9)
    best_lr = min(alone, key=alone.__getitem__)
    assert done["best"]["params"] == {"optimizer.lr": best_lr}
    assert done["best"]["value"] == pytest.approx(alone[best_lr], rel=1e-9)

    # the winner's model is the next version of model_name; predict by that name serves it
    assert done["model_id"] == by_lr[best_lr]["model_id"] == done["best"]["model_id"]
    model = client.get(f"/v1/models/{done['model_id']}").json()
    assert (model["name"], model["version"], model["job_id"]) == (
        "seed-best", 1, by_lr[best_lr]["job_id"])
    answer = client.post("/predict", json={"model": "seed-best", "x": [[3.3]]}).json()
    assert answer["model_id"] == done["model_id"]

    # every trial is a job, listed with ?sweep=, with its own history
    trials = client.get(f"/v1/jobs?sweep={sweep['id']}").json()
    assert trials["count"] == 4
    assert {j["id"] for j in trials["data"]} == {t["job_id"] for t in done["trials"]}
    assert client.get("/v1/jobs").json()["count"] == 8
    history = client.get(f"/v1/jobs/{by_lr[best_lr]['job_id']}/history").json()
    assert len(history["loss"]) == 300

    listed = client.get("/v1/sweeps").json()
    assert listed["count"] == 1 and listed["data"][0]["trials"] is None
    assert listed["data"][0]["best"]["value"] == done["best"]["value"]
    assert listed["data"][0]["progress"]["succeeded"] == 4


def _params(client, services, **body) -> list[dict]:
    sweep = _sweep(client, job={**DATA, "epochs": 50, "seed": 0}, **body)
    done = _run(client, services, sweep["id"])
    assert done["status"] == "succeeded"
    return [t["params"] for t in done["trials"]]


SPACE = {"optimizer.lr": {"log_uniform": [1e-4, 2e-2]},
         "optimizer.momentum": {"uniform": [0.0, 0.9]},
         "epochs": {"int": [20, 60]}}


@pytest.mark.parametrize("strategy,parallel", [("random", 3), ("tpe", 1)])
def test_a_sweep_with_a_seed_asks_the_same_trials_again(client, services, strategy,
                                                          parallel):
    body = {"search_space": SPACE, "strategy": strategy, "max_trials": 12,
            "max_parallel": parallel, "objective": "train_loss"}
    first = _params(client, services, seed=7, **body)
    assert len(first) == 12 and len({p["optimizer.lr"] for p in first}) == 12
    assert all(20 <= p["epochs"] <= 60 and isinstance(p["epochs"], int) for p in first)
    assert _params(client, services, seed=7, **body) == first
    assert _params(client, services, seed=8, **body) != first


def _history(client, job_id: str) -> dict[int, float]:
    h = client.get(f"/v1/jobs/{job_id}/history").json()
    return dict(zip(h["epoch"], h["loss"], strict=True))


def test_median_pruning_stops_what_a_hand_written_median_rule_stops(client, services):
    pruning = {"name": "median", "grace_period": 20, "interval": 20, "startup_trials": 3}
    sweep = _sweep(client, job={**DATA, "epochs": 100, "seed": 0},
                   search_space={"optimizer.lr": {"log_uniform": [1e-4, 2e-2]}},
                   strategy="random", seed=3, max_trials=14, max_parallel=1,
                   objective="train_loss", pruning=pruning)
    done = _run(client, services, sweep["id"])
    assert done["status"] == "succeeded"
    rungs = [20, 40, 60, 80, 100]
    completed: list[dict[int, float]] = []  # the rung losses of the trials that completed
    expected = {}
    for t in done["trials"]:  # in number order, as one trial at a time ran
        losses = _history(client, t["job_id"])
        at = {r: losses[r] for r in rungs}
        stop = None
        for r in rungs:
            if len(completed) < pruning["startup_trials"]:
                break
            best_so_far = min(at[q] for q in rungs if q <= r)
            if best_so_far > statistics.median(c[r] for c in completed):
                stop = r
                break
        expected[t["number"]] = stop
        if stop is None:
            completed.append(at)
    got = {t["number"]: t["pruned_at"] for t in done["trials"]}
    assert got == expected
    assert 0 < sum(v is not None for v in got.values()) < 11  # the rule did prune, not all
    for t in done["trials"]:
        assert t["status"] == ("pruned" if expected[t["number"]] else "succeeded")
        assert (t["value"] is None) == (t["status"] == "pruned")
    assert done["best"]["trial"] not in [n for n, v in expected.items() if v]


def test_successive_halving_keeps_the_best_third_at_each_rung(client, services):
    pruning = {"name": "successive_halving", "grace_period": 10, "reduction_factor": 3}
    sweep = _sweep(client, job={**DATA, "epochs": 90, "seed": 0},
                   search_space={"optimizer.lr": {"log_uniform": [1e-4, 2e-2]}},
                   strategy="random", seed=5, max_trials=9, max_parallel=1,
                   objective="train_loss", pruning=pruning)
    done = _run(client, services, sweep["id"])
    reached: dict[int, list[float]] = {10: [], 30: [], 90: []}
    for t in done["trials"]:  # asynchronous successive halving, by hand
        losses = _history(client, t["job_id"])
        stop = None
        for r in (10, 30, 90):
            reached[r].append(losses[r])
            kept = max(1, len(reached[r]) // 3)
            if r < 90 and losses[r] > sorted(reached[r])[kept - 1]:
                stop = r
                break
        assert t["pruned_at"] == stop, (t["number"], t["losses"])
    assert any(t["status"] == "pruned" for t in done["trials"])


def test_a_diverged_trial_fails_alone_and_the_sweep_goes_on(client, services):
    sweep = _sweep(client, job={**DATA, "epochs": 200, "seed": 0}, strategy="grid",
                   search_space={"optimizer.lr": {"choice": [0.01, 5.0]}})
    done = _run(client, services, sweep["id"])
    assert done["status"] == "succeeded"
    bad = next(t for t in done["trials"] if t["params"]["optimizer.lr"] == 5.0)
    assert bad["status"] == "failed" and bad["error"]["type"] == "diverged"
    assert "epoch" in bad["error"]["message"] and bad["value"] is None
    assert done["best"]["params"] == {"optimizer.lr": 0.01}


def test_a_sweep_whose_trials_all_fail_fails_and_says_why(client, services):
    sweep = _sweep(client, job={**DATA, "epochs": 200, "seed": 0}, strategy="grid",
                   search_space={"optimizer.lr": {"choice": [5.0, 9.0]}}, model_name="none")
    done = _run(client, services, sweep["id"])
    assert done["status"] == "failed" and done["model_id"] is None
    assert done["error"]["type"] == "no_trial_succeeded"
    assert "diverged" in done["error"]["message"]
    assert client.get("/v1/models?name=none").json()["count"] == 0


def test_cancel_cancels_every_trial(client, services):
    sweep = _sweep(client, job={**DATA, "epochs": 100, "seed": 0}, strategy="grid",
                   search_space={"optimizer.lr": {"choice": [0.001, 0.002, 0.003]}})
    services.extra["sweep_controller"].step()  # the trials are queued
    assert client.get(f"/v1/jobs?sweep={sweep['id']}&status=queued").json()["count"] == 3
    r = client.post(f"/v1/sweeps/{sweep['id']}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested"]
    jobs = client.get(f"/v1/jobs?sweep={sweep['id']}").json()["data"]
    assert [j["status"] for j in jobs] == ["cancelled"] * 3
    done = _run(client, services, sweep["id"])
    assert done["status"] == "cancelled"
    assert done["progress"]["cancelled"] == 3 and done["model_id"] is None
    r = client.post(f"/v1/sweeps/{sweep['id']}/cancel")
    assert r.status_code == 409 and "cancelled" in r.json()["error"]["message"]
    assert client.post("/v1/sweeps/swp_nope/cancel").status_code == 404


def test_a_restart_resumes_the_sweep_without_running_a_finished_trial_again(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", workers=0, device="cpu")
    body = {"job": {**DATA, "epochs": 60, "seed": 0}, "search_space": SPACE,
            "strategy": "tpe", "seed": 11, "max_trials": 7, "max_parallel": 1,
            "objective": "train_loss"}

    def app():
        return create_app(settings, start_workers=False)

    first = app()
    with TestClient(first, base_url="http://127.0.0.1") as c:
        sweep_id = _sweep(c, **body)["id"]
        services = first.state.services
        ctl = services.extra["sweep_controller"]
        for _ in range(4):  # four trials end; the fifth is queued when the server stops
            ctl.step()
            run_jobs(services)
        ctl.step()
        before = {t["number"]: t for t in c.get(f"/v1/sweeps/{sweep_id}").json()["trials"]}
        assert [t["status"] for t in before.values()] == ["succeeded"] * 4 + ["queued"]
    second = app()  # the same store; a new controller rebuilds the study from the tables
    with TestClient(second, base_url="http://127.0.0.1") as c:
        services = second.state.services
        services.extra["sweep_controller"].store.release_sweeps(None)  # what start() does
        done = _run(c, services, sweep_id)
        jobs = {j["id"]: j for j in c.get(f"/v1/jobs?sweep={sweep_id}").json()["data"]}
        uninterrupted = _sweep(c, **body)
        again = _run(c, services, uninterrupted["id"])
    assert done["status"] == "succeeded" and len(done["trials"]) == 7 and len(jobs) == 7
    for n, t in before.items():
        assert done["trials"][n]["job_id"] == t["job_id"]
        assert jobs[t["job_id"]]["attempts"] == 1  # ran once, before the restart
    assert [t["params"] for t in done["trials"]] == [t["params"] for t in again["trials"]]
    assert done["best"] == {**again["best"], "job_id": done["best"]["job_id"],
                            "model_id": done["best"]["model_id"]}


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    """One app for the refusals (each leaves nothing behind): FITSERVE_MAX_TRIALS=10."""
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("strict") / "d", workers=0,
                              device="cpu", max_trials=10), start_workers=False)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


@pytest.mark.parametrize("body,field,words", [
    ({"search_space": {"optimizer.lrr": {"uniform": [0.001, 0.1]}}},
     "search_space.optimizer.lrr", "did you mean 'optimizer.lr'"),
    ({"search_space": {"scheduler.gamma": {"uniform": [0.1, 0.9]}}},
     "search_space.scheduler.gamma", "give the job a scheduler"),
    ({"search_space": {"optimizer.lr": {"uniform": [0.1, 0.01]}}},
     "search_space.optimizer.lr", "empty"),
    ({"search_space": {"epochs": {"int": [50, 10]}}}, "search_space.epochs", "empty"),
    ({"search_space": {"optimizer.momentum": {"choice": [0, 1.5]}}},
     "search_space.optimizer.momentum", "1.5"),
    ({"search_space": {"optimizer.lr": {"uniform": [0.0, 0.1]}}},
     "search_space.optimizer.lr", "refuses 0.0"),
    ({"search_space": {"model.hidden": {"choice": [[8], [4096]]}}, "job_model": "mlp"},
     "search_space.model.hidden", "FITSERVE_MAX_HIDDEN_UNITS"),
    ({"search_space": {"epochs": {"int": [10, 2_000_000]}}}, "search_space.epochs",
     "FITSERVE_MAX_EPOCHS"),
    ({"search_space": {"optimizer.lr": {"log_uniform": [1e-4, 0.1]}}, "max_trials": 11},
     "max_trials", "FITSERVE_MAX_TRIALS"),
    ({"search_space": {"optimizer.lr": {"log_uniform": [1e-4, 0.1], "steps": 11}},
      "strategy": "grid"}, "search_space", "FITSERVE_MAX_TRIALS"),
    ({"search_space": {"optimizer.lr": {"log_uniform": [1e-4, 0.1]}}, "strategy": "grid"},
     "search_space.optimizer.lr", "steps"),
    ({"search_space": {"optimizer.lr": {"log_uniform": [1e-4, 0.1]}},
      "objective": "val_loss"}, "objective", "validation_fraction"),
    ({"search_space": {"optimizer.lr": {"between": [1, 2]}}}, "search_space.optimizer.lr",
     "unknown key"),
    ({"search_space": {}}, "search_space", "at least one"),
    ({"search_space": {"optimizer.lr": {"log_uniform": [1e-4, 0.1]}},
      "job_init_from": True}, "job.init_from", "cannot warm-start"),
])
def test_a_bad_sweep_is_a_422_naming_the_field_and_stores_nothing(strict, body, field,
                                                                  words):
    job = {**DATA, "epochs": 100}
    if body.pop("job_model", None):
        job["model"] = {"kind": "mlp", "hidden": [8]}
    if body.pop("job_init_from", None):
        job["init_from"] = {"model": "mdl_000000000000000000000000"}
    r = strict.post("/v1/sweeps", json={"job": job, **body})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == field and words in err["message"], err
    assert strict.get("/v1/sweeps").json()["count"] == 0
    assert strict.get("/v1/datasets").json()["count"] == 0


def test_the_base_job_is_checked_as_post_jobs_checks_it(client):
    r = client.post("/v1/sweeps", json={"job": {**DATA, "optimizer": {"name": "sgd",
                                                                      "lrr": 0.1}},
                                        "search_space": {"epochs": {"int": [1, 5]}}})
    assert r.status_code == 422 and r.json()["error"]["field"] == "job.optimizer.lrr"
    r = client.post("/v1/sweeps", json={"job": {**DATA, "model_name": "x"},
                                        "search_space": {"epochs": {"int": [1, 5]}}})
    assert r.status_code == 422 and "sweep's model_name" in r.json()["error"]["message"]
    r = client.post("/v1/sweeps", json={"job": {"dataset_id": "ds_nope"},
                                        "search_space": {"epochs": {"int": [1, 5]}}})
    assert r.status_code == 404


def test_idempotency_key_replays_the_sweep_and_conflicts_on_another_body(client):
    body = {"job": {**DATA, "epochs": 5}, "search_space": {"epochs": {"int": [1, 5]}}}
    h = {"Idempotency-Key": "sweep-1"}
    first = client.post("/v1/sweeps", json=body, headers=h)
    again = client.post("/v1/sweeps", json=body, headers=h)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["location"] == f"/v1/sweeps/{first.json()['id']}"
    assert client.get("/v1/sweeps").json()["count"] == 1
    other = client.post("/v1/sweeps", json={**body, "max_trials": 2}, headers=h)
    assert other.status_code == 409 and other.json()["error"]["field"] == "Idempotency-Key"
    bad = {**body, "search_space": {"epochs": {"int": [5, 1]}}}
    assert client.post("/v1/sweeps", json=bad, headers={"Idempotency-Key": "k"}
                       ).status_code == 422
    fixed = client.post("/v1/sweeps", json=body, headers={"Idempotency-Key": "k"})
    assert fixed.status_code == 202  # a refused request does not burn its key
    assert client.get("/v1/sweeps").json()["count"] == 2


def test_events_stream_the_trials_as_they_end_then_the_sweep(client, services):
    sweep = _sweep(client, job={**DATA, "epochs": 50, "seed": 0}, strategy="grid",
                   search_space={"optimizer.lr": {"choice": [0.001, 0.002, 0.004]}})
    done = _run(client, services, sweep["id"])
    with client.stream("GET", f"/v1/sweeps/{sweep['id']}/events") as r:
        events = list(EventSource(r).iter_sse())
    assert [(e.event, e.id) for e in events] == [("trial", "1"), ("trial", "2"),
                                                 ("trial", "3"), ("end", "end")]
    first = orjson.loads(events[0].data)
    assert first["status"] == "succeeded" and first["progress"]["succeeded"] >= 1
    assert orjson.loads(events[-1].data)["best"] == done["best"]
    with client.stream("GET", f"/v1/sweeps/{sweep['id']}/events",
                       headers={"Last-Event-ID": "2"}) as r:
        again = list(EventSource(r).iter_sse())
    assert [(e.event, e.id) for e in again] == [("trial", "3"), ("end", "end")]
    r = client.get(f"/v1/sweeps/{sweep['id']}/events", headers={"Last-Event-ID": "end"})
    assert r.status_code == 204
    assert done["status"] == "succeeded"


def test_the_plot_is_a_png(client, services):
    sweep = _sweep(client, job={**DATA, "epochs": 30, "seed": 0}, strategy="random", seed=1,
                   max_trials=3, search_space={
                       "optimizer.lr": {"log_uniform": [1e-3, 1e-2]},
                       "optimizer.momentum": {"choice": [0, 0.5]}})
    _run(client, services, sweep["id"])
    r = client.get(f"/v1/sweeps/{sweep['id']}/plot.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content[:8] == b"\x89PNG\r\n\x1a\n" and len(r.content) > 10_000
    assert client.get("/v1/sweeps/swp_nope/plot.png").status_code == 404


def test_a_validation_objective_prunes_on_the_validation_loss(client, services):
    x = np.linspace(0, 1, 40, dtype=np.float32)[:, None]
    sweep = _sweep(client, job={"x": x.tolist(), "y": (2 * x + 1).tolist(), "epochs": 40,
                                "seed": 0, "validation_fraction": 0.25},
                   search_space={"optimizer.lr": {"choice": [0.3, 0.1, 0.03, 0.01, 0.003]}},
                   strategy="grid", max_parallel=1,
                   # the seed fixes the grid's order: in an order where each trial beats
                   # the median of those before it (seed 26 gives one), none is pruned
                   seed=0,
                   pruning={"name": "median", "grace_period": 10, "startup_trials": 1})
    done = _run(client, services, sweep["id"])
    assert done["objective"] == "val_loss"
    for t in done["trials"]:
        if t["status"] == "succeeded":
            model = client.get(f"/v1/models/{t['model_id']}").json()
            assert t["value"] == model["metrics"]["val_loss"]
        h = client.get(f"/v1/jobs/{t['job_id']}/history").json()
        val = dict(zip(h["epoch"], h["val_loss"], strict=True))
        for epoch, loss in t["losses"].items():
            assert loss == pytest.approx(val[int(epoch)], rel=1e-6)
    assert any(t["status"] == "pruned" for t in done["trials"])


HOUSES = (Path(__file__).resolve().parents[2] / "examples" / "houses.csv").read_bytes()


def _batched(services) -> int:
    """Step the controller and run the queued trials as a worker does: claimed as batches
    and trained together (worker/batches.py); how many batches ran."""
    ctl, batches = services.extra["sweep_controller"], 0
    for _ in range(100):
        ctl.step()
        job = services.meta.claim_next("w")
        if job is None:
            if ctl.step() == 0:
                return batches
            continue
        run_trials(claim_trials(services.meta, job, "w"), "w", services.meta,
                   services.artifacts)
        batches += 1
    raise AssertionError("the sweep did not end")


@pytest.mark.parametrize("job,space", [
    ({"epochs": 300, "validation_fraction": 0.25},  # the closed form's batch
     {"optimizer.lr": {"choice": [0.01, 0.05, 0.1]},
      "optimizer.momentum": {"choice": [0, 0.5]}}),
    ({"epochs": 60, "optimizer": {"name": "adam"}, "model": {"kind": "mlp", "hidden": [8]},
      "features": ["sqft", "city"], "schema": {"has_garage": "boolean"}},  # the loop's batch
     {"optimizer.lr": {"choice": [0.01, 0.05]}, "seed": {"choice": [0, 1]}}),
])
def test_a_sweep_on_typed_columns_gives_each_trial_the_numbers_of_its_job_alone(
        client, services, job, space):
    ds = client.post("/v1/datasets?target=price", content=HOUSES,
                     headers={"content-type": "text/csv"}).json()
    job = {"dataset_id": ds["id"], "seed": 0, **job}
    sweep = _sweep(client, job=job, search_space=space, strategy="grid")
    trials = sweep["max_trials"]
    assert _batched(services) < trials  # trials ran together, not one by one
    done = client.get(f"/v1/sweeps/{sweep['id']}").json()
    assert done["status"] == "succeeded" and done["progress"]["succeeded"] == trials, done

    for trial in done["trials"]:  # the same trial as an ordinary job
        b_job = client.get(f"/v1/jobs/{trial['job_id']}").json()
        assert b_job["hyperparameters"]["standardize"] is True  # typed columns' default
        r = client.post("/v1/jobs", json={"dataset_id": ds["id"], **b_job["hyperparameters"]})
        assert r.status_code == 202, r.text
        assert run_jobs(services) == 1
        a_job = client.get(f"/v1/jobs/{r.json()['id']}").json()
        assert a_job["engine_used"] == b_job["engine_used"]
        a_hist, b_hist = (client.get(f"/v1/jobs/{j['id']}/history").json()
                          for j in (a_job, b_job))
        assert a_hist["epoch"] == b_hist["epoch"]
        np.testing.assert_allclose(b_hist["loss"], a_hist["loss"], rtol=1e-5)
        a_model, b_model = (client.get(f"/v1/models/{j['model_id']}").json()
                            for j in (a_job, b_job))
        assert b_model["feature_names"] == a_model["feature_names"]
        assert b_model["metrics"]["train_loss"] == pytest.approx(
            a_model["metrics"]["train_loss"], rel=1e-5)
        # predict by named fields, through the trial's own pipeline
        rows = [{"sqft": 1500, "city": "Lyon"}, {"sqft": 900, "city": "Paris"}]
        got = [client.post(f"/v1/models/{m['id']}/predict", json={"rows": rows}).json()["y"]
               for m in (a_model, b_model)]
        np.testing.assert_allclose(got[1], got[0], rtol=1e-4)


def test_a_typed_sweep_naming_a_column_the_dataset_lacks_is_a_422(strict):
    ds = strict.post("/v1/datasets?target=price", content=HOUSES,
                     headers={"content-type": "text/csv"}).json()
    r = strict.post("/v1/sweeps", json={
        "job": {"dataset_id": ds["id"], "features": ["sqft", "rooms"]},
        "search_space": {"optimizer.lr": {"choice": [0.01, 0.1]}}})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"].startswith("job") and "rooms" in err["message"], err
    assert strict.get("/v1/sweeps").json()["count"] == 0


@pytest.mark.parametrize(("strategy", "transactions"), [("grid", [8]), ("random", [8]),
                                                        ("tpe", [4, 4])])
def test_a_grid_is_queued_at_once_and_wakes_every_worker(tmp_path, monkeypatch, strategy,
                                                          transactions):
    """Two workers: a grid's or a random search's trials, cheap to ask for, are queued in
    one transaction and both workers are woken to share them; a TPE's, in one part per
    worker (the first batch starts while the next part is asked for), each waking one."""
    from service.store.sweeps import SweepRecords

    settings = Settings(data_dir=tmp_path / "data", workers=2, device="cpu")
    app = create_app(settings, start_workers=False)
    services = app.state.services
    queued: list[int] = []
    create = SweepRecords.create_trials

    def counted(self, sweep, holder, trials, max_active):
        queued.append(len(trials))
        return create(self, sweep, holder, trials, max_active)

    monkeypatch.setattr(SweepRecords, "create_trials", counted)
    woken: list[str] = []
    monkeypatch.setattr(services, "job_submitted", lambda job_id, device=None:
                        woken.append(job_id))
    space = {"optimizer.lr": {"choice": [0.001, 0.002, 0.004, 0.008]},
             "optimizer.momentum": {"choice": [0.0, 0.5]}}
    with TestClient(app, base_url="http://127.0.0.1") as c:
        _sweep(c, job={**DATA, "epochs": 20, "seed": 0}, search_space=space,
               strategy=strategy, max_trials=8, max_parallel=8, objective="train_loss")
        services.extra["sweep_controller"].step()
        assert queued == transactions
        assert len(woken) == 2 and len(set(woken)) == 2
        assert len(services.meta.list_jobs("default", None, 100, None).rows) == 8
