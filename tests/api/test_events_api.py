"""GET /v1/jobs/{id}/events through the ASGI app (live streams: tests/e2e)."""

from __future__ import annotations

import httpx
import orjson
from httpx_sse import EventSource, ServerSentEvent

from tests.helpers import seed_example


def _events(r: httpx.Response) -> list[ServerSentEvent]:
    return list(EventSource(r).iter_sse())


def _finished_job(client, run_queued, epochs: int = 300) -> dict:
    d = seed_example()
    job = client.post("/v1/jobs", json={"x": d["x"], "y": d["y"], "epochs": epochs, "seed": 0,
                                        "model_name": "ev"}).json()
    assert run_queued() == ["succeeded"]
    return client.get(f"/v1/jobs/{job['id']}").json()


def test_a_finished_job_streams_its_last_progress_then_the_end(client, run_queued):
    job = _finished_job(client, run_queued)
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _events(r)
    assert [(e.event, e.id) for e in events] == [("progress", "300"), ("end", "end")]
    progress = orjson.loads(events[0].data)
    assert progress == {"epoch": 300, "epochs": 300, "loss": job["progress"]["loss"],
                        "val_loss": None}
    end = orjson.loads(events[1].data)
    assert end["status"] == "succeeded" and end["model_id"] == job["model_id"]
    assert end == job


def test_resuming_after_the_last_id(client, run_queued):
    job = _finished_job(client, run_queued)
    r = client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "300"})
    assert [e.event for e in _events(r)] == ["end"]
    r = client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "end"})
    assert r.status_code == 204 and r.content == b""  # an EventSource stops reconnecting


def test_bad_requests_answer_the_error_shape(client, run_queued):
    job = _finished_job(client, run_queued)
    r = client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "soon"})
    assert r.status_code == 422
    assert r.json()["error"]["type"] == "invalid_input"
    assert r.json()["error"]["field"] == "Last-Event-ID"
    r = client.get("/v1/jobs/job_000000000000000000000000/events")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
