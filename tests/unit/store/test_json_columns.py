"""The JSON columns of a SQLite store are read by orjson (``session.json_loads``), to the
very values ``json.loads`` gives: what orjson reads otherwise (an integer past 64 bits) or
refuses (NaN, a lone surrogate) is read by ``json.loads``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from service.store.metadata import MetadataStore
from service.store.session import json_loads

DOCS = [
    '{"a": 1, "b": [0.1, -0.0, 1.5e-300, 1e400, 2.5], "c": null, "d": true}',
    '{"a": 1, "a": 2}',
    "18446744073709551616", "-9223372036854775809", "[1234567890123456789]",
    '{"seed": 340282366920938463463374607431768211457}', "12345678901234567890.5",
    '"1234567890123456789012"', "NaN", '{"x": [Infinity, -Infinity]}', '"\\ud800"',
    '{"\\u00e9": "\\u00e9x", "n": 9223372036854775807}', '{"é": "ü"}',
    '{"search_space": {"optimizer.lr": [0, 1, 2]}, "grid_id": 3}',
]


@pytest.mark.parametrize("doc", DOCS)
def test_a_document_reads_as_json_loads_reads_it(doc):
    assert repr(json_loads(doc)) == repr(json.loads(doc))
    assert repr(json_loads(doc.encode())) == repr(json.loads(doc))


def test_a_malformed_document_raises_as_json_loads_does():
    with pytest.raises(json.JSONDecodeError):
        json_loads('{"a": ')


def test_a_json_column_round_trips_through_the_store(tmp_path: Path):
    meta = MetadataStore(f"sqlite:///{tmp_path / 'meta.db'}")
    meta.create_schema()
    spec = {"seed": 2**70 + 1, "lr": 0.1, "nan": float("nan"), "name": "é"}
    job_id = meta.create_job(tenant="default", dataset_id="ds_x", spec=spec, device="cpu",
                             epochs=1).id
    got = meta.get_job(job_id, tenant=None).spec
    assert repr(got) == repr(spec)
    with meta.engine.connect() as conn:
        stored = conn.execute(text("SELECT spec FROM jobs WHERE id = :id"),
                              {"id": job_id}).scalar_one()
    assert repr(got) == repr(json.loads(stored))
    meta.dispose()
