"""A small disk that can be filled on purpose: a tmpfs mounted for the test (root can mount
one on Linux) and filled by a file that takes every free byte; or, where no tmpfs can be
mounted, the server's simulated full disk (``FITSERVE_FAULT_DISK``, service/faults.py), so
that the disk-full suite runs everywhere. ``FITSERVE_TEST_DISK=tmpfs|simulated`` chooses."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(tempfile.gettempdir()) / "fitserve-test-disks"
"""Where the disks are mounted: outside pytest's own temporary directories, whose cleanup
would trip over a mount a killed test run left behind."""


def _unmount(where: Path) -> None:
    if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _forget_stale_disks() -> None:
    """Unmount the disks of test runs that died before their cleanup (named by their pid)."""
    mounts = Path("/proc/mounts").read_text().split("\n") if Path("/proc/mounts").exists() else []
    for line in mounts:
        parts = line.split()
        if len(parts) < 2 or not parts[1].startswith(str(ROOT) + "/"):
            continue
        where = Path(parts[1])
        owner = where.relative_to(ROOT).parts[0].split("-", 1)[0]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            _unmount(where)
            shutil.rmtree(where.parent, ignore_errors=True)


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


def default_kind() -> str:
    """The disk the suite fills: a tmpfs where one can be mounted, else the simulated one."""
    chosen = os.environ.get("FITSERVE_TEST_DISK")
    if chosen in ("tmpfs", "simulated"):
        return chosen
    return "tmpfs" if _can_mount() else "simulated"


class Disk:
    """Where a test's server keeps its data (``path``), what else it needs (``env``), and how
    to fill the disk: ``fill("all")`` leaves no room at all, ``fill("records")`` leaves a
    little room for files but not for the records' commits; ``free()`` gives it back."""

    path: Path
    env: dict[str, str]

    def fill(self, what: str = "all") -> None:
        raise NotImplementedError

    def free(self) -> None:
        raise NotImplementedError


class MountedDisk(Disk):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.env = {}
        self._filler = Filler(path)

    def fill(self, what: str = "all") -> None:
        self._filler.fill(leave=0 if what == "all" else 40_000)

    def free(self) -> None:
        self._filler.free()


class SimulatedDisk(Disk):
    def __init__(self, home: Path) -> None:
        self.path = home / "disk"
        self.path.mkdir()
        self._flag = home / "full"  # outside the data dir: not a file of the server's
        self.env = {"FITSERVE_FAULT_DISK": str(self._flag)}

    def fill(self, what: str = "all") -> None:
        self._flag.write_text("all" if what == "all" else "db")

    def free(self) -> None:
        self._flag.unlink(missing_ok=True)


@contextmanager
def small_disk(kind: str | None = None, size_mb: int = 48) -> Iterator[Disk]:
    """A tmpfs of ``size_mb`` mounted for the test (unmounted and removed at the end), or the
    simulated disk where none can be mounted (unless the tmpfs was asked for by name)."""
    kind = kind or default_kind()
    if kind == "tmpfs":
        with _mounted(size_mb, must=kind == os.environ.get("FITSERVE_TEST_DISK")) as where:
            if where is not None:
                yield MountedDisk(where)
                return
    home = Path(tempfile.mkdtemp(prefix="fitserve-simulated-disk-"))
    try:
        yield SimulatedDisk(home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def _mounted(size_mb: int, must: bool) -> Iterator[Path | None]:
    """A tmpfs, or None where none can be mounted (a failure when ``must``)."""
    if not _can_mount():
        assert not must, "FITSERVE_TEST_DISK=tmpfs needs root and mount(8)"
        yield None
        return
    _forget_stale_disks()
    home = ROOT / f"{os.getpid()}-{secrets.token_hex(4)}"
    where = home / "disk"
    where.mkdir(parents=True)
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs",
                           str(where)], capture_output=True, text=True)
    if made.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        assert not must, f"cannot mount a tmpfs here: {made.stderr.strip()}"
        yield None
        return
    try:
        yield where
    finally:
        _unmount(where)
        shutil.rmtree(home, ignore_errors=True)


class Filler:
    """Takes the disk's free space (all of it, or all but ``leave`` bytes) into one file."""

    def __init__(self, disk: Path) -> None:
        self.path = disk / "filler"

    def fill(self, leave: int = 0) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for chunk in (1 << 20, 1 << 16, 1 << 12, 512):
                block = b"\0" * chunk
                while shutil.disk_usage(self.path.parent).free >= leave + chunk:
                    try:
                        os.write(fd, block)
                    except OSError:
                        break
        finally:
            os.close(fd)

    def free(self) -> None:
        self.path.unlink(missing_ok=True)
