"""Test data from small plain functions, and a poller with a deadline."""

from __future__ import annotations

import functools
import gc
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

SEED_FILE = Path(__file__).parent / "data" / "seed_example.json"
T = TypeVar("T")


def seed_example() -> dict[str, Any]:
    return json.loads(SEED_FILE.read_text())


def seed_arrays() -> tuple[np.ndarray, np.ndarray]:
    d = seed_example()
    return np.array(d["x"], np.float32), np.array(d["y"], np.float32)


def make_linear_data(
    n: int, w: np.ndarray, b: np.ndarray, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows x ~ N(0, 1) of len(w[0]) features and y = x @ w.T + b + noise."""
    rng = np.random.default_rng(seed)
    w = np.atleast_2d(np.asarray(w, np.float64))
    x = rng.standard_normal((n, w.shape[1]))
    y = x @ w.T + np.asarray(b, np.float64) + noise * rng.standard_normal((n, w.shape[0]))
    return x.astype(np.float32), y.astype(np.float32)


_PROBE: Any = None


def probe() -> Any:
    """One client for every readiness poll of this test process: ``httpx.get`` builds a
    client, and with it a TLS context, each call (some 35 ms of CPU, 20 times a second while
    a server starts, on the cores the server starts on). No keep-alive: each poll is a new
    connection, so a server that went away is never answered from a stale one."""
    import httpx

    global _PROBE
    if _PROBE is None:
        _PROBE = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))
    return _PROBE


def wait_for(check: Callable[[], T | None], timeout: float = 60.0, every: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {value!r})")
        time.sleep(every)


def plain_torch_loop(x: np.ndarray, y: np.ndarray, epochs: int, seed: int, lr: float = 0.01,
                     bias: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The seed program's loop, verbatim in spirit: the reference for every path."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Linear(x.shape[1], y.shape[1], bias=bias)
    crit = nn.MSELoss()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    losses = []
    for _ in range(epochs):
        loss = crit(model(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    w = model.weight.detach().numpy().copy()
    b = model.bias.detach().numpy().copy() if bias else None
    return np.array(losses), w, b


@functools.lru_cache(maxsize=8)
def seed_plain_loop(epochs: int, seed: int = 0, lr: float = 0.01
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``plain_torch_loop`` on the seed data, run once per process (the 10 000-epoch reference
    costs seconds): the same arrays, read-only, for every test that asks."""
    losses, w, b = plain_torch_loop(*seed_arrays(), epochs, seed=seed, lr=lr)
    for a in (losses, w, b):
        if a is not None:
            a.setflags(write=False)
    return losses, w, b


def finished_job(http: Any, job_id: str, timeout: float = 60) -> dict[str, Any]:
    """GET the job until it has ended (the server holds each poll up to 2 s, ``?wait=``)."""

    def check() -> dict[str, Any] | None:
        job = http.get(f"/v1/jobs/{job_id}", params={"wait": 2}).json()
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(check, timeout=timeout)


def linear_model(weight: Any, bias: Any) -> Any:
    """A served linear model with these weights, as the predictor holds one."""
    from service.serving.predictor import LoadedModel

    w = np.asarray(weight, np.float32)
    return LoadedModel(
        id="mdl_000000000000000000000000", tenant="default", name=None, version=None,
        kind="linear", in_features=w.shape[1], out_features=w.shape[0],
        state={"linear.weight": w}, weight_t=np.ascontiguousarray(w.T),
        bias=None if bias is None else np.asarray(bias, np.float32),
    )


@contextmanager
def gc_collections() -> Iterator[list[int]]:
    """The generations of the garbage collections that start inside the block."""
    seen: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.collect()
    gc.callbacks.append(count)
    try:
        yield seen
    finally:
        gc.callbacks.remove(count)
