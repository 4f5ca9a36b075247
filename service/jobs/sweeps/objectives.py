"""What a sweep optimizes: a metric of each trial's model, and which way is better."""

from __future__ import annotations

from models.registry import get_kind
from service.errors import InvalidInput
from service.training.spec import TrainingSpec

OBJECTIVES: dict[str, str] = {
    "train_loss": "minimize",  # the final model's loss on the training rows
    "val_loss": "minimize",
    "log_loss": "minimize",  # classifiers
    "r2": "maximize",  # regression, on the training rows
    "accuracy": "maximize",  # classifiers, on the training rows
    "val_accuracy": "maximize",
}
"""Each objective and its natural direction (the default; a sweep may say otherwise)."""
CLASSIFIER_ONLY = ("log_loss", "accuracy", "val_accuracy")


def uses_validation(objective: str) -> bool:
    """Scored on the validation rows: the pruner then reads the validation loss too."""
    return objective.startswith("val_")


def check_objective(objective: str, spec: TrainingSpec, searched: list[str]) -> None:
    """The objective must be one the trials' models report (a 422 naming it otherwise)."""
    task = get_kind(spec.model.kind).task
    if objective in CLASSIFIER_ONLY and task != "classification":
        raise InvalidInput(f"{objective} scores classifiers; the job trains a {task} model "
                           "(use train_loss, val_loss or r2)", field="objective")
    if objective == "r2" and task != "regression":
        raise InvalidInput("r2 scores regression models; use accuracy or log_loss",
                           field="objective")
    if uses_validation(objective) and not spec.validation_fraction:
        raise InvalidInput(f"{objective} needs validation rows: set the job's "
                           "validation_fraction (e.g. 0.2)", field="objective")
    if uses_validation(objective) and "validation_fraction" in searched:
        raise InvalidInput(f"{objective} compares trials on their validation rows, which "
                           "validation_fraction would change from trial to trial; keep it "
                           "fixed", field="search_space.validation_fraction")
