"""``run_job``: one claimed job from data to checkpoint. The same in every queue backend."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import orjson

from models.registry import get_kind
from service.errors import (
    ArtifactsFailed,
    Cancelled,
    DatasetMissing,
    NotFound,
    ServiceError,
    TrainingError,
    fault_of,
    is_disk_full,
)
from service.faults import pause_at
from service.features import FeatureOptions, Pipeline, numeric_table, prepare_table
from service.features.pipeline import FeatureError
from service.store.artifacts import ArtifactStore
from service.store.jobs import PREDICT
from service.store.metadata import MetadataStore
from service.store.tables import DatasetRow, JobRow, new_id
from service.store.tabular import Table
from service.training.fit import FitResult, fit, split_rows
from service.training.spec import TrainingSpec
from service.worker.warm_start import initial_state

log = logging.getLogger(__name__)

# 2: the whole state_dict of any kind, and (with standardize) tensors in standardized units
# beside their statistics in the metadata; 1 was linear weight and bias in original units
CHECKPOINT_FORMAT = "fitserve/2"
Notify = Callable[[dict[str, Any]], None]


def moves_catalog(event: dict[str, Any]) -> bool:
    """Whether an event changes what model names resolve to, so that every API process's
    predict looks again (the catalog counter): a model about to be committed and committed
    (see serving/predictor.py), or a sweep that ended registering its winner under a
    name."""
    return event["event"] in ("model_committing", "model_created") or (
        event["event"] == "sweep_finished" and bool(event.get("registered")))


def history_values(epochs: np.ndarray, loss: np.ndarray, val: np.ndarray | None) -> dict:
    """A loss history as a job's columns keep it (little-endian int32 and float32 bytes);
    a closed-form batch's trials (worker/batches.py) are recorded with it too."""
    return {
        "history_epoch": epochs.astype("<i4").tobytes(),
        "history_loss": loss.astype("<f4").tobytes(),
        "history_val_loss": None if val is None else val.astype("<f4").tobytes(),
    }


def checkpoint_payload(
    job: JobRow, spec: TrainingSpec, result: FitResult, feature_names: list[str],
    target_names: list[str], dataset_sha: str, pipeline: Pipeline | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The module's state_dict as tensors; its kind, config and the standardization
    statistics beside them as string metadata, so loading is ``Model(Config(**config))``;
    the feature pipeline (service/features/) as JSON when the model has one (a numeric
    matrix model has none: its inputs are its feature names, as sent)."""
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in result.state.items()}
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "kind": result.kind,
        "config": json.dumps(result.config),
        "feature_names": json.dumps(feature_names),
        "target_names": json.dumps(target_names),
        "normalization": json.dumps(result.normalization),
        "job_id": job.id,
        "dataset_sha256": dataset_sha,
    }
    if pipeline is not None:
        metadata["pipeline"] = json.dumps(pipeline.to_json())
    return tensors, metadata


def uses_pipeline(spec: TrainingSpec, loaded: object) -> bool:
    """Whether the job trains through a feature pipeline: a dataset of typed columns, or a
    numeric one whose columns the job selects or retypes. Otherwise the matrix goes to
    ``fit`` as it is stored (the seed example's path)."""
    return (isinstance(loaded, Table) or spec.features is not None
            or bool(spec.column_types))


def training_data(
    spec: TrainingSpec, dataset: DatasetRow, loaded: tuple[np.ndarray, np.ndarray] | Table
) -> tuple[TrainingSpec, np.ndarray, np.ndarray, Pipeline | None]:
    """(spec with standardize resolved, x, y, pipeline) for ``fit``. A Table's pipeline is
    fitted on the rows ``fit``'s own split trains on (the same seed draws the same rows),
    then every row is transformed; a numeric matrix passes as it is."""
    if not uses_pipeline(spec, loaded):
        if spec.standardize is None:
            spec = spec.model_copy(update={"standardize": False})
        x, y = cast(tuple[np.ndarray, np.ndarray], loaded)
        return spec, x, y, None
    if spec.standardize is None:  # typed columns: one-hot beside sqft needs scaling
        spec = spec.model_copy(update={"standardize": True})
    table = loaded if isinstance(loaded, Table) else numeric_table(
        *loaded, dataset.feature_names, dataset.target_names)
    seed = spec.seed if spec.seed is not None else 0
    train_idx, _ = split_rows(table.rows, spec.validation_fraction, seed)
    classify = get_kind(spec.model.kind).task == "classification"
    try:
        prepared = prepare_table(table, FeatureOptions.from_spec(spec), train_idx, classify)
    except FeatureError as e:
        raise TrainingError(f"the dataset does not fit the job's features: {e.message}"
                            ) from None
    return spec, prepared.x, prepared.y, prepared.pipeline


def _store_trace(artifacts: ArtifactStore, job_id: str, trace: dict[str, Any] | None,
                 standardized: bool) -> None:
    if trace is None:
        return
    try:
        artifacts.put_trace(job_id, orjson.dumps(
            {"job_id": job_id, "standardized": standardized, **trace}))
    except OSError:  # the job's outcome stands without its trace
        log.exception("job %s: could not write its trace", job_id)


class Reporter:
    """Rate-limited progress writes; the cancel flag rides back on each write."""

    def __init__(self, meta: MetadataStore, job_id: str, interval: float) -> None:
        self.meta = meta
        self.job_id = job_id
        self.interval = interval
        self.last = 0.0
        self.cancel = False
        self.faulted = False
        self.reported = False

    def progress(self, epoch: int, loss: float, val_loss: float | None) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            try:
                self.cancel = self.meta.update_progress(self.job_id, epoch, loss, val_loss)
                if not self.reported:
                    self.reported = True
                    pause_at("training", self.job_id)
            except Exception as e:  # the store is away or full: train on; the end is what
                self._skipped(e)      # must be recorded, and it is retried until it is

    def should_stop(self) -> bool:
        # paths that report no progress for a while (the closed form's passes) still look
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            try:
                self.cancel = self.meta.cancel_requested(self.job_id)
            except Exception as e:
                self._skipped(e)
        return self.cancel

    def _skipped(self, e: Exception) -> None:
        if fault_of(e) is None:
            raise e
        if not self.faulted:
            log.warning("job %s: a progress write failed (%s); training goes on",
                        self.job_id, type(e).__name__)
            self.faulted = True


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


def keep_freed_memory(mmap_above: int = 32 << 20, trim_above: int = 64 << 20) -> bool:
    """Keep memory a worker frees for its next arrays (glibc): blocks of up to
    ``mmap_above`` bytes come from the heap, and the heap is given back to the system only
    past ``trim_above`` bytes free at its top. By default glibc maps each block past 128 KB
    on its own and unmaps it when freed, and gives back the heap's top past 128 KB: every
    new array of a few MB then faults its pages in afresh. A closed-form batch's
    trajectories make arrays of 2 MB chunk after chunk; for 50 trials of 10 000 epochs they
    took 16.5 ms that way and 7.9 ms with these settings. Setting either turns off glibc's
    own adjustment of both. Returns whether it applied (not where there is no glibc)."""
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_above)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_above))


