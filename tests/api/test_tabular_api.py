"""A model trained on typed columns, through the API (issue 12): its record (coefficients
by expanded name in original units, the input schema, labels), the job options and their
422s, named predict's 422s, the inference protocol's one input per column (requests built by
tritonclient), evaluations on a Table, the plot against a chosen feature, sweeps' refusal."""

from __future__ import annotations

import numpy as np
import pytest

from service.data.table import Table
from tests.tables import boolean, categorical, houses, numeric, store_table


@pytest.fixture
def house_model(client, services, run_queued):
    dataset = store_table(services, houses(n=60, seed=0, noise=1.0))
    r = client.post("/v1/jobs", json={"dataset_id": dataset, "seed": 0, "model_name": "house",
                                      "epochs": 50_000, "optimizer": {"name": "sgd",
                                                                      "lr": 0.1}})
    assert r.status_code == 202, r.text
    assert run_queued() == ["succeeded"]
    return dataset, client.get("/v1/models?name=house").json()["data"][0]["id"]


def test_model_record_names_its_inputs_and_coefficients(client, house_model):
    _, model_id = house_model
    m = client.get(f"/v1/models/{model_id}").json()
    assert m["feature_names"] == ["sqft", "sqft_missing", "city=Lyon", "city=Nice",
                                  "city=Paris", "has_garage", "has_garage_missing"]
    coef = m["coefficients"]["price"]
    assert m["metrics"]["train_loss"] == pytest.approx(m["metrics"]["lstsq_loss"], rel=1e-4)
    assert coef == dict(zip([*m["feature_names"], "intercept"], [*m["weight"][0], m["bias"][0]],
                            strict=True))
    assert coef["sqft"] == pytest.approx(3.0, abs=0.1)  # per square metre: original units
    assert coef["city=Paris"] - coef["city=Lyon"] == pytest.approx(90.0, abs=15)
    assert set(coef) == {*m["feature_names"], "intercept"}
    inputs = {i["name"]: i for i in m["inputs"]}
    assert inputs["city"]["kind"] == "categorical" and not inputs["city"]["required"]
    assert inputs["city"]["levels"] == ["Lyon", "Nice", "Paris"]
    assert inputs["has_garage"]["kind"] == "boolean"
    # x is the pipeline's matrix: the same answer as the named row it encodes
    named = client.post("/predict", json={"rows": [{"sqft": 100, "city": "Paris",
                                                    "has_garage": True}]}).json()["y"]
    matrix = client.post("/predict", json={"x": [[100, 0, 0, 0, 1, 1, 0]]}).json()["y"]
    assert named == matrix


