"""Request and response models, one per role. Nothing here imports FastAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# strict: pydantic's lax mode would read true as 1.0 and "1.5" as 1.5, where the dataset
# and predict routes (service/arrays.py) refuse both
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Matrix = list[list[Number]]
"""Rows of numbers: ``[[x11, x12, ...], [x21, ...], ...]``."""

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class ModelSpec(_Strict):
    kind: Literal["linear"] = "linear"
    bias: bool = True


class SGDSpec(_Strict):
    name: Literal["sgd"] = "sgd"
    lr: float = Field(default=0.01, gt=0, le=1e3)
    momentum: float = Field(default=0.0, ge=0, lt=1)
    dampening: float = Field(default=0.0, ge=0, le=1)
    nesterov: bool = False
    weight_decay: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SGDSpec:
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening 0")
        return self


class AdamSpec(_Strict):
    name: Literal["adam", "adamw"] = "adam"
    lr: float = Field(default=0.001, gt=0, le=1e3)
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (
        0.9,
        0.999,
    )
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float | None = Field(
        default=None, ge=0, description="Default 0 for adam, 0.01 for adamw (PyTorch's)."
    )
    amsgrad: bool = False


class RMSpropSpec(_Strict):
    name: Literal["rmsprop"] = "rmsprop"
    lr: float = Field(default=0.01, gt=0, le=1e3)
    alpha: float = Field(default=0.99, ge=0, le=1)
    eps: float = Field(default=1e-8, gt=0)
    momentum: float = Field(default=0.0, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    centered: bool = False


OptimizerSpec = Annotated[SGDSpec | AdamSpec | RMSpropSpec, Field(discriminator="name")]


class TrainingSpec(_Strict):
    """Hyperparameters of one run. Defaults are the seed program's."""

    model: ModelSpec = Field(default_factory=ModelSpec)
    loss: Literal["mse", "l1", "huber"] = "mse"
    huber_delta: float = Field(default=1.0, gt=0)
    optimizer: OptimizerSpec = Field(default_factory=SGDSpec)
    epochs: int = Field(default=10_000, ge=1)
    batch_size: int | None = Field(default=None, ge=1, description="null: full batch.")
    seed: int | None = Field(
        default=None, ge=0, lt=2**63, description="Chosen by the server when omitted."
    )
    validation_fraction: float = Field(default=0.0, ge=0, le=0.5)
    log_every: int = Field(default=1, ge=1, description="Record the loss every N epochs.")
    engine: Literal["auto", "autograd"] = Field(
        default="auto",
        description="`autograd` runs the plain PyTorch loop; `auto` picks the fastest exact path.",
    )

    @model_validator(mode="before")
    @classmethod
    def _accept_flat_form(cls, data: Any) -> Any:
        """Accept the seed example's flat form: ``"model": "linear", "bias": true,
        "optimizer": "sgd", "lr": 0.01`` as well as the nested one."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        model = data.get("model")
        if isinstance(model, str):
            data["model"] = {"kind": model}
        if "bias" in data:
            m = data.get("model") if isinstance(data.get("model"), dict) else {}
            data["model"] = {**m, "bias": data.pop("bias")}
        opt = data.get("optimizer")
        if isinstance(opt, str):
            data["optimizer"] = opt = {"name": opt}
        if "lr" in data:
            o = opt if isinstance(opt, dict) else {"name": "sgd"}
            data["optimizer"] = {**o, "lr": data.pop("lr")}
        return data


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


JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


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


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int
    next: str | None


class JobHistory(BaseModel):
    epoch: list[int]
    loss: list[float]
    val_loss: list[float] | None


# ---------------------------------------------------------------- models


class ModelMetrics(BaseModel):
    train_loss: float = Field(description="Loss of the final weights on the training rows.")
    val_loss: float | None = None
    r2: float | None = Field(description="Coefficient of determination on the training rows.")
    lstsq_loss: float | None = Field(
        default=None, description="Closed-form least-squares MSE on the same rows (linear + mse)."
    )


class ModelPublic(BaseModel):
    id: str
    name: str | None
    version: int | None
    kind: str
    in_features: int
    out_features: int
    weight: Matrix = Field(description="`model.linear.weight`: out_features rows of in_features.")
    bias: list[float] | None = Field(description="`model.linear.bias`, or null without bias.")
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
    y: Matrix


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str]
