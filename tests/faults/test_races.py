"""DELETE of a dataset racing submits on it, against a real server: the delete and each job
insert see each other (one transaction each), so either the delete loses (409) and every
accepted job trains on the dataset, or it wins (204) and every submit after it is a 404.
Never a 204 with an accepted job failing ``dataset_missing``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import httpx
import pytest

from service.data.datasets import delete_dataset
from tests.e2e.conftest import ServerProcess, server_factory
from tests.faults.invariants import check_invariants
from tests.helpers import finished_job

__all__ = ["server_factory"]

pytestmark = pytest.mark.e2e

SUBMITS = 20
ROUNDS = 5
DELETE_AT = (0, 7, 14, 23)  # positions among the submits, ascending


def _in_threads(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Run the calls in threads released together; their responses in order."""
    gate = threading.Barrier(len(calls))
    out: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        gate.wait()
        try:
            out[i] = calls[i]()
        except BaseException as e:  # noqa: BLE001 - asserted on below
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(isinstance(r, httpx.Response) for r in out), out
    return out


def test_delete_racing_submits(server_factory):
    server: ServerProcess = server_factory(
        workers=1, FITSERVE_ORPHAN_GRACE_S="1", FITSERVE_SWEEP_INTERVAL_S="1").start()
    accepted: list[str] = []
    with httpx.Client(base_url=server.url, timeout=60,
                      limits=httpx.Limits(max_connections=SUBMITS + 4)) as http:
        for round_ in range(ROUNDS):
            # a classifier: each submit reads the targets (its classes) between its check of
            # the dataset and its insert, which widens the window the fix closes
            rows = [[float((i * 7 + round_) % 101), float(i % 13)] for i in range(4000)]
            up = http.post("/v1/datasets",
                           json={"x": rows, "y": [[float(r[0] > 50)] for r in rows]})
            assert up.status_code == 201, up.text
            ds = up.json()["id"]
            job = {"dataset_id": ds, "epochs": 2, "model": "logistic"}
            calls: list[Callable[[], httpx.Response]] = [
                partial(http.post, "/v1/jobs", json=job) for _ in range(SUBMITS)]
            # deletes spread among the submits (threads start in this order): more moments
            # at which one may land between a submit's check of the dataset and its insert
            for at in DELETE_AT:
                calls.insert(at, partial(http.delete, f"/v1/datasets/{ds}"))
            answers = _in_threads(calls)
            deletes = [answers.pop(at) for at in reversed(DELETE_AT)]
            for d in deletes:
                assert d.status_code in (204, 404, 409), d.text
            deleted = [d for d in deletes if d.status_code == 204]
            assert len(deleted) <= 1
            for r in answers:
                assert r.status_code in (202, 404), r.text
                if r.status_code == 404:
                    assert r.json()["error"]["type"] == "not_found", r.text
            ids = [r.json()["id"] for r in answers if r.status_code == 202]
            if not deleted:  # every delete lost to a job committed before it
                assert ids and not any(r.status_code == 404 for r in answers), \
                    [r.text for r in answers]
            jobs = [finished_job(http, job_id) for job_id in ids]
            failed = {j["id"]: j["error"] for j in jobs if j["status"] != "succeeded"}
            assert not failed, (f"round {round_}: deletes answered "
                                f"{[d.status_code for d in deletes]}; accepted jobs did not "
                                f"succeed: {failed}")
            accepted += ids
    check_invariants(server, accepted)


@pytest.mark.parametrize("model", ["linear", "logistic"])
def test_a_dataset_deleted_while_a_submit_reads_it_is_a_404(client, services, monkeypatch,
                                                             model):
    """The delete lands between the submit's check of the dataset and its insert (for a
    classifier, as the submit reads the targets from the deleted file): a 404, no job."""
    rows = [[float(i)] for i in range(8)]
    ds = client.post("/v1/datasets", json={"x": rows, "y": [[float(i % 2)] for i in range(8)]}
                     ).json()["id"]
    meta, artifacts = services.meta, services.artifacts
    get_dataset = meta.get_dataset

    def then_deleted(dataset_id: str, tenant: str = "default") -> Any:
        row = get_dataset(dataset_id, tenant)
        if dataset_id == ds:  # the first read (the submit's check): the delete goes now
            monkeypatch.setattr(meta, "get_dataset", get_dataset)
            delete_dataset(meta, artifacts, ds, tenant)
        return row

    monkeypatch.setattr(meta, "get_dataset", then_deleted)
    r = client.post("/v1/jobs", json={"dataset_id": ds, "epochs": 2, "model": model})
    assert r.status_code == 404, r.text
    assert r.json()["error"]["type"] == "not_found"
    assert meta.list_jobs("default", None, 10, None).count == 0
