"""ONNX export (run in onnxruntime: predict's numbers within 1e-5, for matrix models and
for models trained on typed columns, whose graph takes the raw columns and runs the feature
pipeline) and checkpoint import (a model moved to another fitserve, its pipeline with it; a
bad file is a 4xx naming the part and nothing is stored)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import load, save

from service.config import Settings
from service.data.table import Table
from service.main import create_app
from service.store.tables import ModelRow
from tests.tables import boolean, categorical, houses, numeric, read_penguins, store_table

ort = pytest.importorskip("onnxruntime")

RNG = np.random.default_rng(0)
X = (RNG.normal(size=(30, 2)) * [1.0, 50.0] + [0.0, 100.0]).astype(np.float32)
Y = (X @ np.array([[0.7], [0.02]]) + np.sin(X[:, :1])).astype(np.float32)
LABELS = (X[:, 0] + (X[:, 1] - 100) / 50 > 0).astype(np.float32)[:, None]
THREE = np.digitize(X[:, 0], [-0.5, 0.5]).astype(np.float32)[:, None]

KINDS = {
    "linear, standardized": ({"standardize": True}, Y),
    "logistic, two classes": ({"model": "logistic", "standardize": True}, LABELS),
    "logistic, three": ({"model": "logistic", "optimizer": "adam", "lr": 0.1}, THREE),
    "polynomial": ({"model": {"kind": "polynomial", "degree": 3, "interactions": True},
                    "standardize": True}, Y),
    "mlp, tanh": ({"model": {"kind": "mlp", "hidden": [5, 3]}, "standardize": True,
                   "optimizer": "adam", "lr": 0.05}, Y),
    "mlp, relu, no bias": ({"model": {"kind": "mlp", "hidden": [4], "activation": "relu",
                                      "bias": False}, "optimizer": "adam"}, Y),
}


def _train(client, run_queued, y=Y, **body) -> dict:
    r = client.post("/v1/jobs", json={"x": X.tolist(), "y": y.tolist(), "epochs": 40,
                                      "seed": 0, **body})
    assert r.status_code == 202, r.text
    run_queued()
    job = client.get(f"/v1/jobs/{r.json()['id']}").json()
    assert job["status"] == "succeeded", job
    return client.get(f"/v1/models/{job['model_id']}").json()


@pytest.mark.parametrize("case", list(KINDS))
def test_the_onnx_graph_gives_predicts_numbers(client, run_queued, case):
    body, y = KINDS[case]
    model = _train(client, run_queued, y=y, **body)
    r = client.get(f"/v1/models/{model['id']}/export?format=onnx")
    assert r.status_code == 200, r.text
    assert f'filename="{model["id"]}.onnx"' in r.headers["content-disposition"]
    session = ort.InferenceSession(r.content, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"]
    rows = np.vstack([X, X[:5] * 1.5]).astype(np.float32)  # beyond the training rows too
    outputs = dict(zip([o.name for o in session.get_outputs()],
                       session.run(None, {"x": rows}), strict=True))
    served = client.post(f"/v1/models/{model['id']}/predict", json={"x": rows.tolist()}).json()
    want = np.asarray(served["y"], np.float32)
    scale = float(np.abs(want).max()) or 1.0
    np.testing.assert_allclose(outputs["y"], want, rtol=1e-5, atol=1e-5 * scale)
    if model["task"] == "classification":
        assert outputs["labels"].tolist() == served["labels"]
        np.testing.assert_allclose(outputs["probabilities"], served["probabilities"],
                                   atol=1e-5)
    else:
        assert set(outputs) == {"y"}


def test_what_onnx_cannot_express_is_a_422_naming_the_part(client, services, run_queued):
    model = _train(client, run_queued, model={"kind": "mlp", "hidden": [3]}, epochs=2)
    r = client.get(f"/v1/models/{model['id']}/export?format=pmml")
    assert r.status_code == 422 and r.json()["error"]["field"] == "format"
    with services.meta.session() as s:  # an activation this exporter has no operator for
        row = s.get(ModelRow, model["id"])
        row.config = {**row.config, "activation": "gelu"}
    r = client.get(f"/v1/models/{model['id']}/export?format=onnx")
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["type"] == "not_exportable" and "activation 'gelu'" in err["message"]
    r = client.get("/v1/models/mdl_000000000000000000000000/export")
    assert r.status_code == 404


# ------------------------------------------------------------ models trained on columns


PENGUIN_COLUMNS = ("species", "island", "sex", "bill_length_mm", "bill_depth_mm",
                   "flipper_length_mm", "body_mass_g")


def _penguins(target: str) -> Table:
    """palmerpenguins' table (text and blanks), ``target`` from the other columns."""
    cols = read_penguins()
    keep = [i for i, v in enumerate(cols[target]) if v is not None]

    def col(name: str):
        values = [cols[name][i] for i in keep]
        return (categorical(name, values) if name in ("species", "island", "sex")
                else numeric(name, values))

    return Table([col(n) for n in PENGUIN_COLUMNS if n != target], [col(target)])


