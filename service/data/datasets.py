"""Dataset uploads: a spool file (or bytes) in any of the readers' formats -> a checked
numeric dataset (x, y float32) or a Table of typed columns -> stored once by content."""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from service.config import Settings
from service.data.arrays import check_xy
from service.data.columns import column_schema, table_sha256
from service.data.readers import Media, Parsed, read_upload
from service.data.table import ColumnKind, Table, table_bytes
from service.errors import (
    InsufficientStorage,
    LimitExceeded,
    StorageUnavailable,
    is_disk_full,
)
from service.store.artifacts import ArtifactStore, Parts
from service.store.idempotency import Replay, idempotent
from service.store.metadata import MetadataStore
from service.store.tables import DatasetRow
from service.store.upkeep import die_with_parent

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def check_table(settings: Settings, rows: int, features: int, targets: int) -> None:
    if rows > settings.max_rows:
        raise LimitExceeded(f"{rows} rows exceed the limit of {settings.max_rows} "
                            "(FITSERVE_MAX_ROWS)", field="x")
    for what, count in (("feature", features), ("target", targets)):
        if count > settings.max_features:
            raise LimitExceeded(f"{count} {what} columns exceed the limit of "
                                f"{settings.max_features} (FITSERVE_MAX_FEATURES)",
                                field="x" if what == "feature" else "y")


