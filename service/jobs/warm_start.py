"""Warm start at submit: the model a job begins from (``init_from``) must be the model the
job would train, fed the same inputs; a 422 says what differs. The stored job names the
parent by id, so a new version of its name later changes nothing."""

from __future__ import annotations

from typing import Any

from service.errors import InvalidInput
from service.store.metadata import MetadataStore
from service.training.spec import TrainingSpec


def _names(names: list[str], limit: int = 6) -> str:
    shown = names if len(names) <= limit else [*names[: limit - 1], "...", names[-1]]
    return ", ".join(shown)


def check_init_from(meta: MetadataStore, spec: TrainingSpec, tenant: str,
                    feature_names: list[str], targets: int, data_field: str) -> TrainingSpec:
    """``spec`` with ``init_from.model`` resolved to the parent's id (and a classifier's
    ``classes``, when not given, taken from the parent). ``data_field``: the request field
    that carried the data (``dataset_id`` or ``x``), named when the inputs differ."""
    assert spec.init_from is not None
    parent = meta.resolve_model(spec.init_from.model, tenant, field="init_from.model")
    who = f"the model to start from ({parent.id}"
    who += f", {parent.name} v{parent.version})" if parent.name else ")"
    if parent.kind != spec.model.kind:
        raise InvalidInput(f"{who} is a {parent.kind} model; this job trains a "
                           f"{spec.model.kind} model: set model.kind to {parent.kind!r}",
                           field="model.kind")
    model: dict[str, Any] = spec.model.model_dump(exclude={"kind"})
    config = parent.config or {}
    if spec.model.kind == "logistic" and model.get("classes") is None:
        model["classes"] = config.get("classes")
    for option, value in model.items():
        theirs = config.get(option)
        if isinstance(theirs, list | tuple):
            theirs, value = list(theirs), list(value)
        if option in config and theirs != value:
            raise InvalidInput(f"model.{option} differs: {who} has {_json(theirs)}, this job "
                               f"{_json(value)}", field=f"model.{option}")
    if len(feature_names) != parent.in_features:
        raise InvalidInput(
            f"the inputs differ: {who} takes {parent.in_features} feature(s) "
            f"({_names(parent.feature_names)}); the data has {len(feature_names)} "
            f"({_names(feature_names)})", field=data_field)
    for i, (want, have) in enumerate(zip(parent.feature_names, feature_names, strict=True)):
        if want != have:
            raise InvalidInput(f"the inputs differ: feature column {i + 1} is {have!r} in the "
                               f"data, {want!r} for {who}", field=data_field)
    if spec.model.kind == "logistic":  # two classes: one logit (bce) or two (cross_entropy)
        classes = int(model["classes"])
        loss = spec.loss or ("bce" if classes == 2 else "cross_entropy")
        if (1 if loss == "bce" else classes) != parent.out_features:
            raise InvalidInput(f"the outputs differ: {who} has {parent.out_features} logit(s); "
                               f"{loss} trains {1 if loss == 'bce' else classes}", field="loss")
    elif targets != parent.out_features:
        raise InvalidInput(f"the outputs differ: {who} predicts {parent.out_features} "
                           f"target(s); the data has {targets}", field=data_field)
    standardized = parent.normalization is not None
    if spec.standardize != standardized:
        raise InvalidInput(
            f"standardize differs: {who} was trained with standardize "
            f"{_json(standardized)}; a warm start keeps its normalization as it was: set "
            f"standardize {_json(standardized)}", field="standardize")
    # validated again, not model_copy'd: what is stored must read back as a TrainingSpec
    return TrainingSpec.model_validate({
        **spec.model_dump(), "model": {"kind": spec.model.kind, **model},
        "init_from": {"model": parent.id}})


def _json(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
