"""/v1/jobs: submit training, follow it, cancel it, read its loss history, delete it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from service.api.deps import MetaDep, ServicesDep, TenantDep, require_room
from service.api.responses import JSONBytes, errors, require_json
from service.api.schemas import JobCreate, JobHistory, JobPublic, JobsPublic, JobTrace
from service.api.views import job_history, job_public
from service.jobs import control
from service.jobs.status import JobStatus
from service.jobs.submit import submit_job_once
from service.jobs.waiters import wait_for_end

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


async def raw_body(request: Request) -> bytes:
    return await request.body()  # FastAPI keeps it; read again here for Idempotency-Key


IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", description="A retry with the same key and body returns the "
    "job the first request created; another body with the key is a 409.")]


@router.post(
    "",
    status_code=202,
    response_model=JobPublic,
    responses=errors(400, 404, 409, 413, 415, 422, 429, 503, 507),
    dependencies=[Depends(require_json), Depends(require_room)],
)
def create_job(
    body: JobCreate,
    services: ServicesDep,
    tenant: TenantDep,
    raw: Annotated[bytes, Depends(raw_body)],
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Submit a training job; it is stored as queued before this answers 202."""
    job = submit_job_once(services, tenant, body.training_spec(),
                          idempotency_key=idempotency_key, request_body=raw,
                          dataset_id=body.dataset_id, x=body.x, y=body.y,
                          device=body.device, model_name=body.model_name)
    # written here, not by FastAPI: the response model would validate the job a second time
    return JSONBytes(job_public(job, services.waiting_reason(job)).model_dump(mode="json"),
                     status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})


@router.get("", response_model=JobsPublic)
def list_jobs(
    meta: MetaDep,
    services: ServicesDep,
    tenant: TenantDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(description="`next` of the previous page.")] = None,
    sweep: Annotated[str | None, Query(description="Only the trials of this sweep.")] = None,
) -> JobsPublic:
    """List jobs, newest first."""
    page = meta.list_jobs(tenant, status, limit, cursor, sweep=sweep)
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
    row = await wait_for_end(services.waiters, meta, job_id, tenant, wait)
    waiting = None
    if row.status == "queued":  # may ask the broker which queues have workers
        waiting = await run_in_threadpool(services.waiting_reason, row)
    return job_public(row, waiting)


@router.post("/{job_id}/cancel", status_code=202, response_model=JobPublic,
             responses=errors(404, 409))
def cancel_job(
    job_id: str, meta: MetaDep, tenant: TenantDep, services: ServicesDep
) -> JobPublic:
    """Cancel a queued job at once, or a running one within about a second."""
    return job_public(control.cancel_job(services, job_id, tenant))


@router.get("/{job_id}/trace", response_model=JobTrace, responses=errors(404, 409))
def get_trace(job_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    """Forward output, loss, each parameter before its step, its gradient and after, for
    the first `trace_epochs` epochs; and the autograd chain from the loss to each parameter."""
    return Response(control.read_trace(services, job_id, tenant), media_type="application/json")


@router.get("/{job_id}/history", response_model=JobHistory, responses=errors(404))
def get_history(job_id: str, meta: MetaDep, tenant: TenantDep) -> Response:
    """The loss at every logged epoch (1-based), and the validation loss if there was one."""
    return JSONBytes(job_history(meta.get_job(job_id, tenant)))


@router.delete("/{job_id}", status_code=204, responses=errors(404, 409))
def delete_job(job_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    """Delete a job that has ended and its loss history (409 while it is queued or running:
    cancel it first); the model it trained stays."""
    row = services.freeing_space(lambda: services.meta.delete_job(job_id, tenant))
    services.artifacts.delete_trace(row.id)  # after the commit: a stray file is swept
    return Response(status_code=204)
