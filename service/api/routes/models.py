"""/v1/models: fitted models, their checkpoints, predictions; importing a checkpoint,
exporting to ONNX; deleting one."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from service.api.deps import (
    MetaDep,
    PredictorDep,
    ServicesDep,
    TenantDep,
    require,
    require_room,
)
from service.api.responses import JSONBytes, errors, json_body_doc
from service.api.routes.predict import predict_response
from service.api.schemas import (
    NAME_PATTERN,
    ModelPublic,
    ModelsPublic,
    PredictRequest,
    PredictResponse,
)
from service.api.views import model_public
from service.errors import UnsupportedMediaType
from service.serving.predict import loaded_model, model_parameters
from service.serving.predictor import Predictor
from service.store.tables import ModelRow

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelsPublic)
def list_models(
    meta: MetaDep,
    tenant: TenantDep,
    name: Annotated[str | None, Query(description="Only versions of this name.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(description="`next` of the previous page.")] = None,
) -> ModelsPublic:
    """List fitted models, newest first."""
    page = meta.list_models(tenant, name, limit, cursor)
    return ModelsPublic(data=[model_public(r) for r in page.rows], count=page.count,
                        next=page.next)


@router.post(
    "", status_code=201, response_model=ModelPublic,
    responses=errors(400, 404, 413, 415, 422, 503, 507),
    dependencies=[Depends(require("train")), Depends(require_room)],
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def import_model(
    request: Request, services: ServicesDep, tenant: TenantDep,
    name: Annotated[str, Query(pattern=NAME_PATTERN, description="The name it is registered "
                               "under, as its next version.")],
    sha256: Annotated[str | None, Header(
        alias="X-Checkpoint-SHA256", description="The file's sha256 (GET "
        "/v1/models/{id}/checkpoint sends it): a file changed or cut on the way is refused."
    )] = None,
) -> Response:
    """Register a fitserve checkpoint (safetensors, as GET /v1/models/{id}/checkpoint gives
    it) under a name; it is checked whole (sha256, format, config, every tensor) first."""
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media != "application/octet-stream":
        raise UnsupportedMediaType("send the checkpoint file as application/octet-stream "
                                   f"(got {request.headers.get('content-type')!r})")
    blob = await request.body()
    from service.lifecycle.checkpoints import import_checkpoint

    row = await run_in_threadpool(import_checkpoint, services.meta, services.artifacts,
                                  services.settings, blob, sha256, name, tenant)
    services.catalog_moved()
    return JSONBytes(model_public(row).model_dump(mode="json"), status_code=201,
                     headers={"Location": f"/v1/models/{row.id}"})


@router.get(
    "/{model_id}/export", response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}},
                     "description": "The ONNX model"}, **errors(404, 422, 503)},
)
async def export_model(
    model_id: str, meta: MetaDep, predictor: PredictorDep, tenant: TenantDep,
    format: Annotated[Literal["onnx"], Query(description="The export format.")] = "onnx",
) -> Response:
    """The model as an ONNX graph, standardization included: input `x` (or one input per
    column, the feature pipeline included, for a model trained on columns), output `y` (and
    `labels`, `probabilities` for a classifier), the numbers predict gives."""
    row = await run_in_threadpool(meta.get_model, model_id, tenant)
    blob = await run_in_threadpool(_onnx, predictor, row)
    return Response(blob, media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{row.id}.onnx"'})


def _onnx(predictor: Predictor, row: ModelRow) -> bytes:
    from service.lifecycle.onnx_export import export_checkpoint

    return export_checkpoint(row, predictor.checkpoint_bytes(row))  # verified by sha256


@router.get("/{model_id}", response_model=ModelPublic, responses=errors(404))
async def get_model(
    model_id: str, meta: MetaDep, predictor: PredictorDep, tenant: TenantDep,
    parameters: Annotated[bool, Query(
        description="Include every tensor by name (up to 1 000 000 values; beyond, read "
        "the checkpoint).")] = True,
) -> ModelPublic:
    """Weight, bias, every parameter by name, metrics, hyperparameters and lineage."""
    row = await run_in_threadpool(meta.get_model, model_id, tenant)
    tensors, error = await model_parameters(predictor, row.id, tenant)
    model, _ = await loaded_model(predictor, row.id, tenant)  # cached by now
    return model_public(row, tensors if parameters else None, checkpoint_error=error,
                        pipeline=model.pipeline if model is not None else None)


@router.get(
    "/{model_id}/checkpoint",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}},
                     "description": "The safetensors file"}, **errors(404, 503)},
)
async def get_checkpoint(
    model_id: str, meta: MetaDep, predictor: PredictorDep, tenant: TenantDep
) -> Response:
    """The checkpoint as a safetensors file (tensors + metadata; never a pickle)."""
    row = await run_in_threadpool(meta.get_model, model_id, tenant)
    blob = await run_in_threadpool(predictor.checkpoint_bytes, row)
    return Response(
        blob,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{row.id}.safetensors"',
            "X-Checkpoint-SHA256": row.sha256,
        },
    )


@router.post(
    "/{model_id}/predict",
    response_model=PredictResponse,
    responses=errors(400, 404, 415, 422, 503),
    openapi_extra=json_body_doc(PredictRequest),
)
async def predict_with(
    model_id: str, request: Request, predictor: PredictorDep, tenant: TenantDep
) -> Response:
    """Predict with this model: `{"x": [[...]]}`, `{"rows": [{...}]}` or `{"columns":
    {...}}` -> `{"y": [[...]]}`."""
    return await predict_response(request, predictor, tenant, model_id, by_path=True)


@router.delete("/{model_id}", status_code=204, responses=errors(404, 409),
               dependencies=[Depends(require("train"))])  # a predict key reads models only
def delete_model(model_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    """Delete a model: its record, its version of its name, and its checkpoint file (409
    while an alias or a traffic split names its version, or a queued or running job needs
    it: a batch prediction with it, a warm start from it)."""
    row = services.freeing_space(lambda: services.meta.delete_model(model_id, tenant))
    services.artifacts.delete_checkpoint(row.id)  # after the commit: a stray file is swept
    services.catalog_moved(row.id)  # last: a load begun before the commit is dropped
    return Response(status_code=204)
