"""What one training run is asked to do: the model kind and its options, loss, optimizer,
scheduler, early stopping, epochs, batches, seed. Pydantic models, validated once at submit and
stored with the job; the worker reads them back. The HTTP request (``JobCreate``) extends
``TrainingSpec``; nothing here imports FastAPI."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from models.defaults import (
    MLP_ACTIVATION,
    MLP_HIDDEN,
    POLYNOMIAL_DEGREE,
    POLYNOMIAL_INTERACTIONS,
)
from models.registry import get_kind

LossName = Literal["mse", "l1", "huber", "bce", "cross_entropy"]


class _Strict(BaseModel):
    # every float refuses inf and nan (JSON's 1e400 parses as inf): a 422 naming the field
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


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
    degree: int = Field(default=POLYNOMIAL_DEGREE, ge=1,
                        description="Bounded by FITSERVE_MAX_DEGREE.")
    interactions: bool = Field(default=POLYNOMIAL_INTERACTIONS,
                               description="Add x_i * x_j for every pair.")


class MLPSpec(_Strict):
    """Linear, activation, ..., Linear."""

    kind: Literal["mlp"]
    bias: bool = True
    hidden: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: list(MLP_HIDDEN), min_length=1,
        description="Hidden layer sizes; bounded by FITSERVE_MAX_HIDDEN_LAYERS and "
        "FITSERVE_MAX_HIDDEN_UNITS.",
    )
    activation: Literal["relu", "tanh"] = MLP_ACTIVATION


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


class InitFromSpec(_Strict):
    """Warm start: begin from a fitted model's weights (and its normalization, kept as it
    was) instead of the seed's initial weights."""

    model: str = Field(
        min_length=1, max_length=200,
        description="A model id, a name (its latest version) or name@N (version N); "
        "resolved to an id at submit, which the stored job then names.",
    )


class CategoricalSpec(_Strict):
    """How categorical (text) columns become one-hot columns."""

    min_frequency: int = Field(
        default=1, ge=1, description="A level seen on fewer training rows goes to the "
        "column's `other` bucket, as do levels predict has never seen.")
    max_categories: int | None = Field(
        default=None, ge=2, description="Most one-hot columns per categorical column, "
        "`other` included (the most frequent levels keep theirs); default "
        "FITSERVE_MAX_CATEGORIES.")


ColumnKindName = Literal["numeric", "categorical", "boolean"]


class TrainingSpec(_Strict):
    """Hyperparameters of one run. Defaults are the seed program's."""

    # ``schema`` (column_types here: the name would shadow BaseModel.schema) reads and
    # writes under its public name
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, serialize_by_alias=True,
                              validate_by_name=True, validate_by_alias=True)

    FLAT_FIELDS: ClassVar[tuple[str, ...]] = ("bias", "lr")
    """Keys the flat form takes besides the fields (``_accept_flat_form``): an unknown key
    may have meant one of them."""

    model: ModelSpec = Field(default_factory=LinearSpec)
    loss: LossName | None = Field(
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
    standardize: bool | None = Field(
        default=None,
        description="Scale inputs (and regression targets) to zero mean and unit variance by "
        "the training split's statistics; they are stored in the checkpoint and predict "
        "applies them. Default: off for a numeric matrix (the seed program's), on for a "
        "dataset of typed columns (text, booleans or blanks); set at submit.",
    )
    features: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, min_length=1,
        description="The feature columns to train on, by name; default all of them.")
    impute: Literal["mean", "median", "none"] = Field(
        default="mean",
        description="What a missing feature value becomes: the training rows' mean or "
        "median (a categorical's most frequent level); `none` refuses rows with missing "
        "features, at training and at predict.")
    missing_indicator: bool = Field(
        default=True,
        description="Add a `<column>_missing` input (1 where the value was missing) for each "
        "column with blanks in the training rows.")
    categorical: CategoricalSpec = Field(default_factory=CategoricalSpec)
    column_types: dict[str, ColumnKindName] | None = Field(
        default=None, alias="schema",
        description="Override the type inferred for a column, e.g. `{\"zip\": "
        "\"categorical\"}`.")
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
    init_from: InitFromSpec | None = Field(
        default=None,
        description="Warm start from a model's weights: its kind, options, inputs and "
        "outputs must be this job's (a 422 says what differs), and so must `standardize`; "
        "its normalization is kept as it was.",
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
            self.loss = self.resolved_loss()
        return self

    def resolved_loss(self) -> LossName:
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


