"""Property tests of predict validation through the ASGI app (the fast lane serves both
predict routes): valid rows give exactly x @ W.T + b of the stored model, in float32; anything
else is a 4xx in the one error shape, never a 5xx and never a wrong number."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import hypothesis
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import event, given
from hypothesis import strategies as st

from service.config import Settings
from service.main import create_app
from service.worker.runner import run_job
from tests.helpers import make_linear_data
from tests.security.conftest import SECURITY
from tests.security.inputs import (
    BAD_CELLS,
    F32_MAX,
    SHAPES,
    assert_error_shape,
    dumps,
    good_cells,
    is_strict_json,
    matrices,
    matrix_rows,
    misshapen,
    with_bad_cell,
)

EPS32 = float(np.finfo(np.float32).eps)
ROUTES = ("by_id", "by_name", "latest")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict]]:
    """One app and one fitted 3-feature, 2-target model for the module (predicting changes
    nothing these tests read): the client, and the model's public record."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("predict-input") / "data", workers=0,
                        device="cpu")
    app = create_app(settings, start_workers=False)
    services = app.state.services
    x, y = make_linear_data(24, np.array([[1.5, -2.0, 0.5], [0.25, 3.0, -1.0]]),
                            np.array([0.5, -1.0]), noise=0.01, seed=0)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        r = client.post("/v1/jobs", json={"x": x.tolist(), "y": y.tolist(), "epochs": 200,
                                          "seed": 0, "lr": 0.1, "model_name": "fuzzed"})
        assert r.status_code == 202, r.text
        job = services.meta.claim_next("test-worker")
        assert job is not None
        assert run_job(job, "test-worker", services.meta, services.artifacts,
                       notify=services.on_event) == "succeeded"
        model_id = client.get(r.headers["location"]).json()["model_id"]
        yield client, client.get(f"/v1/models/{model_id}").json()


@pytest.fixture
def client(served: tuple[TestClient, dict]) -> TestClient:
    return served[0]


@pytest.fixture
def model(served: tuple[TestClient, dict]) -> dict[str, Any]:
    return served[1]


def _post(client, model: dict[str, Any], route: str, body: Any):
    raw = dumps(body)
    if route == "by_id":
        path = f"/v1/models/{model['id']}/predict"
    else:
        path = "/predict"
        if route == "by_name" and isinstance(body, dict):
            raw = dumps({"model": model["name"], **body})
    return raw, client.post(path, content=raw, headers={"content-type": "application/json"})


def _expected(model: dict[str, Any], rows: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """x @ W.T + b from the stored weights, in float64 from the float32 inputs, and a bound
    on float32's rounding error for each value."""
    w = np.array(model["weight"], np.float64)
    b = np.array(model["bias"], np.float64)
    x = np.array(rows, np.float64).astype(np.float32).astype(np.float64)
    scale = np.abs(x) @ np.abs(w).T + np.abs(b)
    return x @ w.T + b, 4 * (w.shape[1] + 1) * EPS32 * scale


def _predict_and_check(client, model: dict[str, Any], route: str, body: Any) -> None:
    raw, r = _post(client, model, route, body)
    rows = matrix_rows(body.get("x")) if isinstance(body, dict) and set(body) == {"x"} else None
    if rows is None or len(rows[0]) != len(model["weight"][0]):
        event(f"invalid -> {r.status_code}")
        assert_error_shape(r.status_code, r.json(), r.text)
        assert r.status_code == (422 if is_strict_json(raw) else 400), r.text
        return
    y, tolerance = _expected(model, rows)
    hypothesis.assume(not np.any((np.abs(y) > F32_MAX * 0.999) & (np.abs(y) < F32_MAX * 1.001)))
    if np.any(np.abs(y) >= F32_MAX):
        event(f"overflowing -> {r.status_code}")
        assert_error_shape(r.status_code, r.json(), r.text)  # never null or inf as a number
        assert r.status_code == 422, r.text
        return
    event(f"valid -> {r.status_code}")
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["model_id"], out["model_name"]) == (model["id"], "fuzzed")
    got = np.array(out["y"], np.float64)
    assert got.shape == y.shape
    assert np.all(np.abs(got - y) <= tolerance), (got, y, tolerance)


moderate = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


big = st.floats(min_value=1e37, max_value=3e38).flatmap(lambda v: st.sampled_from([v, -v]))


@pytest.mark.parametrize("cells", ["moderate", "any_float32", "near_the_end"])
@given(data=st.data())
@hypothesis.settings(SECURITY, max_examples=40)
def test_valid_rows_predict_x_times_w_plus_b(client, model, cells: str, data) -> None:
    # near float32's end, x @ W.T + b overflows: that must be a 422, never null or inf
    strategy = {"moderate": moderate, "any_float32": good_cells,
                "near_the_end": st.one_of(big, moderate)}[cells]
    x = data.draw(matrices(st.integers(1, 8), st.just(3), strategy))
    _predict_and_check(client, model, data.draw(st.sampled_from(ROUTES)), {"x": x})


@pytest.mark.parametrize("kind", sorted(BAD_CELLS))
@given(data=st.data())
@hypothesis.settings(SECURITY, max_examples=20)
def test_one_bad_cell_is_a_4xx(client, model, kind: str, data) -> None:
    x = data.draw(with_bad_cell(data.draw(matrices(st.integers(1, 4), st.just(3))), kind))
    _predict_and_check(client, model, data.draw(st.sampled_from(ROUTES)), {"x": x})


@pytest.mark.parametrize("how", (*SHAPES, "width"))
@given(data=st.data())
@hypothesis.settings(SECURITY, max_examples=15)
def test_misshapen_rows_are_a_4xx(client, model, how: str, data) -> None:
    if how == "width":  # well-formed, but not the model's 3 features
        x = data.draw(matrices(st.integers(1, 4), st.sampled_from([1, 2, 4, 7])))
    else:
        x = data.draw(misshapen(data.draw(matrices(st.integers(1, 4), st.just(3))), how))
    _predict_and_check(client, model, data.draw(st.sampled_from(ROUTES)), {"x": x})


@given(body=st.one_of(
    st.none(), st.integers(), st.text(max_size=6), st.lists(st.integers(), max_size=3),
    st.fixed_dictionaries({"x": st.just([[1.0, 2.0, 3.0]])},
                          optional={"model": st.one_of(st.integers(), st.none(), st.just(""),
                                                       st.lists(st.text(max_size=2))),
                                    "extra": st.integers()}),
    st.dictionaries(st.text(max_size=5).filter(lambda k: k != "x"), st.integers(), max_size=3),
))
@SECURITY
def test_bodies_that_are_not_a_predict_request_are_a_4xx(client, model, body: Any) -> None:
    raw, r = _post(client, model, "latest", body)
    plain = isinstance(body, dict) and set(body) == {"x"}
    # a model reference that is not a non-empty string, or an unknown field: 422 naming it
    event(f"{'plain' if plain else 'invalid'} -> {r.status_code}")
    if plain:
        assert r.status_code == 200, r.text
        return
    if isinstance(body, dict) and set(body) == {"x", "model"} and body["model"] is None:
        assert r.status_code == 200, r.text  # null: the latest model, as when omitted
        return
    assert_error_shape(r.status_code, r.json(), r.text)
    assert r.status_code == 422, r.text
