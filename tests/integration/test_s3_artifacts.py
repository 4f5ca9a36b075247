"""Artifacts in an S3-compatible store (moto's server on loopback), through fsspec/s3fs."""

from __future__ import annotations

import secrets

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app
from service.store.artifacts import ObjectArtifactStore, open_artifacts, sha256_hex
from service.worker.runner import run_job
from tests.helpers import seed_example

pytestmark = pytest.mark.integration


@pytest.fixture
def store(s3_server) -> ObjectArtifactStore:
    url = s3_server.bucket_url(f"fitserve-{secrets.token_hex(4)}")
    s = open_artifacts(url, s3_server.endpoint)
    assert isinstance(s, ObjectArtifactStore)
    return s


def _objects(store: ObjectArtifactStore, sub: str) -> list[str]:
    try:
        return sorted(store.fs.ls(f"{store.root_key}/{sub}", refresh=True))
    except FileNotFoundError:
        return []


def test_datasets_are_stored_once_and_read_back(store):
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    y = np.ones((3, 1), np.float32)
    blob = store.dataset_bytes(x, y, ["a", "b"], ["t"])
    sha = "c" * 64
    store.put_dataset(sha, blob)
    store.put_dataset(sha, store.dataset_bytes(x, y, ["a", "b"], ["t"]))
    assert _objects(store, "datasets") == [f"{store.root_key}/datasets/{sha}.safetensors"]
    got_x, got_y = store.get_dataset(sha)
    assert np.array_equal(got_x, x) and np.array_equal(got_y, y)
    store.delete_dataset(sha)
    store.delete_dataset(sha)  # already gone: no error
    assert _objects(store, "datasets") == []
    assert store.check() == "ok"


def test_checkpoints_are_whole_objects_with_their_checksum(store):
    model_id = "mdl_" + "0" * 24
    tensors = {"linear.weight": np.array([[0.5]], np.float32),
               "linear.bias": np.array([0.25], np.float32)}
    key, sha = store.put_checkpoint(model_id, tensors, {"format": "fitserve/2"})
    assert key == f"checkpoints/{model_id}.safetensors"
    blob = store.read_checkpoint(model_id)
    assert sha256_hex(blob) == sha
    # one PUT per object: nothing temporary is ever left beside it
    assert _objects(store, "checkpoints") == [f"{store.root_key}/{key}"]
    store.delete_checkpoint(model_id)
    with pytest.raises(FileNotFoundError):
        store.read_checkpoint(model_id)


def test_the_seed_walkthrough_with_artifacts_in_s3(s3_server, tmp_path):
    url = s3_server.bucket_url(f"fitserve-{secrets.token_hex(4)}")
    settings = Settings(data_dir=tmp_path / "data", workers=0, device="cpu", artifacts=url,
                        artifacts_endpoint_url=s3_server.endpoint)
    app = create_app(settings, start_workers=False)
    services = app.state.services
    with TestClient(app, base_url="http://127.0.0.1") as client:
        d = seed_example()
        r = client.post("/v1/datasets", json={"x": d["x"], "y": d["y"]})
        assert r.status_code == 201, r.text
        ds = r.json()
        job = client.post("/v1/jobs", json={"dataset_id": ds["id"], "seed": 0}).json()
        claimed = services.meta.claim(job["id"], "test-worker")
        assert run_job(claimed, "test-worker", services.meta, services.artifacts) == "succeeded"
        model_id = client.get(f"/v1/jobs/{job['id']}").json()["model_id"]
        r = client.post(f"/v1/models/{model_id}/predict", json={"x": [[3.3]]})
        assert r.status_code == 200 and r.json()["y"][0][0] == pytest.approx(1.6056, abs=1e-3)
        ckpt = client.get(f"/v1/models/{model_id}/checkpoint")
        assert ckpt.headers["x-checkpoint-sha256"] == sha256_hex(ckpt.content)
        job = client.post("/v1/jobs", json={"dataset_id": ds["id"], "seed": 0, "epochs": 5,
                                            "trace_epochs": 2}).json()
        claimed = services.meta.claim(job["id"], "test-worker")
        assert run_job(claimed, "test-worker", services.meta, services.artifacts) == "succeeded"
        trace = client.get(f"/v1/jobs/{job['id']}/trace")  # an object beside the checkpoints
        assert trace.status_code == 200 and len(trace.json()["epochs"]) == 2, trace.text
        assert _objects(services.artifacts, "traces") == [
            f"{services.artifacts.root_key}/traces/{job['id']}.json"]
    assert not list((tmp_path / "data" / "checkpoints").glob("*"))  # nothing on local disk
