"""The Python client of the fitserve API: ``Client`` and ``AsyncClient`` over httpx.

It installs with ``pip install fitserve`` alone and imports neither torch, numpy nor the
server's packages (a test checks this in a fresh virtualenv)."""

from service.client.http import (
    DEFAULT_URL,
    AsyncClient,
    BadRequest,
    Client,
    ConflictError,
    Event,
    FitserveError,
    InvalidInputError,
    JobFailed,
    NotFoundError,
    ServerError,
    SweepFailed,
    UnsupportedMediaTypeError,
    default_url,
)

__all__ = [
    "DEFAULT_URL", "AsyncClient", "BadRequest", "Client", "ConflictError", "Event",
    "FitserveError", "InvalidInputError", "JobFailed", "NotFoundError", "ServerError",
    "SweepFailed", "UnsupportedMediaTypeError", "default_url",
]
