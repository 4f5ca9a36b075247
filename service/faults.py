"""Fault injection for the fault suite (tests/faults/), off in a deployment (it never sets
the variables; reading them costs nothing).

**Pause points**: where the suite stops a job on purpose, to kill or signal its worker or
server at exactly that step of the job's life. Off unless ``FITSERVE_FAULT_PAUSE`` names
points (``claimed,training,checkpoint,commit``) and ``FITSERVE_FAULT_DIR`` a directory:
at a named point the worker writes ``<dir>/<job id>.<point>`` and waits until that file is
removed, or ``<dir>/<job id>.go`` appears (the job passes every point from then on), at
most two minutes.

**A simulated full disk**, for machines where the suite cannot mount a small tmpfs and fill
it: while the file that ``FITSERVE_FAULT_DISK`` names exists, the data directory reports no
free space, artifact writes fail with ``ENOSPC``, and SQLite cannot grow its database
(``PRAGMA max_page_count``: the real ``database or disk is full`` error). The file's text
says what is full: ``all`` (the default) or ``db`` (files are still written, the records'
commits fail: the write point between the two).
"""

from __future__ import annotations

import errno
import os
import shutil
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


def _full_disk() -> str | None:
    """``all`` or ``db`` while the simulated disk is full, else None."""
    flag = os.environ.get("FITSERVE_FAULT_DISK")
    if not flag:
        return None
    try:
        return Path(flag).read_text().strip() or "all"
    except OSError:
        return None


def db_full() -> bool:
    """Whether the simulated disk holds no room for the database to grow."""
    return _full_disk() is not None


def free_bytes(path: Path) -> int:
    """The free bytes of the disk under ``path`` (none while the simulated disk is full)."""
    if _full_disk() == "all":
        return 0
    return shutil.disk_usage(path).free


def check_write(path: Path) -> None:
    """Raise what a full disk raises, while the simulated disk is full for files."""
    if _full_disk() == "all":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
