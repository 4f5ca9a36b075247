"""Warm start (``init_from``): 5 000 + 5 000 epochs from the first job's model are the
10 000-epoch job, history for history; what differs from the parent is a 422 naming it."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import seed_example

SEED = seed_example()
XY = {"x": SEED["x"], "y": SEED["y"]}


def _run(client, run_queued, **body) -> dict:
    r = client.post("/v1/jobs", json={**XY, "seed": 0, **body})
    assert r.status_code == 202, r.text
    run_queued()
    job = client.get(f"/v1/jobs/{r.json()['id']}").json()
    assert job["status"] == "succeeded", job
    return job


def _history(client, job) -> tuple[np.ndarray, np.ndarray]:
    h = client.get(f"/v1/jobs/{job['id']}/history").json()
    return np.asarray(h["epoch"]), np.asarray(h["loss"], np.float32)


# the closed form (what the seed job runs) at the numbers; the autograd loop, which
# costs per epoch, on fewer
@pytest.mark.parametrize(("engine", "half"), [("auto", 5000), ("autograd", 200)])
def test_two_halves_warm_started_are_the_whole_run(client, run_queued, engine, half):
    first = _run(client, run_queued, epochs=half, engine=engine, model_name="seed")
    second = _run(client, run_queued, epochs=half, engine=engine,
                  init_from={"model": first["model_id"]})
    whole = _run(client, run_queued, epochs=2 * half, engine=engine)
    assert second["engine_used"] == whole["engine_used"] == \
        ("closed_form" if engine == "auto" else "autograd")
    epochs, loss = _history(client, second)
    all_epochs, all_loss = _history(client, whole)
    assert epochs.tolist() == list(range(1, half + 1))
    model = client.get(f"/v1/models/{second['model_id']}").json()
    reference = client.get(f"/v1/models/{whole['model_id']}").json()
    if engine == "autograd":  # the same float32 steps in the same order: the same bits
        np.testing.assert_array_equal(loss, all_loss[half:])
        assert model["weight"] == reference["weight"] and model["bias"] == reference["bias"]
    else:  # the closed form runs in float64; the halves meet at float32 weights
        np.testing.assert_allclose(loss, all_loss[half:], rtol=1e-6)
        np.testing.assert_allclose(model["weight"], reference["weight"], rtol=1e-6)
        np.testing.assert_allclose(model["bias"], reference["bias"], rtol=1e-6)
    assert all_epochs[-1] == 2 * half
    _, first_loss = _history(client, first)
    np.testing.assert_allclose(first_loss, all_loss[:half], rtol=1e-6)
    # lineage: the parent is named, by id, on the job and on the model
    assert second["hyperparameters"]["init_from"] == {"model": first["model_id"]}
    assert model["parent_model_id"] == first["model_id"]
    assert reference["parent_model_id"] is None


def test_a_version_by_name_and_the_normalization_kept(client, run_queued):
    x = np.linspace(-3, 3, 20)[:, None] * [1.0, 100.0]
    y = np.sin(x[:, :1]) + x[:, 1:] / 100
    body = {"x": x.tolist(), "y": y.tolist(), "epochs": 30, "standardize": True,
            "model": {"kind": "mlp", "hidden": [4]}, "optimizer": "adam"}
    parent = _run(client, run_queued, **body, model_name="wave")
    _run(client, run_queued, **body, model_name="wave")  # wave v2: not the one asked for
    # other rows: the child keeps the parent's normalization, not its own data's statistics
    child = _run(client, run_queued, **{**body, "x": (x[:10] * 2).tolist(),
                                        "y": y[:10].tolist()},
                 init_from={"model": "wave@1"})
    assert child["hyperparameters"]["init_from"] == {"model": parent["model_id"]}
    got = client.get(f"/v1/models/{child['model_id']}").json()
    want = client.get(f"/v1/models/{parent['model_id']}").json()
    assert got["normalization"] == want["normalization"]
    assert got["parent_model_id"] == parent["model_id"]
    # the first loss of the child is its parent's on the child's rows: not a fresh start
    fresh = _run(client, run_queued, **{**body, "x": (x[:10] * 2).tolist(),
                                        "y": y[:10].tolist()})
    assert _history(client, child)[1][0] != _history(client, fresh)[1][0]


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"model": {"kind": "polynomial"}}, "model.kind", "is a linear model"),
        ({"model": {"kind": "linear", "bias": False}}, "model.bias", "model.bias differs"),
        ({"x": [[1.0, 2.0]] * 15}, "x", "takes 1 feature(s) (x0); the data has 2"),
        ({"y": [[1.0, 2.0]] * 15}, "x", "predicts 1 target(s); the data has 2"),
        ({"standardize": True}, "standardize", "trained with standardize false"),
    ],
)
def test_what_differs_from_the_parent_is_a_422_naming_it(client, run_queued, change, field,
                                                         words):
    parent = _run(client, run_queued, epochs=10, model_name="seed")
    before = client.get("/v1/jobs").json()["count"]
    r = client.post("/v1/jobs", json={**XY, "epochs": 10, **change,
                                      "init_from": {"model": parent["model_id"]}})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == field and words in err["message"], err
    assert parent["model_id"] in err["message"]
    assert client.get("/v1/jobs").json()["count"] == before  # nothing stored


def test_an_unknown_parent_or_alias_is_a_404_and_a_malformed_one_a_422(client, run_queued):
    _run(client, run_queued, epochs=10, model_name="seed")
    for ref, status in (("mdl_000000000000000000000000", 404), ("nobody", 404),
                        ("seed@7", 404), ("seed@champion", 404), ("seed@", 422),
                        ("seed@-x", 422)):
        r = client.post("/v1/jobs", json={**XY, "epochs": 10, "init_from": {"model": ref}})
        assert r.status_code == status, (ref, r.text)
        if "@" in ref:
            assert r.json()["error"]["field"] == "init_from.model", (ref, r.text)
    r = client.post("/v1/jobs", json={**XY, "init_from": {"model": "seed", "extra": 1}})
    assert r.status_code == 422


def test_a_parent_a_warm_start_waits_for_is_not_deleted_under_it(client, services,
                                                                  run_queued):
    """The parent's DELETE is a 409 while a queued warm start needs it; once the job has
    run, it goes (the job keeps naming it as its lineage)."""
    parent = _run(client, run_queued, epochs=10, model_name="seed")
    r = client.post("/v1/jobs", json={**XY, "epochs": 10,
                                      "init_from": {"model": parent["model_id"]}})
    assert r.status_code == 202, r.text
    refused = client.delete(f"/v1/models/{parent['model_id']}")
    assert refused.status_code == 409, refused.text
    assert "needed by 1 queued or running job(s)" in refused.json()["error"]["message"]
    assert client.get(f"/v1/models/{parent['model_id']}").status_code == 200
    run_queued()
    assert client.get(f"/v1/jobs/{r.json()['id']}").json()["status"] == "succeeded"
    assert client.delete(f"/v1/models/{parent['model_id']}").status_code == 204


def test_a_parent_deleted_while_its_warm_start_is_submitted_is_a_404(client, services,
                                                                     run_queued, monkeypatch):
    """Checked again in the transaction that queues the job: deleted after the submit
    resolved it, the submit is a 404 naming ``init_from.model`` and stores nothing."""
    import service.jobs.submit as submit

    parent = _run(client, run_queued, epochs=10, model_name="seed")
    before = client.get("/v1/jobs").json()["count"]
    resolved = submit.check_init_from

    def then_deleted(*args, **kwargs):
        spec = resolved(*args, **kwargs)
        services.meta.delete_model(parent["model_id"])  # between the read and the queueing
        return spec

    monkeypatch.setattr(submit, "check_init_from", then_deleted)
    r = client.post("/v1/jobs", json={**XY, "epochs": 10, "init_from": {"model": "seed"}})
    assert r.status_code == 404, r.text
    err = r.json()["error"]
    assert err["field"] == "init_from.model" and parent["model_id"] in err["message"]
    assert client.get("/v1/jobs").json()["count"] == before  # nothing stored


def test_a_warm_start_whose_parent_row_is_gone_fails_saying_so(client, services, run_queued):
    """The worker's own check stays (the parent removed by hand in the database): the job
    fails as parent_missing."""
    from sqlalchemy import delete

    from service.store.tables import ModelRow

    parent = _run(client, run_queued, epochs=10, model_name="seed")
    r = client.post("/v1/jobs", json={**XY, "epochs": 10,
                                      "init_from": {"model": parent["model_id"]}})
    assert r.status_code == 202, r.text
    with services.meta.session() as s:
        s.execute(delete(ModelRow).where(ModelRow.id == parent["model_id"]))
    run_queued()
    job = client.get(f"/v1/jobs/{r.json()['id']}").json()
    assert job["status"] == "failed" and job["error"]["type"] == "parent_missing", job
