"""Typed dependencies of the routes. Each reads what it needs from the app's state
(``dependency_overrides`` is not used: the apps of a process share their routes, see
``service.main._include_api``).

They are ``async def`` because none of them waits on I/O (the key lookup is cached and
reads the store at most every few seconds per key): FastAPI runs a plain ``def``
dependency in a worker thread, and the thread hops cost more than the work."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from service.auth.keys import Principal, principal_of
from service.config import Settings
from service.errors import Forbidden
from service.services import Services
from service.serving.predictor import Predictor
from service.store.artifacts import ArtifactStore
from service.store.metadata import MetadataStore


async def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_principal(request: Request, services: ServicesDep) -> Principal:
    """The caller; the scope each route needs is checked by ``require`` on its router."""
    return await principal_of(services.auth, request.headers, "predict")


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(scope: str) -> Callable[..., Awaitable[None]]:
    """A router dependency: the caller's key must allow ``scope`` (403 otherwise)."""

    async def check(principal: PrincipalDep) -> None:
        if not principal.allows(scope):
            raise Forbidden(f"this key's scope is {principal.scope!r}; this needs {scope!r}")

    return check


async def get_tenant(principal: PrincipalDep) -> str:
    return principal.tenant


TenantDep = Annotated[str, Depends(get_tenant)]


async def get_meta(s: ServicesDep) -> MetadataStore:
    return s.meta


async def get_artifacts(s: ServicesDep) -> ArtifactStore:
    return s.artifacts


async def get_predictor(s: ServicesDep) -> Predictor:
    return s.predictor


async def get_settings(s: ServicesDep) -> Settings:
    return s.settings


MetaDep = Annotated[MetadataStore, Depends(get_meta)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]
PredictorDep = Annotated[Predictor, Depends(get_predictor)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


async def require_room(s: ServicesDep) -> None:
    """Dependency of the routes that store new data: a 507 while the disk is full (reads,
    predicts and deletes go on)."""
    s.check_room()
