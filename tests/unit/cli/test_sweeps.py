"""``fitserve sweep`` and ``fitserve sweeps`` (service/cli/sweeps.py) and the client's
``sweep()``, against the app in this process: the sweep is driven to its end (controller
steps, jobs run here) when its event stream opens."""

from __future__ import annotations

import functools

import httpx
import pytest
from typer.testing import CliRunner

import service.cli.client as cli_client
from service.cli import cli
from service.cli.sweeps import parse_option, parse_param
from service.client import Client
from service.client.http import SweepFailed
from tests.unit.sweeps.drive import drive


class _Driving(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport, services) -> None:
        self.inner, self.services = inner, services

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/v1/sweeps/") and request.url.path.endswith("/events"):
            drive(self.services)
        return self.inner.handle_request(request)


@pytest.fixture
def driving(client, services, monkeypatch) -> functools.partial:
    monkeypatch.delenv("FITSERVE_API_KEY", raising=False)
    make = functools.partial(Client, transport=_Driving(client._transport, services))
    monkeypatch.setattr(cli_client, "Client", make)
    return make


def test_sweep_shows_the_best_trials_and_registers_the_winner(driving, client, seed_csv):
    r = CliRunner().invoke(cli, [
        "sweep", str(seed_csv), "-t", "y", "--lr", "1e-4:1e-2:log", "--momentum", "0,0.5",
        "--epochs", "40", "--trials", "6", "--strategy", "random", "--seed", "3",
        "--job-seed", "0", "--name", "swept", "--top", "3"], env={"COLUMNS": "120"})
    assert r.exit_code == 0, r.output
    sweep = client.get("/v1/sweeps").json()["data"][0]
    assert sweep["status"] == "succeeded" and sweep["max_trials"] == 6
    assert sweep["search_space"] == {"optimizer.lr": {"log_uniform": [1e-4, 1e-2]},
                                     "optimizer.momentum": {"choice": [0.0, 0.5]}}
    assert sweep["job"]["epochs"] == 40 and sweep["job"]["seed"] == 0
    assert f"model       {sweep['model_id']} (swept)" in r.stdout
    assert "top 3 of 6 trials" in r.stdout
    ranks = [line.split() for line in r.stdout.splitlines() if line.strip()[:2] in
             ("1 ", "2 ", "3 ")]
    assert [row[0] for row in ranks] == ["1", "2", "3"]
    assert ranks[0][1] == str(sweep["best"]["trial"])
    assert client.get("/v1/models?name=swept").json()["data"][0]["id"] == sweep["model_id"]
    listed = CliRunner().invoke(cli, ["sweeps"], env={"COLUMNS": "120"})
    assert listed.exit_code == 0 and sweep["id"] in listed.stdout


def test_sweep_options_read_ranges_lists_and_values():
    assert parse_option("optimizer.lr", "1e-4:1e-1:log") == (
        None, {"log_uniform": [1e-4, 1e-1]})
    assert parse_option("optimizer.lr", "0.001:0.01:log:5") == (
        None, {"log_uniform": [0.001, 0.01], "steps": 5})
    assert parse_option("epochs", "100:1000") == (None, {"int": [100, 1000]})
    assert parse_option("optimizer.momentum", "0,0.9") == (None, {"choice": [0.0, 0.9]})
    assert parse_option("optimizer.lr", "0.01") == (0.01, None)
    assert parse_param("model.hidden=[[16],[32,32]]") == (
        "model.hidden", {"choice": [[16], [32, 32]]})
    assert parse_param('seed={"int": [0, 9]}') == ("seed", {"int": [0, 9]})


def test_the_clients_sweep_returns_the_finished_sweep_or_raises(driving):
    with driving("http://127.0.0.1") as fs:
        seen = []
        done = fs.sweep({"optimizer.lr": {"choice": [0.001, 0.01]}}, x=[[1.0], [2.0], [3.0]],
                        y=[[2.0], [4.0], [6.0]], strategy="grid", epochs=30, seed=0,
                        on_event=seen.append)
        assert done["status"] == "succeeded" and done["best"]["params"] == {
            "optimizer.lr": 0.01}
        assert [e["event"] for e in seen if e["event"] == "trial"] == ["trial", "trial"]
        assert fs.get_sweep(done["id"])["model_id"] == done["model_id"]
        with pytest.raises(SweepFailed) as failed:
            fs.sweep({"optimizer.lr": {"choice": [500.0]}}, x=[[1.0], [2.0]], y=[[2.0], [4.0]],
                     strategy="grid", epochs=30)
    assert failed.value.type == "no_trial_succeeded" and failed.value.status == 0
    assert failed.value.sweep["trials"][0]["error"]["type"] == "diverged"
