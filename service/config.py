"""One settings object, read from the environment (prefix ``FITSERVE_``) when asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FITSERVE_", extra="ignore")

    data_dir: Path = Path("./data")
    """Where the SQLite file, datasets and checkpoints live."""

    database_url: str | None = None
    """SQLAlchemy URL of the metadata store; default: SQLite file ``<data_dir>/fitserve.db``."""

    device: str = "auto"
    """Default training device: auto | cpu | cuda | cuda:N | mps (auto: cuda, mps, then cpu)."""

    workers: int = Field(default=2, ge=0, le=64)
    """Training worker processes started beside the API (0: none, jobs wait for workers
    started elsewhere)."""

    host: str = "127.0.0.1"
    """Address the API binds to."""

    port: int = Field(default=8000, ge=0, le=65535)
    """Port the API binds to."""

    max_epochs: int = Field(default=1_000_000, ge=1)
    """Upper bound on ``epochs`` in a job."""

    max_body_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    """Largest request body accepted (413 beyond)."""

    max_json_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Largest JSON dataset upload (413 beyond, before the body is read): JSON becomes
    Python objects many times its size while parsed; larger data goes as CSV, Parquet or
    Arrow, which are read in place."""

    max_categories: int = Field(default=1000, ge=2)
    """Most distinct values of one categorical column, in a dataset (422 beyond) and in a
    model's one-hot encoding."""

    max_rows: int = Field(default=20_000_000, ge=1)
    """Most rows in one dataset (422 beyond)."""

    max_features: int = Field(default=10_000, ge=1)
    """Most feature (and, separately, target) columns in one dataset (422 beyond)."""

    max_epoch_rows: int = Field(default=20_000_000_000, ge=1)
    """Budget of one job: epochs x training rows (422 beyond)."""

    max_active_jobs: int = Field(default=1000, ge=1)
    """Queued + running jobs one tenant may have (429 with Retry-After beyond)."""

    max_predict_rows: int = Field(default=1_000_000, ge=1)
    """Most rows in one predict request (422 beyond)."""

    predict_chunk_rows: int = Field(default=65_536, ge=1, le=16_777_216)
    """Rows a batch prediction (POST /v1/predictions) reads, scores and writes at a time:
    its worker's memory is a few chunks, whatever the dataset's size."""

    max_degree: int = Field(default=10, ge=1)
    """Highest ``degree`` of a polynomial model (422 beyond)."""

    max_hidden_layers: int = Field(default=8, ge=1)
    """Most hidden layers of an mlp (422 beyond)."""

    max_hidden_units: int = Field(default=1024, ge=1)
    """Widest hidden layer of an mlp (422 beyond)."""

    max_parameters: int = Field(default=10_000_000, ge=1)
    """Most trainable parameters in one model (422 beyond)."""

    max_trace_epochs: int = Field(default=100, ge=0, le=100)
    """Most ``trace_epochs`` in a job (at most 100; 0 turns tracing off)."""

    max_trace_parameters: int = Field(default=10_000, ge=1)
    """Most parameters of a model that may be traced: a trace holds each one three times
    per epoch (422 beyond)."""

    max_trials: int = Field(default=1000, ge=1)
    """Most trials in one sweep (``max_trials``, or a grid's size): 422 beyond. Each trial
    is a job, with its own history and checkpoint."""

    auth: bool = False
    """Check API keys (``Authorization: Bearer <key>``). Off is allowed on a loopback
    address only; see SECURITY.md."""

    allowed_origins: list[str] = Field(default_factory=list)
    """Browser origins (``https://app.example``) allowed to send state-changing requests
    besides the server's own; any other Origin gets a 403 (DNS rebinding, CSRF)."""

    trusted_hosts: list[str] | None = None
    """Host headers accepted; default: the loopback names when bound to loopback, any
    otherwise. A rebinding attack's requests carry the attacker's host name."""

    max_job_attempts: int = Field(default=3, ge=1)
    """A job whose worker died is run again at most this many times in all."""

    progress_interval_s: float = Field(default=0.2, gt=0)
    """Least time between two progress writes of one job."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level of the service."""

    access_log: bool = True
    """One JSON log line per request (method, path, status, duration, request id)."""

    # ---- faults (SECURITY.md "Faults"): bounded clients, storage, recovery

    header_timeout_s: float = Field(default=10.0, gt=0)
    """Most time a client may take to send a request's line and headers (from the
    connection's start, or from the end of its previous response): closed after it."""

    body_timeout_s: float = Field(default=30.0, gt=0)
    """Most time between two parts of a request body (408 after it): a declared but unsent
    body holds nothing for long."""

    max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    """Largest request head (request line and headers): 431 beyond."""

    max_headers: int = Field(default=100, ge=8)
    """Most header lines in one request: 431 beyond."""

    max_connections: int = Field(default=2048, ge=1)
    """Most connections open at once (503 beyond)."""

    shutdown_timeout_s: float = Field(default=5.0, gt=0)
    """On SIGTERM, the most time open requests get to finish (long polls and event streams
    end at once)."""

    idempotency_reservation_s: float = Field(default=60.0, gt=0)
    """An Idempotency-Key whose request never finished (the server died mid-request) is
    free again after this; a retry then does the work, or finds what it created."""

    min_free_bytes: int = Field(default=8 * 1024 * 1024, ge=0)
    """Free space the data directory must keep: below it ``/readyz`` says not ready and new
    uploads and jobs answer 507 (a full disk), while reads, predicts and deletes go on."""

    sweep_interval_s: float = Field(default=300.0, gt=0)
    """How often files that no record points to (left by a crash) are looked for."""

    orphan_grace_s: float = Field(default=600.0, ge=0)
    """A file no record points to is removed once it is this old (a younger one may be an
    upload whose record is about to be committed)."""

    # ---- scale-out (README "Scale-out"): the backends; nothing else changes between modes

    queue: Literal["local", "celery"] = "local"
    """How jobs reach workers: ``local`` (worker processes beside the API) or ``celery``
    (``fitserve worker`` processes anywhere, fed through the broker)."""

    broker_url: str = "redis://127.0.0.1:6379/0"
    """Celery broker (Redis) of the ``celery`` queue; also keeps the worker registry and the
    model catalog counter."""

    broker_prefix: str = Field(default="fitserve", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    """Prefix of every key this deployment writes on the broker, so that several deployments
    (or test runs) can share one Redis."""

    artifacts: str | None = None
    """Where datasets and checkpoints live: a directory (default ``<data_dir>``) or an
    object store URL, ``s3://bucket/prefix`` (credentials from the usual ``AWS_*``
    variables)."""

    artifacts_endpoint_url: str | None = None
    """Endpoint of an S3-compatible store other than AWS (MinIO: ``http://minio:9000``)."""

    visibility_timeout_s: float = Field(default=43_200, gt=0)
    """Celery on Redis redelivers a message not acknowledged within this time: keep it
    longer than the longest job (a redelivered job that still runs is skipped, not rerun)."""

    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    """How often a worker marks its running job (and itself) alive."""

    heartbeat_timeout_s: float = Field(default=60.0, gt=0)
    """A running job whose worker has been silent this long is recovered by the reaper:
    queued again (within ``max_job_attempts``) and sent to its device's queue."""

    reaper_interval_s: float = Field(default=5.0, gt=0)
    """How often API and worker processes look for silent workers and lost messages."""

    @field_validator("device")
    @classmethod
    def _device_syntax(cls, v: str) -> str:
        from service.training.devices import parse_device_name

        return parse_device_name(v, allow_auto=True)

    @model_validator(mode="after")
    def _heartbeat_margin(self) -> Settings:
        if self.heartbeat_timeout_s < 2 * self.heartbeat_interval_s:
            raise ValueError(
                "heartbeat_timeout_s must be at least twice heartbeat_interval_s, or live "
                "workers would have their jobs taken from them"
            )
        return self

    @property
    def resolved_artifacts(self) -> str:
        return self.artifacts or str(self.data_dir)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'fitserve.db').resolve()}"

    def ensure_dirs(self) -> None:
        for sub in ("datasets", "checkpoints"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
