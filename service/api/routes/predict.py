"""POST /predict: the stable route for other services (the core is service/serving/predict.py,
which the ASGI fast lane calls too)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.api.deps import PredictorDep, TenantDep
from service.api.responses import JSONBytes, errors, json_body_doc
from service.api.schemas import PredictResponse, ServicePredictRequest
from service.serving.predict import parse_predict_body, predict_result, version_headers
from service.serving.predictor import Predictor
from service.serving.traffic import ROUTE_KEY_HEADER

router = APIRouter(tags=["predict"])


async def predict_response(
    request: Request, predictor: Predictor, tenant: str, ref: str | None, *, by_path: bool
) -> Response:
    ref, x = parse_predict_body(
        await request.body(), request.headers.get("content-type"), ref, by_path=by_path,
        max_rows=request.app.state.services.settings.max_predict_rows,
    )
    result = await predict_result(predictor, tenant, ref, x,
                                  request.headers.get(ROUTE_KEY_HEADER))
    return JSONBytes(result, headers=version_headers(result))


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=errors(400, 404, 415, 422, 503),
    openapi_extra=json_body_doc(ServicePredictRequest),
)
async def predict(request: Request, predictor: PredictorDep, tenant: TenantDep) -> Response:
    """Predict with a model named by id, name, `name@alias` or `name@3`, or the latest model
    when `model` is omitted. A name with a traffic split answers from a version drawn by
    weight (sticky per `X-Fitserve-Route-Key`); `X-Fitserve-Model-Version` says which."""
    return await predict_response(request, predictor, tenant, None, by_path=False)
