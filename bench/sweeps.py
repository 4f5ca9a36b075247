"""``python -m bench.sweeps [--quick] [--rounds N] [--only grid,mlp,optuna]``: a sweep against
the same trials as jobs.

Three rows; one server (2 workers) serves every fitserve side, the sides alternating over
the rounds, after an untimed warm-up sweep and warm-up jobs (the server's first sweep also
imports Optuna); each figure is the median of the per-round ratios.

- A grid of the seed job over lr x momentum (10 x 10 = 100 trials, 10 000 epochs each)
  through ``POST /v1/sweeps``, followed with ``GET /v1/sweeps/{id}?wait=`` to its end (its
  trials trained in batches that share the statistics and the eigendecomposition, each
  still a job with its history and checkpoint), against the same 100 trials as separate
  ``POST /v1/jobs`` from 16 client threads, each long-polled to its end.
- A 32-trial mlp sweep (hidden 32, 2 000 rows, 500 epochs, Adam: 8 learning rates x 4
  seeds; its trials trained as one tensor program per batch) against the same 32 trials
  as separate jobs.
- The first row's sweep against Optuna driving a hand-written PyTorch loop (the seed
  program: ``nn.Linear``, ``MSELoss``, ``SGD``) over the same 100 trials, in this process.
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
import optuna
import torch

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
    _follow(http, r.json(), len(lrs) * len(momenta))
    return time.perf_counter() - t0


def jobs_once(http: httpx.Client, dataset: str, quick: bool) -> float:
    lrs, momenta, epochs = grid(quick)
    return _jobs(http, [{"dataset_id": dataset, "epochs": epochs, "seed": 0,
                         "optimizer": {"name": "sgd", "lr": lr, "momentum": momentum}}
                        for lr in lrs for momentum in momenta])


def warm_up(http: httpx.Client, dataset: str) -> None:
    """An untimed 4-trial sweep and 4 jobs: what a server pays once (the API imports Optuna
    at its first sweep) is not what each sweep costs."""
    lrs, momenta, _ = grid(True)
    r = http.post("/v1/sweeps", json={
        "job": {"dataset_id": dataset, "epochs": 100, "seed": 0},
        "search_space": {"optimizer.lr": {"choice": lrs[:2]},
                         "optimizer.momentum": {"choice": momenta[:2]}},
        "strategy": "grid", "objective": "train_loss"})
    r.raise_for_status()
    _follow(http, r.json(), 4)
    _jobs(http, [{"dataset_id": dataset, "epochs": 100, "seed": 0,
                  "optimizer": {"name": "sgd", "lr": lr, "momentum": m}}
                 for lr in lrs[:2] for m in momenta[:2]])


def _follow(http: httpx.Client, sweep: dict, trials: int) -> None:
    while sweep["status"] in ("queued", "running"):
        sweep = http.get(f"/v1/sweeps/{sweep['id']}", params={"wait": 60}).json()
    if sweep["status"] != "succeeded" or sweep["progress"]["succeeded"] != trials:
        raise RuntimeError(f"the sweep did not run every trial: {sweep['progress']}")


def _jobs(http: httpx.Client, bodies: list[dict]) -> float:
    def one(body: dict) -> str:
        r = http.post("/v1/jobs", json=body)
        r.raise_for_status()
        job_id = r.json()["id"]
        while True:
            job = http.get(f"/v1/jobs/{job_id}", params={"wait": 60}).json()
            if job["status"] not in ("queued", "running"):
                return str(job["status"])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(one, bodies))
    elapsed = time.perf_counter() - t0
    if statuses.count("succeeded") != len(statuses):
        raise RuntimeError(f"not every job succeeded: {statuses}")
    return elapsed


def mlp_grid(quick: bool) -> tuple[dict, list[float], list[int]]:
    """(base job, learning rates, seeds) of the mlp sweep."""
    job = {"model": {"kind": "mlp", "hidden": [32]}, "optimizer": {"name": "adam"},
           "epochs": 100 if quick else 500}
    lrs = [float(v) for v in np.geomspace(1e-3, 3e-2, 4 if quick else 8)]
    return job, lrs, [0, 1] if quick else [0, 1, 2, 3]


def mlp_data(quick: bool) -> dict:
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (500 if quick else 2000, 1))
    y = np.sin(2 * x) + 0.1 * rng.standard_normal(x.shape)
    return {"x": x.tolist(), "y": y.tolist()}


def mlp_sweep_once(http: httpx.Client, dataset: str, quick: bool) -> float:
    job, lrs, seeds = mlp_grid(quick)
    t0 = time.perf_counter()
    r = http.post("/v1/sweeps", json={
        "job": {"dataset_id": dataset, **job},
        "search_space": {"optimizer.lr": {"choice": lrs}, "seed": {"choice": seeds}},
        "strategy": "grid", "objective": "train_loss"})
    r.raise_for_status()
    _follow(http, r.json(), len(lrs) * len(seeds))
    return time.perf_counter() - t0


def mlp_jobs_once(http: httpx.Client, dataset: str, quick: bool) -> float:
    job, lrs, seeds = mlp_grid(quick)
    return _jobs(http, [{"dataset_id": dataset, **job, "seed": seed,
                         "optimizer": {**job["optimizer"], "lr": lr}}
                        for lr in lrs for seed in seeds])


def optuna_loop_once(quick: bool) -> float:
    """Optuna's grid over the seed job's lr x momentum, each trial the seed program."""
    lrs, momenta, epochs = grid(quick)
    x = torch.tensor(SEED["x"], dtype=torch.float32)
    y = torch.tensor(SEED["y"], dtype=torch.float32)

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", min(lrs), max(lrs))
        momentum = trial.suggest_float("momentum", min(momenta), max(momenta))
        torch.manual_seed(0)
        model = torch.nn.Linear(1, 1)
        crit = torch.nn.MSELoss()
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        for _ in range(epochs):
            loss = crit(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return float(loss.detach())

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(
        {"lr": lrs, "momentum": momenta}, seed=0))
    study.optimize(objective, n_trials=len(lrs) * len(momenta))
    return time.perf_counter() - t0


ROWS = ("grid", "mlp", "optuna")


def run(quick: bool, rounds: int, data: Path, rows: tuple[str, ...] = ROWS) -> list[Row]:
    server = servers.fitserve(data / "fitserve")
    table = Table()
    try:
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        with httpx.Client(base_url=server.url, timeout=120, limits=limits) as http:
            dataset = http.post("/v1/datasets", json={"x": SEED["x"], "y": SEED["y"]})
            dataset.raise_for_status()
            ds = dataset.json()["id"]
            mlp = http.post("/v1/datasets", json=mlp_data(quick))
            mlp.raise_for_status()
            mlp_ds = mlp.json()["id"]
            a, b, c, d, e = [], [], [], [], []
            if "grid" in rows or "optuna" in rows:  # steady state: not the server's first
                warm_up(http, ds)  # sweep (its Optuna import, 0.2 s) nor its first jobs
            for _ in range(rounds):
                if "grid" in rows or "optuna" in rows:
                    a.append(sweep_once(http, ds, quick))
                if "grid" in rows:
                    b.append(jobs_once(http, ds, quick))
                if "mlp" in rows:
                    c.append(mlp_sweep_once(http, mlp_ds, quick))
                    d.append(mlp_jobs_once(http, mlp_ds, quick))
                if "optuna" in rows:
                    e.append(optuna_loop_once(quick))
        side = len(grid(quick)[0])
        if "grid" in rows:
            table.append(ratio_row(f"sweep of {side * side} seed-job trials vs as many jobs",
                                   a, b, "s", "<= 0.1", le=0.1))
        if "mlp" in rows:
            job, lrs, seeds = mlp_grid(quick)
            n = len(mlp_data(quick)["x"])
            table.append(ratio_row(
                f"mlp sweep of {len(lrs) * len(seeds)} trials (hidden 32, {n} rows, "
                f"{job['epochs']} epochs) vs as many jobs", c, d, "s", "<= 0.3", le=0.3))
        if "optuna" in rows:
            table.append(ratio_row(
                f"sweep of {side * side} seed-job trials vs Optuna + a PyTorch loop", a, e,
                "s", "<= 0.02", le=0.02))
    finally:
        server.stop()
    for name, x, y in (("grid", a, b), ("mlp", c, d), ("optuna", a, e)):
        if name in rows and y:  # the spread the median hides (a loaded machine moves it)
            print(f"{name}: per-round A/B " + ", ".join(f"{p / q:.3g}" for p, q in zip(
                x, y, strict=False)))
    return list(table)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="a 4 x 4 grid of 1 000 epochs")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data", type=Path, default=ROOT / "data",
                   help="under which the server's data goes (a scratch folder in it), as for "
                        "`python -m bench` and `make serve`")
    p.add_argument("--only", default=",".join(ROWS),
                   help=f"the rows to run, of {','.join(ROWS)} (optuna's loop takes minutes)")
    args = p.parse_args(argv)
    only = tuple(r for r in args.only.split(",") if r)
    if not only or set(only) - set(ROWS):
        p.error(f"--only takes rows of {','.join(ROWS)}")
    args.data.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.data) as tmp:
        rows = run(args.quick, args.rounds, Path(tmp), only)
    return 0 if all(r.ok for r in rows) or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
