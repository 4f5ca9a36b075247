"""One settings object, read from the environment (prefix ``FITSERVE_``) when asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
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

    max_job_attempts: int = Field(default=3, ge=1)
    """A job whose worker died is run again at most this many times in all."""

    progress_interval_s: float = Field(default=0.2, gt=0)
    """Least time between two progress writes of one job."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level of the service."""

    @field_validator("device")
    @classmethod
    def _device_syntax(cls, v: str) -> str:
        from service.devices import parse_device_name

        return parse_device_name(v, allow_auto=True)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'fitserve.db').resolve()}"

    def ensure_dirs(self) -> None:
        for sub in ("datasets", "checkpoints", "tmp"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
