"""``fitserve models``: list, show, predict, plot, delete."""

from __future__ import annotations

from tests.unit.cli.conftest import Cli

XY = {"x": [[1.0], [2.0], [3.0]], "y": [[2.0], [4.0], [6.0]]}


def _model(fs: Cli, run_queued, **extra) -> dict:
    job = fs.http.post("/v1/jobs", json={**XY, "epochs": 30, "seed": 0, **extra}).json()
    run_queued()
    model_id = fs.http.get(f"/v1/jobs/{job['id']}").json()["model_id"]
    return fs.http.get(f"/v1/models/{model_id}").json()


def test_the_list_never_wraps_an_id_at_80_columns(fs: Cli, run_queued):
    models = [_model(fs, run_queued, model_name="seed") for _ in range(2)]
    mlp = _model(fs, run_queued, model={"kind": "mlp", "hidden": [4]}, epochs=5)
    for args in (["models"], ["models", "list", "--name", "seed"]):
        r = fs(*args)
        assert r.exit_code == 0, r.output
        lines = r.stdout.splitlines()
        assert max(len(line) for line in lines) <= 80
        for m in models:
            assert sum(m["id"] in line for line in lines) == 1
    assert "seed v2" in r.stdout and f"{models[1]['weight'][0][0]:.6g}" in r.stdout
    assert mlp["id"] in fs("models").stdout and mlp["id"] not in r.stdout


def test_show_predict_and_plot(fs: Cli, run_queued, tmp_path):
    m = _model(fs, run_queued, model_name="seed")
    r = fs("models", "show", m["id"])
    assert r.exit_code == 0, r.output
    assert f"model       {m['id']} (seed v1)" in r.stdout
    assert f"bias        [{m['bias'][0]:.6g}]" in r.stdout and f"job         {m['job_id']}" in \
        r.stdout
    r = fs("models", "predict", "seed", "2", "-1")
    assert r.exit_code == 0, r.output
    want = m["weight"][0][0] * 2 + m["bias"][0]
    assert r.stdout.splitlines()[0] == f"[2] -> [{want:.6g}]"
    out = tmp_path / "fit.png"
    r = fs("models", "plot", m["id"], "-o", str(out))
    assert r.exit_code == 0 and r.stdout.strip() == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_delete(fs: Cli, run_queued, settings):
    m = _model(fs, run_queued)
    r = fs("models", "delete", m["id"])
    assert r.exit_code == 0 and r.stdout == f"deleted {m['id']}\n"
    assert not (settings.data_dir / "checkpoints" / f"{m['id']}.safetensors").exists()
    r = fs("models", "show", m["id"])
    assert r.exit_code == 1 and f"error: not_found: model {m['id']!r} not found" in r.stderr
