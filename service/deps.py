"""Typed dependencies of the routes; tests swap them with ``dependency_overrides``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.config import Settings
from service.predictor import Predictor
from service.services import Services
from service.store.artifacts import ArtifactStore
from service.store.metadata import MetadataStore


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def get_tenant() -> str:
    return "default"


ServicesDep = Annotated[Services, Depends(get_services)]
TenantDep = Annotated[str, Depends(get_tenant)]


def get_meta(s: ServicesDep) -> MetadataStore:
    return s.meta


def get_artifacts(s: ServicesDep) -> ArtifactStore:
    return s.artifacts


def get_predictor(s: ServicesDep) -> Predictor:
    return s.predictor


def get_settings(s: ServicesDep) -> Settings:
    return s.settings


MetaDep = Annotated[MetadataStore, Depends(get_meta)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]
PredictorDep = Annotated[Predictor, Depends(get_predictor)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
