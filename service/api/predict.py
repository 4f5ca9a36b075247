"""POST /predict: the stable route for other services; and the predict logic both predict
routes share, whether FastAPI or the ASGI fast lane (service/api/predict_lane.py) serves them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from service.api.http import JSONBytes, errors, is_json, json_body_doc
from service.arrays import as_matrix, decode_json
from service.deps import PredictorDep, TenantDep
from service.errors import InvalidInput, UnsupportedMediaType
from service.limits import LimitExceeded
from service.predictor import Predictor
from service.schemas import PredictResponse, ServicePredictRequest

router = APIRouter(tags=["predict"])


def parse_predict_body(
    raw: bytes, content_type: str | None, ref: str | None, *, by_path: bool,
    max_rows: int | None = None,
) -> tuple[str | None, Any]:
    """Validate a predict body; returns (model reference, x as a float32 array)."""
    if not is_json(content_type):
        raise UnsupportedMediaType(f"send the body as application/json (got {content_type!r})")
    body = decode_json(raw)
    if not isinstance(body, dict):
        raise InvalidInput('the body must be a JSON object: {"x": [[...]]}')
    if len(body) > 1 or "x" not in body:
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
    x = body["x"]
    if max_rows is not None and isinstance(x, list) and len(x) > max_rows:
        raise LimitExceeded(f"{len(x)} rows exceed the predict limit of {max_rows} per "
                            "request (FITSERVE_MAX_PREDICT_ROWS)", field="x")
    return ref, as_matrix(x, "x")


async def predict_result(
    predictor: Predictor, tenant: str, ref: str | None, x: Any
) -> dict[str, Any]:
    model = predictor.cached(ref, tenant)
    if model is None:  # first use: resolve and load off the event loop
        model = await run_in_threadpool(predictor.load, ref, tenant)
    p = model.infer(x)
    predictor.rows_predicted += len(p.y)  # the /metrics counter; one int add per request
    result = {"model_id": model.id, "model_name": model.name, "version": model.version,
              "y": p.y}
    if p.labels is not None:
        result["labels"] = p.labels
        result["probabilities"] = p.probabilities
    return result


async def predict_response(
    request: Request, predictor: Predictor, tenant: str, ref: str | None, *, by_path: bool
) -> Response:
    ref, x = parse_predict_body(
        await request.body(), request.headers.get("content-type"), ref, by_path=by_path,
        max_rows=request.app.state.services.settings.max_predict_rows,
    )
    return JSONBytes(await predict_result(predictor, tenant, ref, x))


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=errors(400, 404, 415, 422, 503),
    openapi_extra=json_body_doc(ServicePredictRequest),
)
async def predict(request: Request, predictor: PredictorDep, tenant: TenantDep) -> Response:
    """Predict with a model named by id or name, or the latest model when `model` is omitted."""
    return await predict_response(request, predictor, tenant, None, by_path=False)
