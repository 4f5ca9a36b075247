"""Request and response models, one per role. Nothing here imports FastAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from service.jobs.status import JobStatus
from service.training.spec import TrainingSpec

# strict: pydantic's lax mode would read true as 1.0 and "1.5" as 1.5, where the dataset
# and predict routes (service/data/arrays.py) refuse both
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Matrix = list[list[Number]]
"""Rows of numbers: ``[[x11, x12, ...], [x21, ...], ...]``."""

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

PATTERN_WORDS = {
    _NAME_PATTERN: "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
}
"""Each pattern a field must match, in words (an error quotes them after the pattern)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# ---------------------------------------------------------------- errors


class ErrorDetail(BaseModel):
    type: str = Field(description="Stable machine-readable error type, e.g. `shape_mismatch`.")
    message: str = Field(description="What went wrong, naming the field or row.")
    field: str | None = Field(default=None, description="The request field at fault, if any.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


# ---------------------------------------------------------------- datasets


class DatasetCreate(_Strict):
    """JSON upload. CSV uploads send ``text/csv`` with ``?target=col`` instead."""

    name: str | None = Field(default=None, max_length=200)
    x: Matrix = Field(description="Feature rows, one list per row.", examples=[[[3.3], [4.4]]])
    y: Matrix = Field(description="Target rows, one list per row.", examples=[[[1.7], [2.76]]])
    feature_names: list[str] | None = None
    target_names: list[str] | None = None


class ColumnStats(BaseModel):
    name: str
    role: Literal["feature", "target"]
    mean: float
    std: float
    min: float
    max: float


class DatasetPublic(BaseModel):
    id: str
    name: str | None
    rows: int
    features: int
    targets: int
    feature_names: list[str]
    target_names: list[str]
    sha256: str
    size_bytes: int
    columns: list[ColumnStats]
    created_at: datetime


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int
    next: str | None


# ---------------------------------------------------------------- jobs

class JobCreate(TrainingSpec):
    """Submit a training job: a stored dataset by id, or the data inline."""

    dataset_id: str | None = None
    x: Matrix | None = Field(default=None, description="Inline feature rows.")
    y: Matrix | None = Field(default=None, description="Inline target rows.")
    device: str | None = Field(default=None, description="cpu | cuda | cuda:N | mps | auto.")
    model_name: str | None = Field(
        default=None,
        pattern=_NAME_PATTERN,
        description="Each successful run of a name adds a version of that model.",
    )

    @model_validator(mode="after")
    def _one_data_source(self) -> JobCreate:
        inline = self.x is not None or self.y is not None
        if self.dataset_id is not None and inline:
            raise ValueError("give either dataset_id or inline x and y, not both")
        if self.dataset_id is None and (self.x is None or self.y is None):
            raise ValueError("give dataset_id, or both x and y")
        return self

    def training_spec(self) -> TrainingSpec:
        return TrainingSpec.model_validate(
            self.model_dump(include=set(TrainingSpec.model_fields), exclude_none=False)
        )


class JobProgress(BaseModel):
    epoch: int
    epochs: int
    loss: float | None
    val_loss: float | None


class JobError(BaseModel):
    type: str
    message: str
    epoch: int | None = None
    hint: str | None = None


class JobPublic(BaseModel):
    id: str
    status: JobStatus
    dataset_id: str
    model_id: str | None
    model_name: str | None
    hyperparameters: TrainingSpec
    device: str = Field(description="The device the job asked for (resolved at submit).")
    device_used: str | None
    engine_used: str | None
    progress: JobProgress
    attempts: int
    cancel_requested: bool
    error: JobError | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    waiting_reason: str | None = Field(
        default=None,
        description="Why a queued job is not running, when nothing will run it as things "
        "stand (e.g. no worker serves its device's queue); null otherwise.",
    )
    stopped_early: EarlyStop | None = Field(
        default=None, description="Set when early stopping ended the job before `epochs`."
    )


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int
    next: str | None


class TraceParameter(BaseModel):
    before: Any = Field(description="The value before the step (nested lists).")
    grad: Any = Field(description="Its gradient at this epoch.")
    after: Any = Field(description="The value after the optimizer's step.")


class TraceEpoch(BaseModel):
    epoch: int
    lr: float = Field(description="The learning rate of this epoch's step.")
    output: Matrix = Field(description="The forward output for the first `rows` rows.")
    target: Matrix
    loss: float
    parameters: dict[str, TraceParameter]


class JobTrace(BaseModel):
    """What one step of gradient descent does, epoch by epoch."""

    job_id: str
    rows: int = Field(description="How many of the first training rows `output` shows.")
    standardized: bool = Field(description="Values are in standardized units.")
    graph: dict[str, list[str]] = Field(
        description="For each parameter, the autograd functions from the loss back to it."
    )
    graph_text: str = Field(description="The chain as text, e.g. "
                            "`MseLossBackward0 -> AddmmBackward0 -> AccumulateGrad`.")
    epochs: list[TraceEpoch]


class JobHistory(BaseModel):
    epoch: list[int]
    loss: list[float]
    val_loss: list[float] | None


# ---------------------------------------------------------------- models


class ModelMetrics(BaseModel):
    train_loss: float = Field(description="Loss of the final weights on the training rows.")
    val_loss: float | None = None
    r2: float | None = Field(
        default=None, description="Coefficient of determination on the training rows "
        "(regression)."
    )
    lstsq_loss: float | None = Field(
        default=None, description="Closed-form least-squares MSE on the same rows (linear + mse)."
    )
    accuracy: float | None = Field(
        default=None, description="Share of training rows labelled right (classification)."
    )
    val_accuracy: float | None = None
    log_loss: float | None = Field(
        default=None, description="Mean negative log-likelihood on the training rows "
        "(classification)."
    )


class Normalization(BaseModel):
    """What `standardize` learnt from the training split: predict computes
    ``(x - x_mean) / x_std``, and for regression ``y = y' * y_std + y_mean``."""

    x_mean: list[float]
    x_std: list[float]
    y_mean: list[float] | None = None
    y_std: list[float] | None = None


class EarlyStop(BaseModel):
    reason: Literal["early_stopping"] = "early_stopping"
    epoch: int = Field(description="The last epoch trained.")
    best_epoch: int = Field(description="The model keeps the weights after this many epochs "
                            "(0: the initial ones); the history's val_loss at epoch e scores "
                            "the weights entering it, after e - 1 epochs.")
    best_val_loss: float = Field(description="In the units trained (standardized with "
                                 "`standardize`), as the history is.")
    message: str


class ModelPublic(BaseModel):
    id: str
    name: str | None
    version: int | None
    kind: str
    task: Literal["regression", "classification"]
    in_features: int
    out_features: int = Field(description="Outputs of the module: a classifier's logits (1 for "
                              "two classes); predict's `y` is then one column of labels.")
    classes: int | None = Field(default=None, description="Classifiers: how many classes.")
    weight: Matrix | None = Field(
        description="The `linear` layer's weight, out_features rows, in the original units of "
        "x and y (with `standardize` too, so `x W^T + b` is what predict serves); over the "
        "expanded `terms` of x for a polynomial model; null for an mlp (see `parameters`)."
    )
    bias: list[float] | None = Field(description="The layer's bias, or null without bias.")
    terms: list[str] | None = Field(
        default=None, description="Polynomial models: the expanded inputs `weight` applies to."
    )
    normalization: Normalization | None = None
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="Every tensor of the module by its state_dict name (e.g. `layers.0.weight`), "
        "as trained (in standardized units with `standardize`); on GET /v1/models/{id} only, "
        "for models of up to 1 000 000 values (the checkpoint has them all).",
    )
    checkpoint_error: str | None = Field(
        default=None, description="Why `parameters` is missing on GET /v1/models/{id}: the "
        "checkpoint cannot be read or fails its checksum (predict answers 503 then)."
    )
    feature_names: list[str]
    target_names: list[str]
    metrics: ModelMetrics
    hyperparameters: TrainingSpec
    dataset_id: str
    job_id: str
    device_trained_on: str
    checkpoint_sha256: str
    created_at: datetime


class ModelsPublic(BaseModel):
    data: list[ModelPublic]
    count: int
    next: str | None


class PredictRequest(_Strict):
    x: Matrix = Field(examples=[[[3.3], [4.4]]])


class ServicePredictRequest(PredictRequest):
    model: str | None = Field(
        default=None, description="Model id or name; the latest model when omitted."
    )


class PredictResponse(BaseModel):
    model_id: str
    model_name: str | None
    version: int | None
    y: Matrix = Field(description="Regression: the predictions. Classifiers: each row's "
                      "label (class index) as a one-column matrix.")
    labels: list[int] | None = Field(default=None, description="Classifiers: each row's label.")
    probabilities: Matrix | None = Field(
        default=None, description="Classifiers: P(class c) for each row and class."
    )


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str]
