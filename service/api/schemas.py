"""Request and response models, one per role. Nothing here imports FastAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
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

NAME_PATTERN = _NAME_PATTERN
"""What a model name must match (a job's model_name, an import's name)."""

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
    """JSON upload of numeric matrices. Tables go as JSON records
    (``{"rows": [{"sqft": 1200, "city": "Lyon"}, ...], "target": "price"}``) or columns
    (``{"columns": {"sqft": [...], ...}, "target": ...}``), each with optional ``features``,
    ``schema`` (``{"zip": "categorical"}``) and ``name``; or as ``text/csv``,
    ``application/x-ndjson``, ``application/vnd.apache.parquet`` or
    ``application/vnd.apache.arrow.stream`` with ``?target=col``."""

    name: str | None = Field(default=None, max_length=200)
    x: Matrix = Field(description="Feature rows, one list per row.", examples=[[[3.3], [4.4]]])
    y: Matrix = Field(description="Target rows, one list per row.", examples=[[[1.7], [2.76]]])
    feature_names: list[str] | None = None
    target_names: list[str] | None = None


class CategoryCount(BaseModel):
    value: str
    count: int


class ColumnStats(BaseModel):
    """A column's schema as inferred at upload (or declared with ``schema``) and its
    statistics: mean/std/min/max over the present cells of numeric and boolean columns
    (a boolean's mean is its share of true), the distinct count and the most frequent
    values of categorical ones."""

    name: str
    role: Literal["feature", "target"]
    type: Literal["numeric", "categorical", "boolean"] = "numeric"
    missing: int = 0
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    distinct: int | None = None
    top: list[CategoryCount] | None = Field(
        default=None, description="Categorical: the 5 most frequent values with their counts.")


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


class ImportedFrom(BaseModel):
    """Where an imported model's checkpoint came from, as the file says."""

    sha256: str = Field(description="The sha256 of the file as it was uploaded.")
    source_job_id: str | None = Field(
        default=None, description="The job that trained it, on the fitserve it came from.")
    source_dataset_sha256: str | None = None


class ModelMetrics(BaseModel):
    train_loss: float | None = Field(
        default=None, description="Loss of the final weights on the training rows (null for "
        "an imported model: the checkpoint carries no metrics; evaluate it on a dataset).")
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


class ModelInput(BaseModel):
    """One field of a named predict call."""

    name: str
    kind: Literal["numeric", "categorical", "boolean"]
    required: bool = Field(description="Not imputed: a call without it is refused.")
    fill: float | str | None = Field(
        default=None, description="What a missing value becomes (the training rows' mean, "
        "median or most frequent level).")
    levels: list[str] | None = Field(default=None, description="Categorical: the levels with "
                                     "a column of their own.")
    other: bool | None = Field(default=None, description="Categorical: rare and unseen levels "
                               "share an `other` column (without it they add nothing).")


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
    feature_names: list[str] = Field(description="The model's numeric inputs (the columns "
                                     "of `x`, which `weight` applies to): the pipeline's "
                                     "expanded columns (`city=Lyon`, `sqft_missing`).")
    target_names: list[str]
    coefficients: dict[str, dict[str, float]] | None = Field(
        default=None, description="The linear layer's weight by output (target, or class "
        "label) and input name, in original units (as `weight`); `intercept` is the bias. "
        "Null for an mlp.")
    inputs: list[ModelInput] | None = Field(
        default=None, description="The fields a named predict call sends (`rows`, "
        "`columns`), on GET /v1/models/{id}: each column's kind, whether it is required "
        "(not imputed), its fill and its levels.")
    labels: list[str | float | bool] | None = Field(
        default=None, description="A classifier trained on a labelled column: its class "
        "labels, in class index order.")
    metrics: ModelMetrics
    hyperparameters: TrainingSpec | None = Field(
        description="What the job that trained it was asked; null for an imported model.")
    dataset_id: str | None = Field(description="The dataset it was trained on; null for an "
                                   "imported model.")
    job_id: str | None = Field(description="The job that trained it; null for an imported "
                               "model.")
    parent_model_id: str | None = Field(
        default=None, description="Lineage: the model a warm start (`init_from`) began from.")
    imported: ImportedFrom | None = Field(
        default=None, description="Lineage of a model imported from a checkpoint file.")
    device_trained_on: str
    checkpoint_sha256: str
    created_at: datetime


class ModelsPublic(BaseModel):
    data: list[ModelPublic]
    count: int
    next: str | None


Cell = str | float | bool | None
"""A named field's value: a number, a boolean, a text (a categorical level), or null
(missing: imputed when the model imputes that column)."""


class PredictRequest(_Strict):
    """One of `x` (rows of the model's numeric inputs, in the order of its `feature_names`),
    `rows` (one object per row, by field name) or `columns` (one list per field)."""

    x: Matrix | None = Field(default=None, examples=[[[3.3], [4.4]]])
    rows: list[dict[str, Cell]] | None = Field(
        default=None, examples=[[{"sqft": 1200, "city": "Lyon", "has_garage": True}]],
        description="Named fields per row (the model's `inputs`); a missing field the model "
        "imputes is imputed, an unseen category counts as `other`.")
    columns: dict[str, list[Cell]] | None = Field(
        default=None, examples=[{"sqft": [1200, 800], "city": ["Lyon", None]}],
        description="Named fields, one list of values each (all of one length).")


class ServicePredictRequest(PredictRequest):
    model: str | None = Field(
        default=None, description="Model id, name (its traffic split, else its latest "
        "version), `name@alias` or `name@3`; the latest model when omitted."
    )


class PredictResponse(BaseModel):
    model_id: str
    model_name: str | None
    version: int | None = Field(description="The version that answered (also the "
                                "`X-Fitserve-Model-Version` header).")
    y: Matrix = Field(description="Regression: the predictions. Classifiers: each row's "
                      "label (class index) as a one-column matrix.")
    labels: list[int] | list[str | float | bool] | None = Field(
        default=None, description="Classifiers: each row's label: the class index, or the "
        "target's own label (text, number) for a model trained on a labelled column.")
    probabilities: Matrix | list[dict[str, float]] | None = Field(
        default=None, description="Classifiers: P(class c) for each row and class; keyed by "
        "label for a model trained on a labelled column."
    )


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str]


