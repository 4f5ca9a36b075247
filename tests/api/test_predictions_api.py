"""POST /v1/predictions: a model scored over a stored dataset into a file, as a job on the
training queue (run here the way a worker runs it). The numbers are /predict's; bad input
is a 4xx naming the field or column with nothing stored; cancel, idempotency, recovery
and the orphan sweep hold for it as for training jobs."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sqlalchemy import func, select

from service.store.tables import JobRow
from service.store.upkeep import sweep_orphans
from service.worker.runner import run_job

CSV = "text/csv"
HOUSES = Path(__file__).resolve().parents[2] / "examples" / "houses.csv"


def _run(services, chunk_rows: int | None = None) -> list[str]:
    done = []
    while (job := services.meta.claim_next("test-worker")) is not None:
        done.append(run_job(job, "test-worker", services.meta, services.artifacts,
                            notify=services.on_event, predict_chunk_rows=chunk_rows))
    return done


def _dataset(client, **body) -> str:
    r = client.post("/v1/datasets", json=body)
    assert r.status_code in (200, 201), r.text
    return r.json()["id"]


def _predictions_stored(services) -> int:
    with services.meta.session() as s:
        return s.scalar(select(func.count()).select_from(JobRow).where(
            JobRow.task == "predict")) or 0


def _result_files(services) -> list[str]:
    folder = Path(services.artifacts.root) / "predictions"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.fixture
def line(client, services) -> dict:
    """Two versions of ``line`` (y = 2 x0 - x1 + 0.5), ``champion`` on v1, and a holdout."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 2)).astype(np.float32)
    y = x @ np.array([[2.0], [-1.0]], np.float32) + 0.5
    for epochs in (50, 400):
        r = client.post("/v1/jobs", json={"x": x.tolist(), "y": y.tolist(), "seed": 0,
                                          "epochs": epochs, "model_name": "line"})
        assert r.status_code == 202, r.text
    assert _run(services) == ["succeeded", "succeeded"]
    assert client.put("/v1/model-names/line/aliases/champion",
                      json={"version": 1}).status_code == 200
    hx = rng.normal(size=(11, 2)).astype(np.float32)
    # the holdout names the columns in another order, with one more the model ignores
    ds = _dataset(client, x=np.hstack([hx[:, [1, 0]], hx[:, :1]]).tolist(),
                  y=np.zeros((11, 1)).tolist(), feature_names=["x1", "x0", "z"],
                  target_names=["y0"])
    return {"dataset": ds, "x": hx}


def _predict(client, model: str, x: np.ndarray) -> list[list[float]]:
    r = client.post("/predict", json={"model": model, "x": x.tolist()})
    assert r.status_code == 200, r.text
    return r.json()["y"]


def test_a_csv_of_a_whole_dataset_gives_predicts_numbers(client, services, line):
    r = client.post("/v1/predictions", json={"model": "line@champion",
                                             "dataset_id": line["dataset"],
                                             "include_input": True})
    assert r.status_code == 202, r.text
    p = r.json()
    assert r.headers["location"] == f"/v1/predictions/{p['id']}"
    assert (p["status"], p["model_name"], p["version"], p["format"]) == \
        ("queued", "line", 1, "csv")
    assert p["progress"] == {"rows": 0, "total": 11} and p["result"] is None
    # the alias moves before it runs: the prediction keeps the version it resolved to
    assert client.put("/v1/model-names/line/aliases/champion",
                      json={"version": 2}).status_code == 200
    r = client.get(f"/v1/predictions/{p['id']}/result")
    assert r.status_code == 409 and "queued" in r.json()["error"]["message"]
    assert _run(services, chunk_rows=4) == ["succeeded"]  # three chunks: 4, 4, 3

    done = client.get(f"/v1/predictions/{p['id']}").json()
    assert done["status"] == "succeeded" and done["progress"] == {"rows": 11, "total": 11}
    assert done["result"] == f"/v1/predictions/{p['id']}/result"
    r = client.get(done["result"])
    assert r.status_code == 200 and r.headers["content-type"].startswith(CSV)
    assert f'filename="{p["id"]}.csv"' in r.headers["content-disposition"]
    got = pl.read_csv(io.BytesIO(r.content))
    assert got.columns == ["x1", "x0", "z", "y0"]  # the inputs as stored, then the target
    np.testing.assert_array_equal(got.select("x0", "x1").to_numpy().astype(np.float32),
                                  line["x"])
    want = _predict(client, "line@1", line["x"])
    assert got["y0"].to_list() == [row[0] for row in want]  # the same float32 text
    assert want != _predict(client, "line@2", line["x"])  # v2 would differ

    # a prediction is no training job: /v1/jobs neither lists nor shows it
    assert [j["id"] for j in client.get("/v1/predictions").json()["data"]] == [p["id"]]
    assert p["id"] not in {j["id"] for j in client.get("/v1/jobs").json()["data"]}
    assert client.get(f"/v1/jobs/{p['id']}").status_code == 404
    metrics = client.get("/metrics").text
    assert "fitserve_epochs_total 450" in metrics  # 50 + 400 epochs, not the 11 rows


