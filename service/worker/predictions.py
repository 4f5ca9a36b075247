"""``run_prediction``: one claimed batch prediction (a job with ``task`` predict), from the
dataset to its result file. ``run_job`` hands such jobs here, in every queue backend.

The result is written to a temporary file, chunk by chunk (lifecycle/batch_scoring.py),
renamed into place whole, and only then is the job marked succeeded, in a write that holds
only while this worker still holds the job: a cancel or a recovery meanwhile discards the
file. A crash leaves a temporary file (or, between the rename and the commit, a result
whose job is then run again and overwrites it, or fails and has it swept): the data
directory's sweep removes both. Progress is the rows written, reset when the job runs again.
"""

from __future__ import annotations

import logging

from service.config import Settings
from service.errors import (
    ArtifactsFailed,
    Cancelled,
    DatasetMissing,
    InvalidInput,
    ModelMissing,
    ModelUnavailable,
    NotFound,
    PredictionFailed,
    ServiceError,
    TrainingError,
    fault_of,
    is_disk_full,
)
from service.faults import pause_at
from service.lifecycle.batch_scoring import DatasetChunks, score_to_file
from service.lifecycle.predictions import plan_inputs, prediction_spec
from service.serving.predictor import Predictor
from service.store.artifacts import ArtifactStore
from service.store.metadata import MetadataStore
from service.store.tables import JobRow
from service.worker.runner import Notify, Reporter, end_job

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS: int = Settings.model_fields["predict_chunk_rows"].default
"""``FITSERVE_PREDICT_CHUNK_ROWS``' default (config.py), for callers that give none."""


def run_prediction(
    job: JobRow, worker: str, meta: MetadataStore, artifacts: ArtifactStore,
    progress_interval: float = 0.2, notify: Notify | None = None,
    chunk_rows: int | None = None,
) -> str:
    """Score a batch prediction this worker has claimed; returns its final status."""
    spec = prediction_spec(job)
    reporter = Reporter(meta, job.id, progress_interval)

    def on_chunk(rows: int) -> None:
        reporter.progress(rows, None, None)  # type: ignore[arg-type]
        if reporter.cancel:
            raise Cancelled(f"cancelled after {rows} of {job.epochs} rows")

    pause_at("claimed", job.id)
    try:
        try:
            model = meta.get_model(spec.model_id, job.tenant)
        except NotFound:
            raise ModelMissing(f"model {spec.model_id} was deleted before the prediction "
                               "ran") from None
        try:
            dataset = meta.get_dataset(job.dataset_id, job.tenant)
        except NotFound:
            raise DatasetMissing("the prediction's dataset was deleted before it ran"
                                 ) from None
        try:
            loaded = Predictor(meta, artifacts).load(model.id, job.tenant)
        except ModelUnavailable as e:
            raise ModelMissing(e.message) from None
        plan = plan_inputs(model, loaded, dataset)
        with artifacts.open_dataset(dataset.sha256) as f, \
                artifacts.writing_prediction(job.id, spec.format) as out:
            rows = score_to_file(out, spec.format, loaded, plan, DatasetChunks(f, dataset),
                                 list(model.target_names), spec.include_input,
                                 chunk_rows or DEFAULT_CHUNK_ROWS, on_chunk)
    except TrainingError as e:  # cancelled, a row refused, the model or dataset gone
        return end_job(meta, job, worker, "cancelled" if isinstance(e, Cancelled) else "failed",
                    e, notify)
    except InvalidInput as e:  # the dataset no longer fits the model (checked at submit)
        return end_job(meta, job, worker, "failed", PredictionFailed(e.message), notify)
    except OSError as e:
        log.exception("prediction %s could not read its data or write its result", job.id)
        why = "the disk is full" if is_disk_full(e) else (e.strerror or type(e).__name__)
        return end_job(meta, job, worker, "failed",
                    ArtifactsFailed(f"the prediction could not be read or written ({why})"),
                    notify)
    except Exception as e:
        if not isinstance(e, ServiceError) and fault_of(e) is not None:
            raise  # the store failed, not the job: the worker puts it back in the queue
        log.exception("prediction %s failed", job.id)
        return end_job(meta, job, worker, "failed", TrainingError(
            f"the prediction stopped on an internal error ({type(e).__name__}); the worker "
            "log has the details"), notify)

    pause_at("checkpoint", job.id)
    try:
        done = meta.finish_job(job.id, worker, status="succeeded", error=None,
                               progress_epoch=rows, device_used="cpu", engine_used="numpy")
    except BaseException:  # not recorded: the file would stand for a job that has not ended
        artifacts.delete_prediction(job.id)
        raise
    if not done:  # cancelled or recovered meanwhile: leave no result behind, unless
        # another worker's run of it has succeeded since (its file is this one's twin)
        status = meta.get_job(job.id, tenant=None, task=None).status
        if status != "succeeded":
            artifacts.delete_prediction(job.id)
        log.warning("prediction %s was no longer held by %s (now %s)", job.id, worker, status)
        return status
    if notify:
        notify({"event": "job_finished", "job_id": job.id, "status": "succeeded"})
    log.info("prediction %s succeeded: %d rows (%s)", job.id, rows, spec.format)
    return "succeeded"
