import pytest
from safetensors import safe_open
from safetensors.numpy import load


@pytest.fixture
def model_id(client, run_queued):
    client.post("/v1/jobs", json={"x": [[1, 0], [0, 1], [1, 1], [2, 1]],
                                  "y": [[1], [2], [3], [4]], "epochs": 200, "seed": 0})
    run_queued()
    return client.get("/v1/models").json()["data"][0]["id"]


def test_checkpoint_is_safetensors_with_config(client, model_id, tmp_path):
    r = client.get(f"/v1/models/{model_id}/checkpoint")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    tensors = load(r.content)
    model = client.get(f"/v1/models/{model_id}").json()
    assert tensors["linear.weight"].tolist() == model["weight"]
    assert tensors["linear.bias"].tolist() == model["bias"]
    path = tmp_path / "ck.safetensors"
    path.write_bytes(r.content)
    with safe_open(str(path), "np") as f:
        meta = f.metadata()
    assert meta["kind"] == "linear" and '"in_features": 2' in meta["config"]
    assert r.headers["x-checkpoint-sha256"] == model["checkpoint_sha256"]


def test_predict_shape_mismatch_never_leaks_torch(client, model_id):
    r = client.post(f"/v1/models/{model_id}/predict", json={"x": [[1.0]]})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["type"] == "shape_mismatch"
    assert err["message"] == ("model expects 2 features per row (x0, x1), got 1 in row 0: x is "
                              "a list of rows, each a list of 2 numbers: [[1.0, 2.0]]")
    assert "mat1" not in r.text


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"x": [[1, 2], [3]]}, 422, "ragged"),
        ({"x": []}, 422, "empty"),
        ({"x": [[1, "a"]]}, 422, "not a number"),
        ({}, 422, "x is required"),
        ({"x": [[1, 2]], "extra": 1}, 422, "unknown field"),
        ([[1, 2]], 422, "JSON object"),
    ],
)
def test_predict_bad_input(client, model_id, body, status, needle):
    r = client.post(f"/v1/models/{model_id}/predict", json=body)
    assert r.status_code == status and needle in r.json()["error"]["message"], r.text


def test_predict_unknown_model_and_bad_model_ref(client, model_id):
    r = client.post("/v1/models/mdl_000000000000000000000000/predict", json={"x": [[1, 2]]})
    assert r.status_code == 404
    r = client.post("/predict", json={"model": "nobody", "x": [[1, 2]]})
    assert r.status_code == 404 and "nobody" in r.json()["error"]["message"]
    r = client.post("/predict", json={"model": 3, "x": [[1, 2]]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "model"
    r = client.post("/predict", content=b"x", headers={"content-type": "text/csv"})
    assert r.status_code == 415


def test_predict_without_any_model_is_404(client):
    r = client.post("/predict", json={"x": [[1]]})
    assert r.status_code == 404 and "no model" in r.json()["error"]["message"]


def test_tampered_checkpoint_is_refused(client, model_id, settings):
    path = settings.data_dir / "checkpoints" / f"{model_id}.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    r = client.post(f"/v1/models/{model_id}/predict", json={"x": [[1, 2]]})
    assert r.status_code == 503 and "checksum" in r.json()["error"]["message"]


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"]["database"] == "ok"


def test_openapi_documents_bodies_and_errors(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/v1/datasets", "/v1/jobs", "/v1/models/{model_id}/predict", "/predict"):
        assert "requestBody" in paths[path]["post"], path
        assert "422" in paths[path]["post"]["responses"], path
    assert "ErrorResponse" in spec["components"]["schemas"]
    assert "text/csv" in paths["/v1/datasets"]["post"]["requestBody"]["content"]
    for page in ("/docs", "/redoc"):
        assert client.get(page).status_code == 200
