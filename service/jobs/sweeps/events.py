"""A sweep's trials as a stream of events, read from the rows the controller writes (and
the workers, for the trials a batch's end records).

``trial`` events carry the place of the trial in the order trials ended as their id, so a
client that reconnects with the last id it saw gets only what is new; ``progress`` events
say how many trials are queued and running when that changes; the last event is ``end``
with the finished sweep.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, cast

import anyio
import anyio.to_thread

from service.jobs.events import END_ID, SHUTDOWN, JobEvent
from service.jobs.status import FINISHED
from service.store.sweeps import OPEN, SweepRecords, TrialState
from service.store.tables import SweepRow

POLL_S = 0.1


TrialStatus = Literal["queued", "running", "succeeded", "pruned", "failed", "cancelled"]


def trial_status(t: TrialState) -> TrialStatus:
    """What a client sees: an open trial is its job's status (queued or running)."""
    if t.trial.status != OPEN:
        return cast(TrialStatus, t.trial.status)
    return "queued" if t.job_status == "queued" else "running"


def best_trial(sweep: SweepRow, trials: list[TrialState]) -> TrialState | None:
    """The succeeded trial with the best objective so far (the lowest number on a tie)."""
    done = [t for t in trials if t.trial.status == "succeeded" and t.trial.value is not None]
    if not done:
        return None
    sign = -1.0 if sweep.direction == "maximize" else 1.0
    return min(done, key=lambda t: (sign * float(t.trial.value or 0.0), t.number))


async def sweep_events(
    store: SweepRecords,
    sweep_id: str,
    tenant: str,
    after: int,
    public: Callable[[SweepRow, list[TrialState]], dict[str, Any]],
    trial_public: Callable[[TrialState], dict[str, Any]],
    poll_s: float = POLL_S,
    stopping: Callable[[], bool] = lambda: False,
) -> AsyncIterator[JobEvent]:
    """Trials that ended after the ``after``-th, as they end; then ``end``. The rows are
    read in a thread: the event loop never waits on the store."""
    last = after
    active: tuple[int, int] | None = None
    while True:
        sweep = await anyio.to_thread.run_sync(store.get_sweep, sweep_id, tenant)
        trials = await anyio.to_thread.run_sync(store.trials, sweep_id)
        counts: dict[str, int] = {}
        for t in trials:
            s = trial_status(t)
            counts[s] = counts.get(s, 0) + 1
        progress = {"trials": sweep.max_trials, "created": len(trials), **counts}
        best = best_trial(sweep, trials)
        best_data = None if best is None else {"trial": best.number, "value": best.trial.value,
                                               "params": best.trial.params}
        ended = sorted((t for t in trials if t.trial.seq is not None and t.trial.seq > last),
                       key=lambda t: t.trial.seq or 0)
        for t in ended:
            last = t.trial.seq or last
            yield JobEvent("trial", str(last), {**trial_public(t), "progress": progress,
                                                "best": best_data})
        now = (counts.get("queued", 0), counts.get("running", 0))
        if now != active and sweep.status not in FINISHED:
            active = now
            yield JobEvent("progress", str(last), {"progress": progress, "best": best_data})
        if sweep.status in FINISHED:
            yield JobEvent("end", END_ID, public(sweep, trials))
            return
        if stopping():
            yield JobEvent(SHUTDOWN, str(last), {
                "message": "the server is stopping; reconnect with Last-Event-ID to resume",
                "sweep": public(sweep, trials)})
            return
        await anyio.sleep(poll_s)
