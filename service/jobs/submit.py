"""Submitting a training job: what ``POST /v1/jobs`` calls.

Everything a job needs is checked here before anything is stored (a refused job leaves
nothing behind): the seed is drawn and recorded, the device resolved, the limits applied, the
data's fit to the model kind checked (a classifier's classes and loss are read from its
targets, so the stored job names them), inline data stored once by content, and the job
committed as queued before the caller answers 202.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from models.registry import get_kind
from service.config import Settings
from service.data.arrays import as_matrix, check_xy
from service.data.datasets import check_table, is_typed, store_dataset
from service.data.table import Table
from service.errors import DeviceUnavailable, InvalidInput, StorageUnavailable
from service.features import FeatureOptions, fit_pipeline, numeric_table, select, table_targets
from service.jobs.limits import check_active, check_budget, check_epochs, check_model
from service.jobs.warm_start import check_init_from
from service.store.idempotency import Completion, Replay, idempotent
from service.store.tables import JobRow
from service.training.spec import MAX_CLASSES, TrainingSpec
from service.training.targets import class_indices

if TYPE_CHECKING:
    from service.services import Services


def _targets(loaded: tuple[np.ndarray, np.ndarray] | Table) -> np.ndarray:
    if isinstance(loaded, Table):  # not reached: a typed dataset takes the table's checks
        raise TypeError("a typed dataset has no target matrix")
    return loaded[1]


def submit_job(
    services: Services,
    tenant: str,
    spec: TrainingSpec,
    *,
    dataset_id: str | None = None,
    x: Any = None,
    y: Any = None,
    device: str | None = None,
    model_name: str | None = None,
    completion: Completion | None = None,
) -> JobRow:
    """Check, store and queue a job on a stored dataset (``dataset_id``) or on inline rows
    (``x`` and ``y``); returns the queued job. ``completion`` runs in the transaction that
    commits the job (an Idempotency-Key's record of it)."""
    settings, meta, artifacts = services.settings, services.meta, services.artifacts
    if spec.seed is None:  # every run is reproducible: the seed drawn is recorded
        spec = spec.model_copy(update={"seed": secrets.randbelow(2**31)})
    check_epochs(settings, spec.epochs)
    try:
        resolved_device = services.resolve_device(device)
    except (LookupError, ValueError) as e:
        raise DeviceUnavailable(str(e), field="device") from None
    check_active(settings, meta.count_active_jobs(tenant))  # early: before data is stored

    def check_rows(rows: int) -> None:
        if spec.validation_fraction > 0 and rows < 2:
            raise InvalidInput(
                f"validation_fraction needs at least 2 rows; the dataset has {rows}",
                field="validation_fraction",
            )
        check_budget(settings, spec.epochs, rows)

    if dataset_id is not None:
        dataset = meta.get_dataset(dataset_id, tenant)
        check_rows(dataset.rows)
        def stored() -> tuple[np.ndarray, np.ndarray] | Table:
            """The dataset's data, read only where a check needs it."""
            try:
                return artifacts.load_dataset(dataset.sha256)
            except FileNotFoundError:  # deleted since it was read: a 404, as below
                meta.get_dataset(dataset.id, tenant)
                raise StorageUnavailable(f"dataset {dataset.id}'s data could not be read; "
                                         "upload it again") from None

        if is_typed(dataset) or spec.features is not None or spec.column_types:
            # the pipeline's options are checked against the columns themselves
            loaded = stored()
            table = loaded if isinstance(loaded, Table) else numeric_table(
                *loaded, dataset.feature_names, dataset.target_names)
            spec = check_table_job(spec, settings, table, meta, tenant)
        else:
            spec = _standardize(spec, False)
            largest = np.array([max(abs(c["min"]), abs(c["max"])) for c in dataset.columns
                                if c["role"] == "feature"])
            if spec.init_from is not None:
                spec = check_init_from(meta, spec, tenant, dataset.feature_names,
                                       dataset.targets, "dataset_id")
            spec = check_kind(spec, settings, dataset.rows, dataset.features,
                              dataset.targets, lambda: _targets(stored()), largest)
    else:
        xm = as_matrix(x, "x")
        ym = as_matrix(y, "y")
        check_xy(xm, ym)
        check_table(settings, xm.shape[0], xm.shape[1], ym.shape[1])
        check_rows(xm.shape[0])  # before anything is stored: a refused job leaves nothing
        if spec.features is not None or spec.column_types:
            spec = check_table_job(spec, settings, numeric_table(
                xm, ym, _inline_names("x", xm.shape[1]), _inline_names("y", ym.shape[1])),
                meta, tenant)
        else:
            spec = _standardize(spec, False)
            if spec.init_from is not None:
                spec = check_init_from(meta, spec, tenant, _inline_names("x", xm.shape[1]),
                                       ym.shape[1], "x")
            spec = check_kind(spec, settings, xm.shape[0], xm.shape[1], ym.shape[1],
                              lambda: ym, np.abs(xm).max(axis=0))
        dataset, _ = store_dataset(
            meta, artifacts, xm, ym,
            {"name": None, "feature_names": _inline_names("x", xm.shape[1]),
             "target_names": _inline_names("y", ym.shape[1])},
            tenant,
        )
    # counted again in the insert's transaction: concurrent submits that all passed the
    # early check cannot pass the limit (ActiveJobsExceeded, a 429)
    job = meta.create_job(
        tenant=tenant,
        dataset_id=dataset.id,
        spec=spec.model_dump(mode="json"),
        device=resolved_device,
        model_name=model_name,
        epochs=spec.epochs,
        max_active=settings.max_active_jobs,
        check_dataset=True,  # in the insert's transaction: a dataset deleted meanwhile is a 404
        # and so is a warm start's parent model
        check_model=None if spec.init_from is None else (spec.init_from.model,
                                                         "init_from.model"),
        then=completion,
    )
    services.job_submitted(job.id, job.device)
    return job


def _inline_names(prefix: str, count: int) -> list[str]:
    """The column names of inline data: x0, x1, ... and y0, ..."""
    return [f"{prefix}{i}" for i in range(count)]


def submit_job_once(
    services: Services,
    tenant: str,
    spec: TrainingSpec,
    *,
    idempotency_key: str | None,
    request_body: bytes,
    **data: Any,
) -> JobRow:
    """``submit_job`` under an ``Idempotency-Key`` (when given): a retry with the key and
    body gets the job the first request committed; the job and the key's record of it
    commit in one transaction. ``data``: ``submit_job``'s keyword arguments."""
    meta = services.meta
    with idempotent(meta, tenant, "jobs", idempotency_key, request_body,
                    reservation_s=services.settings.idempotency_reservation_s) as attempt:
        if isinstance(attempt, Replay):
            return meta.get_job(attempt.resource_id, tenant)
        return submit_job(services, tenant, spec, completion=attempt.completion(202), **data)


def _standardize(spec: TrainingSpec, default: bool) -> TrainingSpec:
    """``standardize`` as the job names it, or its default for the data (stored so)."""
    if spec.standardize is not None:
        return spec
    return spec.model_copy(update={"standardize": default})


def check_table_job(spec: TrainingSpec, settings: Settings, table: Table, meta: Any,
                    tenant: str) -> TrainingSpec:
    """A job on typed columns: its ``features`` and ``schema`` name columns the dataset has,
    its targets fit the model kind (a classifier's labels give its classes), the pipeline
    can be fitted (``impute: none`` with blanks cannot), and the model's inputs (the
    pipeline's columns) fit the limits. Standardize defaults to on."""
    spec = _standardize(spec, True)
    if spec.categorical.max_categories is None:  # the server's bound, named in the job
        limit = getattr(settings, "max_categories", None)
        if limit is not None and limit >= 2:
            spec = TrainingSpec.model_validate({
                **spec.model_dump(), "categorical": {
                    **spec.categorical.model_dump(), "max_categories": int(limit)}})
    options = FeatureOptions.from_spec(spec)
    classify = get_kind(spec.model.kind).task == "classification"
    chosen = select(table, options)
    y, _ = table_targets(chosen, classify)
    pipeline = fit_pipeline(chosen, options)  # every row: the training rows' columns or fewer
    if spec.init_from is not None:
        spec = check_init_from(meta, spec, tenant, pipeline.output_names, y.shape[1],
                               "dataset_id")
    return check_kind(spec, settings, table.rows, pipeline.width, y.shape[1], lambda: y,
                      np.zeros(0))


def check_kind(spec: TrainingSpec, settings: Settings, rows: int, features: int, targets: int,
               targets_of: Callable[[], np.ndarray], largest: np.ndarray) -> TrainingSpec:
    """What the model kind and options need of the data and the settings; a classifier's
    classes and loss are read from its targets here, so the stored job names them.
    ``largest``: the largest absolute value of each feature."""
    out = targets
    if spec.model.kind == "polynomial" and not spec.standardize:
        with np.errstate(over="ignore"):
            top = np.asarray(largest, np.float64) ** spec.model.degree
        if len(top) and not (top < np.finfo(np.float32).max).all():
            col = int(np.argmax(~(top < np.finfo(np.float32).max)))
            raise InvalidInput(f"feature {col} reaches {largest[col]:g}, whose power "
                               f"{spec.model.degree} overflows float32: set standardize "
                               "or lower the degree", field="model.degree")
    if spec.model.kind == "logistic":
        try:
            _, classes = class_indices(np.asarray(targets_of()), spec.model.classes)
        except ValueError as e:
            raise InvalidInput(f"the targets do not fit a classifier: {e}", field="y") from None
        loss = spec.loss or ("bce" if classes == 2 else "cross_entropy")
        if loss == "bce" and classes != 2:
            raise InvalidInput(f"bce trains two classes; the targets have {classes}: use "
                               "cross_entropy", field="loss")
        if classes > MAX_CLASSES:
            raise InvalidInput(f"the targets name {classes} classes; at most {MAX_CLASSES}",
                               field="y")
        # validated again, not model_copy'd: what is stored must read back as a TrainingSpec
        spec = TrainingSpec.model_validate({
            **spec.model_dump(), "loss": loss,
            "model": {**spec.model.model_dump(), "classes": classes}})
        out = 1 if loss == "bce" else classes
    check_model(settings, spec, features, out)
    train_rows = rows - (max(1, round(rows * spec.validation_fraction))
                         if spec.validation_fraction > 0 else 0)
    if spec.trace_epochs and spec.batch_size is not None and spec.batch_size < train_rows:
        raise InvalidInput("trace_epochs records one full-batch step per epoch; leave "
                           f"batch_size unset (or >= the {train_rows} training rows)",
                           field="trace_epochs")
    return spec
