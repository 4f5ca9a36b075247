"""Keys, tenants, scopes, the Origin/Host guard, limits and Idempotency-Key."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app
from service.worker.runner import run_job

XY = {"x": [[1.0], [2.0], [3.0]], "y": [[2.0], [4.0], [6.0]]}


@pytest.fixture
def secured(tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "d", workers=0, auth=True),
                     start_workers=False)
    services = app.state.services
    keys = {}
    for tenant in ("acme", "umbrella"):
        for scope in ("predict", "train", "admin"):
            keys[tenant, scope] = services.auth.create(tenant, scope)[1]
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c, services, keys


def _h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _train(c, services, key, **extra):
    job = c.post("/v1/jobs", json={**XY, "epochs": 20, "seed": 0, **extra}, headers=_h(key))
    assert job.status_code == 202, job.text
    while (row := services.meta.claim_next("w")) is not None:
        run_job(row, "w", services.meta, services.artifacts, notify=services.on_event)
    return c.get(f"/v1/jobs/{job.json()['id']}", headers=_h(key)).json()


def test_no_or_bad_key_is_401_and_open_routes_stay_open(secured):
    c, _, _ = secured
    for r in (c.get("/v1/jobs"), c.post("/predict", json={"x": [[1.0]]}),
              c.get("/v1/jobs", headers=_h("fsk_wrong"))):
        assert r.status_code == 401 and r.json()["error"]["type"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
    assert c.get("/healthz").status_code == 200
    assert c.get("/readyz").status_code == 200
    assert c.get("/openapi.json").status_code == 200


def test_other_tenants_ids_answer_404_like_unknown_ones(secured):
    c, services, keys = secured
    job = _train(c, services, keys["acme", "train"])
    model_id, ds = job["model_id"], job["dataset_id"]
    other = _h(keys["umbrella", "admin"])
    for path in (f"/v1/jobs/{job['id']}", f"/v1/models/{model_id}", f"/v1/datasets/{ds}",
                 f"/v1/jobs/{job['id']}/history", f"/v1/models/{model_id}/checkpoint"):
        assert c.get(path, headers=other).status_code == 404, path
    r = c.post(f"/v1/models/{model_id}/predict", json={"x": [[1.0]]}, headers=other)
    assert r.status_code == 404
    assert c.post("/predict", json={"x": [[1.0]]}, headers=other).status_code == 404
    assert c.get("/v1/jobs", headers=other).json()["count"] == 0
    assert c.get("/v1/models", headers=_h(keys["acme", "predict"])).json()["count"] == 1


def test_a_predict_key_predicts_and_reads_models_only(secured):
    c, services, keys = secured
    model_id = _train(c, services, keys["acme", "train"])["model_id"]
    p = _h(keys["acme", "predict"])
    assert c.post("/predict", json={"x": [[1.0]]}, headers=p).status_code == 200
    assert c.post(f"/v1/models/{model_id}/predict", json={"x": [[1.0]]},
                  headers=p).status_code == 200
    assert c.get(f"/v1/models/{model_id}", headers=p).status_code == 200
    for r in (c.get("/v1/jobs", headers=p), c.post("/v1/jobs", json=XY, headers=p),
              c.get("/v1/datasets", headers=p), c.post("/v1/datasets", json=XY, headers=p)):
        assert r.status_code == 403 and r.json()["error"]["type"] == "forbidden"


def test_a_revoked_key_stops_working(secured, monkeypatch):
    c, services, _ = secured
    key_id, key = services.auth.create("acme", "train")
    assert c.get("/v1/jobs", headers=_h(key)).status_code == 200
    assert services.auth.keys.revoke(key_id)
    monkeypatch.setattr("service.auth.keys._CACHE_SECONDS", 0.0)
    services.auth._cache.clear()
    assert c.get("/v1/jobs", headers=_h(key)).status_code == 401


def test_keys_are_stored_only_as_hashes(secured):
    _, services, keys = secured
    stored = {row.key_sha256 for row in services.auth.keys.all()}
    assert not stored & set(keys.values())
    assert all(len(h) == 64 for h in stored)


def test_bind_refuses_a_public_address_without_auth():
    from service.auth.keys import check_bind

    assert check_bind(Settings(host="0.0.0.0", auth=False)) is not None
    assert "keys create" in check_bind(Settings(host="0.0.0.0", auth=False))
    assert check_bind(Settings(host="0.0.0.0", auth=False), insecure=True) is None
    assert check_bind(Settings(host="0.0.0.0", auth=True)) is None
    assert check_bind(Settings(host="127.0.0.1", auth=False)) is None


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_cross_origin_state_changes_are_refused(client, method):
    r = client.request(method.upper(), "/v1/datasets", json=XY,
                       headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-origin" in r.json()["error"]["message"]
    assert client.post("/v1/datasets", json=XY, headers={"Origin": "http://127.0.0.1"}
                       ).status_code == 201


def test_a_rebound_host_name_is_refused(client):
    r = client.get("/v1/jobs", headers={"Host": "attacker.example:8000"})
    assert r.status_code == 403 and "Host" in r.json()["error"]["message"]


def test_limits_answer_clearly(tmp_path):
    s = Settings(data_dir=tmp_path / "d", workers=0, max_rows=5, max_features=2,
                 max_epoch_rows=100, max_active_jobs=2, max_predict_rows=3,
                 max_body_bytes=4096)
    with TestClient(create_app(s, start_workers=False), base_url="http://127.0.0.1") as c:
        r = c.post("/v1/datasets", json={"x": [[1.0]] * 6, "y": [[1.0]] * 6})
        assert r.status_code == 422 and "FITSERVE_MAX_ROWS" in r.json()["error"]["message"]
        r = c.post("/v1/datasets", json={"x": [[1.0, 2.0, 3.0]], "y": [[1.0]]})
        assert r.status_code == 422 and "FITSERVE_MAX_FEATURES" in r.json()["error"]["message"]
        r = c.post("/v1/jobs", json={**XY, "epochs": 40})
        assert r.status_code == 422 and "FITSERVE_MAX_EPOCH_ROWS" in r.json()["error"]["message"]
        assert c.post("/v1/jobs", json={**XY, "epochs": 10}).status_code == 202
        assert c.post("/v1/jobs", json={**XY, "epochs": 10}).status_code == 202
        r = c.post("/v1/jobs", json={**XY, "epochs": 10})
        assert r.status_code == 429 and r.headers["retry-after"] == "5"
        r = c.post("/v1/datasets", content=b"x" * 5000, headers={"content-type": "text/csv"})
        assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"
        r = c.post("/predict", json={"x": [[1.0]] * 4})
        assert r.status_code == 422 and "FITSERVE_MAX_PREDICT_ROWS" in r.text


def test_idempotency_key_replays_and_conflicts(client):
    h = {"Idempotency-Key": "abc-1"}
    first = client.post("/v1/jobs", json={**XY, "epochs": 5}, headers=h)
    again = client.post("/v1/jobs", json={**XY, "epochs": 5}, headers=h)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert client.get("/v1/jobs").json()["count"] == 1
    other = client.post("/v1/jobs", json={**XY, "epochs": 6}, headers=h)
    assert other.status_code == 409 and other.json()["error"]["field"] == "Idempotency-Key"
    bad = client.post("/v1/jobs", json={**XY, "epochs": 0}, headers={"Idempotency-Key": "k2"})
    assert bad.status_code == 422
    fixed = client.post("/v1/jobs", json={**XY, "epochs": 7}, headers={"Idempotency-Key": "k2"})
    assert fixed.status_code == 202  # a failed request does not burn its key
    fresh = {"x": [[9.0], [8.0]], "y": [[1.0], [0.0]]}  # not stored by the jobs above
    d1 = client.post("/v1/datasets", json=fresh, headers={"Idempotency-Key": "d"})
    d2 = client.post("/v1/datasets", json=fresh, headers={"Idempotency-Key": "d"})
    assert d1.status_code == d2.status_code == 201 and d1.json()["id"] == d2.json()["id"]
    d3 = client.post("/v1/datasets", json={**fresh, "name": "n"},
                     headers={"Idempotency-Key": "d"})
    assert d3.status_code == 409


def test_v2_health_is_open_and_v2_models_and_job_plots_need_the_right_key(secured):
    c, services, keys = secured
    job = _train(c, services, keys["acme", "train"])
    assert c.get("/v2/health/live").status_code == 200
    assert c.get("/v2/health/ready").status_code == 200
    assert c.get("/v2/models/" + job["model_id"]).status_code == 401
    p = _h(keys["acme", "predict"])
    assert c.get("/v2/models/" + job["model_id"], headers=p).status_code == 200
    assert c.get(f"/v1/models/{job['model_id']}/plot.png", headers=p).status_code == 200
    assert c.get(f"/v1/jobs/{job['id']}/loss.png", headers=p).status_code == 403
    assert c.get(f"/v1/jobs/{job['id']}/loss.png",
                 headers=_h(keys["acme", "train"])).status_code == 200


@pytest.mark.parametrize("path", ["/predict", "/v1/jobs", "/v1/datasets"])
def test_a_chunked_body_past_the_limit_is_413_everywhere(tmp_path, path):
    s = Settings(data_dir=tmp_path / "d", workers=0, max_body_bytes=2048)

    def chunks():
        for _ in range(10):
            yield b" " * 512  # no Content-Length: sent chunked

    with TestClient(create_app(s, start_workers=False), base_url="http://127.0.0.1") as c:
        r = c.post(path, content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"
        small = c.post(path, content=iter([b'{"x": [[1.0]], "y": [[1.0]]}']),
                       headers={"content-type": "application/json"})
        assert small.status_code != 413


def test_concurrent_submits_cannot_pass_the_active_jobs_limit(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    s = Settings(data_dir=tmp_path / "d", workers=0, max_active_jobs=3)
    with TestClient(create_app(s, start_workers=False), base_url="http://127.0.0.1") as c:
        c.post("/v1/datasets", json=XY)  # stored once, so every submit only adds a job
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: c.post("/v1/jobs", json={**XY, "epochs": 5})
                                  .status_code, range(12)))
        assert codes.count(202) == 3 and codes.count(429) == 9
        assert c.get("/v1/jobs").json()["count"] == 3


def test_data_made_with_auth_off_belongs_to_tenant_default(tmp_path):
    """What the README says: turning keys on hides earlier data from every tenant but
    ``default``; a key of that tenant keeps working with it."""
    data = tmp_path / "d"
    with TestClient(create_app(Settings(data_dir=data, workers=0), start_workers=False),
                    base_url="http://127.0.0.1") as open_server:
        made = open_server.post("/v1/datasets", json=XY)
        assert made.status_code == 201, made.text
    app = create_app(Settings(data_dir=data, workers=0, auth=True), start_workers=False)
    services = app.state.services
    default_key = services.auth.create("default", "admin")[1]
    other_key = services.auth.create("acme", "admin")[1]
    with TestClient(app, base_url="http://127.0.0.1") as c:
        path = f"/v1/datasets/{made.json()['id']}"
        assert c.get(path, headers=_h(default_key)).status_code == 200
        assert c.get(path, headers=_h(other_key)).status_code == 404
