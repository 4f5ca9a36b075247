"""Every error says what to do (issue 16): each message a new user met, in the words it now
has. No library wording reaches a client, unknown fields get the closest known name, limits
name their setting, the CSV reader takes what Excel writes, and a shape error shows the form."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.api.middleware.predict_lane import PredictLane
from service.config import Settings
from service.data.datasets import check_table
from service.errors import LimitExceeded, TooManyJobs
from service.jobs.limits import check_active, check_budget, check_epochs, check_model
from service.main import create_app
from service.training.spec import TrainingSpec

ROWS = {"x": [[1.0], [2.0]], "y": [[1.0], [2.0]]}


def _error(r) -> dict:
    assert 400 <= r.status_code < 500, r.text
    return r.json()["error"]


# ---------------------------------------------------------------- pydantic's words, ours


@pytest.mark.parametrize(("body", "message", "field"), [
    ({"epochs": 5}, "give dataset_id, or both x and y", None),
    ({"x": [1, 2, 3, 4, 5, 6], "y": [[1], [2], [3], [4], [5], [6]]},
     "x is a list of rows, e.g. [[1.0], [2.0]]; row 0 is 1, not a list (and 5 more problems)",
     "x"),
    ({"x": "1,2", "y": [[1]]}, 'x is a list of rows, e.g. [[1.0], [2.0]]; got "1,2"', "x"),
    ({**ROWS, "x": [[1.0], ["a"]]}, 'x row 1 column 0 is not a number: "a"', "x"),
    ({**ROWS, "early_stopping": {"patience": 5}},
     "early_stopping: needs a validation split: set validation_fraction > 0", "early_stopping"),
    ({**ROWS, "epochs": "ten"}, 'epochs must be a whole number, got "ten"', "epochs"),
    ({**ROWS, "epochs": 0}, "epochs must be greater than or equal to 1, got 0", "epochs"),
    ({**ROWS, "optimizer": {"lr": 0.1}},
     "optimizer.name is required: one of 'adam', 'adamw', 'rmsprop', 'sgd'", "optimizer.name"),
    ({**ROWS, "optimizer": "sgdd"}, "optimizer.name 'sgdd' does not match any of 'sgd', "
     "'adam', 'adamw', 'rmsprop'; did you mean 'sgd'?", "optimizer.name"),
    ({**ROWS, "loss": "MSE"}, "loss must be 'mse', 'l1', 'huber', 'bce' or 'cross_entropy', "
     "got \"MSE\"; did you mean 'mse'?", "loss"),
    ({**ROWS, "model_name": "my model"}, "model_name must match the pattern "
     "'^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$': 1 to 64 letters, digits, '.', '_' or '-', "
     "starting with a letter or digit", "model_name"),
    ({**ROWS, "model": {"kind": "mlp", "hidden": []}},
     "model.hidden must have at least 1 item, got 0", "model.hidden"),
    ({**ROWS, "n_epochs": 5, "batchsize": 2},
     "unknown field 'n_epochs'; did you mean 'epochs'? (and 1 more problem)", "n_epochs"),
])
def test_a_job_refused_by_its_schema_says_it_in_our_words(client, body, message, field):
    err = _error(client.post("/v1/jobs", json=body))
    assert err["message"] == message
    assert err.get("field") == field


@pytest.mark.parametrize("body", [
    {"epochs": 5}, {"x": [1, 2], "y": [[1], [2]]}, {**ROWS, "seed": 1.5},
    {**ROWS, "optimizer": {"name": "adam", "betas": [1]}}, {**ROWS, "model": 5},
    {**ROWS, "validation_fraction": 0.9}, {**ROWS, "standardize": []},
])
def test_no_pydantic_wording_reaches_a_client(client, body):
    message = _error(client.post("/v1/jobs", json=body))["message"]
    for library in ("Value error", "Input should", "problem(s)", "Field required",
                    "Extra inputs", "valid dictionary", "List should"):
        assert library not in message


# ---------------------------------------------------------------- unknown fields


@pytest.mark.parametrize(("body", "message"), [
    ({**ROWS, "learning_rate": 0.1}, "unknown field 'learning_rate'; did you mean 'lr'?"),
    ({**ROWS, "optimizer": {"name": "sgd", "learning_rate": 0.1}},
     "unknown field 'optimizer.learning_rate'; did you mean 'optimizer.lr'?"),
    ({**ROWS, "optimizer": {"name": "adam", "beta": [0.9, 0.99]}},
     "unknown field 'optimizer.beta'; did you mean 'optimizer.betas'?"),
    ({**ROWS, "model": {"kind": "mlp", "hiden": [4]}},
     "unknown field 'model.hiden'; did you mean 'model.hidden'?"),
    ({**ROWS, "model": {"kind": "linear", "degree": 2}},
     "unknown field 'model.degree'; the fields of model are bias, kind"),
    ({**ROWS, "scheduler": {"name": "step", "step_size": 5, "gama": 0.5}},
     "unknown field 'scheduler.gama'; did you mean 'scheduler.gamma'?"),
    ({**ROWS, "early_stopping": {"patiense": 3}, "validation_fraction": 0.5},
     "unknown field 'early_stopping.patiense'; did you mean 'early_stopping.patience'?"),
    ({**ROWS, "num_epochs": 5}, "unknown field 'num_epochs'; did you mean 'epochs'?"),
    ({**ROWS, "Epochs": 5}, "unknown field 'Epochs'; did you mean 'epochs'?"),
])
def test_an_unknown_job_field_names_the_closest_known_one(client, body, message):
    assert _error(client.post("/v1/jobs", json=body))["message"] == message


def test_an_unknown_field_with_no_close_name_lists_the_fields(client):
    message = _error(client.post("/v1/jobs", json={**ROWS, "colour": "red"}))["message"]
    assert message.startswith("unknown field 'colour'; the fields are batch_size, bias, ")
    assert "epochs" in message and "lr" in message


def test_unknown_dataset_and_predict_fields_name_the_closest_known_one(client):
    r = client.post("/v1/datasets", json={**ROWS, "feature_name": ["a"]})
    assert _error(r)["message"] == "unknown field 'feature_name'; did you mean 'feature_names'?"
    r = client.post("/v1/datasets", json={**ROWS, "bogus": 1})
    assert _error(r)["message"] == \
        "unknown field 'bogus'; the fields are feature_names, name, target_names, x, y"
    r = client.post("/predict", json={"x": [[1.0]], "modle": "m"})
    assert _error(r) == {"type": "invalid_input", "field": "modle",
                         "message": "unknown field 'modle'; did you mean 'model'?"}


# ---------------------------------------------------------------- limits name their setting


def test_every_limit_names_its_setting():
    s = Settings(data_dir="/nonexistent", max_epochs=10, max_epoch_rows=100, max_degree=2,
                 max_features=5, max_hidden_layers=1, max_hidden_units=4, max_parameters=30,
                 max_trace_epochs=3, max_trace_parameters=2, max_rows=3, max_active_jobs=2)
    with pytest.raises(LimitExceeded) as e:
        check_epochs(s, 11)
    assert e.value.message == "epochs must be at most 10 (FITSERVE_MAX_EPOCHS)"
    with pytest.raises(TooManyJobs) as active:
        check_active(s, 2)
    assert "(2, FITSERVE_MAX_ACTIVE_JOBS)" in active.value.message

    def spec(**body):
        return TrainingSpec.model_validate(body)

    cases = [
        (lambda: check_budget(s, 10, 11), "FITSERVE_MAX_EPOCH_ROWS"),
        (lambda: check_model(s, spec(model={"kind": "polynomial", "degree": 3}), 1, 1),
         "FITSERVE_MAX_DEGREE"),
        (lambda: check_model(s, spec(model={"kind": "polynomial", "degree": 2}), 3, 1),
         "FITSERVE_MAX_FEATURES"),
        (lambda: check_model(s, spec(model={"kind": "mlp", "hidden": [2, 2]}), 1, 1),
         "FITSERVE_MAX_HIDDEN_LAYERS"),
        (lambda: check_model(s, spec(model={"kind": "mlp", "hidden": [5]}), 1, 1),
         "FITSERVE_MAX_HIDDEN_UNITS"),
        (lambda: check_model(s, spec(), 40, 1), "FITSERVE_MAX_PARAMETERS"),
        (lambda: check_model(s, spec(trace_epochs=4), 1, 1), "FITSERVE_MAX_TRACE_EPOCHS"),
        (lambda: check_model(s, spec(trace_epochs=1), 2, 1), "FITSERVE_MAX_TRACE_PARAMETERS"),
        (lambda: check_table(s, 4, 1, 1), "FITSERVE_MAX_ROWS"),
        (lambda: check_table(s, 1, 6, 1), "FITSERVE_MAX_FEATURES"),
    ]
    for check, setting in cases:
        with pytest.raises(LimitExceeded) as e:
            check()
        assert f"({setting})" in e.value.message


# ---------------------------------------------------------------- CSV as Excel writes it


def _csv(client, body: bytes, target: str = "y"):
    return client.post(f"/v1/datasets?target={target}", content=body,
                       headers={"content-type": "text/csv"})


@pytest.mark.parametrize("body", [
    b"a;b;y\n1;2;3\n4;5;6\n",
    b"a\tb\ty\n1\t2\t3\n4\t5\t6\n",
    b'"a";"b";"y"\r\n1;2;3\r\n4;5;6\r\n',
    "\ufeffa,b,y\n1,2,3\n4,5,6\n".encode(),  # Excel's "CSV UTF-8": a byte-order mark
    "\ufeffa;b;y\r\n1;2;3\r\n4;5;6\r\n".encode(),
])
def test_semicolons_tabs_and_a_byte_order_mark_read_as_the_comma_form_does(client, body):
    plain = _csv(client, b"a,b,y\n1,2,3\n4,5,6\n").json()
    r = _csv(client, body)
    assert r.status_code in (200, 201), r.text
    out = r.json()
    assert out["feature_names"] == ["a", "b"] and out["target_names"] == ["y"]
    assert (out["id"], out["sha256"]) == (plain["id"], plain["sha256"])


@pytest.mark.parametrize(("body", "message"), [
    (b"a b y\n1 2 3\n", "target column(s) 'y' not in the CSV header (a b y); the header is "
     "one column: separate the columns with commas (semicolons and tabs are read too)"),
    (b"a;y\n1,5;2\n", "CSV line 2 column 1 is not a number: '1,5' (write decimals with a "
     "point: 1.5)"),
    (b"a;b;y\n1;2;3\n4;5\n", "CSV line 3 has 2 cells; the header has 3 (the header's columns "
     "are separated by semicolons)"),
    (b"a,b,y\n1;2;3\n", "CSV line 2 has 1 cell; the header has 3 (the header's columns are "
     "separated by commas)"),
])
def test_a_csv_the_reader_cannot_take_says_how_to_write_it(client, body, message):
    assert _error(_csv(client, body))["message"] == message


# ---------------------------------------------------------------- predict's form


def _without_lane(services):
    app = create_app(services=services)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not PredictLane]
    return app


@pytest.fixture
def named_model(client, run_queued) -> str:
    ds = _csv(client, b"speed,load,y\n1,0,1\n0,1,2\n1,1,3\n").json()["id"]
    client.post("/v1/jobs", json={"dataset_id": ds, "epochs": 5, "model_name": "two"})
    run_queued()
    return client.get("/v1/models").json()["data"][0]["id"]


@pytest.mark.parametrize(("x", "message"), [
    ([100, 3], "model expects 2 features per row (speed, load), got 1 in row 0: x is a list "
     "of rows; send one row as [[100, 3]]"),
    ([[100], [3], [4]], "model expects 2 features per row (speed, load), got 1 in row 0: x is "
     "a list of rows, each a list of 2 numbers: [[1.0, 2.0]]"),
    ([[1, 2, 3]], "model expects 2 features per row (speed, load), got 3 in row 0: each row "
     "of x needs 2 values"),
])
def test_a_shape_error_names_the_features_and_the_form_on_every_predict_path(
        client, services, named_model, x, message):
    paths = ["/predict", f"/v1/models/{named_model}/predict"]
    with TestClient(_without_lane(services), base_url="http://127.0.0.1") as plain:
        answers = [(c.post(p, json={"x": x}).status_code, c.post(p, json={"x": x}).json())
                   for c in (client, plain) for p in paths]
    expected = (422, {"error": {"type": "shape_mismatch", "field": "x", "message": message}})
    assert answers == [expected] * 4


# ---------------------------------------------------------------- job and protocol states


def test_cancelling_a_job_that_has_ended_says_how_it_ended(client, run_queued):
    queued = client.post("/v1/jobs", json={**ROWS, "epochs": 5}).json()["id"]
    client.post(f"/v1/jobs/{queued}/cancel")
    assert _error(client.post(f"/v1/jobs/{queued}/cancel"))["message"] == \
        f"job {queued!r} is already cancelled"
    done = client.post("/v1/jobs", json={**ROWS, "epochs": 5}).json()["id"]
    run_queued()
    assert _error(client.post(f"/v1/jobs/{done}/cancel"))["message"] == \
        f"job {done!r} has already finished (succeeded); there is nothing to cancel"


@pytest.mark.parametrize(("body", "message"), [
    ({"inputs": []}, 'inputs needs at least one input tensor: [{"name": "x", "shape": '
     '[N, features], "datatype": "FP32", "data": [...]}]'),
    ({}, 'inputs is required: a list with one input tensor, {"name": "x", "shape": '
     '[N, features], "datatype": "FP32", "data": [...]}'),
])
def test_v2_without_an_input_tensor_shows_one(client, named_model, body, message):
    r = client.post("/v2/models/two/infer", json=body)
    assert (r.status_code, r.json()) == (400, {"error": message})


def test_v2_shape_errors_name_the_features(client, named_model):
    r = client.post("/v2/models/two/infer", json={"inputs": [
        {"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]})
    assert r.json()["error"] == ("input 'x': model 'two' expects 2 features per row (speed, "
                                 "load), got shape [1, 1]; send shape [N, 2]")


def test_a_job_over_the_epoch_limit_names_the_setting(client, services):
    limit = services.settings.max_epochs
    err = _error(client.post("/v1/jobs", json={"x": [[1.0], [2.0]], "y": [[1.0], [2.0]],
                                               "epochs": limit + 1}))
    assert err["message"] == f"epochs must be at most {limit} (FITSERVE_MAX_EPOCHS)", err
    assert err["field"] == "epochs"
