"""/v1/sweeps: hyperparameter searches whose trials are jobs; follow them, cancel them, plot
them. The controller that advances sweeps starts and stops with the app (this router's
lifespan, merged into the app's by FastAPI: after the workers start, before they stop)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
import orjson
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Response
from fastapi.concurrency import run_in_threadpool
from sse_starlette import EventSourceResponse, ServerSentEvent

from service.api.deps import ServicesDep, TenantDep, require_room
from service.api.responses import JSONBytes, errors, require_json
from service.api.routes.jobs import raw_body
from service.api.schemas import (
    JobError,
    SweepBest,
    SweepCreate,
    SweepProgress,
    SweepPruning,
    SweepPublic,
    SweepsPublic,
    SweepTrial,
)
from service.errors import Conflict, NotFound
from service.jobs.events import END_ID, parse_last_event_id
from service.jobs.status import FINISHED, JobStatus
from service.jobs.sweeps.controller import SweepController, sweep_records
from service.jobs.sweeps.events import best_trial, sweep_events, trial_status
from service.jobs.sweeps.space import Dimension
from service.jobs.sweeps.submit import SweepRequest, submit_sweep_once
from service.services import Services
from service.store.sweeps import TrialState
from service.store.tables import SweepRow
from service.training.spec import TrainingSpec


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    services: Services = app.state.services
    controller = SweepController(services)
    services.extra["sweep_controller"] = controller
    queue = services.queue
    pushed = getattr(queue, "on_event", None)
    if pushed is not None:  # the local pool says when a job ends: a trial's end is seen at once
        def on_event(event: dict[str, Any]) -> None:
            pushed(event)
            # a trial a batch's end recorded in a sweep with no trial left to ask for
            # (``settled``) needs no step: its sweep ends with its last batch
            if event.get("event") in ("job_finished", "model_created") \
                    and not event.get("settled"):
                controller.wake()

        setattr(queue, "on_event", on_event)  # noqa: B010 - JobQueue declares no on_event
    if queue is not None:  # without workers no trial would run (tests step it)
        controller.start(only_controller=services.settings.queue == "local")
    try:
        yield
    finally:
        controller.stop()
        if pushed is not None:
            setattr(queue, "on_event", pushed)  # noqa: B010


router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"], lifespan=lifespan)


def trial_public(t: TrialState) -> SweepTrial:
    tr = t.trial
    return SweepTrial(
        number=tr.number, status=trial_status(t), params=tr.params, value=tr.value,
        job_id=tr.job_id, model_id=t.model_id, engine_used=t.engine_used,
        # a diverged job may stop before its first progress write: its error says where
        epochs=max(t.progress_epoch, int((tr.error or {}).get("epoch") or 1) - 1),
        pruned_at=tr.pruned_at,
        losses={str(k): float(v) for k, v in tr.intermediate.items()},
        error=JobError(**tr.error) if tr.error else None)


def sweep_public(row: SweepRow, trials: list[TrialState] | None,
                 counts: dict[str, int] | None = None) -> SweepPublic:
    """The sweep; with ``trials`` its trials table and best trial, else ``counts``
    (trials by state) for its progress."""
    if trials is not None:
        counts = {}
        for t in trials:
            s = trial_status(t)
            counts[s] = counts.get(s, 0) + 1
    counts = counts or {}
    best = best_trial(row, trials) if trials is not None else None
    return SweepPublic(
        id=row.id, status=JobStatus(row.status), dataset_id=row.dataset_id,
        job=TrainingSpec.model_validate(row.job), device=row.device,
        search_space={d["path"]: Dimension.from_json(d).public() for d in row.search_space},
        strategy=row.strategy, objective=row.objective, direction=row.direction,
        max_trials=row.max_trials, max_parallel=row.max_parallel, seed=row.seed,
        pruning=SweepPruning(**row.pruning) if row.pruning else None,
        model_name=row.model_name, model_id=row.model_id,
        progress=SweepProgress(trials=row.max_trials, created=sum(counts.values()), **counts),
        best=SweepBest(trial=best.number, value=float(best.trial.value or 0.0),
                       params=best.trial.params, job_id=best.trial.job_id,
                       model_id=best.model_id) if best is not None else None,
        trials=[trial_public(t) for t in trials] if trials is not None else None,
        cancel_requested=row.cancel_requested,
        error=JobError(**row.error) if row.error else None,
        created_at=row.created_at, started_at=row.started_at, finished_at=row.finished_at)


def _read(services: Services, sweep_id: str, tenant: str,
          row: SweepRow | None = None) -> SweepPublic:
    """The sweep with its trials; ``row``: its row as just read (not read again)."""
    store = sweep_records(services)
    if row is None:
        row = store.get_sweep(sweep_id, tenant)
    return sweep_public(row, store.trials(sweep_id))


@router.post("", status_code=202, response_model=SweepPublic,
             responses=errors(400, 404, 409, 413, 415, 422, 429, 507),
             dependencies=[Depends(require_json), Depends(require_room)])
def create_sweep(body: SweepCreate, services: ServicesDep, tenant: TenantDep,
                 raw: Annotated[bytes, Depends(raw_body)],
                 idempotency_key: Annotated[str | None, Header(
                     alias="Idempotency-Key", description="A retry with the same key and "
                     "body returns the sweep the first request created; another body with "
                     "the key is a 409.")] = None) -> Response:
    """Start a sweep; it is stored as queued before this answers 202 (its trials follow)."""
    request = SweepRequest(
        search_space=body.search_space, strategy=body.strategy, objective=body.objective,
        direction=body.direction, max_trials=body.max_trials, max_parallel=body.max_parallel,
        seed=body.seed, model_name=body.model_name,
        pruning=body.pruning.model_dump() if body.pruning else None)
    row = submit_sweep_once(services, tenant, body.job.training_spec(), request,
                            idempotency_key=idempotency_key, request_body=raw,
                            dataset_id=body.job.dataset_id, x=body.job.x, y=body.job.y,
                            device=body.job.device)
    return JSONBytes(sweep_public(row, []).model_dump(mode="json"), status_code=202,
                     headers={"Location": f"/v1/sweeps/{row.id}"})


@router.get("", response_model=SweepsPublic)
def list_sweeps(
    services: ServicesDep,
    tenant: TenantDep,
    status: Annotated[JobStatus | None, Query(description="Only sweeps in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(description="`next` of the previous page.")] = None,
) -> SweepsPublic:
    """List sweeps, newest first, with their progress and best trial (no trials table)."""
    store = sweep_records(services)
    page = store.list_sweeps(tenant, status, limit, cursor)
    counts = store.trial_counts([r.id for r in page.rows])
    data = []
    for row in page.rows:
        public = sweep_public(row, None, counts.get(row.id))
        if row.best_trial is not None and row.best_value is not None:
            public.best = SweepBest(trial=row.best_trial, value=row.best_value,
                                    model_id=row.model_id)
        data.append(public)
    return SweepsPublic(data=data, count=page.count, next=page.next)


@router.get("/{sweep_id}", response_model=SweepPublic, responses=errors(404))
async def get_sweep(
    sweep_id: str,
    services: ServicesDep,
    tenant: TenantDep,
    wait: Annotated[float, Query(ge=0, le=60, description="Seconds to wait for the sweep to "
                                 "end before answering (long poll).")] = 0,
) -> SweepPublic:
    """A sweep's status, progress, best trial so far, and every trial."""
    store = sweep_records(services)
    deadline = anyio.current_time() + wait
    # woken when this process's controller ends the sweep, or a worker of its pool does (its
    # sweep_finished event): the row read again only as a backstop, every 0.5 s, as a job's
    # long poll does; where no events come (scale-out: another API's controller or a Celery
    # worker may end it), every 20 ms. The trials once, at the end
    entry = services.waiters.subscribe(sweep_id) if wait else None
    try:
        while True:
            row = await run_in_threadpool(store.get_sweep, sweep_id, tenant)
            left = deadline - anyio.current_time()
            if row.status in FINISHED or left <= 0 or services.stopping.is_set() \
                    or entry is None:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(entry[1].wait(), min(
                    left, 0.5 if services.waiters.pushed else _WAIT_POLL_S))
    finally:
        if entry is not None:
            services.waiters.unsubscribe(sweep_id, entry)
    # the trials read after the row: an ended sweep's are all ended with it
    return await run_in_threadpool(_read, services, sweep_id, tenant, row)


