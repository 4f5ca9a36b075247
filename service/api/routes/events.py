"""GET /v1/jobs/{id}/events: a job's progress as Server-Sent Events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from service.api.deps import MetaDep, ServicesDep, TenantDep
from service.api.responses import errors
from service.api.views import job_public
from service.jobs.events import END_ID, job_events, parse_last_event_id
from service.jobs.status import FINISHED
from service.store.tables import JobRow

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_STREAM_DOC = """`event: progress` with `{"epoch", "epochs", "loss", "val_loss"}` at most every
100 ms (its id is the epoch), then one `event: end` with the finished job (its id is `end`),
and the stream closes. Reconnecting with `Last-Event-ID` resumes after that event; after `end`
the answer is 204, which tells an EventSource to stop. A server that stops first sends
`event: shutdown` (the job as it stands) and closes: reconnect to resume."""


def _public(row: JobRow) -> dict[str, Any]:
    return job_public(row).model_dump(mode="json")


async def _sse(events: AsyncIterator[Any]) -> AsyncIterator[ServerSentEvent]:
    async for e in events:
        yield ServerSentEvent(data=orjson.dumps(e.data).decode(), event=e.event, id=e.id)


@router.get(
    "/{job_id}/events",
    response_class=Response,
    responses={200: {"content": {"text/event-stream": {}}, "description": _STREAM_DOC},
               204: {"description": "The client already has the `end` event"},
               **errors(404, 422)},
)
async def stream_job_events(
    job_id: str,
    meta: MetaDep,
    services: ServicesDep,
    tenant: TenantDep,
    last_event_id: Annotated[str | None, Header(description="Resume after this event.")] = None,
) -> Response:
    """Follow a job live: progress events until it ends, then its final status."""
    after = parse_last_event_id(last_event_id)
    row = await run_in_threadpool(meta.get_job, job_id, tenant)  # a 404 before any stream
    if after == END_ID and row.status in FINISHED:
        return Response(status_code=204)
    start = after if isinstance(after, int) else 0
    return EventSourceResponse(_sse(job_events(meta, job_id, tenant, start, _public,
                                               stopping=services.stopping.is_set)))
