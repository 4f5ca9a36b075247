"""Start and stop the servers a benchmark compares, on free loopback ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SERVER_CPUS: str | None = None
"""``taskset -c`` list the servers run on (``--pin``: the server on one core, the load
generator on the other, so one does not preempt the other mid-request); None: anywhere."""


class Server:
    def __init__(self, argv: list[str], env: dict[str, str], port: int, ready: str,
                 log_dir: Path = ROOT / "data", cwd: Path = ROOT) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(log_dir / f"bench-{port}.log", "wb")  # noqa: SIM115
        if SERVER_CPUS is not None:
            argv = ["taskset", "-c", SERVER_CPUS, *argv]
        self.proc = subprocess.Popen(argv, env={**os.environ, **env}, cwd=cwd,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(self.url + ready, timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server on {port} did not start; see {self.log.name}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def fitserve(data_dir: Path, workers: int = 2) -> Server:
    port = free_port()
    env = {"FITSERVE_DATA_DIR": str(data_dir), "FITSERVE_PORT": str(port),
           "FITSERVE_WORKERS": str(workers), "FITSERVE_DEVICE": "cpu",
           "FITSERVE_LOG_LEVEL": "warning"}
    s = Server([sys.executable, "-m", "service.cli", "serve"], env, port, "/readyz",
               data_dir.parent)
    # readiness says the worker processes run; their warm-up takes a moment more
    _wait_workers_warm(s)
    return s


def fitserve_predict(data_dir: Path, log_dir: Path) -> Server:
    """``fitserve serve --role predict`` on ``data_dir``: a replica beside the main server
    (no workers; it reads the same store)."""
    port = free_port()
    env = {"FITSERVE_DATA_DIR": str(data_dir), "FITSERVE_PORT": str(port),
           "FITSERVE_LOG_LEVEL": "warning"}
    return Server([sys.executable, "-m", "service.cli", "serve", "--role", "predict"], env,
                  port, "/readyz", log_dir)


def _wait_workers_warm(s: Server) -> None:
    seed = {"x": [[1.0], [2.0]], "y": [[1.0], [2.0]], "epochs": 1, "seed": 0}
    # generous: on a loaded machine the first request waits behind the workers' torch import
    job = httpx.post(s.url + "/v1/jobs", json=seed, timeout=120).json()
    httpx.get(f"{s.url}/v1/jobs/{job['id']}", params={"wait": 60}, timeout=70)


def bare(log_dir: Path = ROOT / "data") -> Server:
    port = free_port()
    return Server([sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--port", str(port),
                   "--log-level", "warning", "--no-access-log"], {}, port, "/docs", log_dir)
