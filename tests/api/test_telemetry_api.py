"""/metrics, the request id and the access log, through the ASGI app."""

from __future__ import annotations

import logging
import re
import time

import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.config import Settings
from service.logs import JsonFormatter, RequestIdFilter
from service.main import create_app
from tests.helpers import seed_example


def _samples(client) -> dict[tuple[str, frozenset], float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def _value(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_requests_are_counted_by_route_template_and_status(client, run_queued):
    d = seed_example()
    job = client.post("/v1/jobs", json={"x": d["x"], "y": d["y"], "epochs": 50}).json()
    for _ in range(3):
        client.get(f"/v1/jobs/{job['id']}")
    client.get("/v1/jobs/job_000000000000000000000000")
    client.get("/no/such/route/1")
    client.get("/no/such/route/2")
    s = _samples(client)
    route = "/v1/jobs/{job_id}"
    assert _value(s, "fitserve_http_requests_total", method="GET", route=route,
                  status="200") == 3
    assert _value(s, "fitserve_http_requests_total", method="GET", route=route,
                  status="404") == 1
    assert _value(s, "fitserve_http_requests_total", method="POST", route="/v1/jobs",
                  status="202") == 1
    # raw paths never become labels: one series for everything unrouted
    assert _value(s, "fitserve_http_requests_total", method="GET", route="unmatched",
                  status="404") == 2
    assert not any(job["id"] in str(labels) for _, labels in s)
    assert _value(s, "fitserve_http_request_duration_seconds_count", method="GET",
                  route=route) == 4
    assert _value(s, "fitserve_http_request_duration_seconds_bucket", method="GET",
                  route=route, le="+Inf") == 4


def test_jobs_queue_depth_and_epochs_come_from_the_store(client, run_queued):
    d = seed_example()
    for epochs in (30, 70):
        client.post("/v1/jobs", json={"x": d["x"], "y": d["y"], "epochs": epochs})
    s = _samples(client)
    assert _value(s, "fitserve_jobs", status="queued") == 2
    assert _value(s, "fitserve_queue_depth") == 2
    assert _value(s, "fitserve_epochs_total") == 0
    assert run_queued() == ["succeeded", "succeeded"]
    s = _samples(client)
    assert _value(s, "fitserve_jobs", status="succeeded") == 2
    assert _value(s, "fitserve_jobs", status="queued") == 0
    assert _value(s, "fitserve_queue_depth") == 0
    assert _value(s, "fitserve_epochs_total") == 100


def test_predict_rows_are_counted_on_every_predict_path(client, run_queued):
    d = seed_example()
    client.post("/v1/jobs", json={"x": d["x"], "y": d["y"], "epochs": 20, "model_name": "m"})
    run_queued()
    model_id = client.get("/v1/models").json()["data"][0]["id"]
    assert client.post("/predict", json={"x": [[1.0], [2.0]]}).status_code == 200
    assert client.post(f"/v1/models/{model_id}/predict", json={"x": [[1.0]] * 3}).status_code \
        == 200
    v2 = {"inputs": [{"name": "x", "shape": [4, 1], "datatype": "FP32", "data": [1] * 4}]}
    assert client.post("/v2/models/m/infer", content=orjson.dumps(v2)).status_code == 200
    client.post("/predict", json={"x": [[1.0, 2.0]]})  # a 422 predicts nothing
    assert _value(_samples(client), "fitserve_predict_rows_total") == 2 + 3 + 4


def test_each_app_has_its_own_registry(tmp_path):
    apps = [create_app(Settings(data_dir=tmp_path / name, workers=0), start_workers=False)
            for name in ("a", "b")]
    base = "http://127.0.0.1"
    with TestClient(apps[0], base_url=base) as a, TestClient(apps[1], base_url=base) as b:
        for _ in range(2):
            a.get("/healthz")
        b.get("/healthz")
        assert _value(_samples(a), "fitserve_http_requests_total", method="GET",
                      route="/healthz", status="200") == 2
        assert _value(_samples(b), "fitserve_http_requests_total", method="GET",
                      route="/healthz", status="200") == 1


def test_the_request_id_is_echoed_or_made(client):
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123.x:y_z"})
    assert r.headers["x-request-id"] == "abc-123.x:y_z"
    made = {client.get("/healthz").headers["x-request-id"] for _ in range(3)}
    assert len(made) == 3 and all(re.fullmatch(r"[0-9a-f]{16}", m) for m in made)
    # an id that could forge log lines or headers is replaced, not echoed
    for bad in ("has space", "x" * 129, "quote\"d"):
        rid = client.get("/healthz", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{16}", rid), bad
    # error answers carry it too, the predict fast lane's included
    r = client.post("/predict", json={"x": [[1.0]]}, headers={"X-Request-ID": "p-1"})
    assert r.status_code == 404 and r.headers["x-request-id"] == "p-1"


def test_each_request_logs_one_json_line_with_its_id(client, caplog):
    with caplog.at_level(logging.INFO, logger="service.access"):
        t0 = time.perf_counter()
        client.get("/v1/jobs?limit=5", headers={"X-Request-ID": "log-me"})
        outside_ms = (time.perf_counter() - t0) * 1000
    (record,) = [r for r in caplog.records if r.name == "service.access"]
    line = orjson.loads(JsonFormatter().format(record))
    assert line["request_id"] == "log-me" and line["method"] == "GET"
    assert line["path"] == "/v1/jobs" and line["status"] == 200
    assert line["level"] == "info"
    # the time inside the app, in ms: more than nothing, less than the client waited
    assert 0 < line["duration_ms"] <= outside_ms + 0.001


def test_the_access_log_can_be_turned_off(tmp_path, caplog):
    app = create_app(Settings(data_dir=tmp_path / "d", workers=0, access_log=False),
                     start_workers=False)
    log = caplog.at_level(logging.INFO, logger="service.access")
    with TestClient(app, base_url="http://127.0.0.1") as c, log:
        assert c.get("/healthz").headers["x-request-id"]
    assert not [r for r in caplog.records if r.name == "service.access"]


@pytest.mark.parametrize("rid", ["req-7", None])
def test_log_lines_inside_a_request_carry_its_id(rid):
    from service import logs

    record = logging.LogRecord("service.x", logging.INFO, __file__, 1, "hello", None, None)
    token = logs.request_id.set(rid)
    try:
        RequestIdFilter().filter(record)
    finally:
        logs.request_id.reset(token)
    line = orjson.loads(JsonFormatter().format(record))
    assert line.get("request_id") == rid
