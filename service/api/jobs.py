"""/v1/jobs: submit training, follow it, cancel it, read its loss history."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from service.api.http import JSONBytes, errors, require_json
from service.api.views import job_history, job_public
from service.arrays import as_matrix, check_xy, class_indices
from service.config import Settings
from service.datasets import store_dataset
from service.deps import MetaDep, ServicesDep, TenantDep
from service.errors import Conflict, DeviceUnavailable, InvalidInput, NotFound
from service.idempotency import Replay, idempotent
from service.limits import check_active, check_budget, check_model, check_table
from service.schemas import (
    MAX_CLASSES,
    JobCreate,
    JobHistory,
    JobPublic,
    JobsPublic,
    JobTrace,
    TrainingSpec,
)
from service.services import Services
from service.store.artifacts import ArtifactStore
from service.store.metadata import FINISHED, ActiveJobsExceeded, MetadataStore
from service.store.tables import JobRow

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

StatusFilter = Literal["queued", "running", "succeeded", "failed", "cancelled"]


async def raw_body(request: Request) -> bytes:
    return await request.body()  # FastAPI keeps it; read again here for Idempotency-Key


IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", description="A retry with the same key and body returns the "
    "job the first request created; another body with the key is a 409.")]


@router.post(
    "",
    status_code=202,
    response_model=JobPublic,
    responses=errors(400, 404, 409, 413, 415, 422, 429, 503),
    dependencies=[Depends(require_json)],
)
def create_job(
    body: JobCreate,
    services: ServicesDep,
    tenant: TenantDep,
    raw: Annotated[bytes, Depends(raw_body)],
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Submit a training job; it is stored as queued before this answers 202."""
    meta = services.meta
    with idempotent(meta, tenant, "jobs", idempotency_key, raw) as attempt:
        if isinstance(attempt, Replay):
            job = meta.get_job(attempt.resource_id, tenant)
        else:
            job = _submit(body, services, meta, services.artifacts, services.settings, tenant)
            attempt.created(job.id, 202)
    # written here, not by FastAPI: the response model would validate the job a second time
    return JSONBytes(job_public(job, services.waiting_reason(job)).model_dump(mode="json"),
                     status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})


def _submit(body: JobCreate, services: Services, meta: MetadataStore, artifacts: ArtifactStore,
            settings: Settings, tenant: str) -> JobRow:
    spec = body.training_spec()
    if spec.seed is None:  # every run is reproducible: the seed drawn is recorded
        spec = spec.model_copy(update={"seed": secrets.randbelow(2**31)})
    if spec.epochs > settings.max_epochs:
        raise InvalidInput(f"epochs must be at most {settings.max_epochs}", field="epochs")
    try:
        device = services.resolve_device(body.device)
    except (LookupError, ValueError) as e:
        raise DeviceUnavailable(str(e), field="device") from None
    check_active(settings, meta.count_active_jobs(tenant))  # early: before data is stored

    def check_rows(rows: int) -> None:
        if spec.validation_fraction > 0 and rows < 2:
            raise InvalidInput(
                f"validation_fraction needs at least 2 rows; the dataset has {rows}",
                field="validation_fraction",
            )
        check_budget(settings, spec.epochs, rows)

    if body.dataset_id is not None:
        dataset = meta.get_dataset(body.dataset_id, tenant)
        check_rows(dataset.rows)
        largest = np.array([max(abs(c["min"]), abs(c["max"])) for c in dataset.columns
                            if c["role"] == "feature"])
        spec = _check_kind(spec, settings, dataset.rows, dataset.features, dataset.targets,
                           lambda: artifacts.get_dataset(dataset.sha256)[1], largest)
    else:
        x = as_matrix(body.x, "x")
        y = as_matrix(body.y, "y")
        check_xy(x, y)
        check_table(settings, x.shape[0], x.shape[1], y.shape[1])
        check_rows(x.shape[0])  # before anything is stored: a refused job leaves nothing
        spec = _check_kind(spec, settings, x.shape[0], x.shape[1], y.shape[1], lambda: y,
                           np.abs(x).max(axis=0))
        dataset, _ = store_dataset(
            meta, artifacts, x, y,
            {"name": None, "feature_names": [f"x{i}" for i in range(x.shape[1])],
             "target_names": [f"y{i}" for i in range(y.shape[1])]},
            tenant,
        )
    try:
        job = meta.create_job(
            tenant=tenant,
            dataset_id=dataset.id,
            spec=spec.model_dump(mode="json"),
            device=device,
            model_name=body.model_name,
            epochs=spec.epochs,
            max_active=settings.max_active_jobs,
        )
    except ActiveJobsExceeded as e:  # concurrent submits got past the early check
        check_active(settings, e.active)
        raise
    services.job_submitted(job.id, job.device)
    return job


