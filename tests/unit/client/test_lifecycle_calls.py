"""The client's lifecycle calls (evaluate, export, checkpoint import), sync and async, as
requests on the wire."""

from __future__ import annotations

import hashlib

import anyio
import httpx

from service.client import AsyncClient, Client

SEEN: list[httpx.Request] = []


def _server(request: httpx.Request) -> httpx.Response:
    SEEN.append(request)
    if request.url.path.endswith("/export") or request.url.path.endswith(".png"):
        return httpx.Response(200, content=b"bytes")
    if request.url.path.endswith("/evaluations") and request.method == "GET":
        return httpx.Response(200, json={"data": [{"id": "evl_1"}], "count": 1, "next": None})
    return httpx.Response(201, json={"id": "x"})


def test_sync_and_async_send_the_same_requests():
    def calls(fs) -> list:
        return [fs.evaluate("mdl_1", "ds_1"), fs.evaluations("mdl_1"), fs.export("mdl_1"),
                fs.evaluation_plot("evl_1"), fs.import_checkpoint(b"file", name="moved")]

    SEEN.clear()
    with Client("http://fs", transport=httpx.MockTransport(_server)) as fs:
        got = calls(fs)
    sync = [(r.method, str(r.url), r.content, r.headers.get("x-checkpoint-sha256"))
            for r in SEEN]

    async def main() -> list:
        async with AsyncClient("http://fs", transport=httpx.MockTransport(_server)) as fs:
            return [await c for c in calls(fs)]

    SEEN.clear()
    assert anyio.run(main) == got
    assert [(r.method, str(r.url), r.content, r.headers.get("x-checkpoint-sha256"))
            for r in SEEN] == sync
    assert got[1] == [{"id": "evl_1"}] and got[2] == b"bytes"
    assert sync[0][:3] == ("POST", "http://fs/v1/models/mdl_1/evaluations",
                           b'{"dataset_id":"ds_1"}')
    assert sync[2][1] == "http://fs/v1/models/mdl_1/export?format=onnx"
    assert sync[4] == ("POST", "http://fs/v1/models?name=moved", b"file",
                       hashlib.sha256(b"file").hexdigest())
