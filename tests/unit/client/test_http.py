"""The Python client's errors and new calls (service/client/http.py; kept beside the CLI tests,
which are its main user), against a mock transport."""

from __future__ import annotations

import anyio
import httpx
import orjson
import pytest

from service.client import AsyncClient, Client, ConflictError, JobFailed

FAILED = {"id": "job_1", "status": "failed", "model_id": None, "error": {
    "type": "diverged", "message": "the training loss became inf at epoch 6", "epoch": 6,
    "hint": "lower the learning rate or standardize the inputs"}}


def _server(request: httpx.Request) -> httpx.Response:
    if request.method == "POST" and request.url.path == "/v1/jobs":
        return httpx.Response(202, json={**FAILED, "status": "queued", "error": None})
    if request.url.path == "/v1/jobs/job_1/events":
        body = f"event: end\nid: end\ndata: {orjson.dumps(FAILED).decode()}\n\n"
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})
    if request.method == "DELETE" and request.url.path == "/v1/models/mdl_1":
        return httpx.Response(204)
    if request.method == "DELETE":
        return httpx.Response(409, json={"error": {
            "type": "conflict", "message": "busy", "hint": "cancel it first"}})
    return httpx.Response(404, json={"error": {"type": "not_found", "message": "no"}})


def test_the_async_clients_job_failed_carries_no_http_status_and_the_hint():
    async def main() -> JobFailed:
        async with AsyncClient("http://fs", transport=httpx.MockTransport(_server)) as fs:
            with pytest.raises(JobFailed) as failed:
                await fs.train(x=[[1.0]], y=[[2.0]], lr=900.0)
            return failed.value

    e = anyio.run(main)
    assert e.status != 200 and e.status == 0
    assert (e.type, e.job["status"]) == ("diverged", "failed")
    assert e.hint == "lower the learning rate or standardize the inputs"


def test_deletes_answer_none_and_errors_carry_the_hint():
    with Client("http://fs", transport=httpx.MockTransport(_server)) as fs:
        assert fs.delete_model("mdl_1") is None
        with pytest.raises(ConflictError) as busy:
            fs.delete_job("job_1")
    assert (busy.value.status, busy.value.message, busy.value.hint) == (
        409, "busy", "cancel it first")