def _check_kind(spec: TrainingSpec, settings: Settings, rows: int, features: int, targets: int,
                targets_of: Callable[[], np.ndarray], largest: np.ndarray) -> TrainingSpec:
    """What the model kind and options need of the data and the settings; a classifier's
    classes and loss are read from its targets here, so the stored job names them.
    ``largest``: the largest absolute value of each feature."""
    out = targets
    if spec.model.kind == "polynomial" and not spec.standardize:
        with np.errstate(over="ignore"):
            top = np.asarray(largest, np.float64) ** spec.model.degree
        if len(top) and not (top < np.finfo(np.float32).max).all():
            col = int(np.argmax(~(top < np.finfo(np.float32).max)))
            raise InvalidInput(f"feature {col} reaches {largest[col]:g}, whose power "
                               f"{spec.model.degree} overflows float32: set standardize "
                               "or lower the degree", field="model.degree")
    if spec.model.kind == "logistic":
        try:
            _, classes = class_indices(np.asarray(targets_of()), spec.model.classes)
        except ValueError as e:
            raise InvalidInput(f"the targets do not fit a classifier: {e}", field="y") from None
        loss = spec.loss or ("bce" if classes == 2 else "cross_entropy")
        if loss == "bce" and classes != 2:
            raise InvalidInput(f"bce trains two classes; the targets have {classes}: use "
                               "cross_entropy", field="loss")
        if classes > MAX_CLASSES:
            raise InvalidInput(f"the targets name {classes} classes; at most {MAX_CLASSES}",
                               field="y")
        # validated again, not model_copy'd: what is stored must read back as a TrainingSpec
        spec = TrainingSpec.model_validate({
            **spec.model_dump(), "loss": loss,
            "model": {**spec.model.model_dump(), "classes": classes}})
        out = 1 if loss == "bce" else classes
    check_model(settings, spec, features, out)
    train_rows = rows - (max(1, round(rows * spec.validation_fraction))
                         if spec.validation_fraction > 0 else 0)
    if spec.trace_epochs and spec.batch_size is not None and spec.batch_size < train_rows:
        raise InvalidInput("trace_epochs records one full-batch step per epoch; leave "
                           f"batch_size unset (or >= the {train_rows} training rows)",
                           field="trace_epochs")
    return spec


@router.get("", response_model=JobsPublic)
def list_jobs(
    meta: MetaDep,
    services: ServicesDep,
    tenant: TenantDep,
    status: Annotated[StatusFilter | None, Query(description="Only jobs in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(description="`next` of the previous page.")] = None,
) -> JobsPublic:
    """List jobs, newest first."""
    page = meta.list_jobs(tenant, status, limit, cursor)
    return JobsPublic(data=[job_public(r, services.waiting_reason(r)) for r in page.rows],
                      count=page.count, next=page.next)


@router.get("/{job_id}", response_model=JobPublic, responses=errors(404))
async def get_job(
    job_id: str,
    meta: MetaDep,
    services: ServicesDep,
    tenant: TenantDep,
    wait: Annotated[float, Query(ge=0, le=60, description="Seconds to wait for the job to "
                                 "finish before answering (long poll).")] = 0,
) -> JobPublic:
    """A job's status, progress, device, timings, error and model."""
    row = await _wait_for_end(services, meta, job_id, tenant, wait)
    waiting = None
    if row.status == "queued":  # may ask the broker which queues have workers
        waiting = await run_in_threadpool(services.waiting_reason, row)
    return job_public(row, waiting)


async def _wait_for_end(
    services: Services, meta: MetadataStore, job_id: str, tenant: str, wait: float
) -> JobRow:
    """The job row, once it has ended or ``wait`` seconds have passed. Where workers report
    job ends (the embedded pool) the request sleeps until told, reading the store only as a
    backstop; elsewhere it polls, often at first so that short jobs are seen at once."""
    deadline = time.monotonic() + wait
    delay = 0.002
    while True:
        entry = services.waiters.subscribe(job_id) if wait else None
        try:
            row = await run_in_threadpool(meta.get_job, job_id, tenant)
            left = deadline - time.monotonic()
            if row.status in FINISHED or left <= 0 or entry is None:
                return row
            if services.waiters.pushed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(entry[1].wait(), min(left, 0.5))
            else:
                await asyncio.sleep(min(delay, left))
                if wait - left > 0.2:
                    delay = min(delay * 2, 0.05)
        finally:
            if entry is not None:
                services.waiters.unsubscribe(job_id, entry)


@router.post("/{job_id}/cancel", status_code=202, response_model=JobPublic,
             responses=errors(404, 409))
def cancel_job(
    job_id: str, meta: MetaDep, tenant: TenantDep, services: ServicesDep
) -> JobPublic:
    """Cancel a queued job at once, or a running one within about a second."""
    row = meta.request_cancel(job_id, tenant)
    if row.status in FINISHED:
        services.waiters.finished(job_id)
    return job_public(row)


@router.get("/{job_id}/trace", response_model=JobTrace, responses=errors(404, 409))
def get_trace(job_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    """Forward output, loss, each parameter before its step, its gradient and after, for
    the first `trace_epochs` epochs; and the autograd chain from the loss to each parameter."""
    job = services.meta.get_job(job_id, tenant)
    if not (job.spec or {}).get("trace_epochs"):
        raise NotFound(f"job {job_id!r} was submitted without trace_epochs; it has no trace")
    blob = services.artifacts.read_trace(job.id)
    if blob is None:
        if job.status in FINISHED:
            raise NotFound(f"job {job_id!r} ended ({job.status}) before its first traced step")
        raise Conflict(f"job {job_id!r} is {job.status}; its trace is stored when it ends")
    return Response(blob, media_type="application/json")


@router.get("/{job_id}/history", response_model=JobHistory, responses=errors(404))
def get_history(job_id: str, meta: MetaDep, tenant: TenantDep) -> Response:
    """The loss at every logged epoch (1-based), and the validation loss if there was one."""
    return JSONBytes(job_history(meta.get_job(job_id, tenant)))
