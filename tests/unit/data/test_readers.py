"""The upload readers on small frames: each format to the same columns, the numeric rule
(plain numbers stay x/y with today's sha256), the text-among-numbers rule, schema
overrides, and errors that name the row and column."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pytest

from service.data.columns import column_schema, parse_schema, table_sha256
from service.data.datasets import content_sha256
from service.data.readers import read_upload
from service.data.table import Table, table_bytes, table_from_bytes
from service.errors import InvalidInput, LimitExceeded

FRAME = pl.DataFrame({"sqft": [1200.0, None, 800.0, 950.0],
                      "city": ["Lyon", "Paris", None, "Lyon"],
                      "garage": [True, False, None, True],
                      "price": [250.0, 300.0, 120.0, 181.0]})


def read(body: bytes | Path, media: str = "csv", target: str = "price", **kw):
    return read_upload(body, media, target=[target], features=kw.pop("features", None),
                       name=None, schema=kw.pop("schema", {}),
                       max_categories=kw.pop("max_categories", 1000))


def _encoded(media: str) -> bytes:
    buf = io.BytesIO()
    if media == "csv":
        FRAME.write_csv(buf)
    elif media == "ndjson":
        FRAME.write_ndjson(buf)
    elif media == "parquet":
        FRAME.write_parquet(buf)
    else:
        FRAME.write_ipc_stream(buf)
    return buf.getvalue()


@pytest.mark.parametrize("media", ["csv", "ndjson", "parquet", "arrow"])
def test_every_format_reads_the_same_table(media):
    table = read(_encoded(media), media)
    assert isinstance(table, Table)
    kinds = {c.name: c.kind for c in table.features}
    assert kinds == {"sqft": "numeric", "city": "categorical", "garage": "boolean"}
    sqft, city, garage = table.features
    np.testing.assert_array_equal(sqft.values, np.array([1200, np.nan, 800, 950], np.float32))
    assert city.categories == ("Lyon", "Paris") and city.values.tolist() == [0, 1, -1, 0]
    np.testing.assert_array_equal(garage.values, np.array([1, 0, np.nan, 1], np.float32))
    assert table.targets[0].values.tolist() == [250, 300, 120, 181]


def test_json_records_and_columns_read_as_the_csv_does():
    csv = read(_encoded("csv"))
    rows = read(FRAME.write_json().replace('[', '{"target": "price", "rows": [', 1)
                .encode()[:-1] + b"]}", "json")
    cols = read(orjson.dumps({"target": ["price"], "columns": FRAME.to_dict(as_series=False)}),
                "json")
    assert table_sha256(csv) == table_sha256(rows) == table_sha256(cols)


def test_plain_numbers_keep_the_matrix_path_and_its_sha256():
    x, y, info = read(b"a,b,price\n1,2,3\n4,5,6.5\n")
    assert x.dtype == np.float32 and x.tolist() == [[1, 2], [4, 5]] and y.tolist() == [[3], [6.5]]
    json_form = read(b'{"x": [[1, 2], [4, 5]], "y": [[3], [6.5]], "feature_names": ["a", "b"],'
                     b' "target_names": ["price"]}', "json")
    assert content_sha256(x, y, info["feature_names"], info["target_names"]) == \
        content_sha256(json_form[0], json_form[1], ["a", "b"], ["price"])
    # Parquet of the same numbers: the same matrices (the sha256 of a numeric dataset)
    buf = io.BytesIO()
    pl.DataFrame({"a": [1, 4], "b": [2.0, 5.0], "price": [3.0, 6.5]}).write_parquet(buf)
    px, py, _ = read(buf.getvalue(), "parquet")
    assert px.tolist() == x.tolist() and py.tolist() == y.tolist()


def test_the_numeric_csv_path_reads_block_by_block(monkeypatch, tmp_path):
    import service.data.readers as readers

    monkeypatch.setattr(readers, "_BLOCK", 64)  # many blocks, cut mid-line
    data = np.random.default_rng(0).standard_normal((200, 3)).astype(np.float32)
    path = tmp_path / "n.csv"
    path.write_text("a,b,price\n" + "".join(f"{r[0]!r},{r[1]!r},{r[2]!r}\n"
                                            for r in data.tolist()))
    x, y, _ = read(path)
    np.testing.assert_array_equal(np.hstack([x, y]), data)
    path.write_text(path.read_text().replace(f"{data.tolist()[150][1]!r},", "inf,", 1))
    with pytest.raises(InvalidInput, match="CSV line 152 column 2 is not a finite number"):
        read(path)


@pytest.mark.parametrize(("body", "message"), [
    (b"a,price\n1,2\n2,3\nabc,4\n", "CSV line 4 column 1 is not a number: 'abc'; if column "
     "'a' holds categories, declare it: ?schema=a:categorical"),
    (b"a,price\nx,2\ny,\n", "target 'price' has 1 missing value, the first at CSV line 3 "
     "column 2"),
    (b"a,b,price\nx,,2\ny,NA,3\n", "column 'b' is entirely empty"),
    (b"a,price\n1,2\n1,2,3\n", "CSV line 3 has 3 cells; the header has 2"),
])
def test_bad_cells_are_named(body, message):
    with pytest.raises(InvalidInput) as e:
        read(body)
    assert message in e.value.message


def test_text_column_is_categorical_and_schema_overrides_inference():
    t = read(b"zip,kind,price\n75001,a,1\n69001,b,2\n75001,a,3\n",
             schema=parse_schema(["zip:categorical"]))
    zip_, kind = t.features
    assert (zip_.kind, zip_.categories, zip_.values.tolist()) == \
        ("categorical", ("69001", "75001"), [1, 0, 1])
    schema = {c["name"]: c for c in column_schema(t)}
    assert schema["zip"]["top"] == [{"value": "75001", "count": 2}, {"value": "69001",
                                                                    "count": 1}]
    assert schema["zip"]["distinct"] == 2 and schema["price"]["mean"] == 2.0
    with pytest.raises(InvalidInput, match="type 'text'"):
        parse_schema({"zip": "text"})


def test_too_many_categories_names_the_first_value_past_the_limit():
    with pytest.raises(LimitExceeded) as e:
        read(b"c,price\na,1\nb,2\na,3\nc,4\n", max_categories=2)
    assert "FITSERVE_MAX_CATEGORIES" in e.value.message and "CSV line 5 column 1: 'c'" in \
        e.value.message


@pytest.mark.parametrize("media", ["parquet", "arrow"])
def test_an_unreadable_binary_body_is_422_in_plain_words(media):
    with pytest.raises(InvalidInput) as e:
        read(b"not a file at all" * 4, media)
    assert e.value.message.startswith(f"the {'Parquet' if media == 'parquet' else 'Arrow'}")
    assert "Traceback" not in e.value.message and "Error {" not in e.value.message


def test_a_table_round_trips_through_its_file_with_its_sha256():
    t = read(_encoded("csv"))
    back = table_from_bytes(table_bytes(t))
    assert table_sha256(back) == table_sha256(t)
    other = read(_encoded("csv").replace(b"Paris", b"Paria"))
    assert table_sha256(other) != table_sha256(t)


def test_penguins_a_real_table_with_text_and_na_cells():
    palmerpenguins = pytest.importorskip("palmerpenguins")
    path = Path(palmerpenguins.__file__).parent / "data" / "penguins.csv"
    t = read(path, target="species")
    schema = {c["name"]: c for c in column_schema(t)}
    assert (schema["island"]["type"], schema["sex"]["type"]) == ("categorical",) * 2
    assert schema["bill_length_mm"]["type"] == "numeric"
    assert schema["bill_length_mm"]["missing"] == 2 and schema["sex"]["missing"] == 11
    assert t.targets[0].categories == ("Adelie", "Chinstrap", "Gentoo")
    assert t.rows == 344
    with pytest.raises(InvalidInput, match="target 'body_mass_g' has 2 missing values"):
        read(path, target="body_mass_g")
