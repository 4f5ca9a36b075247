"""The disk under the data directory fills up (a small tmpfs filled on purpose, or the
simulated full disk where none can be mounted: tests/faults/disk.py), at each of
the server's write points, and then space comes back. Nothing answers 500; what cannot be
stored answers 507 in the JSON error shape; space can be freed through the API while the
disk is full; ``/readyz`` says not ready; no worker dies for good; every accepted job ends
with its history; no file is left that no record points to."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.e2e.conftest import ServerProcess
from tests.faults.disk import Disk, default_kind, small_disk
from tests.faults.invariants import check_invariants, stray_files, wait_readiness
from tests.faults.pauses import JOB, Pauses
from tests.helpers import finished_job, seed_example, wait_for

pytestmark = pytest.mark.e2e

FAST_SWEEP = {"FITSERVE_SWEEP_INTERVAL_S": "1", "FITSERVE_ORPHAN_GRACE_S": "1"}


KINDS = sorted({default_kind(), "simulated"})
"""The first test runs on the simulated disk too, so that it is tried where a tmpfs is."""


@pytest.fixture
def disk(request) -> Iterator[Disk]:
    with small_disk(getattr(request, "param", None), size_mb=48) as d:
        yield d


def _start(server_factory, disk: Disk, workers: int = 1, **env: str) -> ServerProcess:
    return server_factory(workers=workers, data_dir=disk.path, **FAST_SWEEP, **disk.env,
                          **env).start()


def _random_csv(rows: int, seed: int, features: int = 1) -> bytes:
    table = np.random.default_rng(seed).standard_normal((rows, features + 1)).round(5)
    header = ",".join([f"f{i}" for i in range(features)] + ["y"])
    return (header + "\n" + "\n".join(",".join(map(str, r)) for r in table.tolist())
            + "\n").encode()


def _assert_error(r: httpx.Response, status: int, type_: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["type"] == type_, body
    assert "Retry-After" in r.headers


@pytest.mark.parametrize("disk", KINDS, indirect=True)
def test_a_full_disk_answers_507_serves_on_and_frees_space_through_the_api(server_factory,
                                                                          disk):
    server = _start(server_factory, disk)
    d = seed_example()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        job = http.post("/v1/jobs", json={"x": d["x"], "y": d["y"], "epochs": 100}).json()
        model_id = finished_job(http, job["id"])["model_id"]
        big = http.post("/v1/datasets?target=y", content=_random_csv(200_000, 1),
                        headers={"content-type": "text/csv"})
        assert big.status_code == 201, big.text

        disk.fill()
        ready = wait_readiness(server, ready=False)
        assert ready["checks"]["data_dir"].startswith("full"), ready
        _assert_error(http.post("/v1/datasets?target=y", content=_random_csv(10, 2),
                                headers={"content-type": "text/csv"}),
                      507, "insufficient_storage")
        _assert_error(http.post("/v1/jobs", json={"x": d["x"], "y": d["y"]}),
                      507, "insufficient_storage")
        # what is stored is still served
        predicted = http.post(f"/v1/models/{model_id}/predict", json={"x": [[1.0]]})
        assert predicted.status_code == 200, predicted.text
        assert http.get(f"/v1/jobs/{job['id']}").status_code == 200
        # and space can be freed through the API, on a disk with no byte left
        gone = http.delete(f"/v1/datasets/{big.json()['id']}")
        assert gone.status_code == 204, gone.text
        assert http.get(f"/v1/datasets/{big.json()['id']}").status_code == 404

        disk.free()
        wait_readiness(server, ready=True)
        again = http.post("/v1/datasets?target=y", content=_random_csv(10, 2),
                          headers={"content-type": "text/csv"})
        assert again.status_code == 201, again.text
    check_invariants(server, [job["id"]])


@pytest.mark.parametrize("what", ["all", "records"])
def test_writes_that_hit_a_full_disk_answer_507_and_leave_nothing(server_factory, disk, what):
    """No free-space margin (FITSERVE_MIN_FREE_BYTES=0): the write itself fails, at the
    dataset file or at the record's commit, depending on how much room is left (the wide
    datasets' records, with a summary per column, take new database pages)."""
    server = _start(server_factory, disk, workers=0, FITSERVE_MIN_FREE_BYTES="0")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.post("/v1/datasets?target=y", content=_random_csv(10, 0),
                         headers={"content-type": "text/csv"}).status_code == 201
        disk.fill(what)
        answers = [http.post("/v1/datasets?target=y", content=_random_csv(20, seed, 300),
                             headers={"content-type": "text/csv"}) for seed in range(3, 9)]
        statuses = {r.status_code for r in answers}
        assert statuses <= {201, 507}, [r.text for r in answers]
        assert 507 in statuses, "the disk never filled"
        for r in answers:
            if r.status_code == 507:
                _assert_error(r, 507, "insufficient_storage")
        disk.free()
    check_invariants(server)


def test_the_disk_fills_while_jobs_train_and_they_all_end_once_it_clears(server_factory, disk,
                                                                        tmp_path):
    pauses = Pauses(tmp_path / "pauses")  # the jobs wait at their first progress write
    server = _start(server_factory, disk, workers=2, FITSERVE_MIN_FREE_BYTES="0",
                    FITSERVE_FAULT_PAUSE="training", FITSERVE_FAULT_DIR=str(pauses.folder))
    d = seed_example()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        accepted = [http.post("/v1/jobs", json={"x": d["x"], "y": d["y"], **JOB,
                                                "seed": i}).json()["id"] for i in range(3)]

        def status(job_id: str) -> str:
            return http.get(f"/v1/jobs/{job_id}").json()["status"]

        def training() -> list[str]:
            return [j for j in accepted if pauses.marker(j, "training").exists()]

        wait_for(lambda: len(training()) == 2)
        running = training()
        waiting = next(j for j in accepted if j not in running)
        pauses.go(waiting)  # it will not stop when it runs, later
        disk.fill()
        wait_for(lambda: "full" in http.get("/readyz").json()["checks"]["data_dir"])
        for job_id in running:  # the running jobs go on, and meet the full disk at their
            pauses.go(job_id)   # ends (progress writes may go on: the database's log has
                                # room of its own)...

        def met_the_wall(job_id: str) -> bool:  # ended, or its end could not be recorded
            log = server.log.read_text(errors="replace")
            return status(job_id) != "running" or f"the store failed under job {job_id}" in log

        wait_for(lambda: all(met_the_wall(j) for j in running), timeout=90, every=0.2)
        # ... the queued one is not taken while there is no room for its checkpoint ...
        assert status(waiting) == "queued"
        workers = http.get("/readyz").json()["checks"]["workers"]
        assert workers == "2 alive", workers  # no worker died of it
        disk.free()
    # ... and once it clears, every job ends, each once, and nothing is left behind
    jobs = check_invariants(server, accepted)
    assert jobs[waiting]["status"] == "succeeded", jobs[waiting]
    for job_id in running:
        job = jobs[job_id]
        if job["status"] == "failed":  # its checkpoint met the full disk: said so
            assert job["error"]["type"] == "storage_error", job
            assert "disk is full" in job["error"]["message"], job
        else:  # its end could not be committed: it went back to the queue and ran again
            assert job["status"] == "succeeded", job
    assert not stray_files(disk.path)
