"""POST /predict: the stable route for other services. Also the shared predict path."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from service.api.http import JSONBytes, errors, json_body_doc, read_json
from service.arrays import as_matrix
from service.deps import PredictorDep, TenantDep
from service.errors import InvalidInput
from service.predictor import Predictor
from service.schemas import PredictResponse, ServicePredictRequest

router = APIRouter(tags=["predict"])


async def predict_response(
    request: Request, predictor: Predictor, tenant: str, ref: str | None, *, by_path: bool
) -> Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidInput('the body must be a JSON object: {"x": [[...]]}')
    allowed = {"x"} if by_path else {"x", "model"}
    unknown = set(body) - allowed
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(sorted(unknown))}",
                           field=sorted(unknown)[0])
    if "x" not in body:
        raise InvalidInput("x is required", field="x")
    if not by_path:
        ref = body.get("model")
        if ref is not None and (not isinstance(ref, str) or not ref):
            raise InvalidInput("model must be a model id or name", field="model")
    x = as_matrix(body["x"], "x")
    model = predictor.cached(ref, tenant)
    if model is None:  # first use: resolve and load off the event loop
        model = await run_in_threadpool(predictor.load, ref, tenant)
    y = model.predict(x)
    return JSONBytes(
        {"model_id": model.id, "model_name": model.name, "version": model.version, "y": y}
    )


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=errors(400, 404, 415, 422),
    openapi_extra=json_body_doc(ServicePredictRequest),
)
async def predict(request: Request, predictor: PredictorDep, tenant: TenantDep) -> Response:
    """Predict with a model named by id or name, or the latest model when `model` is omitted."""
    return await predict_response(request, predictor, tenant, None, by_path=False)
