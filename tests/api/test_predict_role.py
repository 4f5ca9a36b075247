"""``fitserve serve --role predict``: a predict replica starts no training workers and
serves models in numpy, without ever importing torch (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# `fitserve serve --role predict` as the CLI runs it, with uvicorn swapped for an in-process
# client: the lifespan runs, then predicts on both lanes, then the process reports
_SERVE = """
import json, sys
import service.main

def serve_in_process(app, settings):
    from starlette.testclient import TestClient
    with TestClient(app, base_url="http://127.0.0.1") as c:
        out = {
            "predict": c.post("/predict", json={"x": [[2.0]]}).json(),
            "poly": c.post("/predict", json={"model": "poly", "x": [[2.0]]}).json(),
            "mlp": c.post("/predict", json={"model": "mlp", "x": [[2.0]]}).json(),
            "v2": c.post("/v2/models/line/infer", json={"inputs": [
                {"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [2.0]}]}).json(),
            "ready": c.get("/readyz").json(),
            "queue": repr(app.state.services.queue),
            "torch": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")),
            "optuna": sorted(m for m in sys.modules if m.split(".")[0] == "optuna"),
            "heavy": sorted(m for m in sys.modules if m in ("polars", "onnx", "matplotlib")),
        }
    print("RESULT " + json.dumps(out))

service.main.run_server = serve_in_process
from service.cli import cli
cli(["serve", "--role", "predict"], standalone_mode=False)
"""


@pytest.fixture
def trained_dir(tmp_path, run_queued, client, settings) -> Path:
    bodies = [
        {"model_name": "poly", "model": "polynomial", "x": [[0.0], [1.0], [2.0], [3.0]],
         "y": [[1.0], [2.0], [5.0], [10.0]], "epochs": 100},
        {"model_name": "mlp", "model": {"kind": "mlp", "hidden": [4]}, "x": [[0.0], [1.0]],
         "y": [[0.0], [1.0]], "epochs": 20},
        {"model_name": "line", "x": [[1.0], [2.0], [3.0]], "y": [[2.0], [4.0], [6.0]],
         "epochs": 100},  # the latest: what /predict without a model serves
    ]
    for body in bodies:
        assert client.post("/v1/jobs", json={"seed": 0, **body}).status_code == 202
    assert run_queued() == ["succeeded"] * 3
    return settings.data_dir


def test_a_predict_replica_serves_without_workers_or_torch(trained_dir, client):
    env = {**os.environ, "FITSERVE_DATA_DIR": str(trained_dir), "FITSERVE_LOG_LEVEL": "warning",
           "FITSERVE_WORKERS": "2"}  # the role overrides it: no workers
    out = subprocess.run([sys.executable, "-c", _SERVE], cwd=ROOT, env=env, text=True,
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(s for s in out.stdout.splitlines() if s.startswith("RESULT "))
    got = json.loads(line.removeprefix("RESULT "))
    assert got["torch"] == []  # torch was never imported
    assert got["optuna"] == []  # nor Optuna: it loads with a sweep's first study
    assert got["heavy"] == []  # nor polars (datasets, batch predictions), onnx, matplotlib
    assert got["queue"] == "None" and got["ready"]["status"] == "ready"
    assert "workers" not in got["ready"]["checks"]
    # the same answers as the full server gives
    for key, body in (("predict", {"x": [[2.0]]}), ("poly", {"model": "poly", "x": [[2.0]]}),
                      ("mlp", {"model": "mlp", "x": [[2.0]]})):
        assert got[key] == client.post("/predict", json=body).json(), key
    assert got["v2"]["outputs"][0]["data"] == got["predict"]["y"][0]


def test_the_role_is_all_or_predict_and_a_replica_takes_no_workers():
    from typer.testing import CliRunner

    from service.cli import cli

    runner = CliRunner()
    for args in (["--role", "train"], ["--role", "predict", "--workers", "2"]):
        r = runner.invoke(cli, ["serve", *args])
        assert r.exit_code == 2, r.output
