"""POST /v1/models/{id}/evaluations: metrics on another dataset, held to scikit-learn's;
rows refused with why; columns matched by name (422 naming the missing one); the figure."""

from __future__ import annotations

import numpy as np
import pytest

PNG = b"\x89PNG\r\n\x1a\n"



def _train(client, run_queued, **body) -> dict:
    job = client.post("/v1/jobs", json={"seed": 0, **body})
    assert job.status_code == 202, job.text
    run_queued()
    model_id = client.get(f"/v1/jobs/{job.json()['id']}").json()["model_id"]
    assert model_id, client.get(f"/v1/jobs/{job.json()['id']}").json()
    return client.get(f"/v1/models/{model_id}").json()


def _dataset(client, **body) -> str:
    r = client.post("/v1/datasets", json=body)
    assert r.status_code in (200, 201), r.text
    return r.json()["id"]


def _predict(client, model_id, x) -> dict:
    r = client.post(f"/v1/models/{model_id}/predict", json={"x": x})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def regression(client, run_queued) -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2))
    y = x @ np.array([[1.5], [-2.0]]) + 0.3 + rng.normal(scale=0.1, size=(40, 1))
    return _train(client, run_queued, x=x.tolist(), y=y.tolist(), epochs=300,
                  model_name="reg")


def test_regression_metrics_match_scikit_learn(skm, client, regression):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(25, 2)).astype(np.float32)
    y = (x @ np.array([[1.4], [-2.1]]) + 0.2).astype(np.float32)
    # the holdout names its columns in another order, with one the model does not take
    ds = _dataset(client, x=np.hstack([x[:, [1, 0]], x[:, :1] * 3]).tolist(), y=y.tolist(),
                  feature_names=["x1", "x0", "z"], target_names=["y0"])
    r = client.post(f"/v1/models/{regression['id']}/evaluations", json={"dataset_id": ds})
    assert r.status_code == 201, r.text
    ev = r.json()
    assert r.headers["location"] == f"/v1/evaluations/{ev['id']}"
    assert (ev["task"], ev["rows"], ev["rows_used"], ev["rows_refused"]) == \
        ("regression", 25, 25, 0)
    assert ev["ignored_columns"] == ["z"] and ev["refused"] == []
    pred = np.asarray(_predict(client, regression["id"], x.tolist())["y"], np.float32)
    actual = y.astype(np.float64)
    m = ev["metrics"]
    assert m["mse"] == pytest.approx(skm.mean_squared_error(actual, pred), rel=1e-9)
    assert m["rmse"] == pytest.approx(skm.root_mean_squared_error(actual, pred), rel=1e-9)
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(actual, pred), rel=1e-9)
    assert m["r2"] == pytest.approx(skm.r2_score(actual, pred), rel=1e-9)
    assert m["per_target"][0]["name"] == "y0" and m["accuracy"] is None

    listed = client.get(f"/v1/models/{regression['id']}/evaluations").json()
    assert listed["count"] == 1 and listed["data"][0] == ev
    assert client.get(f"/v1/evaluations/{ev['id']}").json() == ev
    png = client.get(ev["plot"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content[:8] == PNG


def test_a_dataset_without_a_models_column_is_a_422_naming_it(client, regression):
    ds = _dataset(client, x=[[1.0, 2.0], [3.0, 4.0]], y=[[1.0], [2.0]],
                  feature_names=["x0", "size"], target_names=["y0"])
    r = client.post(f"/v1/models/{regression['id']}/evaluations", json={"dataset_id": ds})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == "dataset_id" and "no feature column 'x1'" in err["message"]
    ds = _dataset(client, x=[[1.0, 2.0], [3.0, 4.0]], y=[[1.0], [2.0]],
                  feature_names=["x0", "x1"], target_names=["price"])
    r = client.post(f"/v1/models/{regression['id']}/evaluations", json={"dataset_id": ds})
    assert r.status_code == 422 and "no target column 'y0'" in r.json()["error"]["message"]
    for body, status in (({"dataset_id": "ds_000000000000000000000000"}, 404),
                         ({"dataset": ds}, 422), ({}, 422)):
        r = client.post(f"/v1/models/{regression['id']}/evaluations", json=body)
        assert r.status_code == status, r.text
    r = client.post("/v1/models/mdl_000000000000000000000000/evaluations",
                    json={"dataset_id": ds})
    assert r.status_code == 404
    # nothing was recorded by any of these
    assert client.get(f"/v1/models/{regression['id']}/evaluations").json()["count"] == 0
    assert client.get("/v1/evaluations/evl_000000000000000000000000").status_code == 404


def test_classifier_metrics_match_scikit_learn_and_bad_targets_are_refused(skm,
        client, run_queued):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 2))
    labels = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.7, size=60) > 0).astype(float)
    model = _train(client, run_queued, x=x.tolist(), y=labels[:, None].tolist(),
                   model={"kind": "logistic"}, optimizer={"name": "adam", "lr": 0.05},
                   epochs=100)
    hx = rng.normal(size=(30, 2)).astype(np.float32)
    hy = (hx[:, 0] + rng.normal(scale=0.8, size=30) > 0).astype(np.float32)
    bad_y = np.concatenate([hy, [2.0, 0.5]])  # a class the model lacks; not an index
    ds = _dataset(client, x=np.vstack([hx, [[0, 0], [1, 1]]]).tolist(),
                  y=bad_y[:, None].tolist())
    r = client.post(f"/v1/models/{model['id']}/evaluations", json={"dataset_id": ds})
    assert r.status_code == 201, r.text
    ev = r.json()
    assert (ev["task"], ev["rows"], ev["rows_used"], ev["rows_refused"]) == \
        ("classification", 32, 30, 2)
    assert {(x["rows"], x["first_rows"][0]) for x in ev["refused"]} == {(1, 30), (1, 31)}
    assert any("not a class index" in x["reason"] for x in ev["refused"])

    p = _predict(client, model["id"], hx.tolist())
    probs = np.asarray(p["probabilities"], np.float32)
    predicted = np.asarray(p["labels"])
    m = ev["metrics"]
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(hy, predicted), abs=1e-12)
    assert m["log_loss"] == pytest.approx(skm.log_loss(hy, probs, labels=[0, 1]), rel=1e-5)
    assert m["confusion_matrix"] == skm.confusion_matrix(hy, predicted, labels=[0, 1]).tolist()
    precision = skm.precision_score(hy, predicted, average=None, zero_division=np.nan)
    recall = skm.recall_score(hy, predicted, average=None, zero_division=np.nan)
    for c in (0, 1):
        assert m["per_class"][c]["class"] == c
        assert m["per_class"][c]["precision"] == pytest.approx(precision[c], abs=1e-12)
        assert m["per_class"][c]["recall"] == pytest.approx(recall[c], abs=1e-12)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(hy, probs[:, 1]), abs=1e-12)
    assert m["mse"] is None
    png = client.get(ev["plot"])
    assert png.status_code == 200 and png.content[:8] == PNG

    # deleting the model deletes its evaluations
    assert client.delete(f"/v1/models/{model['id']}").status_code == 204
    assert client.get(f"/v1/evaluations/{ev['id']}").status_code == 404
    assert client.get(f"/v1/models/{model['id']}/evaluations").status_code == 404


