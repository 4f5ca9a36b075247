"""Submitting a sweep: what ``POST /v1/sweeps`` calls.

Everything is checked before anything is stored, as for a job: the base job as
``POST /v1/jobs`` checks it (limits, device, the data against the model kind), each field of
the search space against the job's schema (every choice, both ends of every range, every
point of a grid: a value the job refuses is a 422 naming the field), the objective against
the model kind, and the trial count against ``FITSERVE_MAX_TRIALS``. Then inline data is
stored once and the sweep is committed as queued; its controller creates the trials.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from service.data.arrays import as_matrix, check_xy
from service.data.datasets import check_table, is_typed, store_dataset
from service.data.table import Table
from service.errors import (
    DeviceUnavailable,
    InvalidInput,
    LimitExceeded,
    ServiceError,
    StorageUnavailable,
)
from service.features import numeric_table
from service.jobs.limits import check_active, check_budget, check_epochs
from service.jobs.submit import check_kind, check_table_job
from service.jobs.sweeps.controller import sweep_records
from service.jobs.sweeps.objectives import OBJECTIVES, check_objective
from service.jobs.sweeps.space import grid_size, parse_space
from service.jobs.sweeps.study import PRUNERS, STRATEGIES
from service.store.idempotency import Completion, Replay, idempotent
from service.store.tables import SweepRow
from service.training.spec import TrainingSpec

if TYPE_CHECKING:
    from service.services import Services

DEFAULT_TRIALS = 20
"""Trials of a random or tpe sweep that does not say (a grid runs all its points)."""
DEFAULT_TPE_PARALLEL = 4
"""Trials of a tpe sweep open at once when not said: tpe learns from the trials that end."""


@dataclass
class SweepRequest:
    """What a sweep asks for, beside its base job and its data."""

    search_space: dict[str, Any]
    strategy: str = "tpe"
    objective: str | None = None
    direction: str | None = None
    max_trials: int | None = None
    max_parallel: int | None = None
    seed: int | None = None
    pruning: dict[str, Any] | None = None
    model_name: str | None = None


def _in_job(e: ServiceError) -> ServiceError:
    """An error about the base job, its field placed under ``job``."""
    return type(e)(e.message, field=f"job.{e.field}" if e.field else "job", headers=e.headers,
                   **e.extra)


def submit_sweep(
    services: Services,
    tenant: str,
    job: TrainingSpec,
    request: SweepRequest,
    *,
    dataset_id: str | None = None,
    x: Any = None,
    y: Any = None,
    device: str | None = None,
    completion: Completion | None = None,
) -> SweepRow:
    """Check and store a sweep over the base ``job``; returns it queued. ``completion``
    commits with it (an Idempotency-Key's record of it)."""
    settings, meta, artifacts = services.settings, services.meta, services.artifacts
    if request.strategy not in STRATEGIES:
        raise InvalidInput(f"strategy must be one of {', '.join(STRATEGIES)}", field="strategy")
    if job.init_from is not None:  # each trial would need the parent checked against it
        raise InvalidInput("a sweep's trials cannot warm-start (init_from) yet: sweep from "
                           "scratch, then warm-start the winner as a job", field="job.init_from")
    if job.seed is None:  # every trial starts from the same weights and the same split
        job = job.model_copy(update={"seed": secrets.randbelow(2**31)})
    seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
    try:
        resolved_device = services.resolve_device(device)
    except (LookupError, ValueError) as e:
        raise DeviceUnavailable(str(e), field="job.device") from None
    check_active(settings, meta.count_active_jobs(tenant))
    # typed columns, or a job choosing or retyping columns (issue 12): each trial is a job
    # with the base job's feature options, its pipeline fitted on its own training rows
    # (worker/runner.py's ``training_data``); checked here as POST /v1/jobs checks it
    table: Table | None = None
    piped = job.features is not None or bool(job.column_types)

    if dataset_id is not None:
        try:
            dataset = meta.get_dataset(dataset_id, tenant)
        except ServiceError as e:
            raise _in_job(e) if e.status_code == 422 else e from None
        rows, features, targets = dataset.rows, dataset.features, dataset.targets
        sha = dataset.sha256
        largest = np.zeros(0)
        if is_typed(dataset) or piped:
            table = _stored_table(services, dataset)
        else:
            largest = np.array([max(abs(c["min"]), abs(c["max"])) for c in dataset.columns
                                if c["role"] == "feature"])

        def targets_of() -> np.ndarray:
            return artifacts.get_dataset(sha)[1]
    else:
        try:
            xm, ym = as_matrix(x, "x"), as_matrix(y, "y")
            check_xy(xm, ym)
            check_table(settings, xm.shape[0], xm.shape[1], ym.shape[1])
        except ServiceError as e:
            raise _in_job(e) from None
        rows, features, targets = xm.shape[0], xm.shape[1], ym.shape[1]
        largest = np.abs(xm).max(axis=0)
        if piped:
            table = numeric_table(xm, ym, _inline_names("x", features),
                                  _inline_names("y", targets))

        def targets_of() -> np.ndarray:
            return ym

    def check(spec_dict: dict[str, Any]) -> TrainingSpec:
        spec = TrainingSpec.model_validate(spec_dict)
        if table is None and spec.standardize is None:  # a numeric matrix's default, named
            spec = spec.model_copy(update={"standardize": False})  # in each trial
        check_epochs(settings, spec.epochs)
        if spec.validation_fraction > 0 and rows < 2:
            raise InvalidInput(f"validation_fraction needs at least 2 rows; the dataset has "
                               f"{rows}", field="validation_fraction")
        check_budget(settings, spec.epochs, rows)
        if table is not None:  # the pipeline's options against the columns themselves
            return check_table_job(spec, settings, table, meta, tenant)
        return check_kind(spec, settings, rows, features, targets, targets_of, largest)

    try:
        base = check(job.model_dump(mode="json"))
    except ServiceError as e:
        raise _in_job(e) from None
    base_dict = base.model_dump(mode="json")
    grid = request.strategy == "grid"
    dims = parse_space(request.search_space, base_dict, grid=grid, check=check,
                       max_points=settings.max_trials)

    objective = request.objective or ("val_loss" if base.validation_fraction else "train_loss")
    if objective not in OBJECTIVES:
        raise InvalidInput(f"objective must be one of {', '.join(OBJECTIVES)}",
                           field="objective")
    check_objective(objective, base, [d.path for d in dims])
    direction = request.direction or OBJECTIVES[objective]

    if grid:
        points = grid_size(dims)  # within FITSERVE_MAX_TRIALS: parse_space said so
        max_trials = min(request.max_trials or points, points)
    else:
        max_trials = request.max_trials or DEFAULT_TRIALS
    if max_trials > settings.max_trials:
        raise LimitExceeded(f"max_trials {max_trials} exceeds the limit of "
                            f"{settings.max_trials} (FITSERVE_MAX_TRIALS)", field="max_trials")
    parallel = request.max_parallel or (DEFAULT_TPE_PARALLEL if request.strategy == "tpe"
                                        else max_trials)
    pruning = _check_pruning(request.pruning)

    if dataset_id is None:  # stored once, by content, as for a job
        dataset, _ = store_dataset(
            meta, artifacts, xm, ym,
            {"name": None, "feature_names": _inline_names("x", features),
             "target_names": _inline_names("y", targets)},
            tenant,
        )
    sweep = sweep_records(services).create_sweep(
        tenant=tenant, dataset_id=dataset.id, device=resolved_device, job=base_dict,
        search_space=[d.to_json() for d in dims], strategy=request.strategy,
        objective=objective, direction=direction, max_trials=max_trials,
        max_parallel=min(parallel, max_trials), seed=seed, pruning=pruning,
        model_name=request.model_name, then=completion)
    controller = services.extra.get("sweep_controller")
    if controller is not None:
        controller.wake()
    return sweep


def _stored_table(services: Services, dataset: Any) -> Table:
    """A stored dataset as a table (a numeric one's matrix named by its columns)."""
    try:
        loaded = services.artifacts.load_dataset(dataset.sha256)
    except FileNotFoundError:  # deleted since it was read: a 404, as for a job
        services.meta.get_dataset(dataset.id, dataset.tenant)
        raise StorageUnavailable(f"dataset {dataset.id}'s data could not be read; upload it "
                                 "again") from None
    return loaded if isinstance(loaded, Table) else numeric_table(
        *loaded, dataset.feature_names, dataset.target_names)


def _inline_names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


def submit_sweep_once(services: Services, tenant: str, job: TrainingSpec,
                      request: SweepRequest, *, idempotency_key: str | None,
                      request_body: bytes, **data: Any) -> SweepRow:
    """``submit_sweep`` under an ``Idempotency-Key`` (when given): a retry with the key and
    body gets the sweep the first request committed; the sweep and the key's record of it
    commit in one transaction. ``data``: ``submit_sweep``'s keyword arguments."""
    with idempotent(services.meta, tenant, "sweeps", idempotency_key, request_body,
                    reservation_s=services.settings.idempotency_reservation_s) as attempt:
        if isinstance(attempt, Replay):
            return sweep_records(services).get_sweep(attempt.resource_id, tenant)
        return submit_sweep(services, tenant, job, request,
                            completion=attempt.completion(202), **data)


def _check_pruning(pruning: dict[str, Any] | None) -> dict[str, Any] | None:
    if not pruning:
        return None
    if pruning.get("name") not in PRUNERS:
        raise InvalidInput(f"pruning.name must be one of {', '.join(PRUNERS)}",
                           field="pruning.name")
    return {k: v for k, v in pruning.items() if v is not None}
