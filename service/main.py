"""Builds the app. ``create_app(settings)`` for tests and tools; ``app`` for uvicorn."""

from __future__ import annotations

import functools
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from starlette.routing import BaseRoute

from service import __version__
from service.api.docs import install_docs
from service.api.middleware.guard import RequestGuard
from service.api.middleware.predict_lane import PredictLane
from service.api.middleware.telemetry import RequestTelemetry
from service.api.responses import install_error_handlers
from service.api.routes import ROUTERS
from service.api.server import run_server as run_server  # the CLI's way into service.api
from service.config import Settings
from service.services import Services, build_services
from service.serving.protocol import InferenceProtocol
from service.telemetry import Telemetry

DESCRIPTION = """
Train PyTorch models on data you send, and serve them.

Upload a dataset (`POST /v1/datasets`), submit a job (`POST /v1/jobs`), poll it
(`GET /v1/jobs/{id}`), then predict (`POST /v1/models/{id}/predict` or `POST /predict`).
Every error answers `{"error": {"type": ..., "message": ...}}`.
"""


def create_app(
    settings: Settings | None = None,
    *,
    services: Services | None = None,
    start_workers: bool = True,
) -> FastAPI:
    """An app bound to ``services`` (built from ``settings`` when not given)."""
    settings = settings or (services.settings if services else Settings())
    if services is None:
        services = build_services(settings, with_workers=start_workers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services.queue is not None:
            # the local pool first recovers jobs cut off by the last shutdown (it is the only
            # runner on its store); the Celery queue starts its reaper instead
            services.queue.start()
        # "ready" is the server's to say, once its port is bound (service/api/server.py)
        # the app, its libraries and settings live as long as the process: out of the
        # collector's generations, a full collection no longer walks them (it did, for
        # 140 ms, on 1 000-row predicts: the p99 of issue 13); given back at the end, so an
        # app that goes away (in tests, many do) can be collected
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            if services.queue is not None:
                services.queue.stop()
            services.meta.dispose()

    app = FastAPI(
        title="fitserve",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # install_docs serves them with local assets
        redoc_url=None,
    )
    app.state.services = services
    # per app, never prometheus_client's global registry: two apps in one process collide
    app.state.telemetry = Telemetry(services.meta, services.predictor)
    app.state.inference = InferenceProtocol(services.meta, services.predictor)
    install_error_handlers(app)
    install_docs(app)
    _include_api(app)
    app.add_middleware(PredictLane, services=services, inference=app.state.inference)
    # before any route, the lane's too
    app.add_middleware(RequestGuard, settings=settings, services=services)
    # added last, so outermost: it sees every request, the fast lane's too
    app.add_middleware(RequestTelemetry, telemetry=app.state.telemetry,
                       log_requests=settings.access_log)
    return app


def _include_api(app: FastAPI) -> None:
    """The API's routers in ``app``. FastAPI (0.137 on) builds what each route runs, its
    dependencies and validators, on an app's first request, and in each app again: 0.14 s of
    CPU for our 58 routes. Every app includes the same routers alike, so the apps of one
    process (the tests make some 500) share what ``_shared_routes`` built once. A FastAPI
    that includes routers otherwise gives each app its own."""
    for router, options in ROUTERS:
        app.include_router(router, **options)
    mine = app.router.routes[-len(ROUTERS):]
    if all(type(r).__name__ == "_IncludedRouter" for r in mine):
        app.router.routes[-len(ROUTERS):] = _shared_routes()


@functools.cache
def _shared_routes() -> list[BaseRoute]:
    """The routers included once, under a bare router, so that no app's
    ``dependency_overrides`` live in them (none is used: the routes' dependencies read the
    app's state)."""
    bare = APIRouter()
    for router, options in ROUTERS:
        bare.include_router(router, **options)
    return bare.routes[-len(ROUTERS):]


def _app_from_env() -> FastAPI:
    from service.auth.keys import check_bind
    from service.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_level, background=True)  # off the event loop
    refusal = check_bind(settings)
    if refusal:
        raise SystemExit(refusal)
    return create_app(settings)


def __getattr__(name: str) -> FastAPI:
    """``service.main:app`` builds the app on first access, not at import (for uvicorn)."""
    if name == "app":
        return _app_from_env()
    raise AttributeError(name)
