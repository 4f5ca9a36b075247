"""The PNG routes through the ASGI app."""

from __future__ import annotations

import io

from PIL import Image

from tests.helpers import seed_example


def _model(client, run_queued, **extra) -> dict:
    d = seed_example()
    ds = client.post("/v1/datasets", json={"x": d["x"], "y": d["y"]}).json()
    job = client.post("/v1/jobs", json={"dataset_id": ds["id"], "epochs": 200, "seed": 0,
                                        **extra}).json()
    assert run_queued() == ["succeeded"]
    job = client.get(f"/v1/jobs/{job['id']}").json()
    return {"dataset": ds, "job": job, "model_id": job["model_id"]}


def _image(r) -> Image.Image:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(r.content))


def test_model_plot_and_loss_curve_are_pngs(client, run_queued):
    m = _model(client, run_queued, validation_fraction=0.2)
    assert _image(client.get(f"/v1/models/{m['model_id']}/plot.png")).size == (640, 480)
    assert _image(client.get(f"/v1/jobs/{m['job']['id']}/loss.png")).size == (640, 480)


def test_unknown_ids_are_404_in_the_error_shape(client):
    for path in ("/v1/models/mdl_000000000000000000000000/plot.png",
                 "/v1/jobs/job_000000000000000000000000/loss.png"):
        r = client.get(path)
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found", path


def test_a_job_without_history_yet_is_a_conflict(client):
    d = seed_example()
    job = client.post("/v1/jobs", json={"x": d["x"], "y": d["y"], "epochs": 10}).json()
    r = client.get(f"/v1/jobs/{job['id']}/loss.png")
    assert r.status_code == 409
    assert "queued" in r.json()["error"]["message"]


def test_a_model_whose_dataset_was_deleted_has_no_data_to_draw(client, run_queued):
    m = _model(client, run_queued)
    assert client.delete(f"/v1/datasets/{m['dataset']['id']}").status_code in (200, 204)
    r = client.get(f"/v1/models/{m['model_id']}/plot.png")
    assert r.status_code == 409
    assert r.json()["error"]["type"] == "conflict" and "deleted" in r.json()["error"]["message"]