# rows with missing cells, unseen and pooled levels, beside (some of) the training rows
HOUSE_ROWS = [{"sqft": None, "city": "Rome", "has_garage": None},
              {"sqft": 100.0, "city": "Paris", "has_garage": True},
              {"sqft": 70.5, "city": None, "has_garage": False},
              {"sqft": 170.0, "city": "Nice", "has_garage": None},
              {"sqft": None, "city": None, "has_garage": None},
              {"sqft": 1e4, "city": "Lyon", "has_garage": 1.0}]
PENGUIN_ROWS = [{"island": "Atlantis", "sex": None, "bill_length_mm": 45.0,
                 "bill_depth_mm": None, "flipper_length_mm": 200.0, "body_mass_g": None},
                {"island": None, "sex": "male", "bill_length_mm": None, "bill_depth_mm": 15.0,
                 "flipper_length_mm": None, "body_mass_g": 5000.0},
                {"island": None, "sex": None, "bill_length_mm": None, "bill_depth_mm": None,
                 "flipper_length_mm": None, "body_mass_g": None}]

TABULAR = {
    "houses, linear, a pooled level": (
        lambda: houses(n=60, seed=0, noise=1.0),
        {"standardize": True, "categorical": {"min_frequency": 7}}, "city=other"),
    "houses, polynomial, median, no indicators": (
        lambda: houses(n=60, seed=0, noise=1.0),
        {"model": {"kind": "polynomial", "degree": 2, "interactions": True},
         "standardize": True, "impute": "median", "missing_indicator": False}, "city=Nice"),
    "penguins, logistic over three labels": (
        lambda: _penguins("species"), {"model": "logistic", "optimizer": "adam", "lr": 0.05,
                                       "standardize": True}, "sex_missing"),
    "penguins, logistic over two labels": (
        lambda: _penguins("sex"), {"model": "logistic", "optimizer": "adam", "lr": 0.05,
                                   "standardize": True}, "island=Torgersen"),
    "penguins, mlp regression, levels pooled": (
        lambda: _penguins("body_mass_g"),
        {"model": {"kind": "mlp", "hidden": [4]}, "optimizer": "adam", "standardize": True,
         "categorical": {"max_categories": 2}}, "island=other"),
}


def _table_rows(table: Table, every: int) -> list[dict]:
    """Every ``every``-th row of a Table as predict's named fields (None where missing)."""
    out = []
    for i in range(0, table.rows, every):
        row: dict = {}
        for c in table.features:
            if c.kind == "categorical":
                row[c.name] = None if c.values[i] < 0 else str(c.categories[c.values[i]])
            else:
                v = float(c.values[i])
                row[c.name] = None if np.isnan(v) else v
        out.append(row)
    return out


def _feeds(session, rows: list[dict]) -> dict[str, np.ndarray]:
    """onnxruntime's inputs for named rows: one array per column, NaN or "" where missing."""
    feeds = {}
    for i in session.get_inputs():
        values = [r.get(i.name) for r in rows]
        if i.type == "tensor(string)":
            feeds[i.name] = np.array(["" if v is None else v for v in values], object)
        else:
            feeds[i.name] = np.array([np.nan if v is None else float(v) for v in values],
                                     np.float32)
    return feeds


