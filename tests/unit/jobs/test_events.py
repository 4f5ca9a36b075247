"""The job event stream, on a real metadata store; the worker's writes are made by hand."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from service.errors import InvalidInput
from service.jobs.events import END_ID, JobEvent, job_events, parse_last_event_id
from service.store.metadata import MetadataStore
from service.store.tables import JobRow


@pytest.fixture
def meta(tmp_path: Path) -> MetadataStore:
    store = MetadataStore(f"sqlite:///{tmp_path / 'meta.db'}")
    store.create_schema()
    return store


def _public(row: JobRow) -> dict[str, Any]:
    return {"id": row.id, "status": row.status}


def _running_job(meta: MetadataStore, epochs: int = 1000) -> JobRow:
    meta.create_job(tenant="default", dataset_id="ds_x", spec={}, device="cpu",
                    model_name=None, epochs=epochs)
    job = meta.claim_next("w1")
    assert job is not None
    return job


def _collect(meta: MetadataStore, job_id: str, after: int = 0, poll_s: float = 0.1,
             seen: Callable[[JobEvent], None] | None = None) -> list[tuple[float, JobEvent]]:
    async def main() -> list[tuple[float, JobEvent]]:
        out = []
        with anyio.fail_after(60):
            async for e in job_events(meta, job_id, "default", after, _public, poll_s):
                out.append((time.monotonic(), e))
                if seen is not None:
                    seen(e)
        return out

    return anyio.run(main)


def test_progress_goes_out_at_most_once_per_poll_then_the_end(meta):
    job = _running_job(meta)
    stop = threading.Event()
    reported: list[int] = []

    def seen(e: JobEvent) -> None:
        if e.event == "progress":
            reported.append(e.data["epoch"])
            if len(reported) == 4:
                stop.set()  # enough seen: the worker finishes the job

    def worker() -> None:  # writes far more often than the stream reports, until told
        epoch = 0
        while not stop.is_set():
            epoch += 1
            meta.update_progress(job.id, epoch, 1.0 / epoch, None)
        meta.finish_job(job.id, "w1", status="succeeded")

    t = threading.Thread(target=worker)
    t.start()
    try:
        events = _collect(meta, job.id, seen=seen)
    finally:
        stop.set()
        t.join()
    progress = [(ts, e) for ts, e in events if e.event == "progress"]
    assert len(progress) >= 4
    gaps = [b[0] - a[0] for a, b in zip(progress, progress[1:], strict=False)]
    assert min(gaps) >= 0.099, gaps
    epochs = [e.data["epoch"] for _, e in progress]
    assert epochs == sorted(set(epochs))
    assert all(e.id == str(e.data["epoch"]) for _, e in progress)
    assert progress[-1][1].data["loss"] == pytest.approx(1.0 / epochs[-1])
    last = events[-1][1]
    assert last.event == "end" and last.id == END_ID
    assert last.data == {"id": job.id, "status": "succeeded"}


def test_a_finished_job_answers_at_once_and_resumes_after_the_last_id(meta):
    job = _running_job(meta)
    meta.update_progress(job.id, 1000, 0.25, 0.5)
    meta.finish_job(job.id, "w1", status="failed", error={"type": "diverged", "message": "x"})

    events = [e for _, e in _collect(meta, job.id)]
    assert [(e.event, e.id) for e in events] == [("progress", "1000"), ("end", END_ID)]
    assert events[0].data == {"epoch": 1000, "epochs": 1000, "loss": 0.25, "val_loss": 0.5}
    assert events[1].data["status"] == "failed"

    resumed = [e for _, e in _collect(meta, job.id, after=1000)]
    assert [e.event for e in resumed] == ["end"]


def test_a_job_run_again_starts_its_progress_over(meta):
    job = _running_job(meta)
    meta.update_progress(job.id, 500, 0.5, None)
    got: list[JobEvent] = []

    async def main() -> None:
        with anyio.fail_after(60):
            async for e in job_events(meta, job.id, "default", 0, _public, 0.05):
                got.append(e)
                if e.event == "progress" and e.data["epoch"] == 500:
                    # the worker died; the job is claimed again and restarts at epoch 1
                    await anyio.to_thread.run_sync(meta.requeue_running, None, 3)
                    again = await anyio.to_thread.run_sync(meta.claim_next, "w2")
                    assert again is not None
                    await anyio.to_thread.run_sync(meta.update_progress, job.id, 20, 0.9, None)
                elif e.event == "progress":
                    await anyio.to_thread.run_sync(
                        lambda: meta.finish_job(job.id, "w2", status="succeeded"))

    anyio.run(main)
    assert [(e.event, e.id) for e in got] == [("progress", "500"), ("progress", "20"),
                                              ("end", END_ID)]


@pytest.mark.parametrize(("value", "parsed"), [
    (None, None), ("", None), ("  ", None), ("0", 0), ("1234", 1234), (" 7 ", 7),
    ("end", END_ID),
])
def test_last_event_id_parses(value, parsed):
    assert parse_last_event_id(value) == parsed


@pytest.mark.parametrize("value", ["x", "-3", "1.5", "END"])
def test_a_bad_last_event_id_is_invalid_input(value):
    with pytest.raises(InvalidInput, match="Last-Event-ID"):
        parse_last_event_id(value)
