"""End to end on one real server: live events, the Python client and the CLI, tritonclient,
and the docs and dashboard pages in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator

import anyio
import httpx
import numpy as np
import pytest
from httpx_sse import EventSource, ServerSentEvent, connect_sse
from typer.testing import CliRunner

from service.cli import cli
from service.client import AsyncClient, Client, InvalidInputError, JobFailed, NotFoundError
from tests.e2e.conftest import ServerProcess, module_server
from tests.helpers import finished_job, plain_torch_loop, seed_arrays, seed_example, wait_for

# one server for the module (its tests run on one xdist worker: --dist loadfile)
pytestmark = pytest.mark.e2e

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # progress written every 50 ms: a job of a few thousand epochs shows several updates
    yield from module_server(tmp_path_factory, "ecosystem", 1,
                             FITSERVE_PROGRESS_INTERVAL_S="0.05")


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


LONG_EPOCHS = 5_000


def _long_job(http: httpx.Client, epochs: int = LONG_EPOCHS, seed: int = 0) -> str:
    """A job of a few seconds here (and still several progress updates on a fast machine):
    the autograd loop on the seed data."""
    d = seed_example()
    r = http.post("/v1/jobs", json={"x": d["x"], "y": d["y"], "epochs": epochs, "seed": seed,
                                    "engine": "autograd"})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def _job_events(es: EventSource) -> Iterator[ServerSentEvent]:
    """The stream's progress and end events. sse-starlette pings every 15 s with a comment,
    which httpx-sse hands on as an empty "message" event: not an event of the job."""
    for e in es.iter_sse():
        if e.event in ("progress", "end"):
            yield e


# ---------------------------------------------------------------- events


def test_events_follow_a_running_job_and_resume_after_a_drop(http):
    job_id = _long_job(http)
    first: list[int] = []
    with connect_sse(http, "GET", f"/v1/jobs/{job_id}/events") as es:
        for e in _job_events(es):
            assert e.event == "progress", e
            first.append(int(e.id))
            if len(first) == 2:
                break  # the connection drops mid-job
    assert first[0] < first[1] < LONG_EPOCHS

    rest = []
    with connect_sse(http, "GET", f"/v1/jobs/{job_id}/events",
                     headers={"Last-Event-ID": str(first[-1])}) as es:
        rest = [(e.event, e.id, e.json()) for e in _job_events(es)]
    progress = [int(i) for ev, i, _ in rest if ev == "progress"]
    assert progress and progress[0] > first[-1] and progress == sorted(set(progress))
    assert progress[-1] == LONG_EPOCHS
    end_event, end_id, job = rest[-1]
    assert (end_event, end_id) == ("end", "end")
    assert job["id"] == job_id and job["status"] == "succeeded" and job["model_id"]
    assert http.get(f"/v1/jobs/{job_id}/events",
                    headers={"Last-Event-ID": "end"}).status_code == 204


# ---------------------------------------------------------------- Python client


def test_python_client_trains_predicts_plots_and_types_errors(server):
    x, y = seed_arrays()
    seen: list[dict] = []
    with Client(server.url) as fs:
        ds = fs.upload(x.tolist(), y.tolist(), name="seed")
        model = fs.train(dataset_id=ds["id"], epochs=2000, lr=0.01, seed=0,
                         model_name="client-seed", on_progress=seen.append)
        _, w, b = plain_torch_loop(x, y, epochs=2000, seed=0)
        np.testing.assert_allclose(model["weight"], w, rtol=1e-4)
        np.testing.assert_allclose(model["bias"], b, rtol=1e-4)
        assert seen and seen[-1]["epoch"] == 2000
        answer = fs.predict([[3.3], [4.4]], model="client-seed")
        assert answer["model_id"] == model["id"] and answer["version"] == 1
        np.testing.assert_allclose(answer["y"], np.array([[3.3], [4.4]]) @ w.T + b, rtol=1e-5)
        assert fs.model_plot(model["id"])[:8] == PNG
        assert fs.loss_plot(model["job_id"])[:8] == PNG
        assert [m["id"] for m in fs.models(name="client-seed")] == [model["id"]]

        with pytest.raises(NotFoundError) as nf:
            fs.model("mdl_000000000000000000000000")
        assert (nf.value.status, nf.value.type) == (404, "not_found")
        assert "mdl_000000000000000000000000" in nf.value.message
        with pytest.raises(InvalidInputError) as bad:
            fs.submit(dataset_id=ds["id"], epochs=0)
        assert bad.value.status == 422 and bad.value.field == "epochs"
        with pytest.raises(JobFailed) as failed:
            fs.train(dataset_id=ds["id"], epochs=2000, lr=900.0, seed=0)
        assert failed.value.type == "diverged" and failed.value.job["status"] == "failed"


def test_async_client_follows_a_job(server):
    d = seed_example()

    async def main() -> tuple[dict, list, dict]:
        async with AsyncClient(server.url) as fs:
            job = await fs.submit(x=d["x"], y=d["y"], epochs=500, seed=0)
            events = [e async for e in fs.events(job["id"])]
            model = await fs.model(events[-1].data["model_id"])
            answer = await fs.predict([[1.0]], model=model["id"])
            try:
                await fs.job("job_000000000000000000000000")
            except NotFoundError as e:
                return model, events, {"answer": answer, "error": e}
        raise AssertionError("the unknown job was found")

    model, events, rest = anyio.run(main)
    assert events[-1].event == "end" and events[-1].data["status"] == "succeeded"
    assert all(e.event == "progress" for e in events[:-1]) and events[-2].data["epoch"] == 500
    w, b = np.array(model["weight"]), np.array(model["bias"])
    np.testing.assert_allclose(rest["answer"]["y"], [[w[0, 0] + b[0]]], rtol=1e-5)
    assert rest["error"].type == "not_found"


# ---------------------------------------------------------------- CLI


def test_cli_trains_other_kinds_with_options(server, tmp_path):
    csv = tmp_path / "curve.csv"
    xs = np.linspace(-1, 1, 30)
    csv.write_text("x,y\n" + "".join(f"{a},{1 + 2 * a - 3 * a * a}\n" for a in xs))
    env = {"FITSERVE_URL": server.url}
    r = CliRunner().invoke(cli, ["train", str(csv), "--target", "y", "--kind", "polynomial",
                                 "--degree", "2", "--epochs", "20000", "--lr", "0.3",
                                 "--seed", "0"], env=env)
    assert r.exit_code == 0, r.output
    weight = next(line for line in r.stdout.splitlines() if line.startswith("weight"))
    np.testing.assert_allclose(json.loads(weight.split(None, 1)[1]), [[2, -3]], atol=1e-3)
    r = CliRunner().invoke(cli, ["train", str(csv), "--target", "y", "--kind", "mlp",
                                 "--hidden", "8,8", "--optimizer", "adam", "--epochs", "50",
                                 "--standardize", "--seed", "0"], env=env)
    assert r.exit_code == 0, r.output
    assert "'layers.2.weight': [8, 8]" in r.stdout


def test_cli_trains_predicts_and_lists(server, tmp_path):
    x, y = seed_arrays()
    csv = tmp_path / "seed.csv"
    csv.write_text("x,y\n" + "".join(f"{a},{b}\n" for a, b in zip(x[:, 0], y[:, 0],
                                                                   strict=True)))
    runner = CliRunner()
    env = {"FITSERVE_URL": server.url}
    r = runner.invoke(cli, ["train", str(csv), "--target", "y", "--epochs", "1000", "--lr",
                            "0.01", "--seed", "0", "--name", "cli-seed"], env=env)
    assert r.exit_code == 0, r.output
    _, w, b = plain_torch_loop(x, y, epochs=1000, seed=0)
    lines = dict(line.split(None, 1) for line in r.stdout.splitlines()
                 if line.startswith(("weight", "bias")))
    assert lines["weight"] == f"[[{w[0, 0]:.6g}]]" and lines["bias"] == f"[{b[0]:.6g}]"
    assert "final loss" in r.stdout

    r = runner.invoke(cli, ["predict", "cli-seed", "3.3", "-1.5", "--url", server.url])
    assert r.exit_code == 0, r.output
    rows = [line for line in r.stdout.splitlines() if "->" in line]
    assert rows[0].startswith("[3.3] -> [") and rows[1].startswith("[-1.5] -> [")
    got = float(rows[0].split("[")[-1].rstrip("]"))
    assert got == pytest.approx(3.3 * w[0, 0] + b[0], rel=1e-5)

    r = runner.invoke(cli, ["jobs", "--status", "succeeded"], env=env)
    assert r.exit_code == 0 and "succeeded" in r.stdout
    r = runner.invoke(cli, ["models", "--name", "cli-seed"], env=env)
    assert r.exit_code == 0 and "cli-seed v1" in r.stdout

    r = runner.invoke(cli, ["predict", "nobody", "1"], env=env)
    assert r.exit_code == 1 and "error: not_found: model 'nobody' not found" in r.stderr
    r = runner.invoke(cli, ["jobs", "--url", "http://127.0.0.1:9"])
    assert r.exit_code == 1 and "cannot reach the server" in r.stderr


# ---------------------------------------------------------------- Open Inference Protocol


def test_tritonclient_talks_to_v2(server, http):
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    d = seed_example()
    for epochs in (300, 600):  # two versions of one name
        http.post("/v1/jobs", json={"x": d["x"], "y": d["y"], "epochs": epochs, "seed": 0,
                                    "model_name": "triton-seed"})
    wait_for(lambda: len(http.get("/v1/models", params={"name": "triton-seed"}).json()["data"])
             == 2)
    v2, v1 = http.get("/v1/models", params={"name": "triton-seed"}).json()["data"]

    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.get_server_metadata()["name"] == "fitserve"
        assert client.is_model_ready("triton-seed")
        meta = client.get_model_metadata("triton-seed")
        assert meta["versions"] == ["1", "2"] and meta["inputs"][0]["shape"] == [-1, 1]

        x = np.array([[3.3], [4.4], [-2.0]], np.float32)
        binary = triton.InferInput("x", list(x.shape), "FP32")
        binary.set_data_from_numpy(x)  # the binary tensor extension, tritonclient's default
        result = client.infer("triton-seed", [binary], request_id="r-1")
        expected = x @ np.array(v2["weight"], np.float32).T + np.array(v2["bias"], np.float32)
        np.testing.assert_allclose(result.as_numpy("y"), expected, rtol=1e-6)
        assert result.get_response()["id"] == "r-1"
        assert result.get_response()["model_version"] == "2"

        as_json = triton.InferInput("x", list(x.shape), "FP64")
        as_json.set_data_from_numpy(x.astype(np.float64), binary_data=False)
        out = triton.InferRequestedOutput("y", binary_data=False)
        result = client.infer("triton-seed", [as_json], model_version="1", outputs=[out])
        expected = x @ np.array(v1["weight"], np.float32).T + np.array(v1["bias"], np.float32)
        np.testing.assert_allclose(result.as_numpy("y"), expected, rtol=1e-6)
        assert result.as_numpy("y").dtype == np.float64

        with pytest.raises(InferenceServerException) as e:
            client.infer("no-such-model", [binary])
        assert e.value.status() == "404" and "no-such-model" in e.value.message()
        wrong = triton.InferInput("x", [1, 2], "FP32")
        wrong.set_data_from_numpy(np.ones((1, 2), np.float32))
        with pytest.raises(InferenceServerException) as e:
            client.infer("triton-seed", [wrong])
        assert e.value.status() == "400" and "expects 1 feature" in e.value.message()
    finally:
        client.close()


# ---------------------------------------------------------------- pages in a browser

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync",
                  # offline: nothing but this machine resolves, as on a box without internet
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        msg = "the browser tests need Debian's chromium (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """One headless Chromium for the module's pages (each test has a page of its own)."""
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(server: ServerProcess, browser) -> Iterator:
    context = browser.new_context()  # nothing (cache, storage) carried over between tests
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        # what the page asks for outside the app, and why each did not happen: "csp" is
        # the app's own Content-Security-Policy refusing it before it leaves the browser
        outside: dict[str, str | None] = {}
        local = (server.url, f"blob:{server.url}", "data:")
        page.on("request", lambda r: None if r.url.startswith(local)
                else outside.setdefault(r.url, None))
        page.on("requestfailed", lambda r: outside.__setitem__(r.url, r.failure)
                if r.url in outside else None)
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        yield page
        leaked = {url: why for url, why in outside.items() if why != "csp"}
        assert leaked == {}, f"the page fetched things from outside the app: {leaked}"
        errors = [e for e in errors if "Content Security Policy" not in e]
        assert errors == [], f"the page logged errors: {errors}"
    finally:
        context.close()


