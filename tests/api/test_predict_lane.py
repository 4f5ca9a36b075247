"""The ASGI fast lane answers exactly as the FastAPI predict routes do: /predict,
/v1/models/{id}/predict and the Open Inference Protocol's infer (JSON and binary tensors),
errors included."""

import gc

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from service.api.middleware.predict_lane import PredictLane
from service.main import create_app


@pytest.fixture
def trained(client, run_queued):
    client.post("/v1/jobs", json={"x": [[1, 0], [0, 1], [1, 1]], "y": [[1], [2], [3]],
                                  "epochs": 100, "seed": 0, "model_name": "lane"})
    run_queued()
    return client.get("/v1/models").json()["data"][0]["id"]


def _without_lane(services):
    app = create_app(services=services)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not PredictLane]
    return app


REQUESTS = [
    ("/predict", {"x": [[1.0, 2.0], [3.0, 4.0]]}),
    ("/predict", {"model": "lane", "x": [[1.0, 2.0]]}),
    ("/predict", {"model": "nobody", "x": [[1.0, 2.0]]}),
    ("/predict", {"x": [[1.0]]}),
    ("/predict", {"x": [[1.0, 2.0], [1.0]]}),
    ("/predict", {"y": 1}),
    ("/predict", [1]),
    ("MODEL", {"x": [[0.5, 0.25]]}),
    ("MODEL", {"x": [[0.5, 0.25]], "model": "x"}),
    ("/v1/models/mdl_000000000000000000000000/predict", {"x": [[1.0, 2.0]]}),
    # named fields (issue 12): a matrix model's feature names are x0, x1
    ("/predict", {"rows": [{"x0": 1.0, "x1": 2.0}, {"x1": 4, "x0": 3}]}),
    ("MODEL", {"columns": {"x0": [1.0, 3.0], "x1": [2.0, 4.0]}}),
    ("/predict", {"rows": [{"x0": 1.0}]}),  # x1 was never imputed: 422 naming it
    ("/predict", {"rows": [{"x0": 1.0, "x1": 2.0, "zip": 3}]}),  # unknown field
    ("/predict", {"rows": [{"x0": "a", "x1": 2.0}]}),
    ("/predict", {"columns": {"x0": [1.0], "x1": [2.0, 3.0]}}),
    ("/predict", {"x": [[1.0, 2.0]], "rows": [{"x0": 1}]}),
    ("/predict", {"rows": []}),
    ("/predict", {"rows": [1]}),
    # aliases and versions by name (issue 15)
    ("/predict", {"model": "lane@1", "x": [[1.0, 2.0]]}),
    ("/predict", {"model": "lane@latest", "x": [[1.0, 2.0]]}),
    ("/predict", {"model": "lane@nope", "x": [[1.0, 2.0]]}),
    ("/predict", {"model": "lane@7", "x": [[1.0, 2.0]]}),
    ("/predict", {"model": "lane@", "x": [[1.0, 2.0]]}),
    ("/v1/models/lane@1/predict", {"x": [[1.0, 2.0]]}),
]


@pytest.mark.parametrize(("path", "body"), REQUESTS)
def test_lane_and_fastapi_routes_agree(client, services, trained, path, body):
    path = f"/v1/models/{trained}/predict" if path == "MODEL" else path
    with TestClient(_without_lane(services), base_url="http://127.0.0.1") as plain:
        a = client.post(path, json=body)
        b = plain.post(path, json=body)
    assert (a.status_code, a.json()) == (b.status_code, b.json())
    version = a.headers.get("x-fitserve-model-version")
    assert version == b.headers.get("x-fitserve-model-version")
    if a.status_code == 200:
        assert version == (None if a.json()["version"] is None else str(a.json()["version"]))


