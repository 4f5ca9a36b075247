"""Evaluations: a model scored on a dataset; their list per model; their figure."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from service.api.deps import MetaDep, ServicesDep, TenantDep, require, require_room
from service.api.responses import JSONBytes, errors, require_json
from service.api.schemas import (
    EvaluationCreate,
    EvaluationMetrics,
    EvaluationPublic,
    EvaluationsPublic,
    RefusedRows,
)
from service.store.tables import EvaluationRow

router = APIRouter(tags=["evaluations"])

_PNG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "A PNG image"}}


def evaluation_public(row: EvaluationRow) -> EvaluationPublic:
    return EvaluationPublic(
        id=row.id, model_id=row.model_id, dataset_id=row.dataset_id,
        task="classification" if row.task == "classification" else "regression",
        rows=row.rows, rows_used=row.rows_used, rows_refused=row.rows - row.rows_used,
        refused=[RefusedRows(**r) for r in row.refused], ignored_columns=row.ignored_columns,
        metrics=EvaluationMetrics.model_validate(row.metrics),
        plot=f"/v1/evaluations/{row.id}/plot.png", created_at=row.created_at,
    )


@router.post(
    "/v1/models/{model_id}/evaluations", status_code=201, response_model=EvaluationPublic,
    responses=errors(400, 404, 409, 415, 422, 503, 507),
    # it reads a dataset, which a predict key may not
    dependencies=[Depends(require("train")), Depends(require_json), Depends(require_room)],
)
async def create_evaluation(model_id: str, body: EvaluationCreate, services: ServicesDep,
                            tenant: TenantDep) -> Response:
    """Score the model on a stored dataset: metrics, rows used and refused (with why)."""
    from service.lifecycle.evaluate import evaluate_model

    row = await run_in_threadpool(evaluate_model, services.meta, services.artifacts,
                                  services.predictor, model_id, body.dataset_id, tenant)
    return JSONBytes(evaluation_public(row).model_dump(mode="json", by_alias=True),
                     status_code=201, headers={"Location": f"/v1/evaluations/{row.id}"})


@router.get("/v1/models/{model_id}/evaluations", response_model=EvaluationsPublic,
            responses=errors(404))
def list_evaluations(
    model_id: str, meta: MetaDep, tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(description="`next` of the previous page.")] = None,
) -> EvaluationsPublic:
    """A model's evaluations, newest first."""
    page = meta.list_evaluations(model_id, tenant, limit, cursor)
    return EvaluationsPublic(data=[evaluation_public(r) for r in page.rows], count=page.count,
                             next=page.next)


@router.get("/v1/evaluations/{evaluation_id}", response_model=EvaluationPublic,
            responses=errors(404))
def get_evaluation(evaluation_id: str, meta: MetaDep, tenant: TenantDep) -> EvaluationPublic:
    """One evaluation: its metrics, rows used and refused."""
    return evaluation_public(meta.get_evaluation(evaluation_id, tenant))


def _png(meta: Any, evaluation_id: str, tenant: str) -> bytes:
    # matplotlib is imported here, in the worker thread, by the first figure (as plots.py)
    from service.lifecycle.figures import evaluation_png

    return evaluation_png(meta.get_evaluation(evaluation_id, tenant))


@router.get("/v1/evaluations/{evaluation_id}/plot.png", response_class=Response,
            responses={**_PNG, **errors(404)})
async def evaluation_plot(evaluation_id: str, meta: MetaDep, tenant: TenantDep) -> Response:
    """Predicted against actual (regression), or the confusion matrix (classifiers)."""
    body = await run_in_threadpool(_png, meta, evaluation_id, tenant)
    return Response(body, media_type="image/png")