_WAIT_POLL_S = 0.02


@router.post("/{sweep_id}/cancel", status_code=202, response_model=SweepPublic,
             responses=errors(404, 409))
def cancel_sweep(sweep_id: str, services: ServicesDep, tenant: TenantDep) -> SweepPublic:
    """Cancel a sweep and every trial still queued or running (a queued one at once, a
    running one within about a second); it ends as cancelled once they have."""
    store = sweep_records(services)
    store.request_cancel(sweep_id, tenant)
    for job_id in store.active_trial_jobs(sweep_id):
        try:
            services.meta.request_cancel(job_id, tenant)
        except (Conflict, NotFound):  # ended (or deleted) meanwhile: nothing to cancel
            continue
        services.waiters.finished(job_id)
    controller = services.extra.get("sweep_controller")
    if controller is not None:
        controller.wake()
    return _read(services, sweep_id, tenant)


_STREAM_DOC = """`event: trial` each time a trial ends (its id orders the ended trials), with
the trial, the sweep's progress and its best trial; `event: progress` when the count of
queued and running trials changes; then one `event: end` with the sweep (id `end`).
Reconnecting with `Last-Event-ID` resumes after that event; after `end` the answer is 204."""


async def _sse(events: AsyncIterator[Any]) -> AsyncIterator[ServerSentEvent]:
    async for e in events:
        yield ServerSentEvent(data=orjson.dumps(e.data).decode(), event=e.event, id=e.id)


