"""``fitserve predict-batch`` and the client's batch prediction calls, against the app."""

from __future__ import annotations

import anyio
import httpx
import pytest

from service.client import AsyncClient, Client, ConflictError, NotFoundError
from tests.unit.cli.conftest import Cli

XY = {"x": [[1.0], [2.0], [3.0], [4.0]], "y": [[2.0], [4.1], [5.9], [8.0]]}


def _model(fs: Cli, run_queued) -> dict:
    job = fs.http.post("/v1/jobs", json={**XY, "epochs": 50, "seed": 0,
                                         "model_name": "seed"}).json()
    run_queued()
    return fs.http.get(f"/v1/jobs/{job['id']}").json()


def test_predict_batch_writes_the_file(fs: Cli, run_queued, tmp_path):
    job = _model(fs, run_queued)
    out = tmp_path / "p.jsonl"
    r = fs("predict-batch", "seed@1", "--dataset", job["dataset_id"], "--format", "jsonl",
           "--include-input", "-o", str(out))
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("prediction  job_") and f"seed v1 on {job['dataset_id']}" \
        in lines[0]
    assert lines[1:] == ["rows        4", f"file        {out}"]
    want = fs.http.post("/predict", json={"model": "seed", "x": XY["x"]}).json()["y"]
    assert out.read_text().splitlines() == [
        f'{{"x0":{x[0]},"y0":{y[0]}}}' for x, y in zip(XY["x"], want, strict=True)]
    r = fs("predict-batch", "nobody", "--dataset", job["dataset_id"])
    assert r.exit_code == 1 and "model 'nobody' not found" in r.stderr


def test_the_sync_and_async_clients(fs: Cli, run_queued):
    job = _model(fs, run_queued)
    transport = fs.http._transport
    seen: list[dict] = []

    async def main() -> dict:
        async with AsyncClient("http://127.0.0.1", transport=_AsyncApp(fs.http)) as ac:
            return await ac.submit_prediction("seed", job["dataset_id"], format="parquet")

    assert anyio.run(main)["format"] == "parquet"
    run_queued()
    running = _Running(transport, run_queued)
    with Client("http://127.0.0.1", transport=running) as c:
        p = c.batch_predict("seed", job["dataset_id"], on_progress=seen.append)
        assert p["status"] == "succeeded" and seen[-1] == {"rows": 4, "total": 4}
        assert c.prediction_result(p["id"]).decode().splitlines()[0] == "y0"
        assert [q["id"] for q in c.predictions()][0] == p["id"]
        queued = c.submit_prediction("seed", job["dataset_id"], idempotency_key="k")
        assert c.submit_prediction("seed", job["dataset_id"], idempotency_key="k")["id"] \
            == queued["id"]
        assert c.cancel_prediction(queued["id"])["status"] == "cancelled"
        # the model's DELETE after the submit, before a worker takes it: refused (409) while
        # the prediction waits for the model, which then runs
        refused: list[str] = []

        def delete_model() -> None:
            with pytest.raises(ConflictError) as e:
                c.delete_model(job["model_id"])
            refused.append(str(e.value))

        running.before = delete_model
        assert c.batch_predict("seed", job["dataset_id"])["status"] == "succeeded"
        assert len(refused) == 1 and "needed by 1 queued or running job(s)" in refused[0]
        assert c.model(job["model_id"])["id"] == job["model_id"]
        c.delete_prediction(p["id"])
        with pytest.raises(NotFoundError):
            c.prediction(p["id"])


class _Running(httpx.BaseTransport):
    """Runs the queued jobs before an event stream opens (as cli/conftest.py's)."""

    def __init__(self, inner: httpx.BaseTransport, run_queued) -> None:
        self.inner, self.run_queued = inner, run_queued
        self.before = lambda: None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            before, self.before = self.before, lambda: None
            before()
            self.run_queued()
        return self.inner.handle_request(request)


class _AsyncApp(httpx.AsyncBaseTransport):
    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        r = self.http.request(request.method, str(request.url), content=request.content,
                              headers=request.headers)
        return httpx.Response(r.status_code, headers=r.headers, content=r.content)