# ---------------------------------------------------------------- evaluations


class EvaluationCreate(_Strict):
    dataset_id: str = Field(description="A stored dataset whose columns include the model's "
                            "inputs and targets, by name (extra columns are ignored).")


class RefusedRows(BaseModel):
    reason: str = Field(description="Why these rows were not scored.")
    rows: int = Field(description="How many rows were refused for this reason.")
    first_rows: list[int] = Field(description="The first few of them (0-based row numbers).")


class TargetMetrics(BaseModel):
    name: str
    mse: float
    rmse: float
    mae: float
    r2: float | None = Field(description="Null when the target is constant in the dataset.")


class ClassMetrics(BaseModel):
    class_: int = Field(alias="class")
    precision: float | None = Field(description="Null when no row was predicted this class.")
    recall: float | None = Field(description="Null when no row has this class.")
    support: int = Field(description="Rows whose actual class this is.")


class EvaluationMetrics(BaseModel):
    """Regression: mse, rmse, mae, r2 (means over targets of `per_target`). Classifiers:
    accuracy, log_loss, confusion_matrix (actual class in rows, predicted in columns),
    per_class precision and recall, roc_auc (two classes). scikit-learn's definitions."""

    mse: float | None = None
    rmse: float | None = None
    mae: float | None = None
    r2: float | None = None
    per_target: list[TargetMetrics] | None = None
    accuracy: float | None = None
    log_loss: float | None = None
    confusion_matrix: list[list[int]] | None = None
    per_class: list[ClassMetrics] | None = None
    roc_auc: float | None = None


class EvaluationPublic(BaseModel):
    id: str
    model_id: str
    dataset_id: str
    task: Literal["regression", "classification"]
    rows: int = Field(description="Rows in the dataset.")
    rows_used: int = Field(description="Rows scored.")
    rows_refused: int = Field(description="Rows not scored; `refused` says why.")
    refused: list[RefusedRows]
    ignored_columns: list[str] = Field(description="Columns of the dataset the model does "
                                       "not use.")
    metrics: EvaluationMetrics
    plot: str = Field(description="The figure: predicted against actual, or the confusion "
                      "matrix (PNG).")
    created_at: datetime


class EvaluationsPublic(BaseModel):
    data: list[EvaluationPublic]
    count: int
    next: str | None


# ---------------------------------------------------------------- model names


