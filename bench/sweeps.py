"""``python -m bench.sweeps [--quick] [--rounds N]``: a sweep against the same trials as jobs.

A: a grid of the seed job over lr x momentum (10 x 10 = 100 trials, 10 000 epochs each)
through ``POST /v1/sweeps``, followed with ``GET /v1/sweeps/{id}?wait=`` to its end (its
trials trained in batches that share the statistics and the eigendecomposition, each still a
job with its history and checkpoint). B: the same 100 trials as separate ``POST /v1/jobs``
from 16 client threads, each long-polled to its end. One server (2 workers) serves both,
A and B alternating over the rounds; the figure is the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from bench import servers
from bench.table import Row, Table, ratio_row

ROOT = Path(__file__).resolve().parents[1]
SEED = json.loads((ROOT / "tests" / "data" / "seed_example.json").read_text())


def grid(quick: bool) -> tuple[list[float], list[float], int]:
    """(learning rates, momenta, epochs): every pair a stable seed job."""
    side = 4 if quick else 10
    return ([float(v) for v in np.geomspace(1e-3, 1.5e-2, side)],
            [float(v) for v in np.linspace(0.0, 0.8, side)], 1000 if quick else 10_000)


def sweep_once(http: httpx.Client, dataset: str, quick: bool) -> float:
    lrs, momenta, epochs = grid(quick)
    t0 = time.perf_counter()
    r = http.post("/v1/sweeps", json={
        "job": {"dataset_id": dataset, "epochs": epochs, "seed": 0},
        "search_space": {"optimizer.lr": {"choice": lrs},
                         "optimizer.momentum": {"choice": momenta}},
        "strategy": "grid", "objective": "train_loss"})
    r.raise_for_status()
    sweep_id = r.json()["id"]
    while True:
        sweep = http.get(f"/v1/sweeps/{sweep_id}", params={"wait": 60}).json()
        if sweep["status"] not in ("queued", "running"):
            break
    elapsed = time.perf_counter() - t0
    if sweep["status"] != "succeeded" or sweep["progress"]["succeeded"] != len(lrs) * len(
            momenta):
        raise RuntimeError(f"the sweep did not run every trial: {sweep['progress']}")
    return elapsed


def jobs_once(http: httpx.Client, dataset: str, quick: bool) -> float:
    lrs, momenta, epochs = grid(quick)

    def one(lr: float, momentum: float) -> str:
        r = http.post("/v1/jobs", json={"dataset_id": dataset, "epochs": epochs, "seed": 0,
                                        "optimizer": {"name": "sgd", "lr": lr,
                                                      "momentum": momentum}})
        r.raise_for_status()
        job_id = r.json()["id"]
        while True:
            job = http.get(f"/v1/jobs/{job_id}", params={"wait": 60}).json()
            if job["status"] not in ("queued", "running"):
                return str(job["status"])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda p: one(*p), [(a, b) for a in lrs for b in momenta]))
    elapsed = time.perf_counter() - t0
    if statuses.count("succeeded") != len(statuses):
        raise RuntimeError(f"not every job succeeded: {statuses}")
    return elapsed


def run(quick: bool, rounds: int, data: Path) -> list[Row]:
    server = servers.fitserve(data / "fitserve")
    table = Table()
    try:
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        with httpx.Client(base_url=server.url, timeout=120, limits=limits) as http:
            dataset = http.post("/v1/datasets", json={"x": SEED["x"], "y": SEED["y"]})
            dataset.raise_for_status()
            ds = dataset.json()["id"]
            a, b = [], []
            for _ in range(rounds):
                a.append(sweep_once(http, ds, quick))
                b.append(jobs_once(http, ds, quick))
        side = len(grid(quick)[0])
        table.append(ratio_row(f"sweep of {side * side} seed-job trials vs as many jobs",
                               a, b, "s", "<= 0.1", le=0.1))
    finally:
        server.stop()
    return list(table)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="a 4 x 4 grid of 1 000 epochs")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data", type=Path, default=None, help="where the server's data goes")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.data) as tmp:
        rows = run(args.quick, args.rounds, Path(tmp))
    return 0 if all(r.ok for r in rows) or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
