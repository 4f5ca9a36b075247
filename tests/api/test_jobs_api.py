import numpy as np
import pytest

from tests.helpers import seed_example, seed_plain_loop


def _seed_job(client, **extra):
    d = seed_example()
    r = client.post("/v1/jobs", json={"x": d["x"], "y": d["y"], "seed": 0, **extra})
    assert r.status_code == 202, r.text
    return r


def test_submit_is_committed_as_queued_before_the_answer(client, services):
    r = _seed_job(client)
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["model_id"] is None
    assert services.meta.get_job(job["id"]).status == "queued"
    assert job["hyperparameters"]["optimizer"] == {
        "name": "sgd", "lr": 0.01, "momentum": 0.0, "dampening": 0.0, "nesterov": False,
        "weight_decay": 0.0,
    }
    assert job["hyperparameters"]["epochs"] == 10_000 and job["device"] == "cpu"


def test_seed_job_end_to_end_through_the_asgi_app(client, run_queued):
    job_id = _seed_job(client, model_name="seed").json()["id"]
    assert run_queued() == ["succeeded"]
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["device_used"] == "cpu"
    assert job["progress"] == {"epoch": 10_000, "epochs": 10_000,
                               "loss": pytest.approx(0.168915, abs=1e-5), "val_loss": None}
    assert job["started_at"] and job["finished_at"] and job["attempts"] == 1
    history = client.get(f"/v1/jobs/{job_id}/history").json()
    ref, _, _ = seed_plain_loop(10_000)
    assert history["epoch"][0] == 1 and history["epoch"][-1] == 10_000
    np.testing.assert_allclose(history["loss"], ref, rtol=1e-5)
    assert history["val_loss"] is None

    model = client.get(f"/v1/models/{job['model_id']}").json()
    assert model["weight"][0][0] == pytest.approx(0.25999, abs=1e-4)
    assert model["bias"][0] == pytest.approx(0.74765, abs=1e-3)
    assert model["metrics"]["lstsq_loss"] == pytest.approx(0.168915, abs=1e-5)
    assert model["metrics"]["train_loss"] == pytest.approx(0.168915, abs=1e-5)
    assert (model["name"], model["version"], model["job_id"]) == ("seed", 1, job_id)
    assert model["dataset_id"] == job["dataset_id"]

    pred = client.post(f"/v1/models/{model['id']}/predict", json={"x": [[3.3], [10.0]]}).json()
    w, b = model["weight"][0][0], model["bias"][0]
    assert pred["y"][0][0] == pytest.approx(3.3 * w + b, rel=1e-6)
    assert pred["y"][1][0] == pytest.approx(10.0 * w + b, rel=1e-6)


def test_model_names_count_versions_and_predict_picks_latest(client, run_queued):
    ids = []
    for seed in (1, 2):
        r = client.post("/v1/jobs", json={"x": [[1], [2], [3]], "y": [[2], [4], [6]],
                                          "epochs": 50 * seed, "seed": seed, "model_name": "m"})
        ids.append(r.json()["id"])
    run_queued()
    models = [client.get(f"/v1/jobs/{i}").json()["model_id"] for i in ids]
    versions = [client.get(f"/v1/models/{m}").json()["version"] for m in models]
    assert versions == [1, 2]
    by_name = client.post("/predict", json={"model": "m", "x": [[1]]}).json()
    assert (by_name["model_id"], by_name["version"]) == (models[1], 2)
    latest = client.post("/predict", json={"x": [[1]]}).json()
    assert latest["model_id"] == models[1]
    first = client.post("/predict", json={"model": models[0], "x": [[1]]}).json()
    assert first["model_id"] == models[0] and first["y"] != latest["y"]
    listed = client.get("/v1/models?name=m").json()
    assert listed["count"] == 2 and [m["id"] for m in listed["data"]] == models[::-1]


def test_predict_sees_a_new_latest_model_at_once(client, run_queued):
    client.post("/v1/jobs", json={"x": [[1], [2]], "y": [[1], [2]], "epochs": 5})
    run_queued()
    a = client.post("/predict", json={"x": [[1]]}).json()["model_id"]
    client.post("/v1/jobs", json={"x": [[1], [2]], "y": [[3], [2]], "epochs": 5})
    run_queued()
    b = client.post("/predict", json={"x": [[1]]}).json()["model_id"]
    assert a != b


