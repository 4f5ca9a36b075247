"""``fitserve jobs``: list, show, cancel, history/logs, delete."""

from __future__ import annotations

from tests.unit.cli.conftest import Cli

XY = {"x": [[1.0], [2.0], [3.0]], "y": [[2.0], [4.0], [6.0]]}


def _trained(fs: Cli, run_queued, **extra) -> dict:
    job = fs.http.post("/v1/jobs", json={**XY, "epochs": 30, "seed": 0, **extra}).json()
    run_queued()
    return fs.http.get(f"/v1/jobs/{job['id']}").json()


def test_the_list_never_wraps_an_id_at_80_columns(fs: Cli, run_queued):
    jobs = [_trained(fs, run_queued, model_name="a-rather-long-model-name") for _ in range(2)]
    for args in (["jobs"], ["jobs", "list", "--status", "succeeded"]):
        r = fs(*args)
        assert r.exit_code == 0, r.output
        assert max(len(line) for line in r.stdout.splitlines()) <= 80
        for job in jobs:
            assert sum(job["id"] in line for line in r.stdout.splitlines()) == 1
    wide = fs("jobs", env={"COLUMNS": "160"}).stdout
    assert jobs[0]["model_id"] in wide  # dropped at 80 columns, shown where there is room


def test_show_history_and_logs(fs: Cli, run_queued):
    job = _trained(fs, run_queued)
    r = fs("jobs", "show", job["id"])
    assert r.exit_code == 0, r.output
    assert f"model       {job['model_id']}" in r.stdout and "epoch       30 / 30" in r.stdout
    assert "lr=0.01" in r.stdout and "epochs=30" in r.stdout
    r = fs("jobs", "show", job["id"], "--json")
    assert r.exit_code == 0 and '"status": "succeeded"' in r.stdout
    loss = fs.http.get(f"/v1/jobs/{job['id']}/history").json()["loss"]
    for command in ("history", "logs"):
        r = fs("jobs", command, job["id"], "--last", "2")
        assert r.exit_code == 0, r.output
        assert r.stdout.splitlines() == ["epoch loss", f"29 {loss[-2]:.6g}", f"30 {loss[-1]:.6g}"]
    standardized = _trained(fs, run_queued, standardize=True)
    r = fs("jobs", "logs", standardized["id"])
    assert "standardized units" in r.stderr and len(r.stdout.splitlines()) == 31
    assert "(standardized units)" in fs("jobs", "show", standardized["id"]).stdout


def test_a_diverged_job_shows_its_hint(fs: Cli, run_queued):
    job = _trained(fs, run_queued, lr=900.0)
    r = fs("jobs", "show", job["id"])
    assert "error       diverged: " in r.stdout
    assert "hint        lower the learning rate or standardize the inputs" in r.stdout


def test_cancel_then_delete(fs: Cli, run_queued):
    job = fs.http.post("/v1/jobs", json=XY).json()
    r = fs("jobs", "delete", job["id"])
    assert r.exit_code == 1
    assert f"error: conflict: job {job['id']!r} is queued; cancel it first" in r.stderr
    assert f"hint: fitserve jobs cancel {job['id']}, then delete it" in r.stderr
    r = fs("jobs", "cancel", job["id"])
    assert r.exit_code == 0 and r.stdout == f"cancelled {job['id']}\n"
    r = fs("jobs", "delete", job["id"])
    assert r.exit_code == 0 and r.stdout == f"deleted {job['id']}\n"
    assert fs.http.get(f"/v1/jobs/{job['id']}").status_code == 404
    r = fs("jobs", "show", job["id"])
    assert r.exit_code == 1 and "error: not_found: job" in r.stderr


def test_cancelling_a_running_job_says_it_stops_soon(fs: Cli, services):
    job = fs.http.post("/v1/jobs", json=XY).json()
    services.meta.claim_next("w")
    r = fs("jobs", "cancel", job["id"])
    assert r.exit_code == 0 and "stops within about a second" in r.stdout
    r = fs("jobs", "delete", job["id"])
    assert r.exit_code == 1 and f"fitserve jobs show {job['id']}" in r.stderr
