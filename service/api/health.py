"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from sqlalchemy import text

from service.api.http import JSONBytes
from service.deps import ServicesDep
from service.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Response:
    """Liveness: the process answers."""
    return JSONBytes({"status": "ok"})


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(services: ServicesDep) -> Response:
    """Readiness: the metadata store answers, the data directory is writable, workers run."""
    checks: dict[str, str] = {}
    try:
        with services.meta.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as e:  # noqa: BLE001 - reported, not raised
        checks["database"] = f"error: {type(e).__name__}"
    data_dir = services.settings.data_dir
    checks["data_dir"] = "ok" if data_dir.is_dir() else "missing"
    queue = services.queue
    readiness = getattr(queue, "readiness", None)
    if readiness is not None:  # scale-out: the broker and the object store; workers scale
        checks.update(readiness())  # on their own and are not this API's readiness
        checks["artifacts"] = services.artifacts.check()
    elif queue is not None:
        alive = getattr(queue, "alive", None)
        checks["workers"] = f"{alive} alive" if alive else "none alive"
    ok = all(v == "ok" or v.endswith(" alive") and not v.startswith("none") for v in
             checks.values())
    return JSONBytes({"status": "ready" if ok else "not_ready", "checks": checks},
                     status_code=200 if ok else 503)