def column_stats(x: np.ndarray, y: np.ndarray, features: list[str], targets: list[str]) -> list:
    out = []
    for role, arr, names in (("feature", x, features), ("target", y, targets)):
        mean = arr.mean(axis=0, dtype=np.float64)
        sq = np.zeros(arr.shape[1])
        # float64 one block at a time, of at most 65 536 rows and about 2 MB (the upload's
        # peak memory: issue 12)
        block = min(1 << 16, max(1024, (2 << 20) // (8 * max(1, arr.shape[1]))))
        for s in range(0, arr.shape[0], block):
            dev = arr[s : s + block].astype(np.float64) - mean
            sq += np.einsum("ij,ij->j", dev, dev)
        std, lo, hi = np.sqrt(sq / arr.shape[0]), arr.min(0), arr.max(0)
        for i, n in enumerate(names):
            out.append({"name": n, "role": role, "type": "numeric", "missing": 0,
                        "mean": float(mean[i]), "std": float(std[i]),
                        "min": float(lo[i]), "max": float(hi[i])})
    return out


def is_typed(dataset: DatasetRow) -> bool:
    """Whether a dataset is stored as a Table (typed or missing cells) rather than as the
    x/y matrices, read from its record: a submit need not open its file."""
    return any(c.get("type", "numeric") != "numeric" or c.get("missing", 0)
               for c in dataset.columns)


def content_sha256(
    x: np.ndarray, y: np.ndarray, feature_names: list[str], target_names: list[str]
) -> str:
    """The dataset's identity: shapes, names and float32 values (the safetensors file's own
    bytes are not canonical: its metadata order varies from one write to the next)."""
    h = hashlib.sha256()
    h.update(json.dumps([x.shape, y.shape, feature_names, target_names]).encode())
    h.update(np.ascontiguousarray(x, dtype="<f4").data)
    h.update(np.ascontiguousarray(y, dtype="<f4").data)
    return h.hexdigest()


def store_dataset(
    meta: MetadataStore,
    artifacts: ArtifactStore,
    x: np.ndarray,
    y: np.ndarray,
    info: dict[str, Any],
    tenant: str = "default",
    then: Callable[[Session, str, bool], None] | None = None,
) -> tuple[DatasetRow, bool]:
    """Write the arrays (once per content) and then the record; returns (row, created).
    ``then``: what commits with the record (see ``add_dataset``)."""
    check_xy(x, y)
    return _store(
        meta, artifacts, content_sha256(x, y, info["feature_names"], info["target_names"]),
        lambda: artifacts.dataset_parts(x, y, info["feature_names"], info["target_names"]),
        tenant, then,
        name=info.get("name"),
        rows=int(x.shape[0]),
        features=int(x.shape[1]),
        targets=int(y.shape[1]),
        feature_names=info["feature_names"],
        target_names=info["target_names"],
        columns=column_stats(x, y, info["feature_names"], info["target_names"]),
        size_bytes=int(x.nbytes + y.nbytes),  # the float32 values
    )


def store_table(
    meta: MetadataStore,
    artifacts: ArtifactStore,
    table: Table,
    tenant: str = "default",
    then: Callable[[Session, str, bool], None] | None = None,
) -> tuple[DatasetRow, bool]:
    """A dataset of typed columns (service/data/table.py), stored as ``store_dataset``
    stores arrays: the file once per content (``table_sha256``), then the record."""
    return _store(
        meta, artifacts, table_sha256(table), lambda: table_bytes(table), tenant, then,
        name=table.name,
        rows=table.rows,
        features=len(table.features),
        targets=len(table.targets),
        feature_names=table.feature_names,
        target_names=table.target_names,
        columns=column_schema(table),
        size_bytes=int(sum(c.values.nbytes for c in (*table.features, *table.targets))),
    )


def _store(meta: MetadataStore, artifacts: ArtifactStore, sha: str,
           blob: Callable[[], bytes | Parts], tenant: str,
           then: Callable[[Session, str, bool], None] | None,
           **record: Any) -> tuple[DatasetRow, bool]:
    def ensure_file() -> None:
        if artifacts.has_dataset(sha):
            return
        try:
            artifacts.put_dataset(sha, blob())
        except OSError as e:  # read-only or full; the message names no path
            if is_disk_full(e):
                raise InsufficientStorage() from None
            raise StorageUnavailable(
                f"the dataset could not be stored ({e.strerror or type(e).__name__}); "
                "try again later", headers={"Retry-After": "30"}
            ) from None

    ensure_file()  # the file lands before any record can point at it
    try:
        row, created = meta.add_dataset(then, tenant=tenant, sha256=sha, **record)
    except Exception:  # not recorded (a full disk, the database away): leave no file
        with contextlib.suppress(Exception):  # else the sweep takes it later
            artifacts.discard_dataset(sha, lambda: meta.sha_in_use(sha))
        raise
    ensure_file()  # a delete of the last other record may have taken the file meanwhile
    return row, created


@dataclass(frozen=True)
class Upload:
    """What a dataset upload sent: the body (a spool file, or bytes) and its query."""

    media: Media
    body: Path | bytes
    target: list[str]
    features: list[str] | None = None
    name: str | None = None
    schema: dict[str, ColumnKind] | None = None
    body_sha256: str | None = None  # hashed while spooled: the file is not read twice

    def request_key(self) -> bytes:
        """The request as the Idempotency-Key sees it: the body's hash and the query."""
        digest = self.body_sha256 or hashlib.sha256(
            self.body if isinstance(self.body, bytes) else self.body.read_bytes()).hexdigest()
        query = (self.media, self.target, self.features, self.name, sorted(
            (self.schema or {}).items()))
        return digest.encode() + json.dumps(query).encode()


JSON_IN_PROCESS_BYTES = 2 << 20
"""A JSON body larger than this is parsed in a child process. orjson and numpy hold the GIL
for the whole parse (about 40 ms a megabyte): in a thread, that would stall the event loop
as long; CSV, NDJSON, Parquet and Arrow are read by polars, which lets the GIL go."""

_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _json_pool() -> ProcessPoolExecutor:
    """One child process, started at the first large JSON upload: big JSON bodies are
    parsed one at a time, so the memory they take at once is bounded too."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_parser_started, initargs=(os.getpid(),))
        return _pool


def _parser_started(parent: int) -> None:
    """In the parser process: end with the server (a kill -9 of it too)."""
    die_with_parent()
    if os.getppid() != parent:  # the server died while this process started
        os._exit(0)


def _read(upload: Upload, max_categories: int) -> Parsed:
    return read_upload(upload.body, upload.media, target=upload.target,
                       features=upload.features, name=upload.name,
                       schema=upload.schema or {}, max_categories=max_categories)


def _read_json_elsewhere(upload: Upload, max_categories: int) -> Parsed:
    global _pool
    try:
        return _json_pool().submit(_read, upload, max_categories).result()
    except BrokenProcessPool:  # the child died (out of memory, killed): a new one next time
        with _pool_lock:
            _pool = None
        raise StorageUnavailable("the JSON body could not be parsed (the parser process "
                                 "ended); send it again, or as CSV or Parquet",
                                 headers={"Retry-After": "5"}) from None


def _size(body: Path | bytes) -> int:
    return len(body) if isinstance(body, bytes) else body.stat().st_size


def parse_upload(settings: Settings, upload: Upload) -> Parsed:
    """Read and check an upload (blocking: call it in a worker thread)."""
    if upload.media == "json" and _size(upload.body) > JSON_IN_PROCESS_BYTES:
        parsed = _read_json_elsewhere(upload, settings.max_categories)
    else:
        parsed = _read(upload, settings.max_categories)
    if isinstance(parsed, Table):
        check_table(settings, parsed.rows, len(parsed.features), len(parsed.targets))
    else:
        x, y, _ = parsed
        check_table(settings, x.shape[0], x.shape[1], y.shape[1])
    return parsed


def upload_dataset(
    meta: MetadataStore, artifacts: ArtifactStore, settings: Settings, tenant: str,
    upload: Upload | None = None, *, idempotency_key: str | None,
    media: Media | None = None, body: bytes | None = None, target: list[str] | None = None,
    features: list[str] | None = None, name: str | None = None,
) -> tuple[DatasetRow, bool]:
    """Parse, check and store an upload (blocking: call it in a worker thread); returns the
    dataset and whether this request created it (False: the same content, or a replay).
    The keywords ``media`` to ``name`` are the older form of ``upload``."""
    if upload is None:
        if media is None or body is None:
            raise TypeError("upload_dataset needs an Upload, or media and body")
        upload = Upload(media, body, target or [], features, name)
    with idempotent(meta, tenant, "datasets", idempotency_key, upload.request_key(),
                    reservation_s=settings.idempotency_reservation_s) as attempt:
        if isinstance(attempt, Replay):
            return meta.get_dataset(attempt.resource_id, tenant), attempt.status_code == 201
        parsed = parse_upload(settings, upload)
        stored, found = attempt.completion(201), attempt.completion(200)

        def then(s: Session, dataset_id: str, created: bool) -> None:
            # the key names the dataset in the transaction that records it: a retry after a
            # crash right after the commit answers as the first request would have (201)
            complete = stored if created else found
            if complete is not None:
                complete(s, dataset_id)

        if isinstance(parsed, Table):
            row, created = store_table(meta, artifacts, parsed, tenant, then)
        else:
            x, y, info = parsed
            row, created = store_dataset(meta, artifacts, x, y, info, tenant, then)
    return row, created


def delete_dataset(meta: MetadataStore, artifacts: ArtifactStore, dataset_id: str,
                   tenant: str, free_reserve: Callable[[], bool] = lambda: False) -> None:
    """Delete the record (409 while a queued or running job uses it), then its file unless
    another record shares the content. On a full disk the commit that frees space may
    itself need some: ``free_reserve`` gives the data directory's reserve up, and it is
    tried once more."""
    try:
        row = meta.delete_dataset(dataset_id, tenant)
    except Exception as e:
        if not is_disk_full(e) or not free_reserve():
            raise
        row = meta.delete_dataset(dataset_id, tenant)
    artifacts.discard_dataset(row.sha256, lambda: meta.sha_in_use(row.sha256))