@pytest.mark.parametrize("fmt, media", [("parquet", "application/vnd.apache.parquet"),
                                        ("jsonl", "application/x-ndjson")])
def test_parquet_and_json_lines(client, services, line, fmt, media):
    r = client.post("/v1/predictions", json={"model": "line", "dataset_id": line["dataset"],
                                             "format": fmt})
    assert r.status_code == 202, r.text
    assert _run(services, chunk_rows=5) == ["succeeded"]
    res = client.get(f"/v1/predictions/{r.json()['id']}/result")
    assert res.status_code == 200 and res.headers["content-type"] == media
    read = pl.read_parquet if fmt == "parquet" else pl.read_ndjson
    got = read(io.BytesIO(res.content))
    assert got.columns == ["y0"]
    want = np.asarray(_predict(client, "line", line["x"]), np.float32)[:, 0]
    np.testing.assert_array_equal(got["y0"].to_numpy().astype(np.float32), want)


def test_a_labelled_classifier_writes_its_label_and_probabilities(client, services):
    rows = ["size,colour,kind"] + [f"{s},{c},{k}" for s, c, k in [
        (1.0, "red", "small"), (1.5, "blue", "small"), (2.0, "red", "small"),
        (6.0, "blue", "large"), (6.5, "red", "large"), (7.0, "", "large")]]
    ds = client.post("/v1/datasets?target=kind", content="\n".join(rows),
                     headers={"content-type": CSV}).json()["id"]
    client.post("/v1/jobs", json={"dataset_id": ds, "seed": 0, "model": "logistic",
                                  "epochs": 200, "model_name": "sizer"})
    assert _run(services) == ["succeeded"]
    r = client.post("/v1/predictions", json={"model": "sizer", "dataset_id": ds,
                                             "format": "jsonl", "include_input": True})
    assert r.status_code == 202, r.text
    assert _run(services, chunk_rows=4) == ["succeeded"]
    got = pl.read_ndjson(io.BytesIO(client.get(f"/v1/predictions/{r.json()['id']}/result")
                                    .content))
    assert got.columns == ["size", "colour", "kind", "probability_large",
                           "probability_small"]
    assert got["colour"].to_list() == ["red", "blue", "red", "blue", "red", None]
    want = client.post("/predict", json={"model": "sizer", "rows": [
        {"size": s, "colour": c} for s, c in zip(got["size"].to_list(),
                                                got["colour"].to_list(), strict=True)]}).json()
    assert got["kind"].to_list() == want["labels"]
    np.testing.assert_allclose(got["probability_large"].to_numpy(),
                               [p["large"] for p in want["probabilities"]], rtol=1e-6)


def test_a_table_model_takes_the_columns_by_name_through_its_pipeline(client, services):
    ds = client.post("/v1/datasets?target=price&name=houses", content=HOUSES.read_bytes(),
                     headers={"content-type": CSV}).json()["id"]
    client.post("/v1/jobs", json={"dataset_id": ds, "seed": 0, "model_name": "houses"})
    assert _run(services) == ["succeeded"]
    # another table: the columns in another order, one left out (imputed), one extra
    other = client.post("/v1/datasets?target=price", headers={"content-type": CSV},
                        content="city,note,sqft,price\nParis,a,1500,0\nToulouse,b,,0\n"
                                "Lyon,c,900,0\n").json()["id"]
    r = client.post("/v1/predictions", json={"model": "houses", "dataset_id": other})
    assert r.status_code == 202, r.text
    assert _run(services) == ["succeeded"]
    got = pl.read_csv(io.BytesIO(client.get(f"/v1/predictions/{r.json()['id']}/result")
                                 .content))
    want = client.post("/predict", json={"model": "houses", "rows": [
        {"city": "Paris", "sqft": 1500}, {"city": "Toulouse"},
        {"city": "Lyon", "sqft": 900}]}).json()["y"]
    np.testing.assert_allclose(got["price"].to_numpy(), [w[0] for w in want], rtol=1e-6)


def _refused(client, services, body, status, field, *words, **kw):
    r = client.post("/v1/predictions", json=body, **kw)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err.get("field") == field, err
    for word in words:
        assert word in err["message"], err
    assert _predictions_stored(services) == 0 and _result_files(services) == []