class AliasUpdate(_Strict):
    version: int = Field(ge=1, strict=True,
                         description="The version of the name the alias points at.")


class AliasPublic(BaseModel):
    name: str
    alias: str
    version: int
    model_id: str
    previous_version: int | None = Field(description="What it pointed at before (null: the "
                                         "alias is new).")


class NameVersion(BaseModel):
    version: int
    model_id: str
    kind: str
    created_at: datetime


class ModelNamePublic(BaseModel):
    name: str
    versions: list[NameVersion] = Field(description="Oldest first.")
    aliases: dict[str, int] = Field(description="Each alias's version; `latest` is built in.")
    traffic: dict[str, int] | None = Field(description="The traffic split over aliases or "
                                           "versions (percents), if one is set.")


class AliasMove(BaseModel):
    alias: str
    from_version: int | None = Field(description="Null: the alias was new.")
    to_version: int | None = Field(description="Null: the alias was deleted.")
    moved_at: datetime
    tenant: str
    key_id: str | None = Field(description="The API key that moved it (null with "
                               "authentication off).")


class AliasHistory(BaseModel):
    data: list[AliasMove] = Field(description="Newest first.")
    count: int
    next: str | None


class TrafficWeights(RootModel[dict[str, Annotated[int, Field(strict=True, ge=0, le=100)]]]):
    """Whole percents over aliases or versions, summing to 100:
    ``{"champion": 90, "challenger": 10}`` or ``{"3": 50, "latest": 50}``."""


class TrafficPublic(BaseModel):
    name: str
    weights: dict[str, int]
    versions: dict[str, int] = Field(description="The version each target points at now.")


# ---------------------------------------------------------------- sweeps


class SweepPruning(_Strict):
    """Stop trials that fall behind, judged at rungs (epochs) on their loss (the validation
    loss with a `val_` objective). `median`: from the grace period on, every `interval`
    epochs, a trial worse than the median of the completed trials at that epoch stops.
    `successive_halving`: at the grace period times powers of `reduction_factor`, a trial
    not in the best 1/`reduction_factor` of the trials that reached that rung stops."""

    name: Literal["median", "successive_halving"]
    grace_period: int = Field(ge=1, description="Epochs every trial runs before it can be "
                              "stopped: the first rung.")
    interval: int | None = Field(default=None, ge=1, description="median: epochs between two "
                                 "rungs (default: the grace period).")
    startup_trials: int = Field(default=5, ge=0, description="median: trials that must "
                                "complete before any is pruned.")
    reduction_factor: int = Field(default=3, ge=2, description="successive_halving: the "
                                  "ratio between two rungs, and of trials kept at each.")


class SweepCreate(_Strict):
    """A search over the hyperparameters of a base job."""

    job: JobCreate = Field(description="The base job: everything `POST /v1/jobs` takes "
                           "(dataset_id or inline x and y, model, loss, optimizer, epochs, "
                           "validation_fraction, device, ...). Each trial is this job with "
                           "the searched fields set; its seed (drawn when omitted) is every "
                           "trial's, unless `seed` is searched.")
    search_space: dict[str, dict[str, Any]] = Field(
        description="Job fields by path, each with one of `uniform` [lo, hi], `log_uniform` "
        "[lo, hi], `int` [lo, hi] or `choice` [values]; a range may add `steps` (the points "
        "a grid takes along it).",
        examples=[{"optimizer.lr": {"log_uniform": [1e-4, 1e-1]},
                   "optimizer.momentum": {"choice": [0, 0.9]}}])
    strategy: Literal["grid", "random", "tpe"] = Field(
        default="tpe", description="`grid`: every point (choices, and ranges with `steps`); "
        "`random`; `tpe`: Optuna's Tree-structured Parzen Estimator.")
    objective: Literal["train_loss", "val_loss", "log_loss", "r2", "accuracy",
                       "val_accuracy"] | None = Field(
        default=None, description="A metric of each trial's model; default `val_loss` with "
        "a validation split, else `train_loss`.")
    direction: Literal["minimize", "maximize"] | None = Field(
        default=None, description="Default: minimize losses, maximize r2 and accuracies.")
    max_trials: int | None = Field(default=None, ge=1, description="Default 20 (a grid: its "
                                   "size); at most FITSERVE_MAX_TRIALS.")
    max_parallel: int | None = Field(default=None, ge=1, description="Trials queued or "
                                     "running at once; default all for grid and random, 4 "
                                     "for tpe (which learns from the trials that end).")
    seed: int | None = Field(default=None, ge=0, lt=2**63, description="The samplers' seed "
                             "(drawn when omitted): a sweep with a seed asks the same trials "
                             "again.")
    pruning: SweepPruning | None = None
    model_name: str | None = Field(default=None, pattern=_NAME_PATTERN, description="When the "
                                   "sweep ends, the best trial's model is a new version of "
                                   "this name.")

    @model_validator(mode="after")
    def _winner_named_by_the_sweep(self) -> SweepCreate:
        if self.job.model_name is not None:
            raise ValueError("name the winner with the sweep's model_name, not the job's")
        return self


