"""A checkpoint changed on disk, end to end: after a restart (so that every model is loaded
from disk again) predict answers a clear 503 naming the checksum, never other numbers; the
untouched models serve exactly what they served before."""

from __future__ import annotations

import json

import pytest
from safetensors.numpy import load, save

from tests.helpers import seed_example, wait_for
from tests.security.conftest import StartServer

pytestmark = pytest.mark.e2e

X = [[3.3], [7.0]]


def _other_weights(blob: bytes) -> bytes:
    """A valid safetensors file of the same shape and metadata, with other numbers: the
    tampering a format check alone would not catch."""
    tensors = {k: (v * 2 + 1).astype(v.dtype) for k, v in load(blob).items()}
    n = int.from_bytes(blob[:8], "little")  # the header: its length, then JSON
    meta = json.loads(blob[8 : 8 + n]).get("__metadata__")
    return save(tensors, metadata=meta)


def _flip_last_byte(blob: bytes) -> bytes:
    return blob[:-1] + bytes([blob[-1] ^ 0x01])


def _truncate(blob: bytes) -> bytes:
    return blob[: len(blob) // 2]


TAMPERINGS = {"other_weights": _other_weights, "flipped_bit": _flip_last_byte,
              "truncated": _truncate}


def test_a_changed_checkpoint_is_refused_after_a_restart(
    start_server: StartServer, client_for
) -> None:
    server = start_server(workers=1)
    http = client_for(server)
    d = seed_example()
    ds = http.post("/v1/datasets", json={"x": d["x"], "y": d["y"]}).json()
    names = [*TAMPERINGS, "untouched"]
    jobs = [http.post("/v1/jobs", json={"dataset_id": ds["id"], "epochs": 100, "seed": i,
                                        "model_name": name}).json()
            for i, name in enumerate(names)]
    models = {}
    for name, job in zip(names, jobs, strict=True):
        done = wait_for(lambda j=job: (r := http.get(f"/v1/jobs/{j['id']}").json())["status"]
                        in ("succeeded", "failed") and r)
        assert done["status"] == "succeeded", done
        models[name] = done["model_id"]
    before = {name: http.post(f"/v1/models/{mid}/predict", json={"x": X}).json()["y"]
              for name, mid in models.items()}
    assert len({str(y) for y in before.values()}) == len(names)  # four different models
    server.stop()

    for name, tamper in TAMPERINGS.items():
        path = server.data_dir / "checkpoints" / f"{models[name]}.safetensors"
        path.write_bytes(tamper(path.read_bytes()))

    again = start_server(workers=0, data_dir=server.data_dir)
    http = client_for(again)
    for name in TAMPERINGS:
        mid = models[name]
        for _ in range(2):  # refused every time, not once and then served from memory
            for r in (http.post(f"/v1/models/{mid}/predict", json={"x": X}),
                      http.post("/predict", json={"model": name, "x": X})):
                assert r.status_code == 503, (name, r.text)
                err = r.json()["error"]
                assert err["type"] == "model_unavailable", err
                assert "checksum" in err["message"] and mid in err["message"], err
                assert str(again.data_dir) not in err["message"], err
        r = http.get(f"/v1/models/{mid}/checkpoint")  # nor is the changed file handed out
        assert r.status_code == 503 and "checksum" in r.json()["error"]["message"], r.text
        record = http.get(f"/v1/models/{mid}")  # the record stays readable, without the
        assert record.status_code == 200, record.text  # parameters, saying why
        assert record.json()["parameters"] is None
        assert "checksum" in record.json()["checkpoint_error"]

    untouched = http.post(f"/v1/models/{models['untouched']}/predict", json={"x": X})
    assert untouched.status_code == 200 and untouched.json()["y"] == before["untouched"]
    by_name = http.post("/predict", json={"model": "untouched", "x": X})
    assert by_name.status_code == 200 and by_name.json()["y"] == before["untouched"]
    assert http.get("/healthz").status_code == 200