def test_bad_input_is_a_4xx_naming_it_and_stores_nothing(client, services, line):
    ds = line["dataset"]
    _refused(client, services, {"model": "nope", "dataset_id": ds}, 404, "model", "'nope'")
    _refused(client, services, {"model": "line@gold", "dataset_id": ds}, 404, "model",
             "gold")
    _refused(client, services, {"model": "line@9", "dataset_id": ds}, 404, "model", "9")
    _refused(client, services, {"model": "mdl_000000000000000000000000", "dataset_id": ds},
             404, "model", "mdl_000000000000000000000000")
    _refused(client, services, {"model": "line", "dataset_id": "ds_000000000000000000000000"},
             404, "dataset_id", "dataset 'ds_000000000000000000000000' not found")
    wrong = _dataset(client, x=[[1.0, 2.0]], y=[[0.0]], feature_names=["x0", "size"],
                     target_names=["y0"])
    _refused(client, services, {"model": "line", "dataset_id": wrong}, 422, "dataset_id",
             "no feature column 'x1'")
    _refused(client, services, {"model": "line", "dataset_id": ds, "format": "xlsx"}, 422,
             "format", "csv")
    _refused(client, services, {"model": "line", "dataset_id": ds, "chunk": 3}, 422,
             "chunk")
    _refused(client, services, {"dataset_id": ds}, 422, "model")
    r = client.post("/v1/predictions", content=b"{", headers={"content-type":
                                                               "application/json"})
    assert r.status_code == 400 and _predictions_stored(services) == 0
    r = client.post("/v1/predictions", content=b"x", headers={"content-type": CSV})
    assert r.status_code == 415 and _predictions_stored(services) == 0
    for path in ("/v1/predictions/job_000000000000000000000000",
                 "/v1/predictions/job_000000000000000000000000/result"):
        assert client.get(path).status_code == 404


def test_a_text_column_where_the_model_takes_numbers_is_a_422(client, services, line):
    ds = client.post("/v1/datasets?target=y0", headers={"content-type": CSV},
                     content="x0,x1,y0\n1,red,0\n2,blue,0\n").json()["id"]
    _refused(client, services, {"model": "line", "dataset_id": ds}, 422, "dataset_id",
             "x1")


