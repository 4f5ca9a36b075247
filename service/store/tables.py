"""SQLAlchemy tables of the metadata store. A job's loss history is one array (one value),
never a row per epoch."""

from __future__ import annotations

import secrets
import struct
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def new_id(prefix: str) -> str:
    """Time-ordered id: 12 hex digits of milliseconds then 12 random hex digits."""
    return f"{prefix}_{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on the way out, whatever the backend keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
            # PostgreSQL's timestamptz takes the aware value as it is; a naive one would be
            # read in the session's time zone. SQLite keeps no zone: store naive UTC there.
            if dialect.name != "postgresql":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None:
            value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value


_RUN = struct.Struct("<ciiI")  # a tag, then the first epoch number, the step and the count
_RUN_TAG = b"r"


def compact_epochs(value: bytes) -> bytes:
    """A history's epoch numbers (int32 little-endian) as kept in the store: a regular run
    (first, first + step, ... : every epoch, or every ``log_every``-th) as its first number,
    step and count in 13 bytes, anything else as it is. 13 is no multiple of 4, so no
    array of int32 (an old row, or an irregular history) reads as a run."""
    global _last_compacted
    if len(value) % 4 or len(value) <= _RUN.size:
        return value
    last = _last_compacted
    if last[0] == value:  # a batch's trials log the same epochs: checked once, not 50 times
        return last[1]
    a = np.frombuffer(value, "<i4")
    first, step = int(a[0]), int(a[1]) - int(a[0])
    kept = value
    if np.array_equal(a, first + step * np.arange(len(a), dtype=np.int64)):
        kept = _RUN.pack(_RUN_TAG, first, step, len(a))
    _last_compacted = (bytes(value), kept)
    return kept


_last_compacted: tuple[bytes, bytes] = (b"", b"")
"""``compact_epochs``' last answer (its input, what it kept): one tuple, swapped whole."""


def expand_epochs(value: bytes) -> bytes:
    """The int32 array ``compact_epochs`` was given, from what it kept."""
    if len(value) != _RUN.size or value[:1] != _RUN_TAG:
        return value
    _, first, step, count = _RUN.unpack(value)
    return (first + step * np.arange(count, dtype=np.int64)).astype("<i4").tobytes()


