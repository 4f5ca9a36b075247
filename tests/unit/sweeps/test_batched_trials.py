"""A sweep's loop-engine trials (mlp, adam, seeds) claimed and trained as one batch by one
worker (service/worker/batches.py), each still its own job: held to the same trial run
alone as an ordinary job; a cancelled (pruned) one leaves the batch, the others go on."""

from __future__ import annotations

import numpy as np

from service.worker.batches import claim_trials, run_trials
from service.worker.runner import run_job
from tests.helpers import make_linear_data
from tests.unit.sweeps.test_batch import _outcome, _queue_trials


def _data() -> dict:
    x, y = make_linear_data(40, [[1.0, -1.0]], [0.2], noise=0.2, seed=4)
    return {"x": x.tolist(), "y": np.tanh(y).tolist()}


JOB = {"model": {"kind": "mlp", "hidden": [6]}, "optimizer": {"name": "adam"}, "epochs": 40,
       "validation_fraction": 0.2}
SPACE = {"optimizer.lr": {"choice": [0.003, 0.03]}, "seed": {"choice": [0, 1]},
         "epochs": {"choice": [25, 40]}}


def test_a_batch_of_mlp_trials_gives_each_trial_its_numbers_alone(client, services):
    data = _data()
    ids = _queue_trials(client, services, {**data, **JOB}, SPACE)
    first = services.meta.claim_next("w")
    batch = claim_trials(services.meta, first, "w")
    assert sorted(j.id for j in batch) == sorted(ids)  # lr, seed and epochs vary: one batch
    assert run_trials(batch, "w", services.meta, services.artifacts) == ["succeeded"] * 8
    for job_id in ids[:3]:  # the same trial as an ordinary job
        b_job, b_hist, b_model = _outcome(client, job_id)
        r = client.post("/v1/jobs", json={**data, **b_job["hyperparameters"]})
        row = services.meta.claim_next("w")
        assert row.id == r.json()["id"]
        assert run_job(row, "w", services.meta, services.artifacts) == "succeeded"
        a_job, a_hist, a_model = _outcome(client, row.id)
        assert b_hist["epoch"] == a_hist["epoch"]
        np.testing.assert_allclose(b_hist["loss"], a_hist["loss"], rtol=1e-5)
        np.testing.assert_allclose(b_hist["val_loss"], a_hist["val_loss"], rtol=1e-5)
        assert b_model["metrics"]["val_loss"] == a_model["metrics"]["val_loss"] or abs(
            b_model["metrics"]["val_loss"] / a_model["metrics"]["val_loss"] - 1) < 1e-5
        assert b_job["progress"]["epoch"] == a_job["progress"]["epoch"]


def test_a_cancelled_trial_leaves_the_batch_and_the_others_end(client, services):
    ids = _queue_trials(client, services, {**_data(), **JOB, "epochs": 100},
                        {"seed": {"choice": [0, 1, 2]}})
    first = services.meta.claim_next("w")
    batch = claim_trials(services.meta, first, "w")
    assert len(batch) == 3
    services.meta.request_cancel(ids[1], "default")  # as the controller prunes a trial
    statuses = dict(zip([j.id for j in batch],
                        run_trials(batch, "w", services.meta, services.artifacts),
                        strict=True))
    assert statuses[ids[1]] == "cancelled"
    assert statuses[ids[0]] == statuses[ids[2]] == "succeeded"
    job, history, _ = _outcome(client, ids[1])
    assert job["error"]["type"] == "cancelled" and 0 < history["epoch"][-1] < 100
    assert _outcome(client, ids[0])[1]["epoch"][-1] == 100