def test_cancel_delete_and_idempotency(client, services, line):
    body = {"model": "line", "dataset_id": line["dataset"]}
    first = client.post("/v1/predictions", json=body, headers={"Idempotency-Key": "k1"})
    again = client.post("/v1/predictions", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"] and _predictions_stored(services) == 1
    other = client.post("/v1/predictions", json={**body, "format": "jsonl"},
                        headers={"Idempotency-Key": "k1"})
    assert other.status_code == 409 and _predictions_stored(services) == 1

    pid = first.json()["id"]
    assert client.delete(f"/v1/predictions/{pid}").status_code == 409  # queued
    r = client.post(f"/v1/predictions/{pid}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    assert client.post(f"/v1/predictions/{pid}/cancel").status_code == 409
    assert client.post(f"/v1/jobs/{pid}/cancel").status_code == 404  # not a training job
    assert _run(services) == []
    r = client.get(f"/v1/predictions/{pid}/result")
    assert r.status_code == 409 and "cancelled" in r.json()["error"]["message"]

    done = client.post("/v1/predictions", json=body).json()["id"]
    assert _run(services) == ["succeeded"] and _result_files(services) == [f"{done}.csv"]
    assert client.delete(f"/v1/jobs/{done}").status_code == 404
    assert client.delete(f"/v1/predictions/{done}").status_code == 204
    assert _result_files(services) == []
    assert client.get(f"/v1/predictions/{done}").status_code == 404


def test_a_running_prediction_stops_when_cancelled(client, services, line):
    pid = client.post("/v1/predictions", json={"model": "line",
                                               "dataset_id": line["dataset"]}).json()["id"]
    job = services.meta.claim_next("test-worker")
    services.meta.request_cancel(pid, "default", "predict")  # flagged while it runs
    status = run_job(job, "test-worker", services.meta, services.artifacts,
                     progress_interval=0.0, predict_chunk_rows=2)
    assert status == "cancelled"
    p = client.get(f"/v1/predictions/{pid}").json()
    assert p["status"] == "cancelled" and p["error"]["type"] == "cancelled"
    assert _result_files(services) == []  # no half file


def test_a_crashed_run_is_run_again_without_counting_twice(client, services, line):
    pid = client.post("/v1/predictions", json={"model": "line",
                                               "dataset_id": line["dataset"]}).json()["id"]
    job = services.meta.claim_next("dead-worker")
    services.meta.update_progress(pid, 8, None, None)  # it got this far, then died
    # ... and left a temporary file behind
    folder = Path(services.artifacts.root) / "predictions"
    folder.mkdir(exist_ok=True)
    (folder / ".tmp-abc.csv").write_text("x1,x0\n1,2\n")
    assert services.meta.requeue_running(["dead-worker"], 3) == [job.id]
    p = client.get(f"/v1/predictions/{pid}").json()
    assert p["status"] == "queued" and p["progress"]["rows"] == 0 and p["attempts"] == 1
    assert _run(services, chunk_rows=3) == ["succeeded"]
    p = client.get(f"/v1/predictions/{pid}").json()
    assert p["progress"] == {"rows": 11, "total": 11} and p["attempts"] == 2
    # the sweep: the crash's temporary file goes, the result of the succeeded job stays,
    # and a result whose job failed (a crash between rename and commit, no retry left) goes
    failed = client.post("/v1/predictions", json={"model": "line",
                                                  "dataset_id": line["dataset"]}).json()["id"]
    services.meta.claim_next("dead-worker")
    (folder / f"{failed}.csv").write_text("y0\n1\n")
    services.meta.requeue_running(["dead-worker"], 1)
    assert client.get(f"/v1/predictions/{failed}").json()["status"] == "failed"
    old = time.time() - 3600
    for path in folder.iterdir():
        os.utime(path, (old, old))
    removed = sweep_orphans(services.meta, services.artifacts, grace_s=60)
    assert sorted(removed) == sorted(["predictions/.tmp-abc.csv", f"predictions/{failed}.csv"])
    assert _result_files(services) == [f"{pid}.csv"]


def test_events_follow_a_prediction_to_its_end(client, services, line):
    pid = client.post("/v1/predictions", json={"model": "line",
                                               "dataset_id": line["dataset"]}).json()["id"]
    assert _run(services) == ["succeeded"]
    with client.stream("GET", f"/v1/predictions/{pid}/events") as r:
        text = "".join(r.iter_text())
    assert "event: progress" in text and '"rows":11,"total":11' in text
    assert "event: end" in text and '"status":"succeeded"' in text
    r = client.get(f"/v1/predictions/{pid}/events", headers={"Last-Event-ID": "end"})
    assert r.status_code == 204
    assert client.get(f"/v1/jobs/{pid}/events").status_code == 404


def test_a_model_a_prediction_waits_for_is_not_deleted_under_it(client, services, line):
    """A model's DELETE is a 409 while a queued or running batch prediction uses it (as a
    dataset's is while a job uses the dataset); once the prediction ends it goes."""
    r = client.post("/v1/predictions", json={"model": "line@2", "dataset_id": line["dataset"]})
    assert r.status_code == 202, r.text
    pid, model_id = r.json()["id"], r.json()["model_id"]
    v1 = services.meta.resolve_model("line@1").id
    r = client.delete(f"/v1/models/{model_id}")
    assert r.status_code == 409, r.text
    assert "needed by 1 queued or running job(s)" in r.json()["error"]["message"]
    assert client.get(f"/v1/models/{model_id}").status_code == 200  # nothing deleted
    # another model of the name is not held by it (v1 has the champion alias: moved first)
    assert client.delete("/v1/model-names/line/aliases/champion").status_code == 204
    assert client.delete(f"/v1/models/{v1}").status_code == 204
    assert _run(services) == ["succeeded"]
    assert client.get(f"/v1/predictions/{pid}").json()["status"] == "succeeded"
    assert client.delete(f"/v1/models/{model_id}").status_code == 204


def test_a_model_deleted_while_a_prediction_is_submitted_is_a_404(client, services, line,
                                                                  monkeypatch):
    """The model is checked again in the transaction that queues the prediction: deleted
    after the submit read it, the submit is a 404 naming ``model`` and stores nothing."""
    import service.lifecycle.predictions as predictions

    model_id = services.meta.resolve_model("line@2").id
    checked = predictions._check_first_rows

    def then_deleted(*args, **kwargs):
        checked(*args, **kwargs)
        services.meta.delete_model(model_id)  # between the read and the queueing

    monkeypatch.setattr(predictions, "_check_first_rows", then_deleted)
    r = client.post("/v1/predictions", json={"model": "line@2", "dataset_id": line["dataset"]})
    assert r.status_code == 404, r.text
    assert r.json()["error"]["field"] == "model" and model_id in r.json()["error"]["message"]
    assert _predictions_stored(services) == 0


def test_a_prediction_whose_model_row_is_gone_fails_saying_so(client, services, line):
    """The worker's own check stays (a model removed behind the API's back, by hand in the
    database): the prediction fails as model_missing, not with an internal error."""
    from sqlalchemy import delete

    from service.store.tables import ModelRow

    r = client.post("/v1/predictions", json={"model": "line@2", "dataset_id": line["dataset"]})
    assert r.status_code == 202, r.text
    with services.meta.session() as s:
        s.execute(delete(ModelRow).where(ModelRow.id == r.json()["model_id"]))
    assert _run(services) == ["failed"]
    p = client.get(f"/v1/predictions/{r.json()['id']}").json()
    assert p["error"]["type"] == "model_missing" and "was deleted" in p["error"]["message"]
