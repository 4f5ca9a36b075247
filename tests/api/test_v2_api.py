"""The Open Inference Protocol (/v2) through the ASGI app (tritonclient itself: tests/e2e)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from tests.helpers import make_linear_data


@pytest.fixture
def versions(client, run_queued) -> list[dict]:
    """Two versions of "line" (different data), and one unnamed two-feature model."""
    for w, b in ((2.0, 1.0), (-1.0, 3.0)):
        x, y = make_linear_data(20, [[w]], [b], noise=0.0, seed=0)
        client.post("/v1/jobs", json={"x": x.tolist(), "y": y.tolist(), "epochs": 2000,
                                      "seed": 0, "model_name": "line"})
    x, y = make_linear_data(20, [[1.0, 2.0]], [0.5], noise=0.0, seed=0)
    client.post("/v1/jobs", json={"x": x.tolist(), "y": y.tolist(), "epochs": 50, "seed": 0})
    assert run_queued() == ["succeeded"] * 3
    return client.get("/v1/models").json()["data"][::-1]


def _expected(model: dict, x: np.ndarray) -> np.ndarray:
    return x @ np.array(model["weight"], np.float32).T + np.array(model["bias"], np.float32)


def _infer(client, path: str, body: dict):
    return client.post(path, content=orjson.dumps(body))


def test_server_metadata_and_health(client):
    assert client.get("/v2").json() == {"name": "fitserve", "version": client.get(
        "/openapi.json").json()["info"]["version"], "extensions": ["binary_tensor_data"]}
    assert client.get("/v2/health/live").json() == {"live": True}
    r = client.get("/v2/health/ready")
    assert r.status_code == 200 and r.json() == {"ready": True}


def test_model_metadata_lists_versions_and_tensors(client, versions):
    v1, v2, unnamed = versions
    meta = client.get("/v2/models/line").json()
    assert meta["name"] == "line" and meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}]
    assert meta["parameters"]["model_id"] == v2["id"]  # the latest by default
    assert client.get("/v2/models/line/versions/1").json()["parameters"]["model_id"] == v1["id"]
    by_id = client.get(f"/v2/models/{unnamed['id']}").json()
    assert by_id["versions"] == [] and by_id["inputs"][0]["shape"] == [-1, 2]
    assert client.get("/v2/models/line/ready").json() == {"name": "line", "ready": True}
    assert client.get("/v2/models/line/versions/2/ready").json()["ready"] is True


def test_infer_serves_the_latest_version_or_the_one_asked_for(client, versions):
    v1, v2, _ = versions
    x = np.array([[3.3], [4.4], [-1.0]], np.float32)
    body = {"id": "req-42", "inputs": [{"name": "x", "shape": [3, 1], "datatype": "FP32",
                                        "data": x.ravel().tolist()}]}
    r = _infer(client, "/v2/models/line/infer", body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "req-42" and out["model_name"] == "line" and out["model_version"] == "2"
    (tensor,) = out["outputs"]
    assert tensor["name"] == "y" and tensor["datatype"] == "FP32" and tensor["shape"] == [3, 1]
    np.testing.assert_allclose(tensor["data"], _expected(v2, x).ravel(), rtol=1e-6)

    r = _infer(client, "/v2/models/line/versions/1/infer", body)
    assert r.json()["model_version"] == "1"
    np.testing.assert_allclose(r.json()["outputs"][0]["data"], _expected(v1, x).ravel(),
                               rtol=1e-6)


def test_a_version_answers_the_same_whether_or_not_it_was_asked_for_before(client, versions):
    # "01" first: before the fix it was 404 until "1" had filled the version cache, then 200
    v1, _, _ = versions
    x = np.array([[3.3]], np.float32)
    body = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [3.3]}]}
    answers = [_infer(client, f"/v2/models/line/versions/{v}/infer", body)
               for v in ("01", "1", "01", "001")]
    for r in answers:
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == "1"
        np.testing.assert_allclose(r.json()["outputs"][0]["data"], _expected(v1, x).ravel(),
                                   rtol=1e-6)
    for bad in ("0", "00", "-1", "1.0", "\u0661"):  # the last: an Arabic-Indic one
        statuses = {_infer(client, f"/v2/models/line/versions/{bad}/infer", body).status_code
                    for _ in range(2)}
        assert statuses == {404}, bad


def test_infer_takes_nested_fp64_data_and_answers_fp64(client, versions):
    *_, unnamed = versions
    x = np.array([[1.0, 2.0], [0.5, -1.0]])
    body = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": x.tolist()}],
            "outputs": [{"name": "y"}]}
    out = _infer(client, f"/v2/models/{unnamed['id']}/infer", body).json()
    assert "id" not in out and "model_version" not in out
    assert out["outputs"][0]["datatype"] == "FP64" and out["outputs"][0]["shape"] == [2, 1]
    np.testing.assert_allclose(out["outputs"][0]["data"],
                               _expected(unnamed, x.astype(np.float32)).ravel(), rtol=1e-6)


def test_binary_tensor_extension_in_and_out(client, versions):
    _, v2, _ = versions
    x = np.array([[1.5], [2.5]], np.float32)
    head = orjson.dumps({"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "parameters": {"binary_data_output": True}})
    r = client.post("/v2/models/line/infer", content=head + x.tobytes(),
                    headers={"Inference-Header-Content-Length": str(len(head)),
                             "content-type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    meta = orjson.loads(r.content[:n])
    tensor = meta["outputs"][0]
    assert "data" not in tensor and tensor["parameters"]["binary_data_size"] == 8
    y = np.frombuffer(r.content[n:], "<f4").reshape(tensor["shape"])
    np.testing.assert_allclose(y, _expected(v2, x), rtol=1e-6)


def test_a_flat_batch_is_rows_of_one_feature(client, versions):
    _, v2, _ = versions
    body = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}
    out = _infer(client, "/v2/models/line/infer", body).json()
    assert out["outputs"][0]["shape"] == [2, 1]


def _input(**over) -> dict:
    return {"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP32", "data": [1.0, 2.0],
                        **over}]}


@pytest.mark.parametrize(("path", "body", "status", "needle"), [
    ("/v2/models/nobody/infer", _input(), 404, "nobody"),
    ("/v2/models/line/versions/9/infer", _input(), 404, "no version 9"),
    ("/v2/models/line/versions/one/infer", _input(), 404, "versions are numbers"),
    ("/v2/models/line/infer", {"inputs": []}, 400, "at least one input tensor"),
    ("/v2/models/line/infer", {"id": 7, **_input()}, 400, "id must be a string"),
    ("/v2/models/line/infer", _input(name="input0"), 400, "this model's input is 'x'"),
    ("/v2/models/line/infer", _input(datatype="BYTES"), 400, "send FP32 or FP64"),
    ("/v2/models/line/infer", _input(shape=[3, 1]), 400, "needs 3 values"),
    ("/v2/models/line/infer", _input(shape=[1, 2]), 400, "expects 1 feature"),
    ("/v2/models/line/infer", _input(shape=[2, 1, 1]), 400, "shape must be [N, 1]"),
    ("/v2/models/line/infer", _input(shape=[-2, 1]), 400, "non-negative integers"),
    ("/v2/models/line/infer", _input(data=["a", "b"]), 400, "must be numbers"),
    ("/v2/models/line/infer", _input(data=[[1.0], [2.0, 3.0]]), 400, "ragged"),
    ("/v2/models/line/infer", _input(data=[True, False]), 400, "must be numbers"),
    ("/v2/models/line/infer", {**_input(), "outputs": [{"name": "z"}]}, 400, "unknown output"),
    ("/v2/models/line/infer", [1, 2], 400, "JSON object"),
])
def test_bad_requests_answer_the_protocol_error(client, versions, path, body, status, needle):
    r = _infer(client, path, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert isinstance(error, str) and needle in error, error


def test_malformed_json_and_bad_binary_framing(client, versions):
    r = client.post("/v2/models/line/infer", content=b"{nope")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = client.post("/v2/models/line/infer", content=b"{}",
                    headers={"Inference-Header-Content-Length": "99"})
    assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"]
    head = orjson.dumps({"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 8}}]})
    r = client.post("/v2/models/line/infer", content=head + b"\0" * 4,
                    headers={"Inference-Header-Content-Length": str(len(head))})
    assert r.status_code == 400 and "binary_data_size" in r.json()["error"]


def test_unknown_model_metadata_is_404(client):
    r = client.get("/v2/models/nobody")
    assert r.status_code == 404 and "nobody" in r.json()["error"]
    assert client.get("/v2/models/nobody/ready").status_code == 404
