"""PNG figures: a model's fit over its data, a job's loss curve."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from service.api.deps import ArtifactsDep, MetaDep, PredictorDep, TenantDep, require
from service.api.responses import errors
from service.serving.predictor import Predictor
from service.store.artifacts import ArtifactStore
from service.store.metadata import MetadataStore

router = APIRouter()

_PNG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "A PNG image"}}

# matplotlib takes about half a second to import: it is imported in the worker thread by the
# first plot, so neither the server's start nor the event loop pays for it


def _model_png(meta: MetadataStore, artifacts: ArtifactStore, predictor: Predictor,
               model_id: str, tenant: str, feature: str | None) -> bytes:
    from service.serving.plots import model_plot_png

    return model_plot_png(meta, artifacts, predictor, model_id, tenant, feature)


def _loss_png(meta: MetadataStore, job_id: str, tenant: str) -> bytes:
    from service.serving.plots import loss_plot_png

    return loss_plot_png(meta, job_id, tenant)


@router.get("/v1/models/{model_id}/plot.png", tags=["models"], response_class=Response,
            responses={**_PNG, **errors(404, 409, 422, 503)})
async def model_plot(
    model_id: str, meta: MetaDep, artifacts: ArtifactsDep, predictor: PredictorDep,
    tenant: TenantDep,
    feature: Annotated[str | None, Query(
        max_length=200, description="A numeric input to draw the rows against: the data "
        "and each row's prediction (a classifier's probabilities).")] = None,
) -> Response:
    """The data and the fitted line or curve (one feature), predicted against actual, or
    the rows against one numeric input (`?feature=`)."""
    body = await run_in_threadpool(_model_png, meta, artifacts, predictor, model_id, tenant,
                                   feature)
    return Response(body, media_type="image/png")


@router.get("/v1/jobs/{job_id}/loss.png", tags=["jobs"], response_class=Response,
            responses={**_PNG, **errors(404, 409)},
            dependencies=[Depends(require("train"))])  # job data: not for predict keys
async def loss_plot(job_id: str, meta: MetaDep, tenant: TenantDep) -> Response:
    """The loss per logged epoch on a log scale, and the validation loss beside it."""
    body = await run_in_threadpool(_loss_png, meta, job_id, tenant)
    return Response(body, media_type="image/png")
