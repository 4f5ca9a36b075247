"""fitserve against scikit-learn on the same typed data (issue 12's evidence): a
``ColumnTransformer`` of ``SimpleImputer`` + ``OneHotEncoder`` + ``StandardScaler`` feeding
``LinearRegression`` / ``LogisticRegression``, both trained to convergence, give the same
predictions. fitserve's side is the whole path: a Table dataset, POST /v1/jobs, the worker's
pipeline fitted on the training rows and stored in the checkpoint, named-field predict.

Data: palmerpenguins' penguins.csv (the package's own file: text columns, blanks), and a
synthetic houses table whose predict rows carry unseen cities and missing fields.
Tolerances: regression predictions within 1e-3 relative (the closed form runs SGD to its
fixed point); logistic probabilities within 1e-3 relative and 2e-4 absolute (400 full-batch
Adam epochs reach float32's floor here: about 8e-5 absolute against lbfgs at tol 1e-12).
"""

from __future__ import annotations

import numpy as np
import pytest

from service.data.table import Table
from tests.tables import categorical, numeric, read_penguins, store_table

pytest.importorskip("palmerpenguins")

NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year"]
TEXT = ["species", "island", "sex"]


def sklearn_features(numeric_cols: list[int], text_cols: list[int], min_frequency: int = 1):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    as_float = FunctionTransformer(lambda a: np.asarray(a, np.float64))
    num = make_pipeline(as_float, SimpleImputer(strategy="mean", add_indicator=True),
                        StandardScaler())
    text = make_pipeline(
        SimpleImputer(strategy="most_frequent", add_indicator=True),
        OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=min_frequency,
                      sparse_output=False), StandardScaler())
    return ColumnTransformer([("num", num, numeric_cols), ("text", text, text_cols)])


def as_objects(rows: list[dict], names: list[str]) -> np.ndarray:
    """Rows by name as scikit-learn's object matrix: a missing field is NaN."""
    return np.array([[r.get(n, np.nan) if r.get(n) is not None else np.nan for n in names]
                     for r in rows], dtype=object)


def penguin_rows(target: str) -> list[dict]:
    cols = read_penguins()
    rows = [dict(zip(cols, values, strict=True)) for values in zip(*cols.values(), strict=True)]
    return [r for r in rows if r[target] is not None]


def rows_table(rows: list[dict], features: list[str], target: str, text: set[str]) -> Table:
    def col(name: str):
        values = [r.get(name) for r in rows]
        return categorical(name, values) if name in text else numeric(name, values)

    return Table([col(n) for n in features], [col(target)], "penguins")


def train(client, services, run_queued, table: Table, **job) -> dict:
    dataset = store_table(services, table)
    r = client.post("/v1/jobs", json={"dataset_id": dataset, "seed": 0, **job})
    assert r.status_code == 202, r.text
    assert run_queued() == ["succeeded"], client.get(f"/v1/jobs/{r.json()['id']}").json()
    return client.get(f"/v1/jobs/{r.json()['id']}").json()


def test_linear_regression_on_penguins_matches_sklearn(client, services, run_queued):
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline

    features = [n for n in NUMERIC + TEXT if n != "body_mass_g"]
    rows = penguin_rows("body_mass_g")  # the target is never blank; features are (sex)
    job = train(client, services, run_queued,
                rows_table(rows, features, "body_mass_g", set(TEXT)),
                epochs=200_000, log_every=1000, optimizer={"name": "sgd", "lr": 0.1})
    assert job["engine_used"] == "closed_form" and job["hyperparameters"]["standardize"]

    text_cols = [i for i, n in enumerate(features) if n in TEXT]
    ref = make_pipeline(sklearn_features(
        [i for i in range(len(features)) if i not in text_cols], text_cols),
        LinearRegression())
    ref.fit(as_objects(rows, features), np.array([r["body_mass_g"] for r in rows]))
    asked = [*rows, {"species": "Gentoo", "flipper_length_mm": 220.0},  # the rest imputed
             {"species": "Adelie", "island": "Dream", "sex": None, "year": 2008.0,
              "bill_length_mm": 40.0, "bill_depth_mm": 18.0, "flipper_length_mm": 190.0}]
    want = ref.predict(as_objects(asked, features))
    r = client.post(f"/v1/models/{job['model_id']}/predict", json={"rows": asked})
    assert r.status_code == 200, r.text
    got = np.array(r.json()["y"])[:, 0]
    np.testing.assert_allclose(got, want, rtol=1e-3)


