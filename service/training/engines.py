"""Which engine trains a spec, decided in one place. Every engine gives the plain autograd
loop's numbers (the tests hold each fast path to it, epoch by epoch); the fastest exact one
that can run the spec is chosen:

- ``closed_form``: a linear head, MSE, full-batch plain SGD with nothing that changes the
  step per epoch (service/training/closed_form.py): every epoch in closed form;
- ``fused``: a linear head, MSE, SGD, possibly mini-batches or early stopping: the same step
  with the gradient written out (service/training/epoch_loop.py);
- ``autograd``: everything else, the seed program's loop.
"""

from __future__ import annotations

from typing import Literal

from models import get_kind
from service.training.spec import SGDSpec, TrainingSpec

Engine = Literal["closed_form", "fused", "autograd"]


def _why_not_sgd_on_mse(spec: TrainingSpec) -> str | None:
    if spec.engine == "autograd":
        return "the autograd engine was asked for"
    if not get_kind(spec.model.kind).linear_head:
        return f"{spec.model.kind} is not linear in its parameters"
    if spec.resolved_loss() != "mse":
        return f"{spec.resolved_loss()} loss has no closed form"
    if not isinstance(spec.optimizer, SGDSpec):
        return f"{spec.optimizer.name} is not plain SGD"
    return None


def _why_not_plain_steps(spec: TrainingSpec, options: tuple[str, ...]) -> str | None:
    for option in options:
        if getattr(spec, option) is not None:
            return f"{option} is set"
    if spec.trace_epochs:
        return "a trace records autograd's own steps"
    return None


def why_not_fused(spec: TrainingSpec) -> str | None:
    """None when the written-out SGD step runs this spec exactly; else why not."""
    return _why_not_sgd_on_mse(spec) or _why_not_plain_steps(spec, ("scheduler", "grad_clip"))


def why_not_closed_form(spec: TrainingSpec, n_rows: int) -> str | None:
    """None when every epoch follows in closed form; else why not."""
    if reason := _why_not_sgd_on_mse(spec):
        return reason
    if spec.batch_size is not None and spec.batch_size < n_rows:
        return "mini-batches"
    return _why_not_plain_steps(spec, ("scheduler", "grad_clip", "early_stopping"))


def pick_engine(spec: TrainingSpec, n_rows: int) -> Engine:
    """The fastest exact engine for a spec over ``n_rows`` training rows (the closed form
    may still decline at run time, when its recurrence is unstable)."""
    if why_not_closed_form(spec, n_rows) is None:
        return "closed_form"
    return "fused" if why_not_fused(spec) is None else "autograd"
