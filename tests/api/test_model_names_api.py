"""Model names (issue 15): aliases and the history of their moves, ``name@alias`` and
``name@3`` on every predict path, traffic splits (drawn by weight, sticky per route key),
and what is refused: 4xx naming the field, nothing half-stored."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from service.serving.traffic import TrafficSplit, route_bucket

NAMES = "/v1/model-names/seed"
X = {"x": [[1.0]]}


@pytest.fixture
def versions(client, run_queued) -> dict[int, str]:
    """Three versions of "seed" (a line fitted to slightly different points each): their
    model ids by version."""
    for i in range(3):
        r = client.post("/v1/jobs", json={"x": [[1.0], [2.0], [3.0]],
                                          "y": [[2.0], [4.0], [6.0 + i]], "epochs": 10,
                                          "seed": i, "model_name": "seed"})
        assert r.status_code == 202, r.text
    assert run_queued() == ["succeeded"] * 3
    return {m["version"]: m["id"] for m in client.get("/v1/models?name=seed").json()["data"]}


def _version(r) -> int:
    assert r.status_code == 200, r.text
    assert r.headers["x-fitserve-model-version"] == str(r.json()["version"])
    return r.json()["version"]


def _v2_version(r) -> int:
    assert r.status_code == 200, r.text
    assert r.headers["x-fitserve-model-version"] == r.json()["model_version"]
    return int(r.json()["model_version"])


def _infer(client, name: str):
    return client.post(f"/v2/models/{name}/infer", json={"inputs": [
        {"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]})


def test_an_alias_moves_at_once_on_every_predict_path_and_each_move_is_recorded(
        client, versions):
    r = client.put(f"{NAMES}/aliases/champion", json={"version": 1})
    assert r.status_code == 200 and r.json()["model_id"] == versions[1]
    assert r.json()["previous_version"] is None
    predict = {"model": "seed@champion", **X}
    assert _version(client.post("/predict", json=predict)) == 1  # cached from here on
    assert _v2_version(_infer(client, "seed@champion")) == 1

    r = client.put(f"{NAMES}/aliases/champion", json={"version": 2})  # promote
    assert r.json()["previous_version"] == 1
    assert _version(client.post("/predict", json=predict)) == 2
    assert _version(client.post("/v1/models/seed@champion/predict", json=X)) == 2
    assert _v2_version(_infer(client, "seed@champion")) == 2
    client.put(f"{NAMES}/aliases/champion", json={"version": 2})  # no move: not recorded
    client.put(f"{NAMES}/aliases/champion", json={"version": 1})  # roll back
    assert _version(client.post("/predict", json=predict)) == 1
    # a version by number and the built-in latest
    assert _version(client.post("/predict", json={"model": "seed@3", **X})) == 3
    assert _version(client.post("/predict", json={"model": "seed@latest", **X})) == 3
    assert _v2_version(_infer(client, "seed@2")) == 2

    name = client.get(NAMES).json()
    assert [v["model_id"] for v in name["versions"]] == [versions[v] for v in (1, 2, 3)]
    assert name["aliases"] == {"latest": 3, "champion": 1} and name["traffic"] is None

    assert client.delete(f"{NAMES}/aliases/champion").status_code == 204
    r = client.post("/predict", json=predict)
    assert r.status_code == 404 and r.json()["error"]["field"] == "model"
    history = client.get(f"{NAMES}/history").json()
    assert history["count"] == 4
    assert [(m["from_version"], m["to_version"]) for m in history["data"]] == \
        [(1, None), (2, 1), (1, 2), (None, 1)]  # newest first
    assert {(m["alias"], m["tenant"], m["key_id"]) for m in history["data"]} == \
        {("champion", "default", None)}  # authentication is off: no key
    page = client.get(f"{NAMES}/history?limit=3").json()
    rest = client.get(f"{NAMES}/history?limit=3&cursor={page['next']}").json()
    assert page["data"] + rest["data"] == history["data"] and rest["next"] is None


def test_the_key_that_moved_an_alias_is_recorded(versions, services):
    from fastapi.testclient import TestClient

    from service.main import create_app

    services.auth.enabled = True
    key_id, key = services.auth.create("default", "train", "ci")
    _, predict_key = services.auth.create("default", "predict")
    with TestClient(create_app(services=services), base_url="http://127.0.0.1") as c:
        r = c.put(f"{NAMES}/aliases/champion", json={"version": 2},
                  headers={"Authorization": f"Bearer {predict_key}"})
        assert r.status_code == 403  # reading names needs predict, moving them train
        r = c.put(f"{NAMES}/aliases/champion", json={"version": 2},
                  headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        moves = c.get(f"{NAMES}/history",
                      headers={"Authorization": f"Bearer {predict_key}"}).json()
    assert [(m["key_id"], m["tenant"]) for m in moves["data"]] == [(key_id, "default")]


REFUSED = [
    ("PUT", "/aliases/latest", {"version": 1}, 422, "alias"),
    ("PUT", "/aliases/3", {"version": 1}, 422, "alias"),
    ("PUT", "/aliases/champion", {"version": 9}, 404, "version"),
    ("PUT", "/aliases/champion", {"version": "2"}, 422, "version"),
    ("PUT", "/aliases/champion", {"version": 2, "by": "me"}, 422, "by"),
    ("DELETE", "/aliases/nope", None, 404, "alias"),
    ("DELETE", "/aliases/latest", None, 422, "alias"),
    ("DELETE", "/aliases/champion", None, 409, "alias"),  # the split routes to it
    ("PUT", "/traffic", {"champion": 90, "challenger": 5}, 422, "challenger"),
    ("PUT", "/traffic", {"champion": 90, "nope": 10}, 404, "nope"),
    ("PUT", "/traffic", {"champion": 90, "7": 10}, 404, "7"),
    ("PUT", "/traffic", {"champion": 90.5, "latest": 9.5}, 422, "champion"),
    ("PUT", "/traffic", {"champion": 110, "latest": -10}, 422, "champion"),
    ("PUT", "/traffic", {"champion": 50, "-x": 50}, 422, "-x"),
    ("PUT", "/traffic", {}, 422, None),
    ("PUT", "/traffic", [90, 10], 422, None),
    ("DELETE", "/models/v2", None, 409, None),  # an alias names it
    ("DELETE", "/models/v1", None, 409, None),  # the split names it
]


def test_refusals_name_the_field_and_store_nothing(client, versions):
    client.put(f"{NAMES}/aliases/champion", json={"version": 2})
    client.put(f"{NAMES}/traffic", json={"champion": 80, "1": 20})
    before = client.get(NAMES).json(), client.get(f"{NAMES}/history").json()
    for method, path, body, status, field in REFUSED:
        url = f"/v1/models/{versions[int(path[-1])]}" if path.startswith("/models/") \
            else NAMES + path
        r = client.request(method, url, json=body)
        assert r.status_code == status, (path, body, r.text)
        assert r.json()["error"].get("field") == field, (path, body, r.json())
        assert (client.get(NAMES).json(), client.get(f"{NAMES}/history").json()) == before
    assert _version(client.post("/predict", json={"model": "seed@champion", **X})) == 2


def test_a_version_the_split_names_is_kept_and_unknown_names_are_404(client, versions):
    assert client.put(f"{NAMES}/traffic", json={"1": 100}).status_code == 200
    assert client.delete(f"/v1/models/{versions[1]}").status_code == 409
    assert client.put(f"{NAMES}/aliases/champion", json={"version": 2}).status_code == 200
    assert client.delete(f"{NAMES}/aliases/champion").status_code == 204  # not in the split
    assert client.delete(f"{NAMES}/traffic").status_code == 204
    assert client.delete(f"{NAMES}/traffic").status_code == 404
    assert client.delete(f"/v1/models/{versions[1]}").status_code == 204
    for r in (client.get("/v1/model-names/nobody"),
              client.put("/v1/model-names/nobody/aliases/a", json={"version": 1}),
              client.put("/v1/model-names/nobody/traffic", json={"latest": 100}),
              client.post("/predict", json={"model": "nobody@a", **X})):
        assert r.status_code == 404, r.text


def _binomial_ok(hits: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(hits - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_the_draw_follows_the_weights_and_a_route_key_sticks():
    split = TrafficSplit("seed", ("a", "b", "c"), (70, 0, 30))
    random.seed(15)
    drawn = Counter(split.pick() for _ in range(4000))
    keyed = Counter(split.pick(f"user-{i}") for i in range(4000))
    for counts in (drawn, keyed):
        assert counts["b"] == 0
        assert _binomial_ok(counts["c"], 4000, 0.3), counts
    # stickiness, exactly: a key's draw is its bucket's, every time
    for i in range(200):
        key = f"user-{i}"
        want = "a" if route_bucket("seed", key) < 70 else "c"
        assert {split.pick(key) for _ in range(3)} == {want}
    # salted by name: the same users fall elsewhere for another name
    assert [route_bucket("seed", f"u{i}") for i in range(20)] != \
        [route_bucket("other", f"u{i}") for i in range(20)]


def test_predict_by_the_bare_name_follows_the_split(client, versions):
    client.put(f"{NAMES}/aliases/champion", json={"version": 2})
    client.put(f"{NAMES}/aliases/challenger", json={"version": 3})
    r = client.put(f"{NAMES}/traffic", json={"champion": 90, "challenger": 10})
    assert r.json() == {"name": "seed", "weights": {"champion": 90, "challenger": 10},
                        "versions": {"champion": 2, "challenger": 3}}
    n = 300
    seen = Counter(_version(client.post("/predict", json={"model": "seed", **X}))
                   for _ in range(n))
    assert set(seen) == {2, 3} and _binomial_ok(seen[3], n, 0.1), seen
    v2 = Counter(_v2_version(_infer(client, "seed")) for _ in range(50))
    assert set(v2) <= {2, 3} and v2[2] > v2[3]
    for key in ("alice", "bob", "carol", "dave"):
        want = 2 if route_bucket("seed", key) < 90 else 3
        headers = {"X-Fitserve-Route-Key": key}
        got = {_version(client.post("/predict", json={"model": "seed", **X}, headers=headers))
               for _ in range(5)}
        got.add(_v2_version(client.post("/v2/models/seed/infer", headers=headers, json={
            "inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]})))
        assert got == {want}, key
    # an explicit version or alias bypasses the split
    assert _version(client.post("/predict", json={"model": "seed@latest", **X})) == 3
    # Prometheus counts each version's requests
    metrics = client.get("/metrics").text
    count = {int(line.split('version="')[1].split('"')[0]): float(line.split()[-1])
             for line in metrics.splitlines()
             if line.startswith('fitserve_predict_requests_total{model="seed"')}
    assert count[2] >= seen[2] + v2[2] and count[3] >= seen[3] + v2[3]
    assert sum(count.values()) == n + 50 + 4 * 6 + 1
    # moving an alias the split uses, or clearing the split, applies at once
    lo, hi = (next(f"k{i}" for i in range(1000) if test(route_bucket("seed", f"k{i}")))
              for test in (lambda b: b < 90, lambda b: b >= 90))
    client.put(f"{NAMES}/aliases/challenger", json={"version": 1})
    assert [_version(client.post("/predict", json={"model": "seed", **X},
                                 headers={"X-Fitserve-Route-Key": k})) for k in (lo, hi)] == [2, 1]
    client.delete(f"{NAMES}/traffic")
    assert {_version(client.post("/predict", json={"model": "seed", **X}))
            for _ in range(5)} == {3}
