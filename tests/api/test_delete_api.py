"""DELETE /v1/jobs/{id} and DELETE /v1/models/{id}: the record in its transaction, then the
file; 409 for an active job; tenants and scopes as everywhere."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from service.config import Settings
from service.main import create_app
from service.worker.runner import run_job

XY = {"x": [[1.0], [2.0], [3.0]], "y": [[2.0], [4.0], [6.0]]}


def _train(client, run_queued, **extra) -> dict:
    job = client.post("/v1/jobs", json={**XY, "epochs": 20, "seed": 0, **extra})
    assert job.status_code == 202, job.text
    run_queued()
    return client.get(f"/v1/jobs/{job.json()['id']}").json()


def _error(r, status: int, type_: str) -> str:
    assert r.status_code == status, r.text
    assert r.json()["error"]["type"] == type_
    return r.json()["error"]["message"]


# ---------------------------------------------------------------- jobs


def test_deleting_an_ended_job_removes_it_and_its_history_and_keeps_its_model(
        client, run_queued, settings):
    job = _train(client, run_queued, trace_epochs=1)
    trace = settings.data_dir / "traces" / f"{job['id']}.json"
    assert job["status"] == "succeeded" and trace.exists()
    r = client.delete(f"/v1/jobs/{job['id']}")
    assert r.status_code == 204 and r.content == b""
    for path in ("", "/history", "/trace", "/loss.png"):
        _error(client.get(f"/v1/jobs/{job['id']}{path}"), 404, "not_found")
    assert not trace.exists()
    assert client.get("/v1/jobs").json()["count"] == 0
    assert client.get(f"/v1/models/{job['model_id']}").status_code == 200  # the model stays
    _error(client.delete(f"/v1/jobs/{job['id']}"), 404, "not_found")


def test_failed_and_cancelled_jobs_can_be_deleted(client, run_queued):
    failed = _train(client, run_queued, lr=900.0)
    assert failed["status"] == "failed"
    queued = client.post("/v1/jobs", json=XY).json()
    client.post(f"/v1/jobs/{queued['id']}/cancel")
    for job_id in (failed["id"], queued["id"]):
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 204


def test_a_queued_or_running_job_is_409_saying_to_cancel_it_first(client, services):
    job_id = client.post("/v1/jobs", json=XY).json()["id"]
    message = _error(client.delete(f"/v1/jobs/{job_id}"), 409, "conflict")
    assert "queued" in message and f"POST /v1/jobs/{job_id}/cancel" in message
    assert services.meta.claim_next("w").id == job_id  # now running
    message = _error(client.delete(f"/v1/jobs/{job_id}"), 409, "conflict")
    assert "running" in message and f"POST /v1/jobs/{job_id}/cancel" in message
    client.post(f"/v1/jobs/{job_id}/cancel")  # running: flagged, still running
    message = _error(client.delete(f"/v1/jobs/{job_id}"), 409, "conflict")
    assert "being cancelled" in message
    assert client.get(f"/v1/jobs/{job_id}").status_code == 200


# ---------------------------------------------------------------- models


def test_deleting_a_model_removes_its_checkpoint_and_version(client, run_queued, settings):
    first = _train(client, run_queued, model_name="m")
    second = _train(client, run_queued, model_name="m")
    old, new = first["model_id"], second["model_id"]
    checkpoint = settings.data_dir / "checkpoints" / f"{new}.safetensors"
    # served once, so that the predictor holds it (and what "m" and "latest" mean)
    for body in ({"x": [[1.0]]}, {"x": [[1.0]], "model": "m"}, {"x": [[1.0]], "model": new}):
        assert client.post("/predict", json=body).json()["model_id"] == new
    assert client.get("/v2/models/m").json()["versions"] == ["1", "2"]

    assert client.delete(f"/v1/models/{new}").status_code == 204
    assert not checkpoint.exists()
    for r in (client.get(f"/v1/models/{new}"), client.get(f"/v1/models/{new}/checkpoint"),
              client.post(f"/v1/models/{new}/predict", json={"x": [[1.0]]}),
              client.post("/predict", json={"x": [[1.0]], "model": new}),
              client.delete(f"/v1/models/{new}")):
        _error(r, 404, "not_found")
    # the name's latest version is the one left, everywhere
    assert client.post("/predict", json={"x": [[1.0]], "model": "m"}).json()["model_id"] == old
    assert client.post("/predict", json={"x": [[1.0]]}).json()["model_id"] == old
    assert [m["id"] for m in client.get("/v1/models?name=m").json()["data"]] == [old]
    assert client.get("/v2/models/m").json()["versions"] == ["1"]
    assert client.get("/v2/models/m/versions/2").status_code == 404
    # the job that trained it stays, naming it
    assert client.get(f"/v1/jobs/{second['id']}").json()["model_id"] == new


def test_deletes_work_when_the_commit_first_hits_a_full_disk(client, run_queued, services,
                                                             monkeypatch):
    job = _train(client, run_queued)
    released = []
    monkeypatch.setattr(services, "free_reserve", lambda: released.append(1) or True)
    for name, path in (("delete_model", f"/v1/models/{job['model_id']}"),
                       ("delete_job", f"/v1/jobs/{job['id']}")):
        real = getattr(services.meta, name)
        calls = []

        def once_full(*args, real=real, calls=calls):
            calls.append(1)
            if len(calls) == 1:
                raise OperationalError("DELETE", {}, Exception("database or disk is full"))
            return real(*args)

        monkeypatch.setattr(services.meta, name, once_full)
        assert client.delete(path).status_code == 204, path
    assert released == [1, 1]


def test_delete_routes_are_documented(client):
    paths = client.get("/openapi.json").json()["paths"]
    job = paths["/v1/jobs/{job_id}"]["delete"]
    model = paths["/v1/models/{model_id}"]["delete"]
    assert {"204", "404", "409"} <= set(job["responses"])
    assert {"204", "404", "403"} <= set(model["responses"])
    assert "cancel it first" in job["description"] and "model it trained stays" in \
        job["description"]
    assert "checkpoint" in model["description"]


# ---------------------------------------------------------------- tenants and scopes


@pytest.fixture
def secured(tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "d", workers=0, auth=True),
                     start_workers=False)
    services = app.state.services
    keys = {(t, s): {"Authorization": f"Bearer {services.auth.create(t, s)[1]}"}
            for t in ("acme", "umbrella") for s in ("predict", "train")}
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c, services, keys


def test_another_tenants_job_or_model_is_404_and_a_predict_key_cannot_delete(secured):
    c, services, keys = secured
    job_id = c.post("/v1/jobs", json={**XY, "epochs": 5}, headers=keys["acme", "train"]).json()
    job_id = job_id["id"]
    run_job(services.meta.claim_next("w"), "w", services.meta, services.artifacts,
            notify=services.on_event)
    model_id = c.get(f"/v1/jobs/{job_id}", headers=keys["acme", "train"]).json()["model_id"]
    other = keys["umbrella", "train"]
    _error(c.delete(f"/v1/jobs/{job_id}", headers=other), 404, "not_found")
    _error(c.delete(f"/v1/models/{model_id}", headers=other), 404, "not_found")
    _error(c.delete(f"/v1/models/{model_id}", headers=keys["acme", "predict"]), 403,
           "forbidden")
    _error(c.delete(f"/v1/jobs/{job_id}", headers=keys["acme", "predict"]), 403, "forbidden")
    assert c.get(f"/v1/models/{model_id}", headers=keys["acme", "predict"]).status_code == 200
    for path in (f"/v1/models/{model_id}", f"/v1/jobs/{job_id}"):
        assert c.delete(path, headers=keys["acme", "train"]).status_code == 204, path
