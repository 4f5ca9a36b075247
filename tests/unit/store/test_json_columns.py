"""The JSON columns of a store are read by orjson (``session.json_loads``), to the very
values ``json.loads`` gives: what orjson reads otherwise (an integer past 64 bits) or
refuses (NaN, a lone surrogate) is read by ``json.loads``; and written by orjson
(``session.json_dumps``), to text that reads as what ``json.dumps`` wrote reads: what
orjson writes otherwise (NaN as null) or refuses goes to ``json.dumps``."""

from __future__ import annotations

import enum
import json
import math
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from service.store.metadata import MetadataStore
from service.store.session import json_dumps, json_loads

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


class _Kind(enum.StrEnum):
    LINEAR = "linear"


VALUES = [
    {"a": 1, "b": [0.1, -0.0, 1.5e-300, 2.5, 1e16], "c": None, "d": True, "e": "é\u2028"},
    {"metrics": {"r2": float("nan"), "loss": None}}, [None, [float("inf")]],
    {"x": -math.inf}, {"seed": 2**70 + 1}, {"n": 9223372036854775807, "m": -(2**63)},
    {1: "int key", "s": None}, {"k": _Kind.LINEAR}, (1, 2.5, "t"), "\ud800", 0.1 + 0.2,
    {"lone": "a\udfffb"}, np.float64(1.25), {"deep": [{"a": [None, 1.0]}] * 3},
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_a_value_written_reads_as_what_json_dumps_wrote_reads(value):
    assert repr(json_loads(json_dumps(value))) == repr(json.loads(json.dumps(value)))


@pytest.mark.parametrize("value", [datetime(2026, 1, 1, tzinfo=UTC), {"s": {1, 2}},
                                   np.float32(1.5), {"a": object()}])
def test_what_json_dumps_refuses_is_refused(value):
    with pytest.raises(TypeError):
        json.dumps(value)
    with pytest.raises(TypeError):
        json_dumps(value)


class _Plain(enum.Enum):
    A = "a"


def test_an_enum_and_a_uuid_are_written_where_json_dumps_refuses_them():
    # said in json_dumps's docstring: a plain Enum's value and a UUID's string
    for value, written in ((_Plain.A, '"a"'),
                           (uuid.UUID(int=1), '"00000000-0000-0000-0000-000000000001"')):
        with pytest.raises(TypeError):
            json.dumps(value)
        assert json_dumps(value) == written