_ROWS = [[float(i % 11) / 4, -1.5 * i] for i in range(1000)]  # a body past MIN_BYTES
LARGE = [
    ("/predict", {"x": _ROWS}),
    ("/predict", {"model": "lane", "x": _ROWS}),
    ("MODEL", {"x": _ROWS}),
    ("/predict", {"x": [*_ROWS[:700], [1.0], *_ROWS[701:]]}),  # ragged at row 700
    ("/predict", {"x": [*_ROWS[:900], [1.0, True], *_ROWS[901:]]}),
    ("/predict", {"x": [*_ROWS[:5], [1.0, 1e39], *_ROWS[6:]]}),  # past float32
    ("/predict", {"x": [*_ROWS[:5], [1.0, 2**63], *_ROWS[6:]]}),
    ("/predict", {"x": [[r[0]] for r in _ROWS]}),  # one feature: the model needs two
    ("/predict", {"x": _ROWS, "rows": []}),
    ("/predict", {"x": _ROWS, "model": 5}),
]


@pytest.mark.parametrize(("path", "body"), LARGE, ids=range(len(LARGE)))
def test_lane_and_fastapi_agree_on_large_bodies_byte_for_byte(client, services, trained, path,
                                                              body):
    """Bodies read from their bytes (service/serving/matrix_bytes.py), answered with y
    written flat (encode_result): the same bytes as the FastAPI route's orjson.dumps."""
    path = f"/v1/models/{trained}/predict" if path == "MODEL" else path
    raw = orjson.dumps(body)
    with TestClient(_without_lane(services), base_url="http://127.0.0.1") as plain:
        a = client.post(path, content=raw, headers={"content-type": "application/json"})
        b = plain.post(path, content=raw, headers={"content-type": "application/json"})
    assert (a.status_code, a.content) == (b.status_code, b.content)


def test_one_column_answers_are_written_as_orjson_writes_them():
    from service.serving.predict import encode_result

    rng = np.random.default_rng(0)
    for y in (rng.standard_normal((1000, 1)).astype(np.float32) * 1e30,
              np.array([[0.0], [-0.0], [1e-45], [3.4028235e38]], np.float32),
              rng.standard_normal((3, 2)).astype(np.float32), np.ones((1, 1), np.float32)):
        result = {"model_id": "mdl_x", "model_name": None, "version": None, "y": y}
        assert encode_result(result) == orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY)
        labelled = {**result, "labels": [1] * len(y), "probabilities": y}
        assert encode_result(labelled) == orjson.dumps(labelled,
                                                       option=orjson.OPT_SERIALIZE_NUMPY)


def test_lane_and_fastapi_draw_a_traffic_split_alike(client, services, run_queued, trained):
    client.post("/v1/jobs", json={"x": [[1, 0], [0, 1], [1, 1]], "y": [[1], [2], [4]],
                                  "epochs": 100, "seed": 1, "model_name": "lane"})
    run_queued()
    client.put("/v1/model-names/lane/aliases/stable", json={"version": 1})
    assert client.put("/v1/model-names/lane/traffic",
                      json={"stable": 50, "2": 50}).status_code == 200
    infer = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
    with TestClient(_without_lane(services), base_url="http://127.0.0.1") as plain:
        for key in ("u1", "u2", "u3", "u4", "u5", "u6"):
            headers = {"X-Fitserve-Route-Key": key}
            answers = [(r.status_code, r.headers["x-fitserve-model-version"], r.json())
                       for c in (client, plain)
                       for r in (c.post("/predict", json={"model": "lane", "x": [[1, 2]]},
                                        headers=headers),)]
            assert answers[0] == answers[1], key
            assert answers[0][1] == str(answers[0][2]["version"])
            v2 = [c.post("/v2/models/lane/infer", json=infer, headers=headers)
                  for c in (client, plain)]
            assert v2[0].json() == v2[1].json()
            assert v2[0].headers["x-fitserve-model-version"] == answers[0][1] == \
                v2[1].headers["x-fitserve-model-version"]


