"""Model kinds and training options through the API: submit, checkpoint, predict (both
routes and the Open Inference Protocol), plots, trace, and a 422 for every bad option."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load

from tests.helpers import seed_example

SEED = seed_example()
BINARY = {"x": [[-2.0], [-1.5], [-1.0], [-0.5], [0.5], [1.0], [1.5], [2.0], [-0.2], [0.3]],
          "y": [[0], [0], [0], [0], [1], [1], [1], [1], [1], [0]]}
THREE = {"x": [[0, 0], [0.2, 0.1], [3, 3], [3.1, 2.9], [0, 3], [0.1, 3.2], [0.1, 0.2],
               [2.9, 3.1], [-0.1, 2.8]],
         "y": [[0], [0], [1], [1], [2], [2], [0], [1], [2]]}


def train(client, run_queued, **body):
    r = client.post("/v1/jobs", json={"seed": 0, **body})
    assert r.status_code == 202, r.text
    assert run_queued() == ["succeeded"], client.get(f"/v1/jobs/{r.json()['id']}").json()
    job = client.get(f"/v1/jobs/{r.json()['id']}").json()
    return job, client.get(f"/v1/models/{job['model_id']}").json()


def test_binary_logistic_predicts_labels_and_probabilities(client, run_queued):
    job, model = train(client, run_queued, **BINARY, model="logistic", epochs=300, lr=0.5,
                       model_name="clf")
    assert job["hyperparameters"]["loss"] == "bce"  # chosen at submit, from the targets
    assert job["hyperparameters"]["model"]["classes"] == 2
    assert (model["task"], model["classes"], model["out_features"]) == ("classification", 2, 1)
    assert model["metrics"]["accuracy"] >= 0.8 and model["metrics"]["log_loss"] > 0
    assert model["metrics"]["r2"] is None
    for route, body in ((f"/v1/models/{model['id']}/predict", {"x": [[-3.0], [3.0]]}),
                        ("/predict", {"model": "clf", "x": [[-3.0], [3.0]]})):
        out = client.post(route, json=body).json()
        assert out["labels"] == [0, 1] and out["y"] == [[0.0], [1.0]]
        p = np.asarray(out["probabilities"])
        assert p.shape == (2, 2) and np.allclose(p.sum(1), 1, atol=1e-6)
        w, b = model["weight"][0][0], model["bias"][0]
        assert p[1, 1] == pytest.approx(1 / (1 + np.exp(-(3.0 * w + b))), rel=1e-5)


def test_multiclass_logistic_over_the_inference_protocol(client, run_queued):
    _, model = train(client, run_queued, **THREE, model="logistic", epochs=500, lr=0.5,
                     model_name="three")
    assert model["classes"] == 3 and model["hyperparameters"]["loss"] == "cross_entropy"
    meta = client.get("/v2/models/three").json()
    assert [o["name"] for o in meta["outputs"]] == ["y", "probabilities"]
    assert meta["platform"] == "pytorch_logistic"
    r = client.post("/v2/models/three/infer", json={"inputs": [
        {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[0, 0], [3, 3]]}]})
    assert r.status_code == 200, r.text
    outs = {o["name"]: o for o in r.json()["outputs"]}
    assert outs["y"]["datatype"] == "INT64" and outs["y"]["data"] == [0, 1]
    assert outs["probabilities"]["shape"] == [2, 3]
    only = client.post("/v2/models/three/infer", json={
        "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [0, 3]}],
        "outputs": [{"name": "probabilities"}]}).json()
    assert [o["name"] for o in only["outputs"]] == ["probabilities"]
    assert int(np.argmax(only["outputs"][0]["data"])) == 2


def test_polynomial_model_reports_its_terms_and_draws_a_curve(client, run_queued):
    xs = np.linspace(-1, 1, 21)
    ys = 1 + 2 * xs - 3 * xs**2
    _, model = train(client, run_queued, x=xs[:, None].tolist(), y=ys[:, None].tolist(),
                     model={"kind": "polynomial", "degree": 2}, epochs=20000, lr=0.3)
    assert model["terms"] == ["x0", "x0^2"]
    np.testing.assert_allclose(model["weight"][0], [2, -3], atol=1e-3)
    assert model["bias"][0] == pytest.approx(1, abs=1e-3)
    y = client.post(f"/v1/models/{model['id']}/predict", json={"x": [[0.5]]}).json()["y"]
    assert y[0][0] == pytest.approx(1 + 1 - 0.75, abs=1e-3)
    png = client.get(f"/v1/models/{model['id']}/plot.png")
    assert png.status_code == 200 and Image.open(io.BytesIO(png.content)).size == (640, 480)


def test_mlp_parameters_are_readable_by_name_and_the_checkpoint_loads_them(client, run_queued,
                                                                           monkeypatch):
    x = np.linspace(-3, 3, 40)[:, None]
    _, model = train(client, run_queued, x=x.tolist(), y=np.sin(x).tolist(),
                     model={"kind": "mlp", "hidden": [8, 4], "activation": "relu"},
                     optimizer={"name": "adam", "lr": 0.01}, epochs=200)
    assert model["weight"] is None and model["bias"] is None
    params = model["parameters"]
    assert list(params) == ["layers.0.weight", "layers.0.bias", "layers.2.weight",
                            "layers.2.bias", "layers.4.weight", "layers.4.bias"]
    assert np.asarray(params["layers.2.weight"]).shape == (4, 8)
    tensors = load(client.get(f"/v1/models/{model['id']}/checkpoint").content)
    for name, value in params.items():
        np.testing.assert_array_equal(tensors[name], np.asarray(value, np.float32))
    # predict is the module's forward: relu(relu(x W0^T + b0) W2^T + b2) W4^T + b4
    h = np.asarray([[1.0]])
    for i in (0, 2, 4):
        h = h @ np.asarray(params[f"layers.{i}.weight"]).T + np.asarray(params[f"layers.{i}.bias"])
        h = np.maximum(h, 0) if i < 4 else h
    y = client.post(f"/v1/models/{model['id']}/predict", json={"x": [[1.0]]}).json()["y"]
    assert y[0][0] == pytest.approx(h[0, 0], rel=1e-5)
    v2 = client.post(f"/v2/models/{model['id']}/infer", json={"inputs": [
        {"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]}).json()
    assert v2["outputs"][0]["data"][0] == pytest.approx(h[0, 0], rel=1e-5)
    assert client.get(f"/v2/models/{model['id']}").json()["platform"] == "pytorch_mlp"
    assert client.get("/v1/models").json()["data"][0]["parameters"] is None  # lists stay light
    light = client.get(f"/v1/models/{model['id']}", params={"parameters": False}).json()
    assert light["parameters"] is None and light["checkpoint_error"] is None
    monkeypatch.setattr("service.serving.predict.INLINE_PARAMETERS", 56)  # this one has 57
    assert client.get(f"/v1/models/{model['id']}").json()["parameters"] is None


def test_standardized_seed_model_shows_original_units_and_predicts_in_them(client, run_queued):
    _, model = train(client, run_queued, x=SEED["x"], y=SEED["y"], standardize=True)
    assert model["weight"][0][0] == pytest.approx(0.26, abs=5e-3)
    assert model["bias"][0] == pytest.approx(0.75, abs=5e-3)
    norm = model["normalization"]
    assert norm["x_mean"][0] == pytest.approx(float(np.mean(SEED["x"])), rel=1e-5)
    y = client.post(f"/v1/models/{model['id']}/predict", json={"x": [[5.0]]}).json()["y"]
    assert y[0][0] == pytest.approx(model["weight"][0][0] * 5 + model["bias"][0], rel=1e-5)
    # the checkpoint's layer is in standardized units; the statistics are its metadata
    assert model["parameters"]["linear.weight"][0][0] != pytest.approx(model["weight"][0][0])


def test_early_stopped_job_says_where_and_why(client, run_queued):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 3))
    y = x @ [[1.0], [0.5], [-0.3]] + rng.normal(size=(40, 1))
    job, model = train(client, run_queued, x=x.tolist(), y=y.tolist(), epochs=3000, lr=0.05,
                       validation_fraction=0.3, early_stopping={"patience": 25})
    stop = job["stopped_early"]
    assert stop["reason"] == "early_stopping" and stop["epoch"] < 3000
    # the best score came 25 epochs before the stop, on the weights entering that epoch
    assert stop["best_epoch"] == stop["epoch"] - 26 and "25 epochs" in stop["message"]
    assert job["progress"]["epoch"] == stop["epoch"]
    history = client.get(f"/v1/jobs/{job['id']}/history").json()
    assert history["epoch"][-1] == stop["epoch"]
    assert min(history["val_loss"]) == pytest.approx(stop["best_val_loss"], rel=1e-6)


def test_trace_of_the_seed_job(client, run_queued):
    job, _ = train(client, run_queued, x=SEED["x"], y=SEED["y"], trace_epochs=2, epochs=100)
    trace = client.get(f"/v1/jobs/{job['id']}/trace").json()
    assert trace["job_id"] == job["id"] and len(trace["epochs"]) == 2
    assert "MseLossBackward0 -> AddmmBackward0 -> AccumulateGrad" in trace["graph_text"]
    e = trace["epochs"][1]
    assert len(e["output"]) == 15 and set(e["parameters"]) == {"linear.weight", "linear.bias"}
    w = e["parameters"]["linear.weight"]
    assert w["after"][0][0] == pytest.approx(w["before"][0][0] - 0.01 * w["grad"][0][0],
                                             rel=1e-6)
    other, _ = train(client, run_queued, x=SEED["x"], y=SEED["y"], epochs=10)
    r = client.get(f"/v1/jobs/{other['id']}/trace")
    assert r.status_code == 404 and "without trace_epochs" in r.json()["error"]["message"]


def test_a_queued_traced_job_has_no_trace_yet(client):
    job = client.post("/v1/jobs", json={**BINARY, "trace_epochs": 1, "epochs": 5}).json()
    r = client.get(f"/v1/jobs/{job['id']}/trace")
    assert r.status_code == 409 and "queued" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field", "needle"),
    [
        ({"model": {"kind": "logistic"}, "loss": "mse"}, "loss", "does not fit a classification"),
        ({"model": {"kind": "mlp"}, "loss": "bce"}, "loss", "does not fit a regression"),
        ({"model": {"kind": "linear", "degree": 2}}, "model.degree", "unknown field"),
        ({"model": {"kind": "polynomial", "degree": 0}}, "model.degree", "greater than"),
        ({"model": {"kind": "polynomial", "degree": 11}}, "model.degree", "FITSERVE_MAX_DEGREE"),
        ({"model": {"kind": "mlp", "hidden": []}}, "model.hidden", "at least 1"),
        ({"model": {"kind": "mlp", "hidden": [2000]}}, "model.hidden",
         "FITSERVE_MAX_HIDDEN_UNITS"),
        ({"model": {"kind": "mlp", "hidden": [2] * 9}}, "model.hidden",
         "FITSERVE_MAX_HIDDEN_LAYERS"),
        ({"model": {"kind": "mlp", "activation": "gelu"}}, "model.activation", "'relu' or"),
        ({"early_stopping": {"patience": 5}}, "early_stopping", "validation_fraction"),
        ({"early_stopping": {"patience": 0}, "validation_fraction": 0.2},
         "early_stopping.patience", "greater than"),
        ({"scheduler": {"name": "step"}}, "scheduler.step_size", "required"),
        ({"scheduler": {"name": "exponential", "gamma": 1.5}}, "scheduler.gamma", "less than"),
        ({"scheduler": {"name": "warmup"}}, "scheduler.name", "does not match"),
        ({"scheduler": {"name": "reduce_on_plateau", "factor": 1}}, "scheduler.factor",
         "less than 1"),
        ({"grad_clip": 0}, "grad_clip", "greater than 0"),
        ({"trace_epochs": 101}, "trace_epochs", "less than or equal to 100"),
        ({"trace_epochs": 5, "batch_size": 2}, "trace_epochs", "full-batch"),
        ({"trace_epochs": 5, "model": {"kind": "mlp", "hidden": [200, 200]}}, "trace_epochs",
         "FITSERVE_MAX_TRACE_PARAMETERS"),
    ],
)
def test_bad_options_are_422_naming_the_field(client, body, field, needle):
    r = client.post("/v1/jobs", json={"x": [[1.0], [2.0], [3.0], [4.0]],
                                      "y": [[1.0], [2.0], [3.0], [4.0]], **body})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == field and needle in err["message"], err
    assert client.get("/v1/jobs").json()["count"] == 0  # nothing half-created


@pytest.mark.parametrize(
    ("y", "body", "field", "needle"),
    [
        ([[0.5], [1], [0], [1]], {}, "y", "row 0: target 0.5 is not a class index"),
        ([[0], [1], [-1], [1]], {}, "y", "row 2"),
        ([[0], [1], [2], [1]], {"loss": "bce"}, "loss", "two classes"),
        ([[0], [1], [5], [1]], {"model": {"kind": "logistic", "classes": 3}}, "y",
         "out of range for 3 classes"),
        ([[0], [1], [15000], [1]], {}, "y", "at most 10000"),
        ([[1, 0], [0, 1], [1, 1], [0, 1]], {}, "y", "row 2: a one-hot target row"),
    ],
)
def test_classifier_targets_are_checked_at_submit(client, y, body, field, needle):
    r = client.post("/v1/jobs", json={"model": "logistic", "x": [[1.0], [2.0], [3.0], [4.0]],
                                      "y": y, **body})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == field and needle in err["message"], err


def test_polynomial_terms_that_would_overflow_are_refused_or_standardized(client, run_queued):
    body = {"x": [[1e4], [2e4], [3e4]], "y": [[1.0], [2.0], [3.0]],
            "model": {"kind": "polynomial", "degree": 10}, "epochs": 50}
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 422 and r.json()["error"]["field"] == "model.degree", r.text
    assert "standardize" in r.json()["error"]["message"]
    ds = client.post("/v1/datasets", json={"x": body["x"], "y": body["y"]}).json()
    r = client.post("/v1/jobs", json={"dataset_id": ds["id"], "model": body["model"]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "model.degree", r.text
    job, model = train(client, run_queued, **body, standardize=True)
    assert job["status"] == "succeeded" and len(model["weight"][0]) == 10


def test_a_standardized_polynomial_reports_coefficients_that_predict_as_served(client,
                                                                               run_queued):
    rng = np.random.default_rng(0)
    x = rng.normal(5, 2, (60, 2))
    y = 1 + 0.5 * x[:, :1] - 0.2 * x[:, 1:] ** 2 + 0.1 * x[:, :1] * x[:, 1:]
    _, model = train(client, run_queued, x=x.tolist(), y=y.tolist(), standardize=True,
                     model={"kind": "polynomial", "degree": 2, "interactions": True},
                     epochs=2000, lr=0.05)
    assert model["terms"] == ["x0", "x0^2", "x1", "x1^2", "x0*x1"]
    a, b = x[:, 0], x[:, 1]
    terms = np.stack([a, a**2, b, b**2, a * b], axis=1)
    by_hand = terms @ np.asarray(model["weight"]).T + np.asarray(model["bias"])
    served = client.post(f"/v1/models/{model['id']}/predict", json={"x": x.tolist()}).json()
    np.testing.assert_allclose(by_hand, served["y"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(served["y"], y, atol=1e-2)  # and it learnt the surface


def test_standardize_without_bias_adds_no_intercept(client, run_queued):
    _, model = train(client, run_queued, x=[[1.0], [2.0], [3.0], [4.0]],
                     y=[[7.0], [9.0], [11.0], [13.0]], model={"kind": "linear", "bias": False},
                     standardize=True, epochs=2000)
    assert model["bias"] is None and model["normalization"]["x_mean"] == [0.0]
    assert model["metrics"]["train_loss"] >= model["metrics"]["lstsq_loss"] - 1e-6


def test_a_stored_dataset_is_checked_for_a_classifier_too(client):
    ds = client.post("/v1/datasets", json={"x": [[1.0], [2.0]], "y": [[0.25], [1.0]]}).json()
    r = client.post("/v1/jobs", json={"dataset_id": ds["id"], "model": "logistic"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "y", r.text
