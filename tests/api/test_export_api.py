"""ONNX export (run in onnxruntime: predict's numbers within 1e-5) and checkpoint import
(a model moved to another fitserve; a bad file is a 4xx and nothing is stored)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import load, save

from service.config import Settings
from service.main import create_app
from service.store.tables import ModelRow

ort = pytest.importorskip("onnxruntime")

RNG = np.random.default_rng(0)
X = (RNG.normal(size=(30, 2)) * [1.0, 50.0] + [0.0, 100.0]).astype(np.float32)
Y = (X @ np.array([[0.7], [0.02]]) + np.sin(X[:, :1])).astype(np.float32)
LABELS = (X[:, 0] + (X[:, 1] - 100) / 50 > 0).astype(np.float32)[:, None]
THREE = np.digitize(X[:, 0], [-0.5, 0.5]).astype(np.float32)[:, None]

KINDS = {
    "linear, standardized": ({"standardize": True}, Y),
    "logistic, two classes": ({"model": "logistic", "standardize": True}, LABELS),
    "logistic, three": ({"model": "logistic", "optimizer": "adam", "lr": 0.1}, THREE),
    "polynomial": ({"model": {"kind": "polynomial", "degree": 3, "interactions": True},
                    "standardize": True}, Y),
    "mlp, tanh": ({"model": {"kind": "mlp", "hidden": [5, 3]}, "standardize": True,
                   "optimizer": "adam", "lr": 0.05}, Y),
    "mlp, relu, no bias": ({"model": {"kind": "mlp", "hidden": [4], "activation": "relu",
                                      "bias": False}, "optimizer": "adam"}, Y),
}


def _train(client, run_queued, y=Y, **body) -> dict:
    r = client.post("/v1/jobs", json={"x": X.tolist(), "y": y.tolist(), "epochs": 40,
                                      "seed": 0, **body})
    assert r.status_code == 202, r.text
    run_queued()
    job = client.get(f"/v1/jobs/{r.json()['id']}").json()
    assert job["status"] == "succeeded", job
    return client.get(f"/v1/models/{job['model_id']}").json()


@pytest.mark.parametrize("case", list(KINDS))
def test_the_onnx_graph_gives_predicts_numbers(client, run_queued, case):
    body, y = KINDS[case]
    model = _train(client, run_queued, y=y, **body)
    r = client.get(f"/v1/models/{model['id']}/export?format=onnx")
    assert r.status_code == 200, r.text
    assert f'filename="{model["id"]}.onnx"' in r.headers["content-disposition"]
    session = ort.InferenceSession(r.content, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"]
    rows = np.vstack([X, X[:5] * 1.5]).astype(np.float32)  # beyond the training rows too
    outputs = dict(zip([o.name for o in session.get_outputs()],
                       session.run(None, {"x": rows}), strict=True))
    served = client.post(f"/v1/models/{model['id']}/predict", json={"x": rows.tolist()}).json()
    want = np.asarray(served["y"], np.float32)
    scale = float(np.abs(want).max()) or 1.0
    np.testing.assert_allclose(outputs["y"], want, rtol=1e-5, atol=1e-5 * scale)
    if model["task"] == "classification":
        assert outputs["labels"].tolist() == served["labels"]
        np.testing.assert_allclose(outputs["probabilities"], served["probabilities"],
                                   atol=1e-5)
    else:
        assert set(outputs) == {"y"}


def test_what_onnx_cannot_express_is_a_422_naming_the_part(client, services, run_queued):
    model = _train(client, run_queued, model={"kind": "mlp", "hidden": [3]}, epochs=2)
    r = client.get(f"/v1/models/{model['id']}/export?format=pmml")
    assert r.status_code == 422 and r.json()["error"]["field"] == "format"
    with services.meta.session() as s:  # an activation this exporter has no operator for
        row = s.get(ModelRow, model["id"])
        row.config = {**row.config, "activation": "gelu"}
    r = client.get(f"/v1/models/{model['id']}/export?format=onnx")
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["type"] == "not_exportable" and "activation 'gelu'" in err["message"]
    r = client.get("/v1/models/mdl_000000000000000000000000/export")
    assert r.status_code == 404


@pytest.fixture
def other(tmp_path):
    """A second fitserve, with its own data directory: where a model moves to."""
    app = create_app(Settings(data_dir=tmp_path / "other", workers=0, device="cpu"),
                     start_workers=False)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def _upload(client, blob: bytes, sha: str | None = None, name: str = "moved",
            content_type: str = "application/octet-stream"):
    headers = {"content-type": content_type}
    if sha != "":
        headers["X-Checkpoint-SHA256"] = sha or hashlib.sha256(blob).hexdigest()
    return client.post(f"/v1/models?name={name}", content=blob, headers=headers)


def test_a_checkpoint_moves_to_another_fitserve(client, run_queued, other):
    model = _train(client, run_queued, model={"kind": "polynomial", "degree": 2},
                   standardize=True, model_name="poly")
    ck = client.get(f"/v1/models/{model['id']}/checkpoint")
    r = _upload(other, ck.content, ck.headers["x-checkpoint-sha256"], name="poly")
    assert r.status_code == 201, r.text
    moved = r.json()
    assert r.headers["location"] == f"/v1/models/{moved['id']}"
    assert (moved["name"], moved["version"], moved["kind"]) == ("poly", 1, "polynomial")
    assert moved["job_id"] is None and moved["dataset_id"] is None
    assert moved["hyperparameters"] is None and moved["metrics"]["train_loss"] is None
    assert moved["imported"] == {"sha256": ck.headers["x-checkpoint-sha256"],
                                 "source_job_id": model["job_id"],
                                 "source_dataset_sha256": moved["imported"][
                                     "source_dataset_sha256"]}
    for key in ("weight", "bias", "normalization", "feature_names", "terms"):
        assert moved[key] == model[key], key
    assert other.get(f"/v1/models/{moved['id']}").json()["parameters"] == model["parameters"]
    x = [[0.5, 120.0], [-1.0, 80.0]]
    want = client.post("/predict", json={"model": "poly", "x": x}).json()["y"]
    assert other.post("/predict", json={"model": "poly", "x": x}).json()["y"] == want
    # a second import of a name is its next version; it can be scored like any model
    assert _upload(other, ck.content, name="poly").json()["version"] == 2
    ds = other.post("/v1/datasets", json={"x": X.tolist(), "y": Y.tolist()}).json()["id"]
    r = other.post(f"/v1/models/{moved['id']}/evaluations", json={"dataset_id": ds})
    assert r.status_code == 201 and r.json()["rows_used"] == len(X)


def _checkpoint(tensors: dict, **metadata) -> bytes:
    meta = {"format": "fitserve/2", "kind": "linear",
            "config": json.dumps({"in_features": 2, "out_features": 1, "bias": True}),
            "feature_names": '["a", "b"]', "target_names": '["y"]', "normalization": "null",
            **metadata}
    return save(tensors, metadata=meta)


GOOD = {"linear.weight": np.ones((1, 2), np.float32), "linear.bias": np.zeros(1, np.float32)}


@pytest.mark.parametrize(
    ("blob", "sha", "field", "words"),
    [
        (_checkpoint(GOOD)[:-3], None, "checkpoint", "cut short"),
        (_checkpoint(GOOD), "0" * 64, "sha256", "changed or cut short"),
        (_checkpoint(GOOD), "", "sha256", "X-Checkpoint-SHA256"),
        (b"\x80\x04\x95" + b"\x00" * 40, None, "checkpoint", "not a safetensors file"),
        (_checkpoint({**GOOD, "linear.weight": np.ones((1, 3), np.float32)}), None,
         "checkpoint", "tensor 'linear.weight' is [1, 3]; its config needs [1, 2]"),
        (_checkpoint({"linear.weight": GOOD["linear.weight"]}), None, "checkpoint",
         "tensor 'linear.bias' is missing"),
        (_checkpoint({**GOOD, "linear.bias": np.array([np.nan], np.float32)}), None,
         "checkpoint", "not finite"),
        (_checkpoint({**GOOD, "linear.bias": np.zeros(1, np.float64)}), None, "checkpoint",
         "is not float32"),
        (_checkpoint(GOOD, format="fitserve/1"), None, "checkpoint", "'fitserve/1' is not"),
        (_checkpoint(GOOD, kind="forest"), None, "checkpoint", "kind 'forest'"),
        (_checkpoint(GOOD, config='{"in_features": 2, "out_features": 1, "depth": 3}'), None,
         "checkpoint", "config depth"),
        (_checkpoint(GOOD, feature_names='["a"]'), None, "checkpoint", "feature_names has 1"),
        (_checkpoint(GOOD, normalization='{"x_mean": [0, 0], "x_std": [1, 0]}'), None,
         "checkpoint", "x_std must be finite and positive"),
    ],
)
def test_a_bad_checkpoint_is_refused_and_nothing_is_stored(client, settings, blob, sha, field,
                                                           words):
    r = _upload(client, blob, sha)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == field and words in err["message"], err
    assert client.get("/v1/models").json()["count"] == 0
    assert list((settings.data_dir / "checkpoints").iterdir()) == []


def test_the_upload_itself_is_checked(client):
    blob = _checkpoint(GOOD)
    assert _upload(client, blob, content_type="application/json").status_code == 415
    r = _upload(client, blob, name="no spaces")
    assert r.status_code == 422 and r.json()["error"]["field"] == "name"
    r = _upload(client, blob, name="fine")
    assert r.status_code == 201, r.text
    assert load(client.get(f"/v1/models/{r.json()['id']}/checkpoint").content)[
        "linear.weight"].tolist() == [[1.0, 1.0]]
    assert client.post("/predict", json={"model": "fine", "x": [[2.0, 3.0]]}).json()["y"] == \
        [[5.0]]