def test_lane_and_fastapi_agree_on_a_tabular_model(client, services, run_queued):
    # typed columns, blanks and text labels: the labelled answer, imputation, "other"
    from service.data.table import Table
    from tests.tables import categorical, numeric, store_table

    table = Table([numeric("sqft", [50.0, None, 80.0, 120.0, 60.0, 90.0]),
                   categorical("city", ["a", "b", "a", "b", "c", None])],
                  [categorical("band", ["lo", "lo", "hi", "hi", "lo", "hi"])])
    dataset = store_table(services, table)
    client.post("/v1/jobs", json={"dataset_id": dataset, "model": "logistic", "epochs": 50,
                                  "seed": 0, "model_name": "tab",
                                  "categorical": {"min_frequency": 2}})
    assert run_queued() == ["succeeded"]
    bodies = [{"model": "tab", "rows": [{"sqft": 70, "city": "zzz"}, {"city": "a"}]},
              {"model": "tab", "columns": {"sqft": [70.0, None], "city": [None, "c"]}},
              {"model": "tab", "x": [[0.1, 0.0, 1.0, 0.0, 0.0, 0.0]]},
              {"model": "tab", "rows": [{"sqft": 70, "town": "a"}]},
              {"model": "tab", "rows": [{"sqft": True}]}]
    with TestClient(_without_lane(services), base_url="http://127.0.0.1") as plain:
        for body in bodies:
            a, b = client.post("/predict", json=body), plain.post("/predict", json=body)
            assert (a.status_code, a.json()) == (b.status_code, b.json()), body
    out = client.post("/predict", json=bodies[0]).json()
    assert set(out["labels"]) <= {"hi", "lo"} and set(out["probabilities"][0]) == {"hi", "lo"}


def test_lane_rejects_other_media_and_malformed_json_like_the_routes(client, services, trained):
    with TestClient(_without_lane(services), base_url="http://127.0.0.1") as plain:
        for headers, content in (({"content-type": "text/plain"}, b"x"),
                                 ({"content-type": "application/json"}, b'{"x": [[1,')):
            a = client.post("/predict", content=content, headers=headers)
            b = plain.post("/predict", content=content, headers=headers)
            assert a.status_code == b.status_code and a.json()["error"]["type"] == \
                b.json()["error"]["type"]


# ---------------------------------------------------------------- /v2 infer

@pytest.fixture
def protocol_models(client, run_queued):
    """"line" in two versions (one feature), a binary classifier "clf", an unnamed model."""
    for w, b in ((2.0, 1.0), (-1.0, 3.0)):
        client.post("/v1/jobs", json={"x": [[0.0], [1.0], [2.0]], "y": [[b], [w + b], [2 * w + b]],
                                      "epochs": 50, "seed": 0, "model_name": "line"})
    client.post("/v1/jobs", json={"model": "logistic", "x": [[-2.0], [-1.0], [1.0], [2.0]],
                                  "y": [[0], [0], [1], [1]], "epochs": 50, "lr": 0.5, "seed": 0,
                                  "model_name": "clf"})
    client.post("/v1/jobs", json={"x": [[1, 0], [0, 1], [1, 1]], "y": [[1], [2], [3]],
                                  "epochs": 20, "seed": 0})
    assert run_queued() == ["succeeded"] * 4
    return client.get("/v1/models").json()["data"][0]["id"]  # the unnamed one, latest


def _tensor(shape, data=None, datatype="FP32", **extra):
    t = {"name": "x", "shape": shape, "datatype": datatype, **extra}
    if data is not None:
        t["data"] = data
    return t


def _json(body, headers=None):
    return orjson.dumps(body), {"content-type": "application/json", **(headers or {})}


def _binary(head, x, *, header_length=None, dtype="<f4"):
    """The binary tensor extension: the JSON head, then the tensor's raw bytes."""
    tail = np.asarray(x, dtype).tobytes()
    head = orjson.dumps(head)
    length = str(len(head)) if header_length is None else header_length
    return head + tail, {"inference-header-content-length": length,
                         "content-type": "application/octet-stream"}