def test_named_predict_refuses_what_it_cannot_read(client, services, run_queued, house_model):
    bad = [({"rows": [{"sqft": 100, "ciyt": "Lyon"}]}, "rows.ciyt", "did you mean 'city'"),
           ({"rows": [{"sqft": 100, "has_garage": "yes"}]}, "rows.has_garage", "boolean"),
           ({"columns": {"sqft": 100}}, "columns.sqft", "must be a list"),
           ({"rows": [{"sqft": 1}], "columns": {}}, "columns", "not both")]
    for body, field, needle in bad:
        r = client.post("/predict", json=body)
        assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text
        assert needle in r.json()["error"]["message"]
    # impute: none: nothing is filled in, and a missing field is a 422 naming it
    clean = Table([numeric("a", [1.0, 2.0, 3.0]), categorical("b", ["u", "v", "u"])],
                  [numeric("y", [1.0, 2.0, 3.0])])
    client.post("/v1/jobs", json={"dataset_id": store_table(services, clean), "seed": 0,
                                  "impute": "none", "model_name": "strict", "epochs": 10})
    assert run_queued() == ["succeeded"]
    r = client.post("/predict", json={"model": "strict", "rows": [{"a": 1}]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "rows.b"
    assert "'b' is missing" in r.json()["error"]["message"]


def test_job_options_are_checked_at_submit(client, services):
    dataset = store_table(services, houses(n=20))
    for options, field in (({"features": ["sqft", "zip"]}, "features"),
                           ({"schema": {"zip": "categorical"}}, "schema"),
                           ({"schema": {"city": "text"}}, "schema.city"),
                           ({"schema": {"city": "numeric"}}, "schema"),
                           ({"impute": "none"}, "impute"),
                           ({"impute": "mode"}, "impute"),
                           ({"categorical": {"min_frequency": 0}},
                            "categorical.min_frequency")):
        r = client.post("/v1/jobs", json={"dataset_id": dataset, **options})
        assert r.status_code == 422, (options, r.text)
        assert r.json()["error"]["field"] == field, (options, r.json())
    r = client.post("/v1/jobs", json={"dataset_id": dataset, "features": ["sqft", "city"],
                                      "schema": {"has_garage": "categorical"}})
    assert r.status_code == 202, r.text
    hp = r.json()["hyperparameters"]
    assert hp["standardize"] is True and hp["schema"] == {"has_garage": "categorical"}


def test_v2_takes_one_input_per_column_from_tritonclient(client, house_model):
    import tritonclient.http as triton

    _, model_id = house_model
    meta = client.get("/v2/models/house").json()
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [
        ("sqft", "FP32"), ("city", "BYTES"), ("has_garage", "BOOL")]
    sqft = triton.InferInput("sqft", [3], "FP32")
    sqft.set_data_from_numpy(np.array([100, 60, np.nan], np.float32), binary_data=True)
    city = triton.InferInput("city", [3], "BYTES")
    city.set_data_from_numpy(np.array([b"Paris", b"Brest", b"Lyon"], dtype=object),
                             binary_data=True)
    garage = triton.InferInput("has_garage", [3], "BOOL")
    garage.set_data_from_numpy(np.array([True, False, True]), binary_data=False)
    body, json_size = triton.InferenceServerClient.generate_request_body(
        [sqft, city, garage], outputs=[triton.InferRequestedOutput("y", binary_data=False)])
    r = client.post("/v2/models/house/infer", content=body,
                    headers={"Inference-Header-Content-Length": str(json_size)})
    assert r.status_code == 200, r.text
    got = triton.InferenceServerClient.parse_response_body(r.content).as_numpy("y")
    rows = [{"sqft": 100, "city": "Paris", "has_garage": True},
            {"sqft": 60, "city": "Brest", "has_garage": False},
            {"city": "Lyon", "has_garage": True}]
    want = client.post(f"/v1/models/{model_id}/predict", json={"rows": rows}).json()["y"]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    wrong = {"inputs": [{"name": "town", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}
    r = client.post("/v2/models/house/infer", json=wrong)
    assert r.status_code == 400 and "unexpected input 'town'" in r.json()["error"]


def test_evaluation_and_plot_of_a_tabular_model(client, services, house_model):
    dataset, model_id = house_model
    other = store_table(services, houses(n=30, seed=5, noise=1.0))
    r = client.post(f"/v1/models/{model_id}/evaluations", json={"dataset_id": other})
    assert r.status_code in (200, 201), r.text
    assert r.json()["metrics"]["r2"] > 0.8 and r.json()["rows_used"] == 30
    png = client.get(f"/v1/models/{model_id}/plot.png?feature=sqft")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    r = client.get(f"/v1/models/{model_id}/plot.png?feature=city")
    assert r.status_code == 422 and "numeric inputs: sqft, has_garage" in r.text
    r = client.post("/v1/sweeps", json={"job": {"dataset_id": dataset},
                                        "search_space": {"epochs": {"int": [1, 5]}}})
    assert r.status_code == 202, r.text  # sweeps take typed datasets too (test_sweeps_api)


def test_numbers_as_class_labels(client, services, run_queued):
    table = Table([numeric("x", [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]),
                   boolean("flag", [True, False, True, False, True, None])],
                  [numeric("grade", [3.0, 3.0, 7.0, 7.0, 9.0, 9.0])])
    client.post("/v1/jobs", json={"dataset_id": store_table(services, table), "seed": 0,
                                  "model": "logistic", "epochs": 20, "model_name": "g"})
    assert run_queued() == ["succeeded"]
    out = client.post("/predict", json={"model": "g", "rows": [{"x": 4.5}]}).json()
    assert out["labels"][0] in (3, 7, 9) and set(out["probabilities"][0]) == {"3", "7", "9"}
    # /v2 answers the labels too: a BYTES output, in JSON and in the binary tail
    import tritonclient.http as triton

    meta = client.get("/v2/models/g").json()
    assert {"name": "label", "datatype": "BYTES", "shape": [-1, 1]} in meta["outputs"]
    # (a column named "x" is the matrix input's name: the expanded rows x, flag, flag_missing)
    rows = [{"x": 0.5, "flag": False}, {"x": 4.5, "flag": True}]
    want = client.post("/predict", json={"model": "g", "rows": rows}).json()["labels"]
    matrix = [0.5, 0.0, 0.0, 4.5, 1.0, 0.0]
    x = {"name": "x", "shape": [2, 3], "datatype": "FP32", "data": matrix}
    r = client.post("/v2/models/g/infer", json={"inputs": [x]})
    assert r.status_code == 200, r.text
    label = next(o for o in r.json()["outputs"] if o["name"] == "label")
    assert label["datatype"] == "BYTES" and label["data"] == [str(v) for v in want]
    body, json_size = triton.InferenceServerClient.generate_request_body(
        [triton.InferInput("x", [2, 3], "FP32").set_data_from_numpy(
            np.array(matrix, np.float32).reshape(2, 3))],
        outputs=[triton.InferRequestedOutput("label", binary_data=True)])
    r = client.post("/v2/models/g/infer", content=body,
                    headers={"Inference-Header-Content-Length": str(json_size)})
    assert r.status_code == 200, r.text
    got = triton.InferenceServerClient.parse_response_body(
        r.content, header_length=int(r.headers["inference-header-content-length"]))
    assert [b.decode() for b in got.as_numpy("label").ravel()] == [str(v) for v in want]
    # a lone "x" of one value a row is the column named x (flag imputed), not the matrix
    alone = client.post("/predict", json={"model": "g", "rows": [{"x": 0.5}, {"x": 4.5}]})
    for shape in ([2], [2, 1]):
        x = {"name": "x", "shape": shape, "datatype": "FP32", "data": [0.5, 4.5]}
        r = client.post("/v2/models/g/infer", json={"inputs": [x]})
        assert r.status_code == 200, r.text
        probs = next(o for o in r.json()["outputs"] if o["name"] == "probabilities")
        assert probs["data"] == pytest.approx([p for row in alone.json()["probabilities"]
                                               for p in row.values()], rel=1e-6), r.text
