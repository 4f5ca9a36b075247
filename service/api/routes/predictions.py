"""/v1/predictions: batch predictions (a model scored over a stored dataset into a file),
jobs on the training queue: submit, follow (long poll, SSE), cancel, fetch the result,
delete."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from service.api.deps import MetaDep, ServicesDep, TenantDep, require_room
from service.api.responses import JSONBytes, errors, require_json
from service.api.schemas import (
    JobError,
    PredictionCreate,
    PredictionProgress,
    PredictionPublic,
    PredictionsPublic,
)
from service.errors import Conflict, StorageUnavailable
from service.jobs import control
from service.jobs.events import END_ID, job_events, parse_last_event_id
from service.jobs.status import FINISHED, JobStatus
from service.jobs.waiters import wait_for_end
from service.lifecycle.predictions import MEDIA_TYPES, prediction_spec, submit_prediction_once
from service.store.jobs import PREDICT
from service.store.tables import JobRow

router = APIRouter(prefix="/v1/predictions", tags=["predictions"])

IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", description="A retry with the same key and body returns the "
    "prediction the first request created; another body with the key is a 409.")]


async def raw_body(request: Request) -> bytes:
    return await request.body()  # FastAPI keeps it; read again here for Idempotency-Key


def prediction_public(row: JobRow, waiting_reason: str | None = None) -> PredictionPublic:
    spec = prediction_spec(row)
    return PredictionPublic(
        id=row.id, status=JobStatus(row.status), model=spec.model, model_id=spec.model_id,
        model_name=spec.model_name, version=spec.model_version, dataset_id=row.dataset_id,
        format=spec.format, include_input=spec.include_input,
        progress=PredictionProgress(rows=row.progress_epoch, total=row.epochs),
        attempts=row.attempts, cancel_requested=row.cancel_requested,
        error=JobError(**row.error) if row.error else None,
        result=f"/v1/predictions/{row.id}/result" if row.status == "succeeded" else None,
        created_at=row.created_at, started_at=row.started_at, finished_at=row.finished_at,
        waiting_reason=waiting_reason,
    )


@router.post(
    "", status_code=202, response_model=PredictionPublic,
    responses=errors(400, 404, 409, 413, 415, 422, 429, 503, 507),
    dependencies=[Depends(require_json), Depends(require_room)],
)
def create_prediction(
    body: PredictionCreate, services: ServicesDep, tenant: TenantDep,
    raw: Annotated[bytes, Depends(raw_body)], idempotency_key: IdempotencyKey = None,
) -> Response:
    """Score a model over a stored dataset into a file; queued before this answers 202."""
    job = submit_prediction_once(services, tenant, idempotency_key=idempotency_key,
                                 request_body=raw, model=body.model,
                                 dataset_id=body.dataset_id, fmt=body.format,
                                 include_input=body.include_input)
    return JSONBytes(prediction_public(job, services.waiting_reason(job)).model_dump(
        mode="json"), status_code=202, headers={"Location": f"/v1/predictions/{job.id}"})


@router.get("", response_model=PredictionsPublic)
def list_predictions(
    meta: MetaDep, services: ServicesDep, tenant: TenantDep,
    status: Annotated[JobStatus | None, Query(description="Only those in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(description="`next` of the previous page.")] = None,
) -> PredictionsPublic:
    """List batch predictions, newest first."""
    page = meta.list_jobs(tenant, status, limit, cursor, task=PREDICT)
    return PredictionsPublic(
        data=[prediction_public(r, services.waiting_reason(r)) for r in page.rows],
        count=page.count, next=page.next)


@router.get("/{prediction_id}", response_model=PredictionPublic, responses=errors(404))
async def get_prediction(
    prediction_id: str, meta: MetaDep, services: ServicesDep, tenant: TenantDep,
    wait: Annotated[float, Query(ge=0, le=60, description="Seconds to wait for it to end "
                                 "before answering (long poll).")] = 0,
) -> PredictionPublic:
    """A batch prediction's status, progress (rows), error and result."""
    row = await wait_for_end(services.waiters, meta, prediction_id, tenant, wait, task=PREDICT)
    waiting = None
    if row.status == "queued":
        waiting = await run_in_threadpool(services.waiting_reason, row)
    return prediction_public(row, waiting)


