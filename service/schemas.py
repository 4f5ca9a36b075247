"""Request and response models, one per role. Nothing here imports FastAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from models.registry import get_kind

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


class LinearSpec(_Strict):
    """``y = x W^T + b``: the seed program's model."""

    kind: Literal["linear"] = "linear"
    bias: bool = True


MAX_CLASSES = 10_000


class LogisticSpec(_Strict):
    """Logistic regression. Targets are class indices (one column of 0, 1, ..., C-1) or
    one-hot rows (one column per class); two classes train one logit with `bce`, more
    train one logit per class with `cross_entropy`."""

    kind: Literal["logistic"]
    bias: bool = True
    classes: int | None = Field(
        default=None, ge=2, le=MAX_CLASSES,
        description="Number of classes; read from the targets when omitted.",
    )


class PolynomialSpec(_Strict):
    """The inputs expanded into powers 1..degree (and pairwise products), then linear."""

    kind: Literal["polynomial"]
    bias: bool = True
    degree: int = Field(default=2, ge=1, description="Bounded by FITSERVE_MAX_DEGREE.")
    interactions: bool = Field(default=False, description="Add x_i * x_j for every pair.")


class MLPSpec(_Strict):
    """Linear, activation, ..., Linear."""

    kind: Literal["mlp"]
    bias: bool = True
    hidden: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [32, 32], min_length=1,
        description="Hidden layer sizes; bounded by FITSERVE_MAX_HIDDEN_LAYERS and "
        "FITSERVE_MAX_HIDDEN_UNITS.",
    )
    activation: Literal["relu", "tanh"] = "tanh"


ModelSpec = Annotated[
    LinearSpec | LogisticSpec | PolynomialSpec | MLPSpec, Field(discriminator="kind")
]



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


class StepLRSpec(_Strict):
    """Multiply the learning rate by `gamma` every `step_size` epochs."""

    name: Literal["step"]
    step_size: int = Field(ge=1)
    gamma: float = Field(default=0.1, gt=0, le=1)


class ExponentialLRSpec(_Strict):
    """Multiply the learning rate by `gamma` every epoch."""

    name: Literal["exponential"]
    gamma: float = Field(gt=0, le=1)


class CosineLRSpec(_Strict):
    """Cosine annealing from the learning rate to `eta_min` over `t_max` epochs."""

    name: Literal["cosine"]
    t_max: int | None = Field(default=None, ge=1, description="Default: the job's epochs.")
    eta_min: float = Field(default=0.0, ge=0)


class PlateauLRSpec(_Strict):
    """Multiply the learning rate by `factor` when the validation loss (the training loss
    without a validation split) has not improved for `patience` epochs. It reads the loss
    every epoch, as PyTorch's ReduceLROnPlateau does: one device sync per epoch."""

    name: Literal["reduce_on_plateau"]
    factor: float = Field(default=0.1, gt=0, lt=1)
    patience: int = Field(default=10, ge=0)
    threshold: float = Field(default=1e-4, ge=0)
    cooldown: int = Field(default=0, ge=0)
    min_lr: float = Field(default=0.0, ge=0)


SchedulerSpec = Annotated[
    StepLRSpec | ExponentialLRSpec | CosineLRSpec | PlateauLRSpec, Field(discriminator="name")
]


class EarlyStoppingSpec(_Strict):
    """Stop when the validation loss has not fallen by more than `min_delta` for `patience`
    epochs; the model keeps the weights of the best epoch."""

    patience: int = Field(default=10, ge=1)
    min_delta: float = Field(default=0.0, ge=0)


class TrainingSpec(_Strict):
    """Hyperparameters of one run. Defaults are the seed program's."""

    model: ModelSpec = Field(default_factory=LinearSpec)
    loss: Literal["mse", "l1", "huber", "bce", "cross_entropy"] | None = Field(
        default=None,
        description="Default `mse` for regression; `bce` for two classes, `cross_entropy` "
        "for more. Set at submit, so a job's hyperparameters always name it.",
    )
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
    standardize: bool = Field(
        default=False,
        description="Scale inputs (and regression targets) to zero mean and unit variance by "
        "the training split's statistics; they are stored in the checkpoint and predict "
        "applies them.",
    )
    early_stopping: EarlyStoppingSpec | None = Field(
        default=None, description="Needs validation_fraction > 0."
    )
    scheduler: SchedulerSpec | None = None
    grad_clip: float | None = Field(
        default=None, gt=0, description="Clip the gradients' total norm to this value."
    )
    trace_epochs: int = Field(
        default=0, ge=0, le=100,
        description="Record forward, loss, gradients and updates of the first N epochs "
        "(full batch only); read them at /v1/jobs/{id}/trace.",
    )

    # field validators run in field order, so model and validation_fraction are in
    # info.data here, and the error names the field at fault
    @field_validator("loss")
    @classmethod
    def _loss_fits_kind(cls, loss: str | None, info: ValidationInfo) -> str | None:
        model = info.data.get("model")
        if loss is None or model is None:
            return loss
        kind = get_kind(model.kind)
        classify, fitting = kind.task == "classification", kind.losses
        if loss not in fitting:
            what = "a classification" if classify else "a regression"
            raise ValueError(f"{loss} does not fit {what} model ({model.kind}); use one of "
                             f"{', '.join(fitting)}")
        if loss == "bce" and getattr(model, "classes", None) not in (None, 2):
            raise ValueError(f"bce trains two classes; model.classes is {model.classes}: use "
                             "cross_entropy")
        return loss

    @field_validator("early_stopping")
    @classmethod
    def _early_stopping_needs_validation(
        cls, value: EarlyStoppingSpec | None, info: ValidationInfo
    ) -> EarlyStoppingSpec | None:
        if value is not None and not info.data.get("validation_fraction"):
            raise ValueError("needs a validation split: set validation_fraction > 0")
        return value

    @model_validator(mode="after")
    def _default_loss(self) -> TrainingSpec:
        # regression defaults to mse at once; a classifier's default waits for the targets
        # (two classes: bce, more: cross_entropy), which submit reads, unless classes is set
        if self.loss is None and (self.model.kind != "logistic" or self.model.classes):
            self.loss = self.resolved_loss()  # type: ignore[assignment]
        return self

    def resolved_loss(self) -> str:
        """The loss the job trains with (a spec validated at submit always names it)."""
        if self.loss is not None:
            return self.loss
        if self.model.kind == "logistic":
            return "bce" if (self.model.classes or 2) == 2 else "cross_entropy"
        return "mse"

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
        elif isinstance(model, dict) and "kind" not in model:
            data["model"] = {"kind": "linear", **model}  # the default kind, as before kinds
        if "bias" in data:
            m = data.get("model") if isinstance(data.get("model"), dict) else {"kind": "linear"}
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
