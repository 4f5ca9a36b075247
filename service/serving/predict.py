"""The predict core that both predict routes share, whether FastAPI or the ASGI fast lane
(service/api/middleware/predict_lane.py) serves them: parse and check the body, then answer
from the cached model (loading it off the event loop on first use)."""

from __future__ import annotations

from typing import Any

from anyio import to_thread

from service.data.arrays import as_matrix, decode_json, is_json
from service.errors import (
    InvalidInput,
    LimitExceeded,
    ModelUnavailable,
    UnsupportedMediaType,
    unknown_field_message,
)
from service.serving.predictor import Predictor

INLINE_PARAMETERS = 1_000_000
"""Most values GET /v1/models/{id} writes out as JSON; a larger model's are in its checkpoint."""


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
            raise InvalidInput(unknown_field_message(unknown, allowed),
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
        model = await to_thread.run_sync(predictor.load, ref, tenant)
    p = model.infer(x)
    predictor.rows_predicted += len(p.y)  # the /metrics counter; one int add per request
    result = {"model_id": model.id, "model_name": model.name, "version": model.version,
              "y": p.y}
    if p.labels is not None:
        result["labels"] = p.labels
        result["probabilities"] = p.probabilities
    return result


async def model_parameters(
    predictor: Predictor, model_id: str, tenant: str
) -> tuple[dict[str, Any] | None, str | None]:
    """Every tensor of a model by name, as nested lists, read from its verified checkpoint
    (what predict serves); None beyond INLINE_PARAMETERS values. Second: why the checkpoint
    cannot be read, when it cannot (the model's record stays readable)."""
    try:
        model = predictor.cached(model_id, tenant)
        if model is None:
            model = await to_thread.run_sync(predictor.load, model_id, tenant)
    except ModelUnavailable as e:
        return None, e.message
    if sum(v.size for v in model.state.values()) > INLINE_PARAMETERS:
        return None, None
    return {k: v.tolist() for k, v in model.state.items()}, None
