"""A request body on its way to disk: written to a spool file under the data directory and
hashed as it comes, so that an upload never sits whole in the API's memory and is parsed
from the file in a worker thread (issue 12)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from service import faults
from service.errors import InsufficientStorage, ServiceError, StorageUnavailable, is_disk_full

STALE_S = 3600.0
"""A spool file untouched this long was left by a server that died mid-upload."""


class Spool:
    """One upload's spool file: ``write`` the parts, ``finish`` for the sha256; always
    ``discard`` (a context manager does)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        _sweep_stale(folder)
        try:
            faults.check_write(folder)
            fd, name = tempfile.mkstemp(dir=folder, prefix="upload-", suffix=".part")
        except OSError as e:
            raise _storage_error(e) from None
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        try:
            self._file.write(chunk)
        except OSError as e:
            raise _storage_error(e) from None
        self._sha.update(chunk)
        self.size += len(chunk)

    def finish(self) -> str:
        """Close the file; the body's sha256 (hex)."""
        try:
            self._file.close()
        except OSError as e:
            raise _storage_error(e) from None
        return self._sha.hexdigest()

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    async def fill(self, parts: AsyncIterator[bytes], limit: int,
                   too_large: Callable[[int], ServiceError]) -> str:
        """Write ``parts`` (the body as it arrives), refusing past ``limit`` bytes before
        more is read; returns the sha256. Writes go to the page cache: microseconds a part,
        so this runs on the event loop."""
        async for part in parts:
            if self.size + len(part) > limit:
                raise too_large(self.size + len(part))
            self.write(part)
        return self.finish()


def _storage_error(e: OSError) -> ServiceError:
    if is_disk_full(e):
        return InsufficientStorage()
    return StorageUnavailable(f"the upload could not be spooled ({e.strerror or type(e).__name__})"
                              "; try again later", headers={"Retry-After": "30"})


def _sweep_stale(folder: Path) -> None:
    now = time.time()
    with contextlib.suppress(OSError):
        for f in folder.iterdir():
            with contextlib.suppress(OSError):
                if now - f.stat().st_mtime > STALE_S:
                    f.unlink()
