"""Artifacts: datasets (content-addressed) and checkpoints, in a directory or an object store.

Both are safetensors files: tensors plus string metadata, never a pickle. A reader sees all
of a file or nothing: on a filesystem every write goes to a temporary file, is fsynced and
renamed into place; in an object store (S3 through fsspec/s3fs) every object is one PUT,
which the store makes visible whole or not at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import IO, Any

import numpy as np
from safetensors.numpy import load, save

from service import faults
from service.store.tabular import (
    Table,
    is_table,
    safetensors_metadata,
    table_from_bytes,
    table_from_tensors,
)

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_ID_RE = re.compile(r"^[a-z]{2,4}_[0-9a-f]{24}$")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


Parts = Sequence[bytes | memoryview]
"""A file's bytes as pieces written one after the other (no joined copy of large arrays)."""


@contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """A file written whole or not at all: a temporary file beside ``path`` that a clean exit
    fsyncs and renames into place (then fsyncs the folder), and any exception removes (the
    sweep removes what a crash leaves)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            faults.check_write(path)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes | Parts) -> None:
    with atomic_file(path) as f:
        for part in [data] if isinstance(data, bytes) else data:
            f.write(part)


class _Batch:
    """Files written by ``write_atomic_together``'s block: data written under their own
    names, not yet durable, and not yet pointed to by any record."""

    def __init__(self) -> None:
        self.files: dict[Path, int] = {}  # path -> open fd
        self._folders: set[Path] = set()

    def add(self, path: Path, data: bytes) -> None:
        self.discard(path)
        faults.check_write(path)
        if path.parent not in self._folders:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(path.parent)
        # a new name (a fresh model id): no temporary file and no rename, which cost as
        # much again (50 checkpoints: 2.8 ms created in place, 5.8 ms through mkstemp)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # as mkstemp's
        self.files[path] = fd
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked
                view = view[os.write(fd, view):]
        except BaseException:
            self.discard(path)
            raise

    def discard(self, path: Path) -> bool:
        fd = self.files.pop(path, None)
        if fd is None:
            return False
        try:
            os.close(fd)
        finally:  # removed even when its close fails
            path.unlink(missing_ok=True)
        return True

    def close(self) -> None:
        """Remove every file not yet kept (each one, whatever another's removal raises)."""
        for path in list(self.files):
            with contextlib.suppress(OSError):
                self.discard(path)


_CHECKPOINTS: ContextVar[_Batch | None] = ContextVar("fitserve_checkpoints", default=None)
"""The block of ``ArtifactStore.checkpoints_together`` this thread is in, if any."""
_libc: Any = None


def _libc_syncfs() -> Any:
    """``syncfs(2)``, or None where there is none (not Linux)."""
    global _libc
    if not hasattr(os, "sched_getaffinity"):  # Linux
        return None
    try:
        if _libc is None:
            import ctypes

            _libc = ctypes.CDLL(None, use_errno=True)
        return _libc.syncfs
    except (OSError, AttributeError):
        return None


def _sync_all(fds: Sequence[int]) -> None:
    """Make the data of these open files durable. Several at once: one ``syncfs(2)`` of
    their filesystem (one journal commit for them all, where an ``fsync`` each commits the
    journal once per file: 100 small files took 7 ms against 100 to 500 ms on ext4); one
    file, or where syncfs is missing or fails: an fsync each."""
    syncfs = _libc_syncfs() if len(fds) > 1 else None
    if syncfs is not None:
        try:
            if syncfs(fds[0]) == 0:
                devices = {os.fstat(fd).st_dev for fd in fds}
                if len(devices) == 1:
                    return
        except (OSError, AttributeError):
            pass
    for fd in fds:
        os.fsync(fd)


def flush_early(folder: Path) -> None:
    """Start writing out, in a thread of its own, what the filesystem under ``folder``
    holds unwritten (``syncfs``), so that the sync at a batch's end finds little else to
    write. That sync waits for every file's unwritten data, not only the batch's: the
    database's WAL, written by the commits before and not synced (``synchronous=NORMAL``),
    made it 6 ms with 2 MB of it and 14 ms with 8 MB, against 2.6 ms with none (50 files of
    300 bytes). Nothing waits for this one; while one runs, no other starts; where there is
    no syncfs, nothing is done."""
    syncfs = _libc_syncfs()
    if syncfs is None or not folder.is_dir():
        return
    if not _FLUSHING.acquire(blocking=False):  # one at a time: it flushes what is there
        return

    def flushed() -> None:
        try:
            fd = os.open(folder, os.O_RDONLY)
            try:
                syncfs(fd)
            finally:
                os.close(fd)
        except OSError:
            pass  # the folder went away: nothing to flush early
        finally:
            _FLUSHING.release()

    try:
        threading.Thread(target=flushed, name="fitserve-flush-early", daemon=True).start()
    except BaseException:
        _FLUSHING.release()
        raise


_FLUSHING = threading.Lock()
"""Held while this process's early flush runs (``flush_early`` starts no second one)."""


@contextmanager
def write_atomic_together() -> Iterator[_Batch]:
    """New files (names no file has yet), made durable together: the block adds them, each
    written under its own name; at the block's end every file's data is synced at once and
    each directory synced once. They are for records committed after the block (a batch's
    checkpoints): no reader looks for a file before its record points to it, so a file is
    never seen half written, and every file is durable before its record exists. An
    exception in the block or at its end removes them all; a crash before the end leaves
    files no record points to, which the data directory's sweep removes
    (``upkeep.sweep_orphans``)."""
    batch = _Batch()
    try:
        yield batch
        _sync_all(list(batch.files.values()))
        for folder in {p.parent for p in batch.files}:
            _fsync_dir(folder)
        while batch.files:  # durable: kept, each closed (a failed close loses nothing)
            with contextlib.suppress(OSError):
                os.close(batch.files.popitem()[1])
    except BaseException:
        batch.close()
        raise


_ST_DTYPES = {np.dtype("<f4"): "F32", np.dtype("<i4"): "I32", np.dtype("<f8"): "F64",
              np.dtype("<i8"): "I64"}


def safetensors_parts(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> Parts:
    """A safetensors file (what ``safetensors.numpy.save`` writes: an 8-byte little-endian
    header length, the JSON header padded to 8 bytes, the tensors' bytes in order) as
    pieces that reference the arrays' memory instead of copying it."""
    header: dict[str, object] = {"__metadata__": metadata}
    start = 0
    for name, arr in tensors.items():
        size = arr.nbytes
        header[name] = {"dtype": _ST_DTYPES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [start, start + size]}
        start += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    parts: list[bytes | memoryview] = [len(raw).to_bytes(8, "little") + raw]
    parts += [memoryview(np.ascontiguousarray(a).reshape(-1).view(np.uint8))  # type: ignore[arg-type]
              for a in tensors.values()]
    return parts


def _dataset_key(sha: str) -> str:
    if not _SHA_RE.match(sha):  # names never become paths unchecked
        raise ValueError(f"not a sha256: {sha!r}")
    return f"datasets/{sha}.safetensors"


def _checkpoint_key(model_id: str) -> str:
    if not _ID_RE.match(model_id):
        raise ValueError(f"not a model id: {model_id!r}")
    return f"checkpoints/{model_id}.safetensors"


def _trace_key(job_id: str) -> str:
    if not _ID_RE.match(job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    return f"traces/{job_id}.json"


PREDICTION_FORMATS = ("csv", "parquet", "jsonl")
"""A batch prediction's result file: ``predictions/<job id>.<format>``."""


def _prediction_key(job_id: str, fmt: str) -> str:
    if not _ID_RE.match(job_id) or fmt not in PREDICTION_FORMATS:
        raise ValueError(f"not a prediction: {job_id!r}, {fmt!r}")
    return f"predictions/{job_id}.{fmt}"


def _fsync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


_DTYPES = {"F32": "<f4", "F64": "<f8", "I32": "<i4", "I64": "<i8"}


def memmap_safetensors(path: Path, metadata: dict[str, str] | None = None
                       ) -> dict[str, np.ndarray]:
    """Memory-map each tensor of a safetensors file as a numpy array. The format is an
    8-byte little-endian header length, a JSON header giving each tensor's dtype, shape and
    byte range, then the bytes; safetensors' own numpy reader copies, its torch reader gives
    no handle on the mapping. Only the header is parsed here, never executed."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    if metadata is not None:  # filled in with the file's string metadata
        metadata.update(header.get("__metadata__") or {})
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if end == start:
            out[name] = np.zeros(shape, dtype=_DTYPES[info["dtype"]])
            continue
        out[name] = np.memmap(path, dtype=_DTYPES[info["dtype"]], mode="c",
                              offset=8 + size + start, shape=shape)
    return out


class ArtifactStore:
    """Files under ``root``: ``datasets/<sha256>.safetensors``, ``checkpoints/<id>.safetensors``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def check(self) -> str:
        """"ok", or what is wrong with the store (readiness)."""
        return "ok" if self.root.is_dir() else "missing"

    def delete_checkpoint(self, model_id: str) -> None:
        path = self.checkpoint_path(model_id)
        batch = _CHECKPOINTS.get()
        if batch is None or not batch.discard(path):
            path.unlink(missing_ok=True)

    def _dataset_path(self, sha: str) -> Path:
        return self.root / _dataset_key(sha)

    def checkpoint_path(self, model_id: str) -> Path:
        return self.root / _checkpoint_key(model_id)

    # datasets -------------------------------------------------------

    @staticmethod
    def dataset_parts(
        x: np.ndarray, y: np.ndarray, feature_names: list[str], target_names: list[str]
    ) -> Parts:
        """``dataset_bytes``' file as pieces: the safetensors header, then the arrays' own
        memory, so a large upload is written without a second copy of its values."""
        return safetensors_parts(
            {"x": np.ascontiguousarray(x, dtype=np.float32),
             "y": np.ascontiguousarray(y, dtype=np.float32)},
            {"feature_names": json.dumps(feature_names),
             "target_names": json.dumps(target_names)})

    @staticmethod
    def dataset_bytes(
        x: np.ndarray, y: np.ndarray, feature_names: list[str], target_names: list[str]
    ) -> bytes:
        meta = {
            "feature_names": json.dumps(feature_names),
            "target_names": json.dumps(target_names),
        }
        return save({"x": np.ascontiguousarray(x), "y": np.ascontiguousarray(y)}, metadata=meta)

    def has_dataset(self, sha: str) -> bool:
        return self._dataset_path(sha).exists()

    def put_dataset(self, sha: str, blob: bytes | Parts) -> None:
        path = self._dataset_path(sha)
        if not path.exists():
            write_atomic(path, blob)

    def get_dataset(self, sha: str) -> tuple[np.ndarray, np.ndarray]:
        """The arrays as copy-on-write memory maps of the file: nothing is copied, and a
        streaming pass can hand the pages back as it goes (closed_form.drop_pages)."""
        tensors = memmap_safetensors(self._dataset_path(sha))
        return tensors["x"], tensors["y"]

    def load_dataset(self, sha: str) -> tuple[np.ndarray, np.ndarray] | Table:
        """A numeric dataset's (x, y), memory-mapped as ``get_dataset``'s, or a Table
        (mixed columns, service/data/table.py)."""
        metadata: dict[str, str] = {}
        tensors = memmap_safetensors(self._dataset_path(sha), metadata)
        if is_table(metadata):
            return table_from_tensors(tensors, metadata)
        return tensors["x"], tensors["y"]

    def delete_dataset(self, sha: str) -> None:
        self._dataset_path(sha).unlink(missing_ok=True)

    def open_dataset(self, sha: str) -> IO[bytes]:
        """The dataset's file for reading in pieces (a batch prediction's chunks)."""
        return self._dataset_path(sha).open("rb")

    def discard_dataset(self, sha: str, still_used: Callable[[], bool]) -> None:
        """Remove a content-addressed file no record uses any more. A concurrent upload of
        the same content may add a record at any moment: the file is moved aside first and
        put back if a record appeared (and store_dataset rewrites it if it finds it gone)."""
        if still_used():
            return
        path = self._dataset_path(sha)
        aside = path.with_name(f".deleted-{secrets.token_hex(4)}-{path.name}")
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            return
        if still_used():
            os.replace(aside, path)
        else:
            aside.unlink(missing_ok=True)

    # checkpoints ----------------------------------------------------

    def put_checkpoint(
        self, model_id: str, tensors: dict[str, np.ndarray], metadata: dict[str, str]
    ) -> tuple[str, str]:
        """Write a checkpoint; returns (path relative to root, sha256)."""
        blob = save(tensors, metadata=metadata)
        path = self.checkpoint_path(model_id)
        batch = _CHECKPOINTS.get()
        if batch is not None:
            batch.add(path, blob)
        else:
            write_atomic(path, blob)
        return str(path.relative_to(self.root)), sha256_hex(blob)

    @contextmanager
    def checkpoints_together(self) -> Iterator[None]:
        """``put_checkpoint`` inside the block writes its file without syncing it, and
        ``delete_checkpoint`` drops one written there; at the block's end they are made
        durable with one sync (``write_atomic_together``): a batch of trials' checkpoints,
        written before the one transaction that records them."""
        flush_early(self.root / "checkpoints")  # while the batch computes
        with write_atomic_together() as batch:
            token = _CHECKPOINTS.set(batch)
            try:
                yield
            finally:
                _CHECKPOINTS.reset(token)

    def read_checkpoint(self, model_id: str) -> bytes:
        return self.checkpoint_path(model_id).read_bytes()

    # traces (JSON written by the worker, read back as bytes; never evaluated) ---------

    def put_trace(self, job_id: str, blob: bytes) -> None:
        write_atomic(self.root / _trace_key(job_id), blob)

    def read_trace(self, job_id: str) -> bytes | None:
        """The trace's bytes, or None when the job wrote none."""
        try:
            return (self.root / _trace_key(job_id)).read_bytes()
        except FileNotFoundError:
            return None

    def delete_trace(self, job_id: str) -> None:
        (self.root / _trace_key(job_id)).unlink(missing_ok=True)

    # batch predictions' results (written chunk by chunk, shown whole or not at all) -------

    @contextmanager
    def writing_prediction(self, job_id: str, fmt: str) -> Iterator[IO[bytes]]:
        """A file to write a prediction's result into, piece by piece: a temporary file
        that a clean exit fsyncs and renames into place, and any exception removes (the
        sweep removes what a crash leaves)."""
        with atomic_file(self.root / _prediction_key(job_id, fmt)) as f:
            yield f

    def prediction_path(self, job_id: str, fmt: str) -> Path | None:
        """The result's local file, for serving it as it is (None in an object store)."""
        return self.root / _prediction_key(job_id, fmt)

    def open_prediction(self, job_id: str, fmt: str) -> IO[bytes]:
        return (self.root / _prediction_key(job_id, fmt)).open("rb")

    def delete_prediction(self, job_id: str) -> None:
        for fmt in PREDICTION_FORMATS:
            (self.root / _prediction_key(job_id, fmt)).unlink(missing_ok=True)


class ObjectArtifactStore(ArtifactStore):
    """The same layout as objects under ``root`` ("bucket/prefix") of an fsspec filesystem;
    for ``s3://`` (AWS S3, MinIO) that is s3fs."""

    def __init__(self, fs: Any, root: str) -> None:
        self.fs = fs
        self.root_key = root.strip("/")
        self.root = Path(self.root_key)  # for messages only: nothing here is a local path

    def _key(self, rel: str) -> str:
        return f"{self.root_key}/{rel}"

    def ensure_bucket(self) -> None:
        """Create the bucket when it is missing (a fresh MinIO or moto server)."""
        bucket = self.root_key.split("/", 1)[0]
        if not self.fs.exists(bucket):
            try:
                self.fs.mkdir(bucket)
            except FileExistsError:  # another process made it a moment ago
                pass

    def check(self) -> str:
        try:
            self.fs.ls(self.root_key.split("/", 1)[0], refresh=True)
        except Exception as e:  # noqa: BLE001 - reported, not raised
            return f"error: {type(e).__name__}"
        return "ok"

    def _put(self, rel: str, blob: bytes) -> None:
        # one PUT (or one completed multipart upload): readers never see part of an object
        self.fs.pipe_file(self._key(rel), blob)

    def has_dataset(self, sha: str) -> bool:
        return bool(self.fs.exists(self._key(_dataset_key(sha))))

    def put_dataset(self, sha: str, blob: bytes | Parts) -> None:
        key = _dataset_key(sha)
        if not self.fs.exists(self._key(key)):
            self._put(key, blob if isinstance(blob, bytes) else b"".join(blob))

    def get_dataset(self, sha: str) -> tuple[np.ndarray, np.ndarray]:
        tensors = load(self.fs.cat_file(self._key(_dataset_key(sha))))
        return tensors["x"], tensors["y"]

    def load_dataset(self, sha: str) -> tuple[np.ndarray, np.ndarray] | Table:
        blob = self.fs.cat_file(self._key(_dataset_key(sha)))
        if is_table(safetensors_metadata(blob)):
            return table_from_bytes(blob)
        tensors = load(blob)
        return tensors["x"], tensors["y"]

    def discard_dataset(self, sha: str, still_used: Callable[[], bool]) -> None:
        """Objects have no atomic move-aside: delete when unused; store_dataset rewrites an
        object a concurrent upload finds gone."""
        if not still_used():
            self.delete_dataset(sha)

    def delete_dataset(self, sha: str) -> None:
        self._delete(_dataset_key(sha))

    def checkpoint_path(self, model_id: str) -> Path:
        return Path(self._key(_checkpoint_key(model_id)))

    def put_checkpoint(
        self, model_id: str, tensors: dict[str, np.ndarray], metadata: dict[str, str]
    ) -> tuple[str, str]:
        blob = save(tensors, metadata=metadata)
        key = _checkpoint_key(model_id)
        self._put(key, blob)
        return key, sha256_hex(blob)

    def read_checkpoint(self, model_id: str) -> bytes:
        return bytes(self.fs.cat_file(self._key(_checkpoint_key(model_id))))

    def delete_checkpoint(self, model_id: str) -> None:
        self._delete(_checkpoint_key(model_id))

    def put_trace(self, job_id: str, blob: bytes) -> None:
        self._put(_trace_key(job_id), blob)

    def read_trace(self, job_id: str) -> bytes | None:
        try:
            return bytes(self.fs.cat_file(self._key(_trace_key(job_id))))
        except FileNotFoundError:
            return None

    def delete_trace(self, job_id: str) -> None:
        self._delete(_trace_key(job_id))

    def open_dataset(self, sha: str) -> IO[bytes]:
        return self.fs.open(self._key(_dataset_key(sha)), "rb")  # ranged reads

    @contextmanager
    def writing_prediction(self, job_id: str, fmt: str) -> Iterator[IO[bytes]]:
        """Written to a local temporary file, then uploaded as one object (a multipart
        upload for a large one): the object appears whole, once, or not at all."""
        fd, tmp = tempfile.mkstemp(prefix="fitserve-prediction-", suffix=f".{fmt}")
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
            self.fs.put_file(tmp, self._key(_prediction_key(job_id, fmt)))
        finally:
            Path(tmp).unlink(missing_ok=True)

    def prediction_path(self, job_id: str, fmt: str) -> Path | None:
        return None

    def open_prediction(self, job_id: str, fmt: str) -> IO[bytes]:
        return self.fs.open(self._key(_prediction_key(job_id, fmt)), "rb")

    def delete_prediction(self, job_id: str) -> None:
        for fmt in PREDICTION_FORMATS:
            self._delete(_prediction_key(job_id, fmt))

    def _delete(self, rel: str) -> None:
        try:
            self.fs.rm_file(self._key(rel))
        except FileNotFoundError:
            pass


def open_artifacts(location: str | Path, endpoint_url: str | None = None) -> ArtifactStore:
    """A directory, or an fsspec URL (``s3://bucket/prefix``) for an object store."""
    text = str(location)
    if "://" not in text or text.startswith("file://"):
        root = Path(text.removeprefix("file://"))
        for sub in ("datasets", "checkpoints"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        return ArtifactStore(root)
    import fsspec

    options: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
    if endpoint_url and text.startswith("s3://"):
        options["endpoint_url"] = endpoint_url
    fs, root = fsspec.core.url_to_fs(text, **options)
    store = ObjectArtifactStore(fs, root)
    store.ensure_bucket()
    return store
