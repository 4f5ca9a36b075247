"""Rows of the metadata store -> public schemas."""

from __future__ import annotations

from typing import Any

import numpy as np

from models.registry import get_kind
from models.terms import term_names
from service.api.schemas import (
    ColumnStats,
    DatasetPublic,
    EarlyStop,
    ImportedFrom,
    JobError,
    JobProgress,
    JobPublic,
    ModelInput,
    ModelMetrics,
    ModelPublic,
    Normalization,
    TrainingSpec,
)
from service.features.pipeline import Pipeline, label_text
from service.jobs.status import JobStatus
from service.store.tables import DatasetRow, JobRow, ModelRow


def dataset_public(row: DatasetRow) -> DatasetPublic:
    return DatasetPublic(
        id=row.id,
        name=row.name,
        rows=row.rows,
        features=row.features,
        targets=row.targets,
        feature_names=row.feature_names,
        target_names=row.target_names,
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        columns=[ColumnStats(**c) for c in row.columns],
        created_at=row.created_at,
    )


def job_public(row: JobRow, waiting_reason: str | None = None) -> JobPublic:
    return JobPublic(
        id=row.id,
        status=JobStatus(row.status),  # the column is a str; pydantic would convert it alike
        dataset_id=row.dataset_id,
        model_id=row.model_id,
        model_name=row.model_name,
        hyperparameters=TrainingSpec.model_validate(row.spec),
        device=row.device,
        device_used=row.device_used,
        engine_used=row.engine_used,
        progress=JobProgress(
            epoch=row.progress_epoch,
            epochs=row.epochs,
            loss=row.progress_loss,
            val_loss=row.progress_val_loss,
        ),
        attempts=row.attempts,
        cancel_requested=row.cancel_requested,
        error=JobError(**row.error) if row.error else None,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        waiting_reason=waiting_reason,
        stopped_early=(EarlyStop.model_validate(row.stopped_early)
                       if row.stopped_early is not None else None),
    )


def job_history(row: JobRow) -> dict[str, Any]:
    """Arrays straight from the stored bytes; orjson writes them without a Python list."""
    def arr(blob: bytes | None, dtype: str) -> np.ndarray | None:
        return None if blob is None else np.frombuffer(blob, dtype=dtype)

    epoch = arr(row.history_epoch, "<i4")
    loss = arr(row.history_loss, "<f4")
    return {
        "epoch": epoch if epoch is not None else [],
        "loss": loss if loss is not None else [],
        "val_loss": arr(row.history_val_loss, "<f4"),
    }




def _coefficients(row: ModelRow, inputs: list[str] | None,
                  labels: tuple[Any, ...] | None) -> dict[str, dict[str, float]] | None:
    """The weight by output and input name, and the bias as ``intercept``."""
    if row.weight is None or inputs is None or not row.weight \
            or len(inputs) != len(row.weight[0]):
        return None
    if get_kind(row.kind).task == "classification":
        keys = [label_text(v) for v in labels] if labels else \
            [str(i) for i in range(max(2, len(row.weight)))]
        outputs = keys[-1:] if len(row.weight) == 1 else keys  # one logit: P(the last)
    else:
        outputs = list(row.target_names)
    if len(outputs) != len(row.weight):
        outputs = [f"y{i}" for i in range(len(row.weight))]
    out: dict[str, dict[str, float]] = {}
    for i, name in enumerate(outputs):
        coef = dict(zip(inputs, map(float, row.weight[i]), strict=True))
        if row.bias is not None:
            coef["intercept"] = float(row.bias[i])
        out[name] = coef
    return out


def model_public(row: ModelRow, parameters: dict[str, Any] | None = None,
                 checkpoint_error: str | None = None,
                 pipeline: Pipeline | None = None) -> ModelPublic:
    """``pipeline``: the model's feature pipeline, when its checkpoint was read (GET
    /v1/models/{id}): the input schema and the class labels come from it."""
    kind = get_kind(row.kind)
    classifier = kind.task == "classification"
    config = row.config or {}
    terms = None
    if kind.transforms_inputs and "degree" in config:
        terms = term_names(row.feature_names, config["degree"], config.get("interactions", False))
    labels = pipeline.labels if pipeline is not None else None
    names = terms if terms is not None else (
        row.feature_names if len(row.feature_names or ()) == row.in_features else None)
    return ModelPublic(
        id=row.id,
        name=row.name,
        version=row.version,
        kind=row.kind,
        task=kind.task,
        in_features=row.in_features,
        out_features=row.out_features,
        classes=config.get("classes") if classifier else None,
        weight=row.weight,
        bias=row.bias,
        terms=terms,
        normalization=Normalization(**row.normalization) if row.normalization else None,
        parameters=parameters,
        checkpoint_error=checkpoint_error,
        feature_names=row.feature_names,
        target_names=row.target_names,
        coefficients=_coefficients(row, names, labels),
        inputs=None if pipeline is None else [ModelInput(**c.public())
                                              for c in pipeline.inputs],
        labels=None if labels is None else list(labels),
        metrics=ModelMetrics(**row.metrics),
        # an imported model's record has none: no job trained it here
        hyperparameters=TrainingSpec.model_validate(row.spec) if row.spec else None,
        dataset_id=row.dataset_id,
        job_id=row.job_id,
        parent_model_id=row.parent_id,
        imported=ImportedFrom(**row.origin["imported"]) if row.origin and
        row.origin.get("imported") else None,
        device_trained_on=row.device,
        checkpoint_sha256=row.sha256,
        created_at=row.created_at,
    )
