"""Which engine a spec gets: one rule, read by training and by nothing else."""

from __future__ import annotations

import itertools

import pytest

from service.training.engines import pick_engine, why_not_closed_form, why_not_fused
from service.training.spec import TrainingSpec

OPTIONS = {
    "batch_size": [None, 4],
    "loss": [None, "l1"],
    "optimizer": [None, {"name": "adam"}, {"name": "sgd", "momentum": 0.9}],
    "grad_clip": [None, 1.0],
    "scheduler": [None, {"name": "exponential", "gamma": 0.99}],
    "validation_fraction": [0.0, 0.2],
    "trace_epochs": [0, 2],
    "engine": ["auto", "autograd"],
    "model": [None, {"kind": "mlp"}, {"kind": "polynomial"}],
}


def _specs():
    names = list(OPTIONS)
    for values in itertools.product(*OPTIONS.values()):
        body = {k: v for k, v in zip(names, values, strict=True) if v is not None}
        if body.get("trace_epochs") and body.get("batch_size"):
            continue  # refused at submit
        yield TrainingSpec.model_validate({"epochs": 10, **body})


def test_the_closed_form_runs_only_what_the_fused_step_runs_too():
    for spec in _specs():
        if why_not_closed_form(spec, 10) is None:
            assert why_not_fused(spec) is None, spec


def test_the_engine_follows_the_rules():
    picked = {}
    for spec in _specs():
        engine = pick_engine(spec, 10)
        picked[engine] = picked.get(engine, 0) + 1
        if spec.engine == "autograd" or spec.resolved_loss() != "mse":
            assert engine == "autograd", spec
        elif engine == "closed_form":
            assert spec.batch_size is None and spec.early_stopping is None
            assert spec.scheduler is None and spec.grad_clip is None
    assert set(picked) == {"closed_form", "fused", "autograd"}


@pytest.mark.parametrize(("body", "engine"), [
    ({}, "closed_form"),  # the seed program
    ({"batch_size": 4}, "fused"),
    ({"batch_size": 10}, "closed_form"),  # a batch of every row is the full batch
    ({"validation_fraction": 0.2, "early_stopping": {"patience": 3}}, "fused"),
    ({"model": {"kind": "polynomial"}}, "closed_form"),
    ({"model": {"kind": "mlp"}}, "autograd"),
    ({"grad_clip": 1.0}, "autograd"),
])
def test_named_cases(body, engine):
    assert pick_engine(TrainingSpec.model_validate({"epochs": 10, **body}), 10) == engine