class SweepTrial(BaseModel):
    number: int
    status: Literal["queued", "running", "succeeded", "pruned", "failed", "cancelled"]
    params: dict[str, Any] = Field(description="The job fields this trial set, by path.")
    value: float | None = Field(description="The objective (succeeded trials).")
    job_id: str | None = Field(description="The job that ran it (null: the job schema "
                               "refused this combination of values; see `error`).")
    model_id: str | None
    engine_used: str | None
    epochs: int = Field(description="Epochs run.")
    pruned_at: int | None = Field(default=None, description="The rung (epoch) at which the "
                                  "pruner stopped it.")
    losses: dict[str, float] = Field(default_factory=dict, description="The loss the pruner "
                                     "saw at each rung (negated for a maximized objective).")
    error: JobError | None = None


class SweepProgress(BaseModel):
    trials: int = Field(description="max_trials.")
    created: int
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    pruned: int = 0
    failed: int = 0
    cancelled: int = 0


class SweepBest(BaseModel):
    trial: int
    value: float
    params: dict[str, Any] | None = Field(default=None, description="Null in lists.")
    job_id: str | None = None
    model_id: str | None = None


class SweepPublic(BaseModel):
    id: str
    status: JobStatus
    dataset_id: str
    job: TrainingSpec = Field(description="The base job's hyperparameters.")
    device: str
    search_space: dict[str, Any]
    strategy: str
    objective: str
    direction: str
    max_trials: int
    max_parallel: int
    seed: int
    pruning: SweepPruning | None
    model_name: str | None
    model_id: str | None = Field(description="The best trial's model, once the sweep has "
                                 "succeeded (registered under model_name).")
    progress: SweepProgress
    best: SweepBest | None = Field(description="The best trial so far.")
    trials: list[SweepTrial] | None = Field(
        default=None, description="Every trial (GET /v1/sweeps/{id}; not in lists).")
    cancel_requested: bool
    error: JobError | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class SweepsPublic(BaseModel):
    data: list[SweepPublic]
    count: int
    next: str | None


# ---------------------------------------------------------------- batch predictions


class PredictionCreate(_Strict):
    model: str = Field(description="The model: its id, a name (its latest version), "
                       "`name@alias` or `name@3`; resolved when the request is accepted.")
    dataset_id: str = Field(description="A stored dataset holding the model's input columns "
                            "(matched by name; other columns are ignored, targets unneeded).")
    format: Literal["csv", "parquet", "jsonl"] = Field(
        default="csv", description="The result file's format: CSV with a header row, "
        "Parquet, or JSON lines.")
    include_input: bool = Field(default=False, description="Write the dataset's input "
                                "columns before the prediction's.")


class PredictionProgress(BaseModel):
    rows: int = Field(description="Rows scored and written so far.")
    total: int = Field(description="The dataset's rows.")


class PredictionPublic(BaseModel):
    id: str
    status: JobStatus
    model: str = Field(description="The model as the request named it.")
    model_id: str = Field(description="The model it resolved to when it was accepted.")
    model_name: str | None
    version: int | None
    dataset_id: str
    format: Literal["csv", "parquet", "jsonl"]
    include_input: bool
    progress: PredictionProgress
    attempts: int
    cancel_requested: bool
    error: JobError | None
    result: str | None = Field(description="Where the file is, once it has succeeded.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    waiting_reason: str | None = Field(
        default=None, description="Why a queued prediction is not running, when nothing will "
        "run it as things stand; null otherwise.")


class PredictionsPublic(BaseModel):
    data: list[PredictionPublic]
    count: int
    next: str | None