def warm_up() -> None:
    """Ready a worker process for jobs: freed memory kept for the next arrays
    (``keep_freed_memory``), and torch's lazy set-up, which the first training step of a
    process pays, paid before a job."""
    keep_freed_memory()
    x = np.arange(4, dtype=np.float32).reshape(-1, 1)
    fit(TrainingSpec(epochs=20, seed=0), x, 2 * x + 1)


def run_job(
    job: JobRow,
    worker: str,
    meta: MetadataStore,
    artifacts: ArtifactStore,
    progress_interval: float = 0.2,
    notify: Notify | None = None,
    predict_chunk_rows: int | None = None,
) -> str:
    """Run a job this worker has claimed (status running): train it, or score a batch
    prediction (``task`` predict, worker/predictions.py, ``predict_chunk_rows`` rows at a
    time); returns its final status."""
    if job.task == PREDICT:
        from service.worker.predictions import run_prediction

        return run_prediction(job, worker, meta, artifacts, progress_interval, notify,
                              chunk_rows=predict_chunk_rows)
    spec = TrainingSpec.model_validate(job.spec)
    reporter = Reporter(meta, job.id, progress_interval)
    pause_at("claimed", job.id)
    try:
        dataset = meta.get_dataset(job.dataset_id, tenant=job.tenant)
        spec, x, y, pipeline = training_data(spec, dataset,
                                             artifacts.load_dataset(dataset.sha256))
        init = (initial_state(meta, artifacts, spec.init_from.model, job.tenant)
                if spec.init_from is not None else None)  # a warm start
        result = fit(spec, x, y, job.device, reporter.progress, reporter.should_stop,
                     init=init)
    except Cancelled as e:
        _store_trace(artifacts, job.id, e.extra.get("trace"), bool(spec.standardize))
        return end_job(meta, job, worker, "cancelled", e, notify)
    except NotFound:  # the dataset was deleted after the job was queued
        err: TrainingError = DatasetMissing("the job's dataset was deleted before the job ran")
        return end_job(meta, job, worker, "failed", err, notify)
    except TrainingError as e:
        _store_trace(artifacts, job.id, e.extra.get("trace"), bool(spec.standardize))
        return end_job(meta, job, worker, "failed", e, notify)
    except OSError as e:  # the data file gone or unreadable: said without its path
        log.exception("job %s could not read its data", job.id)
        err = ArtifactsFailed(
            f"the job's data could not be read ({e.strerror or type(e).__name__})")
        return end_job(meta, job, worker, "failed", err, notify)
    except Exception as e:  # a bug or the machine: typed, without the traceback
        if not isinstance(e, ServiceError) and fault_of(e) is not None:
            raise  # the store failed, not the job: the worker puts it back in the queue
        log.exception("job %s failed", job.id)
        # the type says what kind of failure it was; its text (library internals, paths)
        # stays in the worker's log
        err = TrainingError(f"training stopped on an internal error ({type(e).__name__}); "
                            "the worker log has the details")
        return end_job(meta, job, worker, "failed", err, notify)

    _store_trace(artifacts, job.id, result.trace, bool(spec.standardize))
    model_id = new_id("mdl")
    feature_names = dataset.feature_names if pipeline is None else pipeline.output_names
    target_names = dataset.target_names if pipeline is None else list(pipeline.targets)
    tensors, metadata = checkpoint_payload(
        job, spec, result, feature_names, target_names, dataset.sha256, pipeline
    )
    try:
        path, sha = artifacts.put_checkpoint(model_id, tensors, metadata)
    except OSError as e:
        why = "the disk is full" if is_disk_full(e) else (e.strerror or type(e).__name__)
        err = ArtifactsFailed(f"could not write the checkpoint: {why}")
        return end_job(meta, job, worker, "failed", err, notify)

    model = {
        "id": model_id,
        "tenant": job.tenant,
        "name": job.model_name,
        "job_id": job.id,
        "dataset_id": job.dataset_id,
        "kind": spec.model.kind,
        "config": json.loads(metadata["config"]),
        "in_features": int(result.config["in_features"]),
        "out_features": int(result.config["out_features"]),
        "weight": None if result.weight is None else result.weight.astype(float).tolist(),
        "bias": None if result.bias is None else result.bias.astype(float).tolist(),
        "normalization": result.normalization,
        "feature_names": feature_names,
        "target_names": target_names,
        "metrics": {
            "train_loss": result.train_loss,
            "val_loss": result.final_val_loss,
            "r2": result.r2,
            "lstsq_loss": result.lstsq_loss,
            "accuracy": result.accuracy,
            "val_accuracy": result.val_accuracy,
            "log_loss": result.log_loss,
        },
        "spec": job.spec,
        "device": result.device,
        "checkpoint": path,
        "sha256": sha,
        "parent_id": spec.init_from.model if spec.init_from is not None else None,
    }
    job_values = {
        **history_values(result.epochs, result.loss, result.val_loss),
        "device_used": result.device,
        "engine_used": result.engine,
        "progress_epoch": int(result.epochs[-1]) if len(result.epochs) else spec.epochs,
        "stopped_early": result.stopped,
        "progress_loss": float(result.loss[-1]) if len(result.loss) else None,
        "progress_val_loss": (
            float(result.val_loss[-1]) if result.val_loss is not None and len(result.val_loss)
            else None
        ),
    }
    if notify:
        notify({"event": "model_committing", "job_id": job.id, "model_id": model_id})
    pause_at("checkpoint", job.id)
    try:
        row = meta.finish_with_model(job.id, worker, model, job_values)
    except BaseException:  # not recorded: the file would point nowhere
        artifacts.delete_checkpoint(model_id)
        raise
    if row is None:  # the job was taken from us (cancelled or recovered): leave no orphan file
        artifacts.delete_checkpoint(model_id)
        log.warning("job %s was no longer held by %s; checkpoint discarded", job.id, worker)
        return meta.get_job(job.id, tenant=None, task=None).status
    pause_at("commit", job.id)
    if notify:
        notify({"event": "model_created", "job_id": job.id, "model_id": row.id})
    log.info("job %s succeeded: model %s (%s, %s)", job.id, row.id, result.engine, result.device)
    return "succeeded"


def end_job(
    meta: MetadataStore,
    job: JobRow,
    worker: str,
    status: str,
    err: TrainingError,
    notify: Notify | None,
) -> str:
    """End a job that did not succeed (``cancelled`` or ``failed``) with its error, and the
    history it had when the error carries one; returns the status. A batch prediction's run
    (worker/predictions.py) ends this way too."""
    values: dict[str, Any] = {"status": status, "error": err.job_error(),
                              "device_used": job.device}
    partial = err.extra.get("history")
    if partial is not None:
        values.update(history_values(*partial))
    meta.finish_job(job.id, worker, **values)
    if notify:
        notify({"event": "job_finished", "job_id": job.id, "status": status})
    log.info("job %s %s: %s", job.id, status, err.message)
    return status
