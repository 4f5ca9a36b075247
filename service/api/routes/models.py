"""/v1/models: fitted models, their checkpoints, predictions; deleting one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from service.api.deps import MetaDep, PredictorDep, ServicesDep, TenantDep, require
from service.api.responses import errors, json_body_doc
from service.api.routes.predict import predict_response
from service.api.schemas import ModelPublic, ModelsPublic, PredictRequest, PredictResponse
from service.api.views import model_public
from service.errors import is_disk_full
from service.serving.predict import model_parameters
from service.serving.predictor import Predictor

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
    return model_public(row, tensors if parameters else None, checkpoint_error=error)


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
    """Predict with this model: `{"x": [[...]]}` -> `{"y": [[...]]}`."""
    return await predict_response(request, predictor, tenant, model_id, by_path=True)


@router.delete("/{model_id}", status_code=204, responses=errors(404),
               dependencies=[Depends(require("train"))])  # a predict key reads models only
def delete_model(model_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    """Delete a model: its record, its version of its name, and its checkpoint file."""
    try:
        row = services.meta.delete_model(model_id, tenant)
    except Exception as e:  # a full disk: the commit that frees space may need some
        if not is_disk_full(e) or not services.free_reserve():
            raise
        row = services.meta.delete_model(model_id, tenant)
    services.artifacts.delete_checkpoint(row.id)  # after the commit: a stray file is swept
    _forget(services.predictor, row.id)  # last: a load that began before the commit is dropped
    return Response(status_code=204)


def _forget(predictor: Predictor, model_id: str) -> None:
    """Drop a deleted model from this process's predict cache, and what names and "latest"
    resolved to, so that predict answers 404 (or the name's remaining latest version) now.
    Belongs in Predictor as a method (issue 16): serving/predictor.py was not ours to edit."""
    with predictor._lock:
        predictor._models.pop(model_id, None)
    predictor._aliases = {}
