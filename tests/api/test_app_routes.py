"""The apps of one process share their routes (``service.main._include_api``): built once,
yet each app answers from its own state and settings."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app

XY = {"name": "d", "x": [[1.0], [2.0]], "y": [[2.0], [4.0]]}


def test_two_apps_share_their_routes_and_answer_each_from_its_own_state(tmp_path):
    open_app = create_app(Settings(data_dir=tmp_path / "a", workers=0), start_workers=False)
    keyed = create_app(Settings(data_dir=tmp_path / "b", workers=0, auth=True),
                       start_workers=False)
    # built once: the second app's first request builds nothing again
    assert open_app.router.routes[-1] is keyed.router.routes[-1]
    key = keyed.state.services.auth.create("acme", "train")[1]
    with TestClient(open_app, base_url="http://127.0.0.1") as a, \
            TestClient(keyed, base_url="http://127.0.0.1") as b:
        assert a.post("/v1/datasets", json=XY).status_code == 201
        # the keyed app's settings, not the first app's: no key, no answer
        assert b.get("/v1/datasets").status_code == 401
        auth = {"Authorization": f"Bearer {key}"}
        assert b.get("/v1/datasets", headers=auth).json()["data"] == []
        assert [d["name"] for d in a.get("/v1/datasets").json()["data"]] == ["d"]
        assert b.post("/v1/datasets", json={**XY, "name": "e"}, headers=auth).status_code == 201
        assert [d["name"] for d in b.get("/v1/datasets", headers=auth).json()["data"]] == ["e"]
        assert [d["name"] for d in a.get("/v1/datasets").json()["data"]] == ["d"]