def _run(blob: bytes, rows: list[dict]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    outputs = session.run(None, _feeds(session, rows))
    return dict(zip([o.name for o in session.get_outputs()], outputs, strict=True))


def _same_as_predict(client, model_id: str, blob: bytes, rows: list[dict]) -> dict:
    """The graph's outputs on ``rows`` against predict's: y within 1e-5, the same labels."""
    got = _run(blob, rows)
    r = client.post(f"/v1/models/{model_id}/predict",
                    json={"columns": {n: [r.get(n) for r in rows] for n in rows[0]}})
    assert r.status_code == 200, r.text
    served = r.json()
    want = np.asarray(served["y"], np.float32)
    np.testing.assert_allclose(got["y"], want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    if "probabilities" in got:
        keys = list(served["probabilities"][0])  # a labelled classifier's: by label
        np.testing.assert_allclose(got["probabilities"],
                                   [[p[k] for k in keys] for p in served["probabilities"]],
                                   atol=1e-5)
        assert got["label"].tolist() == [str(v) for v in served["labels"]]
        assert [keys[i] for i in got["labels"]] == got["label"].tolist()
    return served


@pytest.mark.parametrize("case", list(TABULAR))
def test_a_tabular_model_exports_its_pipeline(client, services, run_queued, case):
    make, job, column = TABULAR[case]
    table = make()
    r = client.post("/v1/jobs", json={"dataset_id": store_table(services, table), "seed": 0,
                                      "epochs": 40, **job})
    assert r.status_code == 202, r.text
    assert run_queued() == ["succeeded"]
    job = client.get(f"/v1/jobs/{r.json()['id']}").json()
    model = client.get(f"/v1/models/{job['model_id']}").json()
    assert column in model["feature_names"]  # the case covers what it says
    r = client.get(f"/v1/models/{model['id']}/export?format=onnx")
    assert r.status_code == 200, r.text
    session = ort.InferenceSession(r.content, providers=["CPUExecutionProvider"])
    # one input per column, named as the column: text as strings, the rest as floats
    assert [(i.name, i.type, i.shape) for i in session.get_inputs()] == [
        (c.name, "tensor(string)" if c.kind == "categorical" else "tensor(float)", ["N"])
        for c in table.features]
    extra = HOUSE_ROWS if "houses" in case else PENGUIN_ROWS
    _same_as_predict(client, model["id"], r.content, [*_table_rows(table, 3), *extra])


def _train_table(client, services, run_queued, table: Table, **job) -> dict:
    r = client.post("/v1/jobs", json={"dataset_id": store_table(services, table), "seed": 0,
                                      "epochs": 20, **job})
    assert r.status_code == 202, r.text
    assert run_queued() == ["succeeded"]
    return client.get(f"/v1/models/{client.get(r.headers['location']).json()['model_id']}"
                      ).json()


def test_what_predict_refuses_the_graph_answers_as_nan(client, services, run_queued):
    """impute: none: predict refuses a missing cell (422); a graph cannot refuse a row, so
    its answer for that row is NaN, and the other rows' are predict's."""
    table = Table([numeric("a", [1.0, 2.0, 3.0, 4.0]), categorical("b", ["u", "v", "u", "v"]),
                   boolean("c", [True, False, False, True])], [numeric("y", [1.0, 2.0, 3.0, 5.0])])
    model = _train_table(client, services, run_queued, table, impute="none")
    blob = client.get(f"/v1/models/{model['id']}/export").content
    fine = [{"a": 2.5, "b": "v", "c": True}, {"a": -1.0, "b": "unseen", "c": False}]
    _same_as_predict(client, model["id"], blob, fine)
    for row in ({"a": None, "b": "u", "c": True}, {"a": 1.0, "b": None, "c": True},
                {"a": 1.0, "b": "u", "c": None}):
        r = client.post(f"/v1/models/{model['id']}/predict", json={"rows": [row]})
        assert r.status_code == 422 and "is missing" in r.json()["error"]["message"], r.text
        y = _run(blob, [*fine, row])["y"]
        assert np.isfinite(y[:2]).all() and np.isnan(y[2]).all(), (row, y)


def test_a_column_the_graph_cannot_take_is_a_422_naming_it(client, services, run_queued):
    rows = [1.0, 2.0, 3.0, 4.0]
    # a column named as the graph's output, y
    model = _train_table(client, services, run_queued,
                         Table([numeric("y", rows)], [numeric("price", rows)]))
    r = client.get(f"/v1/models/{model['id']}/export?format=onnx")
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert (err["type"], err["field"]) == ("not_exportable", "inputs.y"), err
    assert "output 'y'" in err["message"]
    # the empty string as a level: a string input's missing cell is ""
    model = _train_table(client, services, run_queued,
                         Table([numeric("a", rows), categorical("c", ["", "u", "", "u"])],
                               [numeric("price", rows)]))
    r = client.get(f"/v1/models/{model['id']}/export?format=onnx")
    assert r.status_code == 422 and r.json()["error"]["field"] == "inputs.c", r.text
    assert "empty string" in r.json()["error"]["message"]


@pytest.fixture
def other(tmp_path):
    """A second fitserve, with its own data directory: where a model moves to."""
    app = create_app(Settings(data_dir=tmp_path / "other", workers=0, device="cpu"),
                     start_workers=False)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def _upload(client, blob: bytes, sha: str | None = None, name: str = "moved",
            content_type: str = "application/octet-stream"):
    headers = {"content-type": content_type}
    if sha != "":
        headers["X-Checkpoint-SHA256"] = sha or hashlib.sha256(blob).hexdigest()
    return client.post(f"/v1/models?name={name}", content=blob, headers=headers)


def test_a_checkpoint_moves_to_another_fitserve(client, run_queued, other):
    model = _train(client, run_queued, model={"kind": "polynomial", "degree": 2},
                   standardize=True, model_name="poly")
    ck = client.get(f"/v1/models/{model['id']}/checkpoint")
    r = _upload(other, ck.content, ck.headers["x-checkpoint-sha256"], name="poly")
    assert r.status_code == 201, r.text
    moved = r.json()
    assert r.headers["location"] == f"/v1/models/{moved['id']}"
    assert (moved["name"], moved["version"], moved["kind"]) == ("poly", 1, "polynomial")
    assert moved["job_id"] is None and moved["dataset_id"] is None
    assert moved["hyperparameters"] is None and moved["metrics"]["train_loss"] is None
    assert moved["imported"] == {"sha256": ck.headers["x-checkpoint-sha256"],
                                 "source_job_id": model["job_id"],
                                 "source_dataset_sha256": moved["imported"][
                                     "source_dataset_sha256"]}
    for key in ("weight", "bias", "normalization", "feature_names", "terms"):
        assert moved[key] == model[key], key
    assert other.get(f"/v1/models/{moved['id']}").json()["parameters"] == model["parameters"]
    x = [[0.5, 120.0], [-1.0, 80.0]]
    want = client.post("/predict", json={"model": "poly", "x": x}).json()["y"]
    assert other.post("/predict", json={"model": "poly", "x": x}).json()["y"] == want
    # a second import of a name is its next version; it can be scored like any model
    assert _upload(other, ck.content, name="poly").json()["version"] == 2
    ds = other.post("/v1/datasets", json={"x": X.tolist(), "y": Y.tolist()}).json()["id"]
    r = other.post(f"/v1/models/{moved['id']}/evaluations", json={"dataset_id": ds})
    assert r.status_code == 201 and r.json()["rows_used"] == len(X)


@pytest.mark.parametrize("case", ["houses, linear, a pooled level",
                                  "penguins, logistic over three labels"])
def test_a_tabular_model_moves_with_its_pipeline(client, services, run_queued, other, case):
    make, job, column = TABULAR[case]
    model = _train_table(client, services, run_queued, make(), model_name="tab", **job)
    ck = client.get(f"/v1/models/{model['id']}/checkpoint")
    r = _upload(other, ck.content, ck.headers["x-checkpoint-sha256"], name="tab")
    assert r.status_code == 201, r.text
    moved = other.get(f"/v1/models/{r.json()['id']}").json()
    for key in ("inputs", "feature_names", "coefficients", "normalization", "labels"):
        assert moved[key] == model[key], key
    assert column in moved["feature_names"]
    rows = HOUSE_ROWS if "houses" in case else PENGUIN_ROWS
    want = client.post("/predict", json={"model": "tab", "rows": rows}).json()
    got = other.post("/predict", json={"model": "tab", "rows": rows}).json()
    assert {k: got[k] for k in ("y", "labels", "probabilities") if k in want} == \
        {k: want[k] for k in ("y", "labels", "probabilities") if k in want}
    # and the moved model exports the same graph
    blob = other.get(f"/v1/models/{moved['id']}/export?format=onnx").content
    _same_as_predict(other, moved["id"], blob, rows)


def _checkpoint(tensors: dict, **metadata) -> bytes:
    meta = {"format": "fitserve/2", "kind": "linear",
            "config": json.dumps({"in_features": 2, "out_features": 1, "bias": True}),
            "feature_names": '["a", "b"]', "target_names": '["y"]', "normalization": "null",
            **metadata}
    return save(tensors, metadata=meta)


GOOD = {"linear.weight": np.ones((1, 2), np.float32), "linear.bias": np.zeros(1, np.float32)}
FULL = _checkpoint(GOOD)


def _pipeline(*inputs: dict, labels=None) -> str:
    """A pipeline's JSON over columns a and b (numeric, no fill unless given)."""
    cols = {c["name"]: c for c in ({"name": "a", "kind": "numeric", "fill": None,
                                    "indicator": False},
                                   {"name": "b", "kind": "numeric", "fill": None,
                                    "indicator": False}, *inputs)}
    return json.dumps({"version": 1, "inputs": list(cols.values()), "targets": ["y"],
                       "labels": labels})


BAD_CHECKPOINTS = [
        # cut short: with the file's own sha256 (a partial copy), and with the whole file's
        (FULL[:-3], None, "checkpoint", "cut short"),
        (FULL[:-3], hashlib.sha256(FULL).hexdigest(), "sha256", "changed or cut short"),
        (FULL[:20], None, "checkpoint", "cut short"),
        (FULL, "0" * 64, "sha256", "changed or cut short"),
        (FULL, "", "sha256", "X-Checkpoint-SHA256"),
        (FULL, "abc", "sha256", "not 64 hex digits"),
        (b"\x80\x04\x95" + b"\x00" * 40, None, "checkpoint", "not a safetensors file"),
        (_checkpoint({**GOOD, "linear.weight": np.ones((1, 3), np.float32)}), None,
         "checkpoint.tensors.linear.weight", "tensor 'linear.weight' is [1, 3]; its config "
         "needs [1, 2]"),
        (_checkpoint({"linear.weight": GOOD["linear.weight"]}), None,
         "checkpoint.tensors.linear.bias", "tensor 'linear.bias' is missing"),
        (_checkpoint({**GOOD, "layers.0.weight": GOOD["linear.weight"]}), None,
         "checkpoint.tensors.layers.0.weight", "not one of a linear model's"),
        (_checkpoint({**GOOD, "linear.bias": np.array([np.nan], np.float32)}), None,
         "checkpoint.tensors.linear.bias", "not finite"),
        (_checkpoint({**GOOD, "linear.bias": np.zeros(1, np.float64)}), None,
         "checkpoint.tensors.linear.bias", "is not float32"),
        (_checkpoint(GOOD, format="fitserve/1"), None, "checkpoint.format",
         "'fitserve/1' is not"),
        (save(GOOD, metadata={"kind": "linear"}), None, "checkpoint.format", "no format"),
        (_checkpoint(GOOD, kind="forest"), None, "checkpoint.kind", "kind 'forest'"),
        # a config that does not match the tensors, or is not one at all
        (_checkpoint(GOOD, config='{"in_features": 3, "out_features": 1, "bias": true}'), None,
         "checkpoint.tensors.linear.weight", "is [1, 2]; its config needs [1, 3]"),
        (_checkpoint(GOOD, config='{"in_features": 2, "out_features": 1, "bias": false}'),
         None, "checkpoint.tensors.linear.bias", "not one of a linear model's"),
        (_checkpoint(GOOD, config='{"in_features": 2, "out_features": 1, "depth": 3}'), None,
         "checkpoint.config.depth", "config depth"),
        (_checkpoint(GOOD, config='{"in_features": 0, "out_features": 1}'), None,
         "checkpoint.config.in_features", "positive integer"),
        (_checkpoint(GOOD, config="[2, 1]"), None, "checkpoint.config", "JSON object"),
        (_checkpoint(GOOD, config="{"), None, "checkpoint.config", "not JSON"),
        (_checkpoint(GOOD, kind="logistic",
                     config='{"in_features": 2, "out_features": 1, "classes": 3}'), None,
         "checkpoint.config.out_features", "3 classes has 3 outputs, not 1"),
        (_checkpoint(GOOD, feature_names='["a"]'), None, "checkpoint.feature_names",
         "feature_names has 1"),
        (_checkpoint(GOOD, target_names='["y", "z"]'), None, "checkpoint.target_names",
         "target_names has 2"),
        (_checkpoint(GOOD, normalization='{"x_mean": [0, 0], "x_std": [1, 0]}'), None,
         "checkpoint.normalization", "x_std must be finite and positive"),
        # a feature pipeline that predict would fail on later (a 500) is refused now
        (_checkpoint(GOOD, pipeline=_pipeline({"name": "a", "kind": "numeric", "fill": "abc",
                                               "indicator": False})), None,
         "checkpoint.pipeline", "'a': the fill of a numeric column is a finite number"),
        (_checkpoint(GOOD, pipeline=_pipeline({"name": "b", "kind": "categorical",
                                               "fill": None, "indicator": False,
                                               "levels": "xy"})), None,
         "checkpoint.pipeline", "'b': levels must be a list of distinct strings"),
        (_checkpoint(GOOD, pipeline=_pipeline({"name": "b", "kind": "categorical",
                                               "fill": None, "indicator": False,
                                               "levels": ["u"], "other": True})), None,
         "checkpoint.pipeline", "writes 3 columns (a, b=u, b=other), not the checkpoint's 2"),
        (_checkpoint(GOOD, pipeline=_pipeline({"name": "b", "kind": "text"})), None,
         "checkpoint.pipeline", "kind 'text' is not one of"),
        (_checkpoint(GOOD, pipeline=_pipeline(labels=["no", "yes"])), None,
         "checkpoint.pipeline", "the model is no classifier"),
        (_checkpoint(GOOD, kind="logistic", target_names='["label"]',
                     config='{"in_features": 2, "out_features": 1, "classes": 2}',
                     pipeline=_pipeline(labels=["a", "b", "c"])), None,
         "checkpoint.pipeline", "labels must be 2 strings"),
        (_checkpoint(GOOD, pipeline='{"version": 9, "inputs": []}'), None,
         "checkpoint.pipeline", "version 9"),
]
"""(file, sha256 header, the field the 422 names, words of its message). A file's bytes
(and so its sha256) vary between processes: safetensors writes its metadata in a hash map's
order; the ids do not, for xdist's workers must collect the same tests."""


@pytest.mark.parametrize(("blob", "sha", "field", "words"), BAD_CHECKPOINTS,
                         ids=[f"{field}: {words}" for _, _, field, words in BAD_CHECKPOINTS])
def test_a_bad_checkpoint_is_refused_and_nothing_is_stored(client, settings, blob, sha, field,
                                                           words):
    r = _upload(client, blob, sha)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == field and words in err["message"], err
    assert client.get("/v1/models").json()["count"] == 0
    assert list((settings.data_dir / "checkpoints").iterdir()) == []


def test_the_upload_itself_is_checked(client):
    blob = _checkpoint(GOOD)
    assert _upload(client, blob, content_type="application/json").status_code == 415
    r = _upload(client, blob, name="no spaces")
    assert r.status_code == 422 and r.json()["error"]["field"] == "name"
    r = _upload(client, blob, name="fine")
    assert r.status_code == 201, r.text
    assert load(client.get(f"/v1/models/{r.json()['id']}/checkpoint").content)[
        "linear.weight"].tolist() == [[1.0, 1.0]]
    assert client.post("/predict", json={"model": "fine", "x": [[2.0, 3.0]]}).json()["y"] == \
        [[5.0]]