@router.get("/{sweep_id}/events", response_class=Response,
            responses={200: {"content": {"text/event-stream": {}}, "description": _STREAM_DOC},
                       204: {"description": "The client already has the `end` event"},
                       **errors(404, 422)})
async def stream_sweep_events(
    sweep_id: str,
    services: ServicesDep,
    tenant: TenantDep,
    last_event_id: Annotated[str | None, Header(description="Resume after this event.")] = None,
) -> Response:
    """Follow a sweep live: each trial as it ends, then the sweep."""
    after = parse_last_event_id(last_event_id)
    store = sweep_records(services)
    row = await run_in_threadpool(store.get_sweep, sweep_id, tenant)
    if after == END_ID and row.status in FINISHED:
        return Response(status_code=204)
    start = after if isinstance(after, int) else 0

    def public(r: SweepRow, trials: list[TrialState]) -> dict[str, Any]:
        return sweep_public(r, trials).model_dump(mode="json")

    def one(t: TrialState) -> dict[str, Any]:
        return trial_public(t).model_dump(mode="json")

    return EventSourceResponse(_sse(sweep_events(
        store, sweep_id, tenant, start, public, one, stopping=services.stopping.is_set)))


@router.get("/{sweep_id}/plot.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}, "description": "A PNG image"},
                       **errors(404)})
async def sweep_plot(sweep_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    """The objective against the trial number (and the best so far), and against each
    searched field."""
    def render() -> bytes:
        from service.jobs.sweeps.plot import sweep_plot_png

        store = sweep_records(services)
        row = store.get_sweep(sweep_id, tenant)
        return sweep_plot_png(row, store.trials(sweep_id))

    return Response(await run_in_threadpool(render), media_type="image/png")
