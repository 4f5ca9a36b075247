"""A small disk that can be filled on purpose: a tmpfs mounted for the test (root can mount
one on Linux), and a filler file that takes every free byte until it is removed."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_disk(where: Path, size_mb: int = 48) -> Iterator[Path]:
    """A tmpfs of ``size_mb`` at ``where``; unmounted at the end."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small disk needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs",
                           str(where)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


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
