"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from service.api.deps import ServicesDep
from service.api.responses import JSONBytes
from service.api.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Response:
    """Liveness: the process answers."""
    return JSONBytes({"status": "ok"})


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(services: ServicesDep) -> Response:
    """Readiness: the metadata store answers, the data directory is writable, workers run."""
    ready, checks = services.readiness()
    return JSONBytes({"status": "ready" if ready else "not_ready", "checks": checks},
                     status_code=200 if ready else 503)
