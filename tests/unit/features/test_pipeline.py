"""The feature pipeline alone (service/features/): fitted on the rows it is given, stored as
JSON, applied to Tables and to named JSON fields. numpy only: no app, no torch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.data.table import Table
from service.features import (
    FeatureOptions,
    Pipeline,
    fit_pipeline,
    identity_pipeline,
    prepare_table,
    select,
    table_targets,
)
from service.features.pipeline import FeatureError
from tests.tables import boolean, categorical, numeric


def _table() -> Table:
    return Table(
        [numeric("sqft", [100.0, None, 300.0, 400.0, 1000.0]),
         categorical("city", ["Lyon", "Lyon", "Paris", None, "Nice"]),
         boolean("garage", [True, False, None, True, True])],
        [numeric("price", [1.0, 2.0, 3.0, 4.0, 5.0])])


def test_fitted_on_the_rows_it_is_given_only():
    table = _table()
    train = np.array([0, 1, 2, 3])  # row 4 (sqft 1000, Nice) is a validation row
    p = prepare_table(table, FeatureOptions(), train, classify=False).pipeline
    sqft, city, garage = p.inputs
    assert sqft.fill == pytest.approx((100 + 300 + 400) / 3) and sqft.indicator
    assert city.levels == ("Lyon", "Paris") and not city.other and city.fill == "Lyon"
    assert garage.fill == pytest.approx(2 / 3)
    assert p.output_names == ["sqft", "sqft_missing", "city=Lyon", "city=Paris",
                              "city_missing", "garage", "garage_missing"]
    x = p.transform(table)
    assert x.dtype == np.float32 and x.shape == (5, 7)
    # the validation row's Nice was never seen: no column of its own, no other: all zeros
    np.testing.assert_allclose(x[4], [1000, 0, 0, 0, 0, 1, 0])
    np.testing.assert_allclose(x[3], [400, 0, 1, 0, 1, 1, 0])  # missing city: Lyon, flagged


def test_rare_and_unseen_levels_share_the_other_column():
    city = categorical("city", ["a"] * 5 + ["b"] * 4 + ["c"] * 2 + ["d"])
    table = Table([city], [numeric("y", [0.0] * 12)])
    p = fit_pipeline(table, FeatureOptions(min_frequency=3))
    assert p.output_names == ["city=a", "city=b", "city=other"]
    x = p.fields({"city": ["b", "c", "zzz", None]}, 4)
    np.testing.assert_array_equal(x, [[0, 1, 0], [0, 0, 1], [0, 0, 1], [1, 0, 0]])
    capped = fit_pipeline(table, FeatureOptions(max_categories=2))  # a, and other
    assert capped.output_names == ["city=a", "city=other"]


def test_median_and_no_indicator():
    table = Table([numeric("v", [1.0, 2.0, 10.0, None])], [numeric("y", [0.0] * 4)])
    p = fit_pipeline(table, FeatureOptions(impute="median", missing_indicator=False))
    assert p.output_names == ["v"] and p.inputs[0].fill == 2.0
    np.testing.assert_array_equal(p.transform(table)[:, 0], [1, 2, 10, 2])


def test_impute_none_refuses_blanks_at_fit_and_at_predict():
    with pytest.raises(FeatureError, match="missing in training row 1.*impute: none") as e:
        fit_pipeline(_table(), FeatureOptions(impute="none"))
    assert e.value.field == "impute"
    clean = Table([numeric("sqft", [1.0, 2.0]), categorical("city", ["a", "b"])],
                  [numeric("y", [0.0, 1.0])])
    p = fit_pipeline(clean, FeatureOptions(impute="none"))
    with pytest.raises(FeatureError, match=r"row 1: 'sqft' is missing") as e:
        p.fields({"sqft": [1.0, None], "city": ["a", "b"]}, 2)
    assert e.value.field == "sqft"
    with pytest.raises(FeatureError, match="'city' is missing"):
        p.fields({"sqft": [1.0]}, 1)  # a field left out altogether


def test_json_round_trip_and_version():
    p = prepare_table(_table(), FeatureOptions(min_frequency=2), None, False).pipeline
    data = json.loads(json.dumps(p.to_json()))
    assert data["version"] == 1
    back = Pipeline.from_json(data)
    assert back == p
    rows = {"sqft": [120, None], "city": ["Paris", "Nice"], "garage": [True, None]}
    np.testing.assert_array_equal(back.fields(rows, 2), p.fields(rows, 2))
    with pytest.raises(ValueError, match="version 2"):
        Pipeline.from_json({**data, "version": 2})


def test_json_cells_name_the_row_and_field():
    p = fit_pipeline(_table(), FeatureOptions())
    for columns, needle in (({"sqft": [1, "big"]}, "row 1: 'sqft' is numeric"),
                            ({"garage": [True, 2]}, "row 1: 'garage' is boolean"),
                            ({"city": [[1]]}, "row 0: 'city' is categorical"),
                            ({"sqft": [1e39]}, "overflows float32")):
        with pytest.raises(FeatureError, match=needle):
            p.fields(columns, len(next(iter(columns.values()))))
    # numbers as levels, booleans as 0/1
    x = p.fields({"city": [75001], "garage": [False], "sqft": [5]}, 1)
    assert x[0, p.output_names.index("garage")] == 0.0


def test_schema_overrides_retype_columns():
    table = Table([numeric("zip", [75001.0, 69001.0, 75001.0]),
                   categorical("rooms", ["1", "2", "3"])], [numeric("y", [1.0, 2.0, 3.0])])
    chosen = select(table, FeatureOptions(schema={"zip": "categorical", "rooms": "numeric"}))
    p = fit_pipeline(chosen, FeatureOptions())
    assert p.output_names == ["zip=69001", "zip=75001", "rooms"]
    np.testing.assert_array_equal(p.transform(table), [[0, 1, 1], [1, 0, 2], [0, 1, 3]])
    np.testing.assert_array_equal(p.fields({"zip": [69001], "rooms": [4]}, 1), [[1, 0, 4]])
    with pytest.raises(FeatureError, match="'nope'") as e:
        select(table, FeatureOptions(features=("nope",)))
    assert e.value.field == "features"


def test_class_labels_of_text_numbers_and_booleans():
    t = Table([numeric("a", [0.0, 1.0, 2.0])], [categorical("sp", ["b", "a", "b"])])
    y, labels = table_targets(t, classify=True)
    assert labels == ("a", "b") and y[:, 0].tolist() == [1, 0, 1]
    t = Table([numeric("a", [0.0, 1.0, 2.0])], [numeric("grade", [3.0, 1.0, 3.0])])
    assert table_targets(t, classify=True)[1] == (1, 3)
    with pytest.raises(FeatureError, match="label 'c' is not one"):
        table_targets(Table([], [categorical("sp", ["c"])]), True, ("a", "b"))
    with pytest.raises(FeatureError, match="must be numeric"):
        table_targets(Table([], [categorical("sp", ["c"])]), False)


def test_the_identity_pipeline_passes_numbers_as_sent():
    p = identity_pipeline(["a", "b"])
    assert p.identity and p.output_names == ["a", "b"]
    np.testing.assert_array_equal(p.fields({"b": [2.5], "a": [1]}, 1), [[1, 2.5]])
    with pytest.raises(FeatureError, match="'b' is missing"):
        p.fields({"a": [1]}, 1)


def test_a_categorical_column_blank_on_every_training_row_is_refused_by_name():
    # its only value is in a validation row: there is no level to learn, and no fill
    table = Table([numeric("sqft", [1.0, 2.0, 3.0]), categorical("city", [None, None, "a"])],
                  [numeric("y", [0.0, 1.0, 2.0])])
    with pytest.raises(FeatureError, match="'city' has no value in the training rows") as e:
        prepare_table(table, FeatureOptions(), np.array([0, 1]), classify=False)
    assert e.value.field == "features"
