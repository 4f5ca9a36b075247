"""/v2: the Open Inference Protocol's REST endpoints (KServe v2, Triton, MLServer clients).

Errors here answer the protocol's ``{"error": "message"}``, not the v1 shape, with 400 for a
request the protocol rejects and 404 for an unknown model or version.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute

from service.api.deps import ServicesDep, TenantDep
from service.api.responses import JSONBytes
from service.errors import ServiceError
from service.serving.protocol import (
    HEADER_LENGTH,
    InferenceProtocol,
    error_answer,
    infer_answer,
    server_metadata,
)
from service.serving.traffic import ROUTE_KEY_HEADER


def _v2_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONBytes({"error": message}, status_code=status, headers=headers)


class V2Route(APIRoute):
    """Turns the service's errors into the protocol's error body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as e:
                status, body, headers = error_answer(e)
                return JSONBytes(body, status_code=status, headers=headers)
            except RequestValidationError as e:
                return _v2_error(400, str(e.errors()[0].get("msg", "invalid request")))

        return handle


router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"], route_class=V2Route)

_ERR = {"content": {"application/json": {"example": {"error": "..."}}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid request", **_ERR},
    404: {"description": "Unknown model or version", **_ERR},
}


def get_inference(request: Request) -> InferenceProtocol:
    return request.app.state.inference


InferenceDep = Annotated[InferenceProtocol, Depends(get_inference)]


@router.get("")
async def v2_server_metadata() -> Response:
    """Server metadata: name, version, extensions."""
    return JSONBytes(server_metadata())


@router.get("/health/live")
async def v2_live() -> Response:
    """Liveness: the process answers."""
    return JSONBytes({"live": True})


@router.get("/health/ready", responses={503: {"description": "Not ready"}})
def v2_ready(services: ServicesDep) -> Response:
    """Readiness: the metadata store answers."""
    if services.meta.ping() != "ok":
        return JSONBytes({"ready": False}, status_code=503)
    return JSONBytes({"ready": True})


@router.get("/models/{name}", responses=ERRORS)
def v2_model_metadata(name: str, inference: InferenceDep, tenant: TenantDep) -> Response:
    """Model metadata: versions, platform, input and output tensors (latest version)."""
    return JSONBytes(inference.model_metadata(name, None, tenant))


@router.get("/models/{name}/versions/{version}", responses=ERRORS)
def v2_version_metadata(
    name: str, version: str, inference: InferenceDep, tenant: TenantDep
) -> Response:
    """Model metadata of one version."""
    return JSONBytes(inference.model_metadata(name, version, tenant))


@router.get("/models/{name}/ready", responses=ERRORS)
def v2_model_ready(name: str, inference: InferenceDep, tenant: TenantDep) -> Response:
    """Ready when the latest version's checkpoint loads and verifies."""
    return JSONBytes(inference.model_ready(name, None, tenant))


@router.get("/models/{name}/versions/{version}/ready", responses=ERRORS)
def v2_version_ready(
    name: str, version: str, inference: InferenceDep, tenant: TenantDep
) -> Response:
    """Ready when this version's checkpoint loads and verifies."""
    return JSONBytes(inference.model_ready(name, version, tenant))


_INFER_DOC: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/json": {"example": {
        "id": "42",
        "inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP32", "data": [3.3, 4.4]}],
    }}}},
}


async def _infer(
    request: Request, name: str, version: str | None, inference: InferenceProtocol, tenant: str
) -> Response:
    # parsed by hand: tritonclient sends JSON followed by raw tensor bytes, and no JSON type;
    # the predict lane answers these routes before FastAPI does, through the same core
    body, media, headers = await infer_answer(
        inference, name, version, tenant, await request.body(), request.headers.get(HEADER_LENGTH),
        request.headers.get(ROUTE_KEY_HEADER))
    return Response(body, media_type=media, headers=headers)


@router.post("/models/{name}/infer", responses=ERRORS, openapi_extra=_INFER_DOC)
async def v2_infer(
    name: str, request: Request, inference: InferenceDep, tenant: TenantDep
) -> Response:
    """Infer with the latest version: protocol tensors in, protocol tensors out."""
    return await _infer(request, name, None, inference, tenant)


@router.post("/models/{name}/versions/{version}/infer", responses=ERRORS,
             openapi_extra=_INFER_DOC)
async def v2_version_infer(
    name: str, version: str, request: Request, inference: InferenceDep, tenant: TenantDep
) -> Response:
    """Infer with one version."""
    return await _infer(request, name, version, inference, tenant)
