"""Keeping the data directory sound: one server per directory, a reserve of space for the
writes that free space, a readiness probe that sees a full disk, and a sweep for the files a
crash leaves behind (written before their record was committed, or half written).

The embedded server holds ``DataDirLock`` while it runs: a second server on the same
directory would recover the first one's running jobs as its own and run them twice.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO

from sqlalchemy import select

from service import faults
from service.jobs.status import ACTIVE
from service.store.artifacts import ArtifactStore
from service.store.metadata import MetadataStore
from service.store.tables import DatasetRow, JobRow, ModelRow

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
RESERVE_NAME = ".reserve"
RESERVE_BYTES = 4 * 1024 * 1024


class DataDirInUse(SystemExit):
    """Another server runs on this data directory (raised before anything is touched)."""


class DataDirLock:
    """An exclusive ``flock`` on ``<data_dir>/.lock``, held for the server's life; the file
    names the holder. The kernel drops the lock when the process dies, even by kill -9."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / LOCK_NAME
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = self.path.open("a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise DataDirInUse(
                f"fitserve: the data directory {self.path.parent} is in use by another fitserve "
                f"server ({holder}); stop it, or give this one its own FITSERVE_DATA_DIR (several "
                "servers share state only in the scale-out mode: README, Scale-out)") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def disk_state(data_dir: Path, min_free: int) -> str:
    """``ok``, or what stops the data directory from taking writes (for readiness)."""
    if not data_dir.is_dir():
        return "missing"
    free = faults.free_bytes(data_dir)
    if free < min_free:
        return f"full: {free // 1024} KiB free, below FITSERVE_MIN_FREE_BYTES ({min_free})"
    probe = data_dir / f".probe-{os.getpid()}"
    try:
        faults.check_write(probe)
        probe.write_bytes(b"ok")
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return "full: no space left"
        return f"not writable: {e.strerror or type(e).__name__}"
    finally:
        probe.unlink(missing_ok=True)
    return "ok"


def has_room(data_dir: Path, min_free: int) -> bool:
    """Whether new data may be stored: the disk keeps ``min_free`` bytes for the writes
    already under way (progress, checkpoints, the records of jobs that run)."""
    try:
        return faults.free_bytes(data_dir) >= min_free
    except OSError:
        return True  # the write itself will say what is wrong


class Reserve:
    """A file of a few MB kept under the data directory and given up when the disk is full,
    so that the writes that free space (deleting a dataset: a database commit first) can
    still be made. Put back once there is room again."""

    def __init__(self, data_dir: Path, size: int = RESERVE_BYTES) -> None:
        self.path = Path(data_dir) / RESERVE_NAME
        self.size = size

    def ensure(self) -> bool:
        """Write the reserve when it is missing and the disk has room for it and more."""
        if self.path.exists():
            return True
        try:
            if faults.free_bytes(self.path.parent) < 4 * self.size:
                return False
            with self.path.open("wb") as f:
                os.posix_fallocate(f.fileno(), 0, self.size)
        except OSError:
            self.path.unlink(missing_ok=True)
            return False
        return True

    def release(self) -> bool:
        """Give the space back; whether there was any to give."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        log.warning("the disk under %s is full: its reserve of %d bytes was released",
                    self.path.parent, self.size)
        return True


def _old(path: Path, grace_s: float, now: float) -> bool:
    try:
        return now - path.stat().st_mtime >= grace_s
    except FileNotFoundError:
        return False


def _checkpoint_job(path: Path) -> str | None:
    """The job id a checkpoint names in its header (never executed: JSON only)."""
    try:
        with path.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size < 1 << 20:
                return None
            header = json.loads(f.read(size))
        return str(header.get("__metadata__", {}).get("job_id")) or None
    except (OSError, ValueError):
        return None


def sweep_orphans(meta: MetadataStore, artifacts: ArtifactStore, grace_s: float) -> list[str]:
    """Remove files no record points to, and temporary files, older than ``grace_s``:
    a dataset written before its record's commit failed, a checkpoint whose model was never
    committed, a trace of a job that is gone, a batch prediction's result whose job is gone
    or did not succeed (a crash between its rename and its commit, then a failed retry), a
    ``.tmp-`` of a write a crash cut short.
    A checkpoint of a job still running is kept (its commit may be a moment away). Local
    directories only; returns what it removed (paths relative to the root)."""
    root = artifacts.root
    if not isinstance(root, Path) or type(artifacts) is not ArtifactStore:
        return []
    with meta.session() as s:
        shas = set(s.scalars(select(DatasetRow.sha256)))
        models = set(s.scalars(select(ModelRow.id)))
        jobs = set(s.scalars(select(JobRow.id)))
        active = set(s.scalars(select(JobRow.id).where(JobRow.status.in_(ACTIVE))))
        results = set(s.scalars(select(JobRow.id).where(
            JobRow.status.in_((*ACTIVE, "succeeded")))))
    now = time.time()
    removed = []
    for sub, known in (("datasets", shas), ("checkpoints", models), ("traces", jobs),
                       ("predictions", results)):
        folder = root / sub
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if not path.is_file():
                continue
            temporary = path.name.startswith(".")
            stem = path.name.split(".", 1)[0]
            if not temporary and stem in known:
                continue
            if not _old(path, grace_s, now):
                continue
            if sub == "checkpoints" and not temporary and _checkpoint_job(path) in active:
                continue
            # the record may have been committed since the query: look once more
            if not temporary and _committed_since(meta, sub, stem):
                continue
            path.unlink(missing_ok=True)
            removed.append(f"{sub}/{path.name}")
    if removed:
        log.warning("removed %d file(s) no record points to: %s", len(removed), removed[:10])
    return removed


def _committed_since(meta: MetadataStore, sub: str, stem: str) -> bool:
    table = {"datasets": (DatasetRow, DatasetRow.sha256), "checkpoints": (ModelRow, ModelRow.id),
             "traces": (JobRow, JobRow.id), "predictions": (JobRow, JobRow.id)}[sub]
    query = select(table[1]).where(table[1] == stem)
    if sub == "predictions":  # a result counts for a job that succeeded or may yet
        query = query.where(JobRow.status.in_((*ACTIVE, "succeeded")))
    with meta.session() as s:
        return s.scalar(query.limit(1)) is not None


def die_with_parent() -> None:
    """A child process (a training worker, the JSON parser) must not outlive a server killed
    with -9: Linux can deliver SIGKILL when the parent goes. The caller still checks that
    its parent is the one that started it (it may have died before this was set)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
