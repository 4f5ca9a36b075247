"""Fault points: where the fault-injection suite (tests/faults/) stops a job on purpose, to
kill or signal its worker or server at exactly that step of the job's life.

Off unless ``FITSERVE_FAULT_PAUSE`` names points (``claimed,training,checkpoint,commit``)
and ``FITSERVE_FAULT_DIR`` a directory: at a named point the worker writes
``<dir>/<job id>.<point>`` and waits until that file is removed, or ``<dir>/<job id>.go``
appears (the job passes every point from then on), at most two minutes. A
deployment never sets them; reading two variables costs nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

POINTS = ("claimed", "training", "checkpoint", "commit")
"""claimed: before any work; training: after the first progress write; checkpoint: the file
written, its record not yet committed; commit: the model committed, nobody told yet."""


def pause_at(point: str, job_id: str) -> None:
    names = os.environ.get("FITSERVE_FAULT_PAUSE")
    folder = os.environ.get("FITSERVE_FAULT_DIR")
    if not names or not folder or point not in names.split(","):
        return
    go = Path(folder) / f"{job_id}.go"  # the job may pass every point from now on
    if go.exists():
        return
    marker = Path(folder) / f"{job_id}.{point}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while marker.exists() and not go.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    marker.unlink(missing_ok=True)
