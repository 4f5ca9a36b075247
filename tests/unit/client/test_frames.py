"""The client sends DataFrames (pandas, polars) and Parquet/Arrow files as upload bodies,
and DataFrames or records as named-field predict bodies (service/client/frames.py)."""

from __future__ import annotations

import io

import httpx
import orjson
import polars as pl
import pytest

from service.client import Client

FRAME = pl.DataFrame({"sqft": [1200.0, None], "city": ["Lyon", None], "price": [3.0, 2.0]})


def _capture() -> tuple[list[httpx.Request], httpx.MockTransport]:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"id": "ds_1", "y": [[1.0]]})

    return seen, httpx.MockTransport(answer)


def _sent_frame(request: httpx.Request) -> pl.DataFrame:
    assert request.headers["content-type"] == "application/vnd.apache.arrow.stream"
    return pl.read_ipc_stream(io.BytesIO(request.content))


def test_dataframes_and_files_upload_as_arrow_or_parquet(tmp_path):
    pd = pytest.importorskip("pandas")
    seen, transport = _capture()
    FRAME.write_parquet(tmp_path / "houses.parquet")
    with Client("http://fs", transport=transport) as fs:
        fs.upload_table(FRAME, "price", schema={"city": "categorical"})
        fs.upload_table(pd.DataFrame(FRAME.to_dict(as_series=False)), ["price"])
        fs.upload_table(tmp_path / "houses.parquet", "price", name="houses")
        with pytest.raises(ValueError, match=".parquet"):
            fs.upload_table(tmp_path / "houses.xlsx", "price")
    assert _sent_frame(seen[0]).equals(FRAME)
    assert seen[0].url.params.get_list("schema") == ["city:categorical"]
    # pandas: Arrow when pyarrow (or polars with pyarrow) is there to convert it, else CSV
    pandas_body = io.BytesIO(seen[1].content)
    sent = (pl.read_csv(pandas_body) if seen[1].headers["content-type"] == "text/csv"
            else pl.read_ipc_stream(pandas_body))
    assert sent.select("city", "price").equals(FRAME.select("city", "price"))
    assert seen[2].headers["content-type"] == "application/vnd.apache.parquet"
    assert pl.read_parquet(io.BytesIO(seen[2].content)).equals(FRAME)


def test_predict_sends_frames_as_columns_and_records_as_rows():
    pd = pytest.importorskip("pandas")
    seen, transport = _capture()
    with Client("http://fs", transport=transport) as fs:
        fs.predict(FRAME.drop("price"), model="houses")
        fs.predict(pd.DataFrame({"sqft": [1200.0, float("nan")], "city": ["Lyon", None]}))
        fs.predict([{"sqft": 1200, "city": "Lyon"}])
        fs.predict([[1.0, 2.0]])
    bodies = [orjson.loads(r.content) for r in seen]
    assert bodies[0] == {"columns": {"sqft": [1200.0, None], "city": ["Lyon", None]},
                         "model": "houses"}
    assert bodies[1] == {"columns": {"sqft": [1200.0, None], "city": ["Lyon", None]}}
    assert bodies[2] == {"rows": [{"sqft": 1200, "city": "Lyon"}]}
    assert bodies[3] == {"x": [[1.0, 2.0]]}
