"""Batch predictions: what ``POST /v1/predictions`` calls.

A batch prediction is a job (``task`` predict) on the training jobs' queue: claimed,
heartbeaten, recovered after a crash, cancelled, followed (progress in rows, SSE) and made
idempotent by the same code. Everything is checked here before it is stored (a refused
request leaves nothing behind): the model reference resolves (id, name, ``name@alias``,
``name@N``, as predict resolves it) and its checkpoint loads, the dataset exists and has
the columns the model takes (by name, as an evaluation matches them; the first rows are
put through the model), and the tenant's active jobs are within their limit. The job
records the model it resolved to, so an alias moved meanwhile does not change it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from service.data.datasets import is_typed
from service.errors import InvalidInput, NotFound, ShapeMismatch, StorageUnavailable
from service.jobs.limits import check_active
from service.lifecycle.batch_scoring import DatasetChunks, InputPlan
from service.lifecycle.evaluate import match_features
from service.serving.predictor import LoadedModel
from service.store.idempotency import Completion, Replay, idempotent
from service.store.jobs import PREDICT
from service.store.tables import DatasetRow, JobRow, ModelRow

if TYPE_CHECKING:
    from service.services import Services

Format = Literal["csv", "parquet", "jsonl"]
MEDIA_TYPES: dict[str, str] = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet",
                               "jsonl": "application/x-ndjson"}
CHECK_ROWS = 1000
"""Rows put through the model at submit: a column of the wrong kind is a 422 there."""


class PredictionSpec(BaseModel):
    """What a prediction job's ``spec`` holds."""

    model: str  # as the request named it
    model_id: str  # what it resolved to at submit
    model_name: str | None = None
    model_version: int | None = None
    format: Format = "csv"
    include_input: bool = False


def _who(model: ModelRow) -> str:
    return f"model {model.id}" + (f" ({model.name} v{model.version})" if model.name else "")


def plan_inputs(model: ModelRow, loaded: LoadedModel, dataset: DatasetRow) -> InputPlan:
    """How the dataset's rows become the model's x, or a 422 (field ``dataset_id``) naming
    the column the model takes and the dataset lacks. A matrix model on a numeric dataset
    takes its columns by name (by position when its names do not name its inputs); a model
    with a feature pipeline, or a dataset of typed columns, goes through the pipeline."""
    pipeline = loaded.pipeline
    if not is_typed(dataset) and (pipeline is None or pipeline.identity):
        if pipeline is not None:
            return InputPlan(tuple(match_features(model, dataset)))
        if dataset.features != model.in_features:
            raise ShapeMismatch(f"{_who(model)} takes {model.in_features} feature columns; "
                                f"the dataset {dataset.id} has {dataset.features}",
                                field="dataset_id")
        return InputPlan(tuple(range(dataset.features)))
    if pipeline is None:
        raise InvalidInput(f"{_who(model)} has no feature names to match the dataset's "
                           "columns by; score a numeric dataset of its width",
                           field="dataset_id")
    have = set(dataset.feature_names)
    for col in pipeline.inputs:
        if col.name not in have and col.fill is None:
            where = " (it is one of the dataset's targets)" \
                if col.name in dataset.target_names else ""
            raise InvalidInput(
                f"the dataset {dataset.id} has no feature column {col.name!r}{where}, which "
                f"{_who(model)} takes as input and does not impute; its inputs: "
                f"{', '.join(pipeline.input_names)}; the dataset's features: "
                f"{', '.join(dataset.feature_names)}", field="dataset_id")
    return InputPlan(None)


def _check_first_rows(services: Services, model: ModelRow, loaded: LoadedModel,
                      dataset: DatasetRow, plan: InputPlan) -> None:
    """The first rows through the model: a column whose values the model cannot take (text
    where it takes numbers) is a 422 now rather than a failed job later."""
    try:
        f = services.artifacts.open_dataset(dataset.sha256)
    except OSError:  # deleted since its record was read: a 404 if the record went too
        services.meta.get_dataset(dataset.id, dataset.tenant)
        raise StorageUnavailable(f"dataset {dataset.id}'s data could not be read; upload "
                                 "it again") from None
    with f:
        chunks = DatasetChunks(f, dataset)
        try:
            plan.x(loaded, chunks, 0, min(CHECK_ROWS, dataset.rows))
        except InvalidInput as e:
            column = f" (column {e.field!r})" if e.field not in (None, "x", "schema") else ""
            raise InvalidInput(f"dataset {dataset.id} does not fit {_who(model)}{column}: "
                               f"{e.message}", field="dataset_id") from None


def submit_prediction(
    services: Services, tenant: str, *, model: str, dataset_id: str, fmt: Format = "csv",
    include_input: bool = False, completion: Completion | None = None,
) -> JobRow:
    """Check and queue a batch prediction; returns the queued job. ``completion`` runs in
    the transaction that commits it (an Idempotency-Key's record)."""
    meta, settings = services.meta, services.settings
    try:
        row = meta.resolve_model(model, tenant, field="model")
    except NotFound as e:  # every 404 here names the field that points nowhere
        raise NotFound(e.message, field="model") from None
    try:
        dataset = meta.get_dataset(dataset_id, tenant)
    except NotFound as e:
        raise NotFound(e.message, field="dataset_id") from None
    check_active(settings, meta.count_active_jobs(tenant))
    loaded = services.predictor.cached(row.id, tenant) or services.predictor.load(row.id, tenant)
    plan = plan_inputs(row, loaded, dataset)
    _check_first_rows(services, row, loaded, dataset, plan)
    spec = PredictionSpec(model=model, model_id=row.id, model_name=row.name,
                          model_version=row.version, format=fmt, include_input=include_input)
    # numpy on any worker: the cpu queue (scale-out) or the embedded pool
    device = services.resolve_device("cpu")
    job = meta.create_job(
        tenant=tenant, task=PREDICT, dataset_id=dataset.id, spec=spec.model_dump(mode="json"),
        device=device, model_name=None, epochs=dataset.rows,
        max_active=settings.max_active_jobs, check_dataset=True,
        check_model=(row.id, "model"), then=completion,
    )
    services.job_submitted(job.id, job.device)
    return job


def submit_prediction_once(
    services: Services, tenant: str, *, idempotency_key: str | None, request_body: bytes,
    model: str, dataset_id: str, fmt: Format = "csv", include_input: bool = False,
) -> JobRow:
    """``submit_prediction`` under an ``Idempotency-Key`` (when given): a retry with the key
    and body gets the job the first request committed."""
    meta = services.meta
    with idempotent(meta, tenant, "predictions", idempotency_key, request_body,
                    reservation_s=services.settings.idempotency_reservation_s) as attempt:
        if isinstance(attempt, Replay):
            return meta.get_job(attempt.resource_id, tenant, task=PREDICT)
        return submit_prediction(services, tenant, model=model, dataset_id=dataset_id,
                                 fmt=fmt, include_input=include_input,
                                 completion=attempt.completion(202))


def prediction_spec(job: JobRow) -> PredictionSpec:
    return PredictionSpec.model_validate(job.spec)
