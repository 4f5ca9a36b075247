"""kill -9 the real server during a large upload, restart it on the same data directory: no
partial dataset is ever listed, and the same upload then succeeds whole."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.security.conftest import StartServer

pytestmark = pytest.mark.e2e

ROWS = 150_000  # about 4 MB of CSV
CHUNK = 64 * 1024


@functools.cache
def _csv() -> bytes:  # made once per process: both cases upload the same body
    rng = np.random.default_rng(0)
    table = rng.standard_normal((ROWS, 3)).round(6)
    lines = "\n".join(f"{a},{b},{c}" for a, b, c in table.tolist())
    return ("a,b,y\n" + lines + "\n").encode()


class SlowUpload:
    """POSTs ``body`` in chunks from a thread; stops sending after ``pause_after`` bytes and
    waits there until released (or the connection dies)."""

    def __init__(self, url: str, headers: dict[str, str], body: bytes, pause_after: int):
        self.url, self.headers, self.body, self.pause_after = url, headers, body, pause_after
        self.paused = threading.Event()
        self.release = threading.Event()
        self.outcome: object = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _chunks(self) -> Iterator[bytes]:
        for start in range(0, len(self.body), CHUNK):
            if start >= self.pause_after and not self.paused.is_set():
                self.paused.set()
                self.release.wait(30)
            yield self.body[start : start + CHUNK]
        self.paused.set()  # everything sent

    def _run(self) -> None:
        try:
            with httpx.Client(timeout=30) as c:
                self.outcome = c.post(self.url, content=self._chunks(),
                                      headers={**self.headers, "content-type": "text/csv"})
        except httpx.HTTPError as e:
            self.outcome = e

    def start(self) -> SlowUpload:
        self.thread.start()
        return self


@pytest.mark.parametrize("when", ["mid_body", "body_sent"])
def test_kill_9_during_an_upload_leaves_no_partial_dataset(
    start_server: StartServer, client_for, auth_headers: dict[str, str], when: str
) -> None:
    body = _csv()
    server = start_server(workers=0)
    data_dir = server.data_dir
    url = f"{server.url}/v1/datasets?target=y&name=big"
    pause_after = len(body) // 2 if when == "mid_body" else len(body) + 1
    upload = SlowUpload(url, auth_headers, body, pause_after).start()
    assert upload.paused.wait(30), "the upload never got going"
    server.kill()  # SIGKILL: no shutdown code runs
    upload.release.set()
    upload.thread.join(30)
    if when == "mid_body":
        assert isinstance(upload.outcome, httpx.HTTPError), upload.outcome

    again = start_server(workers=0, data_dir=data_dir)
    http = client_for(again)
    listed = http.get("/v1/datasets").json()
    if when == "mid_body":
        assert listed["count"] == 0, listed
    else:  # the whole body may have been stored before the kill landed; never a part of it
        assert listed["count"] <= 1, listed
    for ds in listed["data"]:
        assert (ds["rows"], ds["features"]) == (ROWS, 2), ds
    # every file that passes for a dataset is whole: a rename lands it only when complete
    for f in (data_dir / "datasets").iterdir():
        if not f.name.startswith("."):  # ".tmp-*": a write the kill cut short, never read
            assert _complete(f), f

    r = http.post("/v1/datasets?target=y&name=big", content=body,
                  headers={"content-type": "text/csv"})
    assert r.status_code == (201 if listed["count"] == 0 else 200), r.text
    ds = r.json()
    assert (ds["rows"], ds["features"], ds["targets"]) == (ROWS, 2, 1)
    assert http.get("/v1/datasets").json()["count"] == 1
    assert http.get(f"/v1/datasets/{ds['id']}").json()["sha256"] == ds["sha256"]


def _complete(path: Path) -> bool:
    tensors = load_file(str(path))
    return tensors["x"].shape == (ROWS, 2) and tensors["y"].shape == (ROWS, 1)