_X = [[1.5], [2.5], [-1.0]]
_BIN = {"binary_data_size": 12}
INFER = [
    ("/v2/models/line/infer", _json({"id": "r1", "inputs": [_tensor([3, 1], [1.5, 2.5, -1.0])]})),
    ("/v2/models/line/infer", _json({"inputs": [_tensor([3, 1], _X, "FP64")],
                                     "outputs": [{"name": "y"}]})),
    ("/v2/models/line/infer", _json({"inputs": [_tensor([2], [1.0, 2.0])]})),
    ("/v2/models/line/infer", _json({"inputs": [_tensor([3, 1], [1, 2, 3])],
                                     "parameters": {"binary_data_output": True}})),
    ("/v2/models/line/versions/1/infer", _json({"inputs": [_tensor([1, 1], [3.3])]})),
    ("/v2/models/line/versions/01/infer", _json({"inputs": [_tensor([1, 1], [3.3])]})),
    ("/v2/models/clf/infer", _json({"inputs": [_tensor([2, 1], [-3.0, 3.0])]})),
    ("/v2/models/clf/infer", _json({"inputs": [_tensor([2, 1], [-3.0, 3.0])],
                                    "outputs": [{"name": "probabilities",
                                                 "parameters": {"binary_data": True}}]})),
    ("UNNAMED", _json({"inputs": [_tensor([1, 2], [[0.5, 0.25]])]})),
    # the binary tensor extension, in and out
    ("/v2/models/line/infer", _binary({"inputs": [_tensor([3, 1], parameters=_BIN)]}, _X)),
    ("/v2/models/line/infer", _binary({"inputs": [_tensor([3, 1], parameters=_BIN)],
                                       "parameters": {"binary_data_output": True}}, _X)),
    ("/v2/models/line/infer", _binary({"inputs": [_tensor([3, 1], datatype="FP64",
                                                          parameters={"binary_data_size": 24})],
                                       "parameters": {"binary_data_output": True}}, _X,
                                      dtype="<f8")),
    # errors: unknown models and versions, the protocol's 400s, framing
    ("/v2/models/nobody/infer", _json({"inputs": [_tensor([1, 1], [1.0])]})),
    ("/v2/models/line/versions/9/infer", _json({"inputs": [_tensor([1, 1], [1.0])]})),
    ("/v2/models/line/versions/one/infer", _json({"inputs": [_tensor([1, 1], [1.0])]})),
    ("/v2/models/line/versions/0/infer", _json({"inputs": [_tensor([1, 1], [1.0])]})),
    ("/v2/models/line/infer", _json({"inputs": []})),
    ("/v2/models/line/infer", _json({"id": 7, "inputs": [_tensor([1, 1], [1.0])]})),
    ("/v2/models/line/infer", _json({"inputs": [_tensor([1, 1], [1.0], "BYTES")]})),
    ("/v2/models/line/infer", _json({"inputs": [_tensor([1, 2], [1.0, 2.0])]})),
    ("/v2/models/line/infer", _json({"inputs": [_tensor([3, 1], [1.0])]})),
    ("/v2/models/line/infer", _json({"inputs": [_tensor([1, 1], ["a"])]})),
    ("/v2/models/line/infer", _json({"inputs": [_tensor([2, 1], [[1.0], [2.0, 3.0]])]})),
    ("/v2/models/line/infer", _json({"inputs": [_tensor([1, 1], [1e39])]})),
    ("/v2/models/line/infer", _json({"inputs": [_tensor([1, 1], [1.0])],
                                     "outputs": [{"name": "z"}]})),
    ("/v2/models/line/infer", _json({"inputs": [_tensor([1, 1], [1.0])],
                                     "outputs": [{"name": "probabilities"}]})),
    ("/v2/models/line/infer", _json([1, 2])),
    ("/v2/models/line/infer", (b"{nope", {})),
    ("/v2/models/line/infer", (b"{}", {"inference-header-content-length": "99"})),
    ("/v2/models/line/infer", (b"{}", {"inference-header-content-length": "x"})),
    ("/v2/models/line/infer", _binary({"inputs": [_tensor([3, 1], parameters={
        "binary_data_size": 8})]}, _X)),
    ("/v2/models/line/infer", _binary({"inputs": [_tensor([4, 1], parameters={
        "binary_data_size": 12})]}, _X)),
    ("/v2/models/line/infer", _binary({"inputs": [_tensor([3, 1], parameters=_BIN)]},
                                      [[1.0], [np.nan], [2.0]])),
    # not infer routes: both pass them to FastAPI's 404 / 405
    ("/v2/models/line/versions/infer", _json({"inputs": [_tensor([1, 1], [1.0])]})),
    ("/v2/models//infer", _json({"inputs": [_tensor([1, 1], [1.0])]})),
]
_HEADERS = ("content-type", "content-length", "inference-header-content-length",
            "www-authenticate", "allow")


