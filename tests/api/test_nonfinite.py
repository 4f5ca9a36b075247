"""Every float of a job's hyperparameters refuses inf and nan (JSON's 1e400 reads as inf): a
422 that names the field, and nothing stored. Before, 1e400 for grad_clip, huber_delta,
weight_decay or adam's eps got a 202 (shown as null), and adam with eps = inf "succeeded"
having learned nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app

XY = '"x": [[1.0], [2.0], [3.0], [4.0]], "y": [[3.0], [5.0], [7.0], [9.0]]'

# (the fields of the body, with {v} for the value; the field the error names)
CASES = [
    ('"grad_clip": {v}', "grad_clip"),
    ('"huber_delta": {v}, "loss": "huber"', "huber_delta"),
    ('"validation_fraction": {v}', "validation_fraction"),
    ('"lr": {v}', "optimizer.lr"),
    ('"optimizer": {{"name": "sgd", "lr": {v}}}', "optimizer.lr"),
    ('"optimizer": {{"name": "sgd", "weight_decay": {v}}}', "optimizer.weight_decay"),
    ('"optimizer": {{"name": "sgd", "momentum": {v}}}', "optimizer.momentum"),
    ('"optimizer": {{"name": "adam", "eps": {v}}}', "optimizer.eps"),
    ('"optimizer": {{"name": "adam", "weight_decay": {v}}}', "optimizer.weight_decay"),
    ('"optimizer": {{"name": "adamw", "betas": [0.9, {v}]}}', "optimizer.betas.1"),
    ('"optimizer": {{"name": "rmsprop", "eps": {v}}}', "optimizer.eps"),
    ('"optimizer": {{"name": "rmsprop", "alpha": {v}}}', "optimizer.alpha"),
    ('"scheduler": {{"name": "step", "step_size": 2, "gamma": {v}}}', "scheduler.gamma"),
    ('"scheduler": {{"name": "cosine", "eta_min": {v}}}', "scheduler.eta_min"),
    ('"scheduler": {{"name": "reduce_on_plateau", "min_lr": {v}}}', "scheduler.min_lr"),
    ('"scheduler": {{"name": "reduce_on_plateau", "threshold": {v}}}', "scheduler.threshold"),
    ('"validation_fraction": 0.25, "early_stopping": {{"min_delta": {v}}}',
     "early_stopping.min_delta"),
]
VALUES = ["1e400", "-1e400", "NaN", "Infinity"]


@pytest.fixture(scope="module")
def refusing(tmp_path_factory) -> Iterator[tuple[TestClient, object]]:
    """One app for the 68 refusals (each would otherwise build and migrate its own): each
    checks that nothing at all was stored, so a case that stored would also fail the rest."""
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("nonfinite") / "data",
                              workers=0, device="cpu"), start_workers=False)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c, app.state.services


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize(("fields", "field"), CASES, ids=[c[1] + ":" + c[0][:12] for c in CASES])
def test_a_nonfinite_hyperparameter_is_a_422_naming_it(refusing, fields, field, value):
    client, services = refusing
    body = "{" + XY + ', "epochs": 5, ' + fields.format(v=value) + "}"
    r = client.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_input" and error["field"] == field, error
    assert field in error["message"]
    assert services.meta.list_jobs("default", None, 10, None).count == 0
    assert services.meta.list_datasets("default", 10, None).count == 0


def test_the_finite_values_still_go_through(client):
    body = ("{" + XY + ', "epochs": 5, "grad_clip": 1e30, "huber_delta": 2.5, "loss": "huber", '
            '"optimizer": {"name": "adam", "eps": 1e-300, "weight_decay": 0.0}}')
    r = client.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 202, r.text
    spec = r.json()["hyperparameters"]
    assert spec["grad_clip"] == 1e30 and spec["optimizer"]["eps"] == 1e-300
