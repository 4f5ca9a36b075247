"""How the embedded pool starts its workers: on Linux, forks of a fork server that imported
torch and the worker's modules once (service/worker/preload.py). Light on purpose (no
imports beyond the standard library): ``fitserve serve`` starts the fork server before it
imports the app, so that the fork server's imports (torch, 2 to 3 s of CPU) run on another
core beside the server's own instead of after them."""

from __future__ import annotations

import multiprocessing as mp
import sys
from typing import Any

PRELOAD = ["service.worker.preload"]


def worker_context() -> Any:
    """How the pool starts its workers. On Linux, forks of a fork server that imported torch
    and the worker's modules once: a worker starts in some 20 ms instead of 2 s of imports,
    and so does one that replaces a dead worker. Elsewhere, spawned (macOS does not survive
    a fork after its frameworks are loaded)."""
    if not sys.platform.startswith("linux"):
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start_early() -> None:
    """Start the fork server now (it then imports while this process goes on); the pool's
    first worker later finds it running. Nothing where workers are spawned."""
    if worker_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()