class EpochNumbers(TypeDecorator[bytes]):
    """A history's epoch numbers: int32 little-endian bytes in and out, kept as a run (13
    bytes) when they are one. A dense history of 10 000 epochs is 40 KB of numbers any
    reader can rebuild from three; every reader of the column gets the bytes it was given,
    and a row written before (the explicit array) reads as it always did."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> bytes | None:
        if value is None:
            return None
        return compact_epochs(bytes(value))

    def process_result_value(self, value: Any, dialect: Any) -> bytes | None:
        if value is None:
            return None
        return expand_epochs(bytes(value))


class Base(DeclarativeBase):
    pass


class DatasetRow(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("tenant", "sha256", name="uq_dataset_tenant_sha"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True, default="default")
    name: Mapped[str | None] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    rows: Mapped[int] = mapped_column(Integer)
    features: Mapped[int] = mapped_column(Integer)
    targets: Mapped[int] = mapped_column(Integer)
    feature_names: Mapped[list[str]] = mapped_column(JSON)
    target_names: Mapped[list[str]] = mapped_column(JSON)
    columns: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobRow(Base):
    __tablename__ = "jobs"
    # a tenant's active jobs are counted at every submit, inside its write transaction
    # (the max_active_jobs limit): from this index alone, not by reading every job the
    # tenant ever ran (1 200 finished jobs made that 2 to 4 ms, each submit, lock held)
    __table_args__ = (Index("ix_jobs_tenant_status", "tenant", "status"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), default="default")
    status: Mapped[str] = mapped_column(String(16), index=True)
    # "train", or "predict": a batch prediction (spec: the model, format, include_input;
    # epochs/progress_epoch: the dataset's rows and those written; model_id stays null)
    task: Mapped[str] = mapped_column(String(16), index=True, default="train",
                                      server_default="train")
    dataset_id: Mapped[str] = mapped_column(String(40), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    device: Mapped[str] = mapped_column(String(16))
    device_used: Mapped[str | None] = mapped_column(String(16))
    engine_used: Mapped[str | None] = mapped_column(String(32))
    model_name: Mapped[str | None] = mapped_column(String(64))
    model_id: Mapped[str | None] = mapped_column(String(40))
    epochs: Mapped[int] = mapped_column(Integer)
    progress_epoch: Mapped[int] = mapped_column(Integer, default=0)
    progress_loss: Mapped[float | None] = mapped_column(Float)
    progress_val_loss: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(64))
    # refreshed by the worker holding the job; a stale one means the worker is gone (reaper)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # float32 little-endian arrays: the loss at each logged epoch, and its epoch numbers (int32)
    # (the epoch numbers kept as a run when they are one: ``EpochNumbers``)
    history_epoch: Mapped[bytes | None] = mapped_column(EpochNumbers)
    history_loss: Mapped[bytes | None] = mapped_column(LargeBinary)
    history_val_loss: Mapped[bytes | None] = mapped_column(LargeBinary)
    stopped_early: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ModelRow(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("tenant", "name", "version", name="uq_model_version"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True, default="default")
    name: Mapped[str | None] = mapped_column(String(64), index=True)
    version: Mapped[int | None] = mapped_column(Integer)
    # null for a model imported from a checkpoint (POST /v1/models): no job trained it here
    job_id: Mapped[str | None] = mapped_column(String(40))
    dataset_id: Mapped[str | None] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    in_features: Mapped[int] = mapped_column(Integer)
    out_features: Mapped[int] = mapped_column(Integer)
    weight: Mapped[list[list[float]] | None] = mapped_column(JSON)
    bias: Mapped[list[float] | None] = mapped_column(JSON)
    normalization: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    feature_names: Mapped[list[str]] = mapped_column(JSON)
    target_names: Mapped[list[str]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    device: Mapped[str] = mapped_column(String(16))
    checkpoint: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # lineage: the model a warm start began from; for an import, where the file came from
    parent_id: Mapped[str | None] = mapped_column(String(40), index=True)
    origin: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ModelAliasRow(Base):
    """An alias of a model name (``champion``) and the version it points at now; its moves
    are ``AliasMoveRow``s. ``latest`` is built in and never stored."""

    __tablename__ = "model_aliases"
    __table_args__ = (UniqueConstraint("tenant", "name", "alias", name="uq_model_alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    alias: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AliasMoveRow(Base):
    """One move of an alias (mlflow#2169 asked for this history): from a version (null: the
    alias was new) to a version (null: it was deleted), when, and by which key."""

    __tablename__ = "alias_moves"
    __table_args__ = (Index("ix_alias_moves_name", "tenant", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    alias: Mapped[str] = mapped_column(String(64))
    from_version: Mapped[int | None] = mapped_column(Integer)
    to_version: Mapped[int | None] = mapped_column(Integer)
    key_id: Mapped[str | None] = mapped_column(String(40))  # null: authentication is off
    moved_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TrafficSplitRow(Base):
    """How predict by a bare name splits its requests: ``weights`` is ``[[target, percent],
    ...]`` in the order given, each target an alias (``latest`` included) or a version
    number as text; the percents sum to 100."""

    __tablename__ = "traffic_splits"
    __table_args__ = (UniqueConstraint("tenant", "name", name="uq_traffic_split"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    weights: Mapped[list[list[Any]]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKeyRow(Base):
    """An API key: only its sha256 is kept; the key itself is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    scope: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(200))
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class IdempotencyRow(Base):
    """What a POST with an ``Idempotency-Key`` created, to answer a retry with the same."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("tenant", "route", "key", name="uq_idempotency"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    route: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(200))
    request_sha256: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str | None] = mapped_column(String(40))
    status_code: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EvaluationRow(Base):
    """A model scored on a dataset (POST /v1/models/{id}/evaluations). The plot's points
    (at most a few thousand rows of actual and predicted, float32) are kept with it, so the
    figure outlives the dataset."""

    __tablename__ = "evaluations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    model_id: Mapped[str] = mapped_column(String(40), index=True)
    dataset_id: Mapped[str] = mapped_column(String(40))
    task: Mapped[str] = mapped_column(String(16))
    rows: Mapped[int] = mapped_column(Integer)
    rows_used: Mapped[int] = mapped_column(Integer)
    refused: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    ignored_columns: Mapped[list[str]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    # regression: float32 little-endian (points, 2, targets): actual then predicted
    plot_points: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SweepRow(Base):
    """A hyperparameter sweep (POST /v1/sweeps): a base job, a search space, a strategy and
    an objective. Its trials are jobs, linked by ``sweep_trials``. The controller that holds
    it (``holder``) refreshes ``heartbeat_at``; a sweep whose holder fell silent is taken
    over by another."""

    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    dataset_id: Mapped[str] = mapped_column(String(40), index=True)
    device: Mapped[str] = mapped_column(String(16))
    # the base job's hyperparameters (a TrainingSpec, its seed drawn), and the search space
    # as parsed: [{"path", "kind", "low", "high", "choices", "steps"}, ...]
    job: Mapped[dict[str, Any]] = mapped_column(JSON)
    search_space: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    strategy: Mapped[str] = mapped_column(String(16))
    objective: Mapped[str] = mapped_column(String(32))
    direction: Mapped[str] = mapped_column(String(8))
    max_trials: Mapped[int] = mapped_column(Integer)
    max_parallel: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    pruning: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    model_name: Mapped[str | None] = mapped_column(String(64))
    model_id: Mapped[str | None] = mapped_column(String(40))
    best_trial: Mapped[int | None] = mapped_column(Integer)
    best_value: Mapped[float | None] = mapped_column(Float)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    holder: Mapped[str | None] = mapped_column(String(64))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SweepTrialRow(Base):
    """One trial of a sweep: the job that runs it, its parameters, and what the sweep made of
    it (objective, the losses its pruner saw, its state). One row per trial, never per epoch;
    ``seq`` orders the ended trials (the ids of the sweep's events)."""

    __tablename__ = "sweep_trials"
    __table_args__ = (UniqueConstraint("sweep_id", "number", name="uq_sweep_trial"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sweep_id: Mapped[str] = mapped_column(String(40), index=True)
    number: Mapped[int] = mapped_column(Integer)
    # null for a trial the job schema refused (a combination of values): it has no job
    job_id: Mapped[str | None] = mapped_column(String(40), unique=True)
    # the job fields set (by path: {"optimizer.lr": 0.01}), and Optuna's own values of them
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    raw_params: Mapped[dict[str, Any]] = mapped_column(JSON)
    # open (its job is queued or running), succeeded, pruned, failed or cancelled
    status: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float)
    # {epoch: loss} at the pruning rungs reached, and the sampler's and pruner's own records
    intermediate: Mapped[dict[str, Any]] = mapped_column(JSON)
    system_attrs: Mapped[dict[str, Any]] = mapped_column(JSON)
    prune_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    pruned_at: Mapped[int | None] = mapped_column(Integer)
    seq: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
