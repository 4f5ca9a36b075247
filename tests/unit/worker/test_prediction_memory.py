"""A batch prediction's worker memory is bounded by its chunk, not by the dataset: 10 000 000
rows (one feature, 80 MB of x and y) stored straight through the store, scored by the worker
function (``run_prediction``) in a fresh process, whose peak resident memory is measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from service.config import Settings
from service.data.datasets import store_dataset
from service.lifecycle.predictions import PredictionSpec
from service.store.artifacts import open_artifacts
from service.store.jobs import PREDICT
from service.store.metadata import MetadataStore

ROWS = 10_000_000
CHUNK = 65_536
MB = 1 << 20

# run in a fresh interpreter: claims the two prediction jobs (a small one first, which pays
# the lazy set-up of polars' streaming engine), resets the peak (/proc/self/clear_refs),
# scores the big one with CHUNK rows, then the big one again as one chunk (the contrast)
_SCRIPT = """
import json, os, resource, sys
from service.store.artifacts import open_artifacts
from service.store.metadata import MetadataStore
from service.worker.predictions import run_prediction

url, root, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
meta, artifacts = MetadataStore(url), open_artifacts(root)

def kb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)

def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current VmRSS (Linux >= 4.0)
        return True
    except OSError:
        return False

out = {}
for label, rows in (("warm-up", chunk), ("chunked", chunk), ("whole", 10**9)):
    job = meta.claim_next("mem-worker")
    reset = reset_peak()
    before = kb("VmRSS")
    status = run_prediction(job, "mem-worker", meta, artifacts, chunk_rows=rows)
    peak = kb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out[label] = {"status": status, "growth": peak - before, "job": job.id}
print(json.dumps(out))
"""


def _linear_model(meta: MetadataStore, artifacts) -> str:
    """y = 2 x + 0.5, written as a fitserve checkpoint and recorded (no training here)."""
    config = {"in_features": 1, "out_features": 1, "bias": True}
    tensors = {"linear.weight": np.array([[2.0]], np.float32),
               "linear.bias": np.array([0.5], np.float32)}
    model_id = "mdl_0123456789abcdef01234567"
    path, sha = artifacts.put_checkpoint(model_id, tensors, {
        "format": "fitserve/2", "kind": "linear", "config": json.dumps(config),
        "feature_names": '["x"]', "target_names": '["y"]', "normalization": "null"})
    meta.add_model(model_id, tenant="default", name="double", kind="linear", config=config,
                   in_features=1, out_features=1, weight=[[2.0]], bias=[0.5],
                   normalization=None, feature_names=["x"], target_names=["y"], metrics={},
                   spec={}, device="cpu", checkpoint=path, sha256=sha)
    return model_id


def _job(meta: MetadataStore, dataset, model_id: str) -> str:
    spec = PredictionSpec(model="double", model_id=model_id, format="csv")
    return meta.create_job(tenant="default", task=PREDICT, dataset_id=dataset.id,
                    spec=spec.model_dump(mode="json"), device="cpu", epochs=dataset.rows).id


def test_the_workers_peak_memory_is_a_few_chunks_not_the_dataset(tmp_path: Path):
    settings = Settings(data_dir=tmp_path / "data", workers=0, device="cpu")
    settings.ensure_dirs()
    meta = MetadataStore(settings.resolved_database_url)
    meta.create_schema()
    artifacts = open_artifacts(settings.resolved_artifacts)
    model_id = _linear_model(meta, artifacts)
    datasets = []
    for rows in (CHUNK * 3, ROWS):
        x = np.arange(rows, dtype=np.float32).reshape(-1, 1) / 1000
        datasets.append(store_dataset(meta, artifacts, x, 2 * x + 0.5, {
            "name": None, "feature_names": ["x"], "target_names": ["y"]}, "default")[0])
        del x
    small, big = datasets
    for dataset in (small, big, big):
        _job(meta, dataset, model_id)
    meta.dispose()

    run = subprocess.run(
        [sys.executable, "-c", _SCRIPT, settings.resolved_database_url,
         str(settings.resolved_artifacts), str(CHUNK)],
        capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert {v["status"] for v in out.values()} == {"succeeded"}, out

    dataset_bytes = ROWS * 4 * 2
    chunk_bytes = CHUNK * 4
    growth = out["chunked"]["growth"]
    # a few chunks' worth (the chunk read, its prediction, polars' frame and its CSV text,
    # the engine's morsels in flight): far under the dataset, whose x alone is 40 MB
    assert growth < 64 * chunk_bytes, f"{growth / MB:.1f} MB for {CHUNK}-row chunks"
    assert growth < dataset_bytes / 4
    # the measure tells: the same run as one chunk holds the whole column at once
    assert out["whole"]["growth"] > 2 * 64 * chunk_bytes, out

    result = Path(artifacts.root) / "predictions" / f"{out['chunked']['job']}.csv"
    with result.open("rb") as f:
        assert f.readline() == b"y\n" and f.readline() == b"0.5\n"
        lines = 2 + sum(block.count(b"\n") for block in iter(lambda: f.read(8 * MB), b""))
        f.seek(-32, 2)
        last = f.read().split(b"\n")[-2]
    assert lines == ROWS + 1
    assert float(last) == np.float32(np.float32(ROWS - 1) / 1000 * 2 + 0.5)
