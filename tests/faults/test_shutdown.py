"""A graceful stop (SIGTERM) with a long poll, an event stream and an upload open, and a job
running: the poll and the stream answer at once (the stream's last event says the server is
stopping), the server exits within its shutdown timeout, the job goes back to the queue with
its attempt refunded and runs once on the next start. And a second server on the same data
directory refuses to start, touching nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.faults.invariants import check_invariants
from tests.faults.pauses import Pauses, pause_env, submit
from tests.helpers import finished_job, wait_for

pytestmark = pytest.mark.e2e

class _Background(threading.Thread):
    def __init__(self, fn) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: object = None
        self.done_at: float | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except Exception as e:  # noqa: BLE001 - what the client saw is the result
            self.result = e
        self.done_at = time.monotonic()


def _stream_events(url: str, job_id: str, opened: threading.Event) -> list[str]:
    events = []
    with httpx.stream("GET", f"{url}/v1/jobs/{job_id}/events", timeout=60) as r:
        opened.set()
        for line in r.iter_lines():
            if line.startswith("event:"):
                events.append(line.split(":", 1)[1].strip())
    return events


def _slow_upload(url: str, started: threading.Event) -> int:
    def body():
        yield b"x,y\n"
        started.set()
        for i in range(600):
            time.sleep(0.05)
            yield f"{i},{i}\n".encode()

    r = httpx.post(f"{url}/v1/datasets?target=y", content=body(),
                   headers={"content-type": "text/csv"}, timeout=60)
    return r.status_code


def test_sigterm_ends_polls_and_streams_at_once_and_the_job_runs_once(server_factory,
                                                                        tmp_path: Path):
    pauses = Pauses(tmp_path / "pauses")
    server = server_factory(workers=1, **pause_env(pauses.folder),
                            FITSERVE_SHUTDOWN_TIMEOUT_S="3").start()
    job_id = submit(server)
    pauses.walk_to(job_id, "training")  # the job is running, held at its first progress

    poll = _Background(lambda: httpx.get(f"{server.url}/v1/jobs/{job_id}",
                                         params={"wait": 60}, timeout=90))
    opened = threading.Event()
    stream = _Background(lambda: _stream_events(server.url, job_id, opened))
    started = threading.Event()
    upload = _Background(lambda: _slow_upload(server.url, started))
    for t in (poll, stream, upload):
        t.start()
    assert opened.wait(30) and started.wait(30)
    time.sleep(0.3)  # the long poll is waiting inside the server (nothing to wait on)

    assert server.proc is not None
    stopped_at = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(timeout=30)  # default shutdown timeout 5 s; here 3 s
    exited = time.monotonic() - stopped_at
    server.proc = None
    for t in (poll, stream, upload):
        t.join(30)

    answer = poll.result
    assert isinstance(answer, httpx.Response) and answer.status_code == 200, answer
    assert answer.json()["status"] == "running"
    # the long poll did not hold the shutdown: it was answered as the stop began
    assert poll.done_at is not None and poll.done_at - stopped_at < exited
    assert stream.result is not None and not isinstance(stream.result, Exception), stream.result
    assert isinstance(stream.result, list) and stream.result[-1] == "shutdown", stream.result
    # the upload still coming was refused at once, to be sent again (never a 500)
    assert upload.result == 503 or isinstance(upload.result, httpx.TransportError), \
        upload.result

    pauses.go(job_id)
    again = server_factory(workers=1, data_dir=server.data_dir,
                           **pause_env(pauses.folder)).start()
    with httpx.Client(base_url=again.url, timeout=30) as http:
        job = finished_job(http, job_id, timeout=90)
    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    check_invariants(again, [job_id])


def test_a_second_server_on_the_same_data_dir_refuses_to_start(server_factory,
                                                                tmp_path: Path):
    pauses = Pauses(tmp_path / "pauses")
    first = server_factory(workers=1, **pause_env(pauses.folder)).start()
    with httpx.Client(base_url=first.url, timeout=30) as http:
        job_id = submit(first)
        pauses.walk_to(job_id, "training")

        second = ServerProcess(first.data_dir, 1, **pause_env(pauses.folder))
        out = subprocess.run(
            [sys.executable, "-m", "service.cli", "serve"], capture_output=True, text=True,
            timeout=60, cwd=Path(__file__).resolve().parents[2],
            env={**__import__("os").environ, "FITSERVE_DATA_DIR": str(first.data_dir),
                 "FITSERVE_PORT": str(second.port), "FITSERVE_WORKERS": "1"})
        assert out.returncode != 0
        lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1, out.stderr
        assert "in use by another fitserve server" in lines[0], lines
        assert "FITSERVE_DATA_DIR" in lines[0]

        running = http.get(f"/v1/jobs/{job_id}").json()
        assert running["status"] == "running" and running["attempts"] == 1, running
        pauses.go(job_id)
        job = finished_job(http, job_id, timeout=90)
    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    check_invariants(first, [job_id])
    wait_for(lambda: first.is_ready())
