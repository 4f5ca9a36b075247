"""The ASGI fast lane answers exactly as the FastAPI predict routes do."""

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
]


@pytest.mark.parametrize(("path", "body"), REQUESTS)
def test_lane_and_fastapi_routes_agree(client, services, trained, path, body):
    path = f"/v1/models/{trained}/predict" if path == "MODEL" else path
    with TestClient(_without_lane(services), base_url="http://127.0.0.1") as plain:
        a = client.post(path, json=body)
        b = plain.post(path, json=body)
    assert (a.status_code, a.json()) == (b.status_code, b.json())


def test_lane_rejects_other_media_and_malformed_json_like_the_routes(client, services, trained):
    with TestClient(_without_lane(services), base_url="http://127.0.0.1") as plain:
        for headers, content in (({"content-type": "text/plain"}, b"x"),
                                 ({"content-type": "application/json"}, b'{"x": [[1,')):
            a = client.post("/predict", content=content, headers=headers)
            b = plain.post("/predict", content=content, headers=headers)
            assert a.status_code == b.status_code and a.json()["error"]["type"] == \
                b.json()["error"]["type"]


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