def test_a_dataset_with_no_scorable_row_is_a_422_and_nothing_is_stored(client, run_queued):
    model = _train(client, run_queued, x=[[0.0], [1.0], [2.0], [3.0]],
                   y=[[0.0], [0.0], [1.0], [2.0]], model={"kind": "logistic"}, epochs=5)
    ds = _dataset(client, x=[[0.0], [1.0]], y=[[3.0], [7.0]])
    r = client.post(f"/v1/models/{model['id']}/evaluations", json={"dataset_id": ds})
    assert r.status_code == 422, r.text
    assert "none of the 2 rows" in r.json()["error"]["message"]
    assert client.get(f"/v1/models/{model['id']}/evaluations").json()["count"] == 0


def test_a_predict_key_reads_evaluations_and_exports_but_neither_scores_nor_imports(tmp_path):
    from fastapi.testclient import TestClient

    from service.config import Settings
    from service.main import create_app
    from service.worker.runner import run_job

    app = create_app(Settings(data_dir=tmp_path / "d", workers=0, auth=True),
                     start_workers=False)
    services = app.state.services
    train = {"Authorization": f"Bearer {services.auth.create('acme', 'train')[1]}"}
    read = {"Authorization": f"Bearer {services.auth.create('acme', 'predict')[1]}"}
    other = {"Authorization": f"Bearer {services.auth.create('umbrella', 'admin')[1]}"}
    with TestClient(app, base_url="http://127.0.0.1") as c:
        job = c.post("/v1/jobs", json={"x": [[1.0], [2.0]], "y": [[1.0], [2.0]], "epochs": 5},
                     headers=train).json()
        while (row := services.meta.claim_next("w")) is not None:
            run_job(row, "w", services.meta, services.artifacts)
        model_id = c.get(f"/v1/jobs/{job['id']}", headers=train).json()["model_id"]
        path = f"/v1/models/{model_id}/evaluations"
        body = {"dataset_id": job["dataset_id"]}
        assert c.post(path, json=body, headers=read).status_code == 403
        ev = c.post(path, json=body, headers=train)
        assert ev.status_code == 201, ev.text
        assert c.get(path, headers=read).json()["count"] == 1
        assert c.get(ev.json()["plot"], headers=read).status_code == 200
        assert c.get(f"/v1/models/{model_id}/export", headers=read).status_code == 200
        r = c.post("/v1/models?name=x", content=b"x", headers={
            **read, "content-type": "application/octet-stream"})
        assert r.status_code == 403
        # another tenant sees none of it
        for url in (path, f"/v1/evaluations/{ev.json()['id']}", ev.json()["plot"]):
            assert c.get(url, headers=other).status_code == 404, url
        assert c.post(path, json=body, headers=other).status_code == 404