@pytest.mark.browser
def test_docs_render_offline_with_every_operation(server, page):
    page.goto(f"{server.url}/docs")
    for path in ("/v1/jobs", "/v1/jobs/{job_id}/events", "/v1/models/{model_id}/plot.png",
                 "/predict", "/v2/models/{name}/infer"):
        page.wait_for_selector(f'.opblock-summary-path[data-path="{path}"]')
    assert "Unable to render this definition" not in page.content()
    schema = httpx.get(f"{server.url}/openapi.json").json()
    operations = sum(1 for item in schema["paths"].values() for method in item
                     if method in ("get", "post", "put", "patch", "delete"))
    assert page.locator(".opblock").count() == operations

    page.goto(f"{server.url}/redoc")
    page.wait_for_selector("text=Submit a training job")
    assert page.get_by_text("/v1/jobs/{job_id}/events").count() >= 1


@pytest.mark.browser
def test_dashboard_shows_a_job_live_until_it_succeeds(server, http, page):
    page.goto(f"{server.url}/")
    page.wait_for_selector("#jobs tr")
    # the worker busy with another job first: this one waits in the queue until the page
    # (refreshed every second) follows it, however fast a machine then trains it
    blocker = _long_job(http, epochs=1_000_000, seed=1)
    wait_for(lambda: http.get(f"/v1/jobs/{blocker}").json()["status"] == "running")
    job_id = _long_job(http)
    row = f"#job-{job_id}"
    page.wait_for_selector(f'{row}[data-status="queued"]')
    assert http.post(f"/v1/jobs/{blocker}/cancel").status_code == 202
    page.wait_for_selector(f'#job-{blocker}[data-status="cancelled"]')
    # the loss curve grows from the event stream while the job runs
    page.wait_for_function(
        """id => { const r = document.getElementById('job-' + id);
                   const s = r && r.querySelector('svg.curve polyline');
                   return r && r.dataset.status === 'running' && s
                          && +r.querySelector('svg.curve').dataset.points >= 2; }""",
        arg=job_id)
    page.wait_for_selector(f'{row}[data-status="succeeded"]', timeout=60_000)
    assert page.text_content(f"{row} .status") == "succeeded"
    model_id = http.get(f"/v1/jobs/{job_id}").json()["model_id"]
    model = http.get(f"/v1/models/{model_id}").json()
    page.wait_for_selector(f"#model-{model_id}")
    shown = float(page.text_content(f"#model-{model_id} .weight").strip("[]"))
    assert shown == float(f"{model['weight'][0][0]:.5g}")
    page.wait_for_function(  # the finished curve is the stored history
        """id => +document.querySelector(`svg.curve[data-job="${id}"]`).dataset.points > 100""",
        arg=job_id)
    for link in (f"/v1/models/{model_id}/plot.png", f"/v1/jobs/{job_id}/loss.png", "/docs"):
        assert page.locator(f'a[href="{link}"]').count() == 1


@pytest.mark.browser
def test_dashboard_shows_how_far_a_failed_job_got_and_why(server, http, page):
    d = seed_example()
    r = http.post("/v1/jobs", json={"x": d["x"], "y": d["y"], "epochs": 10_000, "lr": 1.0,
                                    "seed": 0})
    assert r.status_code == 202, r.text
    job = finished_job(http, r.json()["id"])
    assert job["status"] == "failed" and job["error"]["type"] == "diverged", job
    reached = http.get(f"/v1/jobs/{job['id']}/history").json()["epoch"][-1]
    # it diverged before its first progress write: only its history says how far it got
    assert job["progress"]["epoch"] < reached
    page.goto(f"{server.url}/")
    row = f"#job-{job['id']}"
    page.wait_for_selector(f'{row}[data-status="failed"]')
    page.wait_for_function(
        """([id, shown]) => document.querySelector(`#job-${id} .epoch`).textContent === shown""",
        arg=[job["id"], f"{reached} / 10000"])
    error = page.locator(f"{row} .job-error")
    assert error.is_visible()  # in the row, not only in a tooltip
    assert error.text_content() == f"{job['error']['message']} {job['error']['hint']}"