@router.post("/{prediction_id}/cancel", status_code=202, response_model=PredictionPublic,
             responses=errors(404, 409))
def cancel_prediction(prediction_id: str, services: ServicesDep, tenant: TenantDep
                      ) -> PredictionPublic:
    """Cancel a queued prediction at once, or a running one within about a second."""
    return prediction_public(control.cancel_job(services, prediction_id, tenant, PREDICT))


def _progress(row: JobRow) -> dict[str, Any]:
    return {"rows": row.progress_epoch, "total": row.epochs}


def _public(row: JobRow) -> dict[str, Any]:
    return prediction_public(row).model_dump(mode="json")


@router.get(
    "/{prediction_id}/events", response_class=Response,
    responses={200: {"content": {"text/event-stream": {}}, "description":
                     "`event: progress` with `{\"rows\", \"total\"}` (its id is the rows "
                     "done), then one `event: end` with the prediction (id `end`)."},
               204: {"description": "The client already has the `end` event"},
               **errors(404, 422)},
)
async def stream_prediction_events(
    prediction_id: str, meta: MetaDep, services: ServicesDep, tenant: TenantDep,
    last_event_id: Annotated[str | None, Header(description="Resume after this event.")] = None,
) -> Response:
    """Follow a prediction live: progress events until it ends, then its final status."""
    after = parse_last_event_id(last_event_id)
    row = await run_in_threadpool(meta.get_job, prediction_id, tenant, PREDICT)
    if after == END_ID and row.status in FINISHED:
        return Response(status_code=204)
    start = after if isinstance(after, int) else 0

    async def sse() -> Any:
        async for e in job_events(meta, prediction_id, tenant, start, _public,
                                  stopping=services.stopping.is_set, task=PREDICT,
                                  progress=_progress):
            yield ServerSentEvent(data=orjson.dumps(e.data).decode(), event=e.event, id=e.id)

    return EventSourceResponse(sse())


_FILES: dict[int | str, dict[str, Any]] = {200: {
    "content": {media: {} for media in MEDIA_TYPES.values()},
    "description": "The result file, in the format asked for"}}


def _blocks(f: IO[bytes]) -> Iterator[bytes]:
    with f:
        while block := f.read(1 << 20):
            yield block


@router.get("/{prediction_id}/result", response_class=Response,
            responses={**_FILES, **errors(404, 409, 503)})
def get_result(prediction_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    """The result file once the prediction has succeeded (409 before, or when it did not)."""
    row = services.meta.get_job(prediction_id, tenant, PREDICT)
    if row.status != "succeeded":
        if row.status in FINISHED:
            why = (row.error or {}).get("message") or row.status
            raise Conflict(f"prediction {row.id} {row.status} ({why}); it has no result")
        raise Conflict(f"prediction {row.id} is {row.status}; its result is there once it "
                       f"has succeeded (GET /v1/predictions/{row.id}?wait=30 waits for it)")
    fmt = prediction_spec(row).format
    media, name = MEDIA_TYPES[fmt], f"{row.id}.{fmt}"
    path = services.artifacts.prediction_path(row.id, fmt)
    if path is not None and path.is_file():
        return FileResponse(path, media_type=media, filename=name)
    try:
        f = services.artifacts.open_prediction(row.id, fmt)
    except OSError:
        raise StorageUnavailable(f"the result file of prediction {row.id} cannot be read"
                                 ) from None
    return StreamingResponse(_blocks(f), media_type=media,
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.delete("/{prediction_id}", status_code=204, responses=errors(404, 409))
def delete_prediction(prediction_id: str, services: ServicesDep, tenant: TenantDep
                      ) -> Response:
    """Delete a prediction that has ended, and its result file (409 while it is queued or
    running: cancel it first)."""
    row = services.freeing_space(
        lambda: services.meta.delete_job(prediction_id, tenant, PREDICT))
    services.artifacts.delete_prediction(row.id)  # after the commit: a stray file is swept
    return Response(status_code=204)
