"""Resource limits, each answered with a clear error that names the setting."""

from __future__ import annotations

from models.registry import get_kind
from models.terms import term_count
from service.config import Settings
from service.errors import LimitExceeded, TooManyJobs
from service.training.spec import TrainingSpec


def check_epochs(settings: Settings, epochs: int) -> None:
    if epochs > settings.max_epochs:
        raise LimitExceeded(f"epochs must be at most {settings.max_epochs} "
                            "(FITSERVE_MAX_EPOCHS)", field="epochs")


def check_budget(settings: Settings, epochs: int, rows: int) -> None:
    if epochs * rows > settings.max_epoch_rows:
        raise LimitExceeded(
            f"epochs x rows = {epochs} x {rows} = {epochs * rows} exceeds the budget of "
            f"{settings.max_epoch_rows} (FITSERVE_MAX_EPOCH_ROWS): fewer epochs or rows",
            field="epochs",
        )


def check_active(settings: Settings, active: int) -> None:
    if active >= settings.max_active_jobs:
        raise TooManyJobs(
            f"this tenant has {active} queued or running jobs, the limit "
            f"({settings.max_active_jobs}, FITSERVE_MAX_ACTIVE_JOBS); retry when some have "
            "finished",
            headers={"Retry-After": "5"},
        )


def check_model(settings: Settings, spec: TrainingSpec, in_features: int,
                out_features: int) -> None:
    """The model's size and the trace's, against their settings, before anything runs."""
    m = spec.model
    if m.kind == "polynomial":
        if m.degree > settings.max_degree:
            raise LimitExceeded(f"degree {m.degree} exceeds the limit of {settings.max_degree} "
                                "(FITSERVE_MAX_DEGREE)", field="model.degree")
        terms = term_count(in_features, m.degree, m.interactions)
        if terms > settings.max_features:
            raise LimitExceeded(f"degree {m.degree} expands {in_features} feature(s) into "
                                f"{terms} terms, over the limit of {settings.max_features} "
                                "(FITSERVE_MAX_FEATURES)", field="model.degree")
    if m.kind == "mlp":
        if len(m.hidden) > settings.max_hidden_layers:
            raise LimitExceeded(f"{len(m.hidden)} hidden layers exceed the limit of "
                                f"{settings.max_hidden_layers} (FITSERVE_MAX_HIDDEN_LAYERS)",
                                field="model.hidden")
        widest = max(m.hidden)
        if widest > settings.max_hidden_units:
            raise LimitExceeded(f"a hidden layer of {widest} units exceeds the limit of "
                                f"{settings.max_hidden_units} (FITSERVE_MAX_HIDDEN_UNITS)",
                                field="model.hidden")
    config = {**m.model_dump(), "in_features": in_features, "out_features": out_features}
    count = get_kind(m.kind).parameter_count(config)
    if count > settings.max_parameters:
        raise LimitExceeded(f"the model has {count} parameters, over the limit of "
                            f"{settings.max_parameters} (FITSERVE_MAX_PARAMETERS)", field="model")
    if spec.trace_epochs:
        if spec.trace_epochs > settings.max_trace_epochs:
            raise LimitExceeded(f"trace_epochs {spec.trace_epochs} exceeds the limit of "
                                f"{settings.max_trace_epochs} (FITSERVE_MAX_TRACE_EPOCHS)",
                                field="trace_epochs")
        if count > settings.max_trace_parameters:
            raise LimitExceeded(f"a trace keeps every parameter three times an epoch; this "
                                f"model has {count}, over the limit of "
                                f"{settings.max_trace_parameters} "
                                "(FITSERVE_MAX_TRACE_PARAMETERS)", field="trace_epochs")
