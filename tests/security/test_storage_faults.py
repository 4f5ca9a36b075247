"""The data directory stops taking writes (read-only, or as good as full): the job fails with
a clear ``storage_error``, an upload answers a clear 503, and the server keeps serving what
it has; once the directory takes writes again, so does the server.

The tests run as root, for whom chmod stops nothing. ``chattr +i`` (ext4, xfs, btrfs) makes a
directory immutable even to root: nothing is created, renamed or removed in it, while its
files stay readable. Where chattr is not allowed (no CAP_LINUX_IMMUTABLE, another
filesystem), the directory is moved aside and a regular file put in its place, so that
every write under it fails with an OSError too (and reads are then served from memory).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import finished_job, seed_example
from tests.security.conftest import StartServer

pytestmark = pytest.mark.e2e


def _writable(d: Path) -> bool:
    probe = d / ".write-probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        return False
    probe.unlink()
    return True


@contextmanager
def unwritable(d: Path) -> Iterator[str]:
    """``d`` refuses every write inside it until the block ends; yields how."""
    chattr = shutil.which("chattr")
    if chattr and subprocess.run([chattr, "+i", str(d)], capture_output=True).returncode == 0:
        try:
            assert not _writable(d), "chattr +i did not stop writes"
            yield "immutable"
        finally:
            subprocess.run([chattr, "-i", str(d)], check=True)
        return
    aside = d.with_name(d.name + ".aside")
    d.rename(aside)
    d.write_bytes(b"")
    try:
        yield "a file in its place"
    finally:
        d.unlink()
        aside.rename(d)


def _finished(http, job_id: str) -> dict:
    return finished_job(http, job_id)


def test_unwritable_storage_fails_the_work_clearly_and_serving_goes_on(
    start_server: StartServer, client_for
) -> None:
    server = start_server(workers=1)
    http = client_for(server)
    d = seed_example()
    ds = http.post("/v1/datasets", json={"x": d["x"], "y": d["y"]}).json()
    old = _finished(http, http.post("/v1/jobs", json={"dataset_id": ds["id"], "epochs": 100,
                                                      "seed": 0, "model_name": "old"}).json()["id"])
    assert old["status"] == "succeeded", old
    served = http.post("/predict", json={"model": "old", "x": [[3.3]]}).json()["y"]

    with unwritable(server.data_dir / "checkpoints") as how:
        job = http.post("/v1/jobs", json={"dataset_id": ds["id"], "epochs": 100, "seed": 1,
                                          "model_name": "new"})
        assert job.status_code == 202, job.text
        failed = _finished(http, job.json()["id"])
        assert failed["status"] == "failed" and failed["model_id"] is None, (how, failed)
        assert failed["error"]["type"] == "storage_error", (how, failed)
        assert "checkpoint" in failed["error"]["message"], failed
        assert str(server.data_dir) not in failed["error"]["message"], failed
        # what the server has, it still serves
        assert http.get("/healthz").status_code == 200
        r = http.post("/predict", json={"model": "old", "x": [[3.3]]})
        assert r.status_code == 200 and r.json()["y"] == served, (how, r.text)
        assert http.get("/v1/models").json()["count"] == 1
        r = http.post("/predict", json={"model": "new", "x": [[3.3]]})
        assert r.status_code == 404, r.text

    with unwritable(server.data_dir / "datasets") as how:
        r = http.post("/v1/datasets", json={"x": [[1.0], [2.0]], "y": [[3.0], [4.0]]})
        assert r.status_code == 503, (how, r.text)
        err = r.json()["error"]
        assert err["type"] == "storage_error" and "dataset" in err["message"], err
        assert str(server.data_dir) not in err["message"], err
        assert http.get("/v1/datasets").json()["count"] == 1  # nothing half-made
        assert http.post("/predict", json={"model": "old", "x": [[3.3]]}).status_code == 200

    # writable again: the same work now succeeds
    again = _finished(http, http.post("/v1/jobs", json={"dataset_id": ds["id"], "epochs": 100,
                                                        "seed": 1, "model_name": "new"}
                                      ).json()["id"])
    assert again["status"] == "succeeded", again
    r = http.post("/v1/datasets", json={"x": [[1.0], [2.0]], "y": [[3.0], [4.0]]})
    assert r.status_code == 201, r.text


def test_a_dataset_file_gone_from_disk_fails_the_job_without_naming_paths(
    client, run_queued, settings
) -> None:
    ds = client.post("/v1/datasets", json={"x": [[1.0], [2.0]], "y": [[1.0], [2.0]]}).json()
    for f in (settings.data_dir / "datasets").iterdir():
        f.unlink()
    job = client.post("/v1/jobs", json={"dataset_id": ds["id"], "epochs": 5})
    assert job.status_code == 202, job.text
    assert run_queued() == ["failed"]
    err = client.get(job.headers["location"]).json()["error"]
    assert err["type"] == "storage_error", err
    assert str(settings.data_dir) not in err["message"] and ds["sha256"] not in err["message"]
