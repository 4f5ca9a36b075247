"""The routers, one per resource, assembled with the scope each needs. Each route parses,
calls one domain function and shapes the answer."""

from typing import Any

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

# each router is included in the app on its own (service.main), not through one router that
# includes them all: FastAPI checks the paths of an included router's routes by building
# every nested router's routes (0.35 s of CPU, before the app builds them again to serve)
ROUTERS: list[tuple[APIRouter, dict[str, Any]]] = [
    # open: liveness, readiness, metrics, the dashboard page (it calls the API, which
    # checks keys)
    (health.router, {}),
    (metrics.router, {}),
    (dashboard.router, {}),
]
# a predict key predicts and reads models; train adds datasets and jobs (see SECURITY.md)
_train: dict[str, Any] = {"dependencies": [Depends(require("train"))],
                          "responses": errors(401, 403)}
_predict: dict[str, Any] = {"dependencies": [Depends(require("predict"))],
                            "responses": errors(401, 403)}
ROUTERS += [
    (datasets.router, _train),
    (jobs.router, _train),
    (events.router, _train),
    (sweeps.router, _train),
    # a batch prediction reads a dataset and runs on the training queue: train, as a job
    (predictions.router, _train),
    (models.router, _predict),
    # reading a name's aliases is reading models; moving one needs train (on its routes)
    (names.router, _predict),
    # reading evaluations is reading models; creating one reads a dataset (its route
    # needs train)
    (evaluations.router, _predict),
    (predict.router, _predict),
    (plots.router, _predict),
    # v2: health and server metadata open (probes); every model route needs a key through
    # its tenant dependency, and any scope may predict
    (v2.router, {"responses": errors(401, 403)}),
]
