"""The scale-out task body (``fitserve.run_job`` on a Celery worker) runs a batch prediction
as it runs a training job: claimed, scored with the worker's ``FITSERVE_PREDICT_CHUNK_ROWS``,
its result file written and the job ended; a second delivery of it is dropped."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.config import Settings
from service.data.datasets import store_dataset
from service.store.artifacts import open_artifacts
from service.store.metadata import MetadataStore
from service.worker.celery import tasks
from tests.unit.worker.test_prediction_memory import _job, _linear_model


def test_a_celery_worker_runs_a_prediction_in_chunks(tmp_path: Path):
    settings = Settings(data_dir=tmp_path, workers=0, predict_chunk_rows=3,
                        heartbeat_interval_s=0.05)
    meta = MetadataStore(f"sqlite:///{tmp_path / 'm.db'}")
    meta.create_schema()
    artifacts = open_artifacts(tmp_path / "artifacts")
    ctx = tasks._Child(settings=settings, name="host:1", meta=meta, artifacts=artifacts,
                       catalog=None)  # type: ignore[arg-type]
    try:
        x = np.arange(8, dtype=np.float32).reshape(-1, 1)
        dataset, _ = store_dataset(meta, artifacts, x, x, {
            "name": None, "feature_names": ["x"], "target_names": ["y"]}, "default")
        job_id = _job(meta, dataset, _linear_model(meta, artifacts))
        assert tasks.execute(job_id, ctx) == "succeeded"
        assert tasks.execute(job_id, ctx) == "skipped"  # a redelivery: nothing left to do
        job = meta.get_job(job_id, tenant=None, task=None)
        assert (job.progress_epoch, job.attempts) == (8, 1)
        text = (tmp_path / "artifacts" / "predictions" / f"{job_id}.csv").read_text()
        assert text.splitlines() == ["y", *(f"{2 * v + 0.5:g}" for v in range(8))]
    finally:
        meta.dispose()
