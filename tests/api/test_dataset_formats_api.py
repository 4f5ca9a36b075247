"""Uploads of tables (issue 12) through the ASGI app: CSV with text and NA cells, Parquet,
Arrow, NDJSON, JSON records; the schema shown; overrides; the JSON body limit; a chunked
body streamed to the spool; idempotency over the streamed hash."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
import pytest

PENGUINS = "data/penguins.csv"


def _penguins() -> bytes:
    palmerpenguins = pytest.importorskip("palmerpenguins")
    return (Path(palmerpenguins.__file__).parent / PENGUINS).read_bytes()


def _columns(body: dict) -> dict[str, dict]:
    return {c["name"]: c for c in body["columns"]}


def test_a_csv_with_text_and_na_cells_is_a_table_with_its_schema(client, settings):
    r = client.post("/v1/datasets?target=species&name=penguins", content=_penguins(),
                    headers={"content-type": "text/csv"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["rows"], body["features"], body["targets"]) == (344, 7, 1)
    cols = _columns(body)
    assert cols["species"] | {"top": None} == {
        "name": "species", "role": "target", "type": "categorical", "missing": 0,
        "distinct": 3, "top": None, "mean": None, "std": None, "min": None, "max": None}
    assert cols["species"]["top"][0] == {"value": "Adelie", "count": 152}
    assert cols["sex"]["missing"] == 11 and cols["sex"]["distinct"] == 2
    assert cols["bill_length_mm"]["type"] == "numeric" and cols["bill_length_mm"]["missing"] == 2
    assert cols["bill_length_mm"]["min"] == pytest.approx(32.1)
    assert client.get(f"/v1/datasets/{body['id']}").json() == body
    # stored as a table, and read back as one
    from service.data.table import Table

    stored = client.app.state.services.artifacts.load_dataset(body["sha256"])
    assert isinstance(stored, Table) and stored.target_names == ["species"]


def test_parquet_and_arrow_of_the_same_table_are_one_dataset(client):
    frame = pl.read_csv(io.BytesIO(_penguins()), null_values=["NA"])
    ids = set()
    for media, write in (("application/vnd.apache.parquet", frame.write_parquet),
                         ("application/vnd.apache.arrow.stream", frame.write_ipc_stream)):
        buf = io.BytesIO()
        write(buf)
        r = client.post("/v1/datasets?target=species", content=buf.getvalue(),
                        headers={"content-type": media})
        assert r.status_code in (200, 201), r.text
        ids.add(r.json()["id"])
    assert len(ids) == 1
    r = client.post("/v1/datasets?target=species", content=b"PAR1 broken",
                    headers={"content-type": "application/vnd.apache.parquet"})
    assert r.status_code == 422 and r.json()["error"]["message"].startswith(
        "the Parquet body could not be read: ")


def test_json_records_with_a_schema_and_ndjson(client):
    rows = [{"zip": 75001, "garage": "yes", "price": 3.5}, {"zip": 69001, "garage": "no",
                                                           "price": 2.0}]
    r = client.post("/v1/datasets", json={"rows": rows, "target": "price",
                                          "schema": {"zip": "categorical"}})
    assert r.status_code == 201, r.text
    cols = _columns(r.json())
    assert (cols["zip"]["type"], cols["garage"]["type"]) == ("categorical", "boolean")
    assert sorted(t["value"] for t in cols["zip"]["top"]) == ["69001", "75001"]
    nd = b'{"zip": 75001, "garage": "yes", "price": 3.5}\n{"zip": 69001, "garage": "no", ' \
         b'"price": 2.0}\n'
    r2 = client.post("/v1/datasets?target=price&schema=zip:categorical", content=nd,
                     headers={"content-type": "application/x-ndjson"})
    assert r2.status_code in (200, 201) and r2.json()["sha256"] == r.json()["sha256"], r2.text
    bad = client.post("/v1/datasets?target=price&schema=zip:text", content=nd,
                      headers={"content-type": "application/x-ndjson"})
    assert bad.status_code == 422 and "numeric, categorical, boolean" in bad.text


def test_a_json_body_over_its_limit_is_413_naming_the_other_formats(tmp_path):
    from fastapi.testclient import TestClient

    from service.config import Settings
    from service.main import create_app

    settings = Settings(data_dir=tmp_path / "d", workers=0, max_json_body_bytes=2048)
    body = b'{"x": [' + b",".join([b"[1.0]"] * 600) + b'], "y": [[1]]}'
    with TestClient(create_app(settings, start_workers=False),
                    base_url="http://127.0.0.1") as c:
        r = c.post("/v1/datasets", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text
        message = r.json()["error"]["message"]
        assert "FITSERVE_MAX_JSON_BODY_BYTES" in message and "CSV" in message and \
            "Parquet" in message and "Arrow" in message
        # chunked (no Content-Length): counted while it streams
        r = c.post("/v1/datasets", content=iter([body[:1000], body[1000:]]),
                   headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text
        # the same bytes as CSV are fine: CSV has the general limit
        csv = b"a,y\n" + b"1.0,1\n" * 600
        assert c.post("/v1/datasets?target=y", content=csv,
                      headers={"content-type": "text/csv"}).status_code == 201
    assert not list((tmp_path / "d" / "uploads").iterdir())  # no spool file left


def test_a_chunked_upload_is_stored_and_replayed_by_its_key(client, settings):
    csv = b"a,b,y\n" + b"".join(f"{i},{i % 7},{2 * i}\n".encode() for i in range(2000))
    parts = [csv[i : i + 5000] for i in range(0, len(csv), 5000)]
    headers = {"content-type": "text/csv", "Idempotency-Key": "up-1"}
    first = client.post("/v1/datasets?target=y", content=iter(parts), headers=headers)
    assert first.status_code == 201, first.text
    again = client.post("/v1/datasets?target=y", content=csv, headers=headers)
    assert (again.status_code, again.json()["id"]) == (201, first.json()["id"])
    other = client.post("/v1/datasets?target=b", content=csv, headers=headers)
    assert other.status_code == 409  # the same key and body, another query
    assert first.json()["rows"] == 2000 and _columns(first.json())["a"]["missing"] == 0
    assert not list((settings.data_dir / "uploads").iterdir())
