"""The routers, one per resource, assembled with the scope each needs. Each route parses,
calls one domain function and shapes the answer."""

from fastapi import APIRouter, Depends

from service.api.deps import require
from service.api.responses import errors
from service.api.routes import (
    dashboard,
    datasets,
    evaluations,
    events,
    health,
    jobs,
    metrics,
    models,
    names,
    plots,
    predict,
    predictions,
    sweeps,
    v2,
)

api_router = APIRouter()
# open: liveness, readiness, metrics, the dashboard page (it calls the API, which checks keys)
api_router.include_router(health.router)
api_router.include_router(metrics.router)
api_router.include_router(dashboard.router)
# a predict key predicts and reads models; train adds datasets and jobs (see SECURITY.md)
_train = [Depends(require("train"))]
_predict = [Depends(require("predict"))]
_auth_errors = errors(401, 403)
api_router.include_router(datasets.router, dependencies=_train, responses=_auth_errors)
api_router.include_router(jobs.router, dependencies=_train, responses=_auth_errors)
api_router.include_router(events.router, dependencies=_train, responses=_auth_errors)
api_router.include_router(sweeps.router, dependencies=_train, responses=_auth_errors)
# a batch prediction reads a dataset and runs on the training queue: train, as a job
api_router.include_router(predictions.router, dependencies=_train, responses=_auth_errors)
api_router.include_router(models.router, dependencies=_predict, responses=_auth_errors)
# reading a name's aliases is reading models; moving one needs train (on its routes)
api_router.include_router(names.router, dependencies=_predict, responses=_auth_errors)
# reading evaluations is reading models; creating one reads a dataset (its route needs train)
api_router.include_router(evaluations.router, dependencies=_predict, responses=_auth_errors)
api_router.include_router(predict.router, dependencies=_predict, responses=_auth_errors)
api_router.include_router(plots.router, dependencies=_predict, responses=_auth_errors)
# v2: health and server metadata open (probes); every model route needs a key through its
# tenant dependency, and any scope may predict
api_router.include_router(v2.router, responses=errors(401, 403))