def test_list_jobs_filters_by_status(client, run_queued):
    _seed_job(client, epochs=10)
    run_queued()
    _seed_job(client, epochs=10)
    assert client.get("/v1/jobs").json()["count"] == 2
    queued = client.get("/v1/jobs?status=queued").json()
    assert queued["count"] == 1 and queued["data"][0]["status"] == "queued"
    assert client.get("/v1/jobs?status=succeeded").json()["count"] == 1
    r = client.get("/v1/jobs?status=exploded")
    assert r.status_code == 422 and r.json()["error"]["field"] == "status"


def test_cancel_queued_job_and_conflict_after(client, run_queued):
    job_id = _seed_job(client).json()["id"]
    r = client.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    assert run_queued() == []
    r = client.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 409 and "already cancelled" in r.json()["error"]["message"]


def test_diverged_job_fails_with_epoch_and_hint_and_no_model(client, run_queued):
    job_id = _seed_job(client, lr=10.0, epochs=500).json()["id"]
    assert run_queued() == ["failed"]
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["error"]["type"] == "diverged" and job["error"]["epoch"] > 1
    assert "learning rate" in job["error"]["hint"] and job["model_id"] is None
    assert client.get("/v1/models").json()["count"] == 0
    history = client.get(f"/v1/jobs/{job_id}/history").json()
    assert len(history["loss"]) == job["error"]["epoch"] - 1


def test_seed_is_drawn_and_recorded_when_omitted(client):
    r = client.post("/v1/jobs", json={"x": [[1], [2]], "y": [[1], [2]]})
    assert isinstance(r.json()["hyperparameters"]["seed"], int)


@pytest.mark.parametrize(
    ("body", "field", "needle"),
    [
        ({"lr": 0}, "optimizer.lr", "greater than 0"),
        ({"optimizer": {"name": "sgd", "lr": -1}}, "optimizer.lr", "greater than 0"),
        ({"epochs": 0}, "epochs", "greater than or equal to 1"),
        ({"epochs": 10**9}, "epochs", "at most"),
        ({"loss": "cross_entropy"}, "loss", "does not fit a regression model"),
        ({"loss": "hinge"}, "loss", "'mse', 'l1', 'huber', 'bce' or 'cross_entropy'"),
        ({"optimizer": {"name": "lbfgs"}}, "optimizer.name", "does not match"),
        ({"optimizer": "lbfgs"}, "optimizer.name", "does not match"),
        ({"device": "tpu"}, "device", "unknown device"),
        ({"device": "cuda"}, "device", "available: cpu"),
        ({"batch_size": 0}, "batch_size", "greater than or equal to 1"),
        ({"model": {"kind": "transformer"}}, "model.kind", "'linear', 'logistic'"),
        ({"validation_fraction": 0.9}, "validation_fraction", "less than or equal to 0.5"),
        ({"model_name": "../etc"}, "model_name", "pattern"),
        ({"colour": "red"}, "colour", "unknown field"),
    ],
)
def test_bad_hyperparameters_are_422_naming_the_field(client, body, field, needle):
    r = client.post("/v1/jobs", json={"x": [[1], [2]], "y": [[1], [2]], **body})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == field and needle in err["message"], err
    assert client.get("/v1/jobs").json()["count"] == 0


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "give dataset_id, or both x and y"),
        ({"x": [[1]]}, "give dataset_id, or both x and y"),
        ({"x": [[1], [2]], "y": [[1]]}, "x has 2 rows but y has 1"),
        ({"x": [[1, 2], [1]], "y": [[1], [2]]}, "ragged"),
        ({"dataset_id": "ds_000000000000000000000000", "x": [[1]], "y": [[1]]}, "not both"),
    ],
)
def test_bad_data_sources_are_422(client, body, needle):
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 422 and needle in r.json()["error"]["message"], r.text
    assert client.get("/v1/datasets").json()["count"] == 0


def test_unknown_dataset_id_is_404_and_malformed_bodies(client):
    r = client.post("/v1/jobs", json={"dataset_id": "ds_000000000000000000000000"})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    r = client.post("/v1/jobs", content=b'{"epochs": ', headers={"content-type":
                                                                 "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "malformed_body"
    r = client.post("/v1/jobs", content=b"epochs=3", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    for path in ("/v1/jobs/job_x", "/v1/jobs/job_x/history"):
        assert client.get(path).status_code == 404
    assert client.post("/v1/jobs/job_x/cancel").status_code == 404
