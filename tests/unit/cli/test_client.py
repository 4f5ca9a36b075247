"""What every client command shares (service/cli/client.py): errors with the API's message
and hint, the key, the server; and ``train`` and ``predict``."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service.cli import cli
from service.config import Settings
from service.main import create_app
from tests.unit.cli.conftest import Cli, wire


def test_train_prints_the_fit_and_predict_uses_it(fs: Cli, seed_csv):
    r = fs("train", str(seed_csv), "--target", "y", "--epochs", "50", "--seed", "0",
           "--name", "seed")
    assert r.exit_code == 0, r.output
    lines = dict(line.split(None, 1) for line in r.stdout.splitlines())
    model = fs.http.get("/v1/models").json()["data"][0]
    assert lines["model"] == f"{model['id']} (seed v1)"
    assert lines["weight"] == f"[[{model['weight'][0][0]:.6g}]]"
    assert "standardized" not in r.output
    r = fs("predict", "seed", "3.3", "-1.5")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[1].startswith("[-1.5] -> [")


def test_train_on_a_stored_dataset(fs: Cli):
    ds = fs.http.post("/v1/datasets", json={"x": [[1.0], [2.0]], "y": [[2.0], [4.0]]}).json()
    r = fs("train", "--dataset", ds["id"], "--epochs", "5")
    assert r.exit_code == 0, r.output
    assert fs.http.get("/v1/jobs").json()["data"][0]["dataset_id"] == ds["id"]
    r = fs("train", "--epochs", "5")
    assert r.exit_code == 2 and "--dataset" in r.output


def test_standardize_says_which_units_each_loss_is_in(fs: Cli, seed_csv):
    r = fs("train", str(seed_csv), "--target", "y", "--epochs", "20", "--standardize")
    assert r.exit_code == 0, r.output
    assert "loss shown in standardized units; final loss in the data's units" in r.stderr
    final = next(line for line in r.stdout.splitlines() if line.startswith("final loss"))
    assert final.endswith("(the data's units)")


def test_a_diverged_job_shows_its_message_and_hint(fs: Cli, seed_csv):
    r = fs("train", str(seed_csv), "--target", "y", "--epochs", "50", "--lr", "900")
    assert r.exit_code == 1
    assert "failed: diverged: the training loss became" in r.stderr
    assert "hint: lower the learning rate or standardize the inputs" in r.stderr


def test_an_api_error_shows_its_message_and_hint(monkeypatch):
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json={"error": {
            "type": "conflict", "message": "the thing is busy", "hint": "wait a second"}})

    http = httpx.Client(transport=httpx.MockTransport(answer))
    wire(monkeypatch, http)
    r = Cli(CliRunner(), http)("jobs", "cancel", "j")
    assert r.exit_code == 1
    assert r.stderr.splitlines() == ["error: conflict: the thing is busy", "hint: wait a second"]


@pytest.fixture
def secured(tmp_path, monkeypatch):
    app = create_app(Settings(data_dir=tmp_path / "d", workers=0, auth=True),
                     start_workers=False)
    monkeypatch.delenv("FITSERVE_API_KEY", raising=False)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        wire(monkeypatch, c)
        yield Cli(CliRunner(), c), app.state.services


def test_without_a_key_it_says_how_to_give_one(secured):
    fs, services = secured
    r = fs("models")
    assert r.exit_code == 1
    assert "pass --api-key or set FITSERVE_API_KEY" in r.stderr
    assert "Authorization" not in r.stderr and "fitserve keys create" in r.stderr
    key = services.auth.create("acme", "predict")[1]
    assert fs("models", "--api-key", key).exit_code == 0
    assert fs("models", env={"FITSERVE_API_KEY": key}).exit_code == 0
    r = fs("models", "--api-key", "fsk_wrong")
    assert r.exit_code == 1 and "unknown or revoked" in r.stderr and "--api-key" in r.stderr


def test_the_groups_url_serves_its_commands():
    for args in (["jobs", "--url", "http://127.0.0.1:9"],
                 ["jobs", "--url", "http://127.0.0.1:9", "show", "job_x"],
                 ["models", "show", "mdl_x", "--url", "http://127.0.0.1:9"]):
        r = CliRunner().invoke(cli, args, env={"FITSERVE_URL": "http://127.0.0.1:7"})
        assert r.exit_code == 1 and "cannot reach the server at http://127.0.0.1:9" in \
            r.stderr, (args, r.output)