def test_logistic_regression_on_penguins_matches_sklearn(client, services, run_queued):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    features = ["species", "island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm",
                "body_mass_g"]
    rows = penguin_rows("sex")
    job = train(client, services, run_queued, rows_table(rows, features, "sex", set(TEXT)),
                model="logistic", epochs=400, log_every=100,
                optimizer={"name": "adam", "lr": 0.3})
    model = client.get(f"/v1/models/{job['model_id']}").json()
    assert model["labels"] == ["female", "male"] and set(model["coefficients"]) == {"male"}

    ref = make_pipeline(sklearn_features([2, 3, 4, 5], [0, 1]),
                        LogisticRegression(C=np.inf, tol=1e-12, max_iter=100_000))
    ref.fit(as_objects(rows, features), np.array([r["sex"] for r in rows]))
    asked = [*rows[::7], {"species": "Chinstrap", "bill_length_mm": 50.0}]
    want = ref.predict_proba(as_objects(asked, features))
    out = client.post(f"/v1/models/{job['model_id']}/predict",
                      json={"columns": {n: [r.get(n) for r in asked] for n in features}}
                      ).json()
    got = np.array([[p["female"], p["male"]] for p in out["probabilities"]])
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=2e-4)
    assert out["labels"] == list(ref.predict(as_objects(asked, features)))


def houses(seed: int = 1) -> tuple[list[dict], list[float]]:
    """Cities with two rare ones (pooled into other at min_frequency 4); blanks in sqft,
    garage and city."""
    rng = np.random.default_rng(seed)
    cities = ["Lyon"] * 30 + ["Paris"] * 25 + ["Nice"] * 3 + ["Metz"] * 2
    rng.shuffle(cities)
    rows, price = [], []
    for i, city in enumerate(cities):
        sqft, garage = float(rng.uniform(40, 200)), bool(rng.random() < 0.4)
        price.append(3 * sqft + {"Paris": 150, "Lyon": 60}.get(city, 20) + 25 * garage
                     + float(rng.normal(0, 10)))
        row = {"sqft": sqft, "city": city, "has_garage": float(garage)}
        if i % 9 == 4:
            row["sqft"] = None
        if i % 11 == 3:
            row["has_garage"] = None
        if i % 17 == 5:
            row["city"] = None
        rows.append(row)
    return rows, price


def test_unseen_categories_and_missing_fields_match_sklearn(client, services, run_queued):
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline

    rows, price = houses()
    names = ["sqft", "city", "has_garage"]
    table = Table([numeric("sqft", [r["sqft"] for r in rows]),
                   categorical("city", [r["city"] for r in rows]),
                   numeric("has_garage", [r["has_garage"] for r in rows])],
                  [numeric("price", price)])
    job = train(client, services, run_queued, table, epochs=200_000, log_every=1000,
                optimizer={"name": "sgd", "lr": 0.1}, categorical={"min_frequency": 4})
    model = client.get(f"/v1/models/{job['model_id']}").json()
    assert model["feature_names"] == ["sqft", "sqft_missing", "city=Lyon", "city=Paris",
                                      "city=other", "city_missing", "has_garage",
                                      "has_garage_missing"]
    ref = make_pipeline(sklearn_features([0, 2], [1], min_frequency=4), LinearRegression())
    ref.fit(as_objects(rows, names), np.array(price))
    asked = [{"sqft": 120.0, "city": "Brest", "has_garage": 1.0},  # unseen: other
             {"sqft": 80.0, "city": "Metz"},                         # rare; garage imputed
             {"city": "Paris", "has_garage": 0.0},                   # sqft imputed
             {"sqft": 150.0}]                                        # city imputed
    want = ref.predict(as_objects(asked, names))
    got = np.array(client.post("/predict", json={"rows": asked}).json()["y"])[:, 0]
    np.testing.assert_allclose(got, want, rtol=1e-3)