def _answer(r):
    return r.status_code, {h: r.headers.get(h) for h in _HEADERS}, r.content


def test_lane_and_fastapi_agree_on_v2_infer(client, services, protocol_models):
    # one test over every case: the four models train once
    with TestClient(_without_lane(services), base_url="http://127.0.0.1") as plain:
        for i, (path, (content, headers)) in enumerate(INFER):
            path = f"/v2/models/{protocol_models}/infer" if path == "UNNAMED" else path
            a = client.post(path, content=content, headers=headers)
            b = plain.post(path, content=content, headers=headers)
            assert _answer(a) == _answer(b), (i, path, content[:200])


def test_the_lane_itself_answers_v2_infer(services, protocol_models):
    # without FastAPI's infer routes, only the lane can answer these
    app = create_app(services=services)
    app.router.routes = [r for r in app.router.routes
                         if not getattr(r, "path", "").endswith("/infer")]
    body = orjson.dumps({"inputs": [_tensor([1, 1], [3.3])]})
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert c.post("/v2/models/line/infer", content=body).status_code == 200
        assert c.post("/v2/models/line/versions/1/infer", content=body).status_code == 200
        assert c.post("/v2/models/nobody/infer", content=body).status_code == 404
        metrics = c.get("/metrics").text
    assert 'route="/v2/models/{name}/infer"' in metrics
    assert 'route="/v2/models/{name}/versions/{version}/infer"' in metrics


def test_lane_and_fastapi_agree_on_keys(tmp_path, run_queued, services, protocol_models):
    from service.config import Settings

    keyed = create_app(Settings(data_dir=tmp_path / "keyed", workers=0, auth=True),
                       start_workers=False)
    plain_app = _without_lane(keyed.state.services)
    key_services = keyed.state.services
    _, train_key = key_services.auth.create("default", "train")
    body = orjson.dumps({"inputs": [_tensor([1, 1], [3.3])]})
    cases = [({}, "/v2/models/line/infer"), ({"authorization": "Bearer fsk_nope"},
                                             "/v2/models/line/infer"),
             ({"authorization": f"Bearer {train_key}"}, "/v2/models/none/infer"),
             ({}, "/predict"), ({"authorization": "Basic abc"}, "/predict")]
    with TestClient(keyed, base_url="http://127.0.0.1") as a, \
            TestClient(plain_app, base_url="http://127.0.0.1") as b:
        for headers, path in cases:
            ra, rb = a.post(path, content=body, headers=headers), b.post(path, content=body,
                                                                         headers=headers)
            assert _answer(ra) == _answer(rb), (headers, path)
            assert ra.status_code in (401, 404), ra.text


def test_the_heap_is_frozen_while_the_app_runs(app):
    gc.unfreeze()
    with TestClient(app, base_url="http://127.0.0.1"):
        assert gc.get_freeze_count() > 0  # the startup's objects are out of the collector's way
    assert gc.get_freeze_count() == 0  # and back in it once the app stopped


def test_lane_passes_other_routes_through(client, trained):
    assert client.get(f"/v1/models/{trained}").status_code == 200
    r = client.get("/predict")
    assert r.status_code == 405 and r.json()["error"]["type"] == "method_not_allowed"


def test_lane_bounds_the_body(tmp_path):
    from service.config import Settings

    app = create_app(Settings(data_dir=tmp_path, workers=0, max_body_bytes=1024),
                     start_workers=False)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        r = c.post("/predict", json={"x": [[1.0]] * 1000})
    assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"


def test_get_job_wait_returns_at_the_deadline_for_a_job_nobody_runs(client):
    job = client.post("/v1/jobs", json={"x": [[1], [2]], "y": [[1], [2]]}).json()
    r = client.get(f"/v1/jobs/{job['id']}?wait=0.2")
    assert r.status_code == 200 and r.json()["status"] == "queued"
    assert client.get(f"/v1/jobs/{job['id']}?wait=61").status_code == 422
