"""A small disk that can be filled on purpose: a tmpfs mounted for the test (root can mount
one on Linux), and a filler file that takes every free byte until it is removed."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

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


@contextmanager
def small_disk(size_mb: int = 48) -> Iterator[Path]:
    """A tmpfs of ``size_mb``, mounted for the test; unmounted and removed at the end."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small disk needs root")
    _forget_stale_disks()
    home = ROOT / f"{os.getpid()}-{secrets.token_hex(4)}"
    where = home / "disk"
    where.mkdir(parents=True)
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs",
                           str(where)], capture_output=True, text=True)
    if made.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
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
