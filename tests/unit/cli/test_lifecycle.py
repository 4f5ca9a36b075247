"""``fitserve evaluate | export | import`` (and the client calls under them), against the app."""

from __future__ import annotations

import onnx

from tests.unit.cli.conftest import Cli

XY = {"x": [[1.0], [2.0], [3.0], [4.0]], "y": [[2.0], [4.1], [5.9], [8.0]]}


def _model(fs: Cli, run_queued, **extra) -> dict:
    job = fs.http.post("/v1/jobs", json={**XY, "epochs": 50, "seed": 0, **extra}).json()
    run_queued()
    return fs.http.get(f"/v1/jobs/{job['id']}").json()


def test_evaluate_by_name_with_the_figure(fs: Cli, run_queued, tmp_path):
    job = _model(fs, run_queued, model_name="seed")
    png = tmp_path / "ev.png"
    r = fs("evaluate", "seed@1", "--dataset", job["dataset_id"], "--plot", str(png))
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("evaluation  evl_") and job["model_id"] in lines[0]
    assert lines[1] == "rows        4 scored, 0 refused"
    assert [line.split()[0] for line in lines[2:]] == ["mse", "rmse", "mae", "r2"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    r = fs("evaluate", "nobody", "--dataset", job["dataset_id"])
    assert r.exit_code == 1 and "no model 'nobody'" in r.stderr


def test_export_to_onnx_and_import_elsewhere(fs: Cli, run_queued, tmp_path):
    job = _model(fs, run_queued, model_name="seed")
    out = tmp_path / "seed.onnx"
    r = fs("export", "seed", "--format", "onnx", "-o", str(out))
    assert r.exit_code == 0 and r.stdout.strip() == str(out), r.output
    graph = onnx.load(str(out))
    assert [i.name for i in graph.graph.input] == ["x"]
    ck = tmp_path / "seed.safetensors"
    ck.write_bytes(fs.http.get(f"/v1/models/{job['model_id']}/checkpoint").content)
    r = fs("import", str(ck), "--name", "moved")
    assert r.exit_code == 0, r.output
    assert "(moved v1)" in r.stdout.splitlines()[0]
    r = fs("import", str(ck), "--name", "moved", "--sha256", "0" * 64)
    assert r.exit_code == 1 and "error: invalid_checkpoint" in r.stderr
    r = fs("models", "show", "moved")
    assert r.exit_code == 1  # show takes ids; the imported model says where it came from:
    moved = fs.http.get("/v1/models?name=moved").json()["data"][0]
    r = fs("models", "show", moved["id"])
    assert r.exit_code == 0 and "imported    sha256 " in r.stdout, r.output
