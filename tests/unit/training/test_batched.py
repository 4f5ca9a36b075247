"""Trials trained together as one tensor program (service/training/batched.py), each held
to the same trial fitted alone: loss history within 1e-5 relative, weights within 1e-4."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from models.mlp import MLPConfig, MLPModel
from service.errors import TrainingError
from service.training import batched
from service.training.fit import FitResult, fit
from service.training.spec import TrainingSpec
from tests.helpers import make_linear_data


def _collected(spec: TrainingSpec, x: np.ndarray, y: np.ndarray, device: str = "cpu"
               ) -> Any:
    """The trial as fit hands it to its loop (the fit stopped there)."""
    with batched.collecting() as box, pytest.raises(batched.Collected):
        fit(spec, x, y, device)
    assert box.call is not None
    return box.call


def batch_fit(specs: Sequence[TrainingSpec], x: np.ndarray, y: np.ndarray,
              device: str = "cpu", watch: batched.Watch | None = None
              ) -> list[FitResult | TrainingError]:
    """Each spec prepared by fit up to its loop, the loops run as one batch, each fit then
    ended with its part of the batch."""
    ends = batched.train_together([_collected(spec, x, y, device) for spec in specs], watch)
    out: list[FitResult | TrainingError] = []
    for spec, end in zip(specs, ends, strict=True):
        with batched.replaying(end):
            try:
                out.append(fit(spec, x, y, device))
            except TrainingError as e:
                out.append(e)
    return out


def alone(spec: TrainingSpec, x: np.ndarray, y: np.ndarray, device: str = "cpu"
          ) -> FitResult | TrainingError:
    try:
        return fit(spec, x, y, device)
    except TrainingError as e:
        return e


def assert_same(got: FitResult | TrainingError, want: FitResult | TrainingError) -> None:
    assert type(got) is type(want)
    if isinstance(want, TrainingError):
        assert isinstance(got, TrainingError)
        assert got.job_error() == want.job_error()
        np.testing.assert_array_equal(got.extra["history"][0], want.extra["history"][0])
        np.testing.assert_allclose(got.extra["history"][1], want.extra["history"][1],
                                   rtol=1e-5)
        return
    assert isinstance(got, FitResult)
    np.testing.assert_array_equal(got.epochs, want.epochs)
    np.testing.assert_allclose(got.loss, want.loss, rtol=1e-5)
    if want.val_loss is not None:
        assert got.val_loss is not None
        np.testing.assert_allclose(got.val_loss, want.val_loss, rtol=1e-5)
    assert got.state.keys() == want.state.keys()
    for name in want.state:
        np.testing.assert_allclose(got.state[name], want.state[name], atol=1e-4)
    assert got.train_loss == pytest.approx(want.train_loss, rel=1e-5)


def _specs(base: dict[str, Any], varied: list[dict[str, Any]]) -> list[TrainingSpec]:
    specs = []
    for v in varied:
        values = {**base, **v}
        if "optimizer" in base or "optimizer" in v:
            values["optimizer"] = {"name": "sgd", **base.get("optimizer", {}),
                                   **v.get("optimizer", {})}
        specs.append(TrainingSpec.model_validate(values))
    return specs


MLP = {"model": {"kind": "mlp", "hidden": [8]}, "epochs": 60}
CASES = {
    "mlp sgd": (MLP | {"optimizer": {"name": "sgd", "momentum": 0.9}}, [
        {"seed": 0, "optimizer": {"lr": 0.05}},
        {"seed": 1, "optimizer": {"lr": 0.01, "momentum": 0.0, "weight_decay": 0.01},
         "epochs": 35, "log_every": 4},
        {"seed": 2, "optimizer": {"lr": 0.02, "dampening": 0.3}}]),
    "mlp adam, split per seed": (
        MLP | {"optimizer": {"name": "adamw", "amsgrad": True}, "validation_fraction": 0.25,
               "standardize": True}, [
            {"seed": 0, "optimizer": {"lr": 0.01}},
            {"seed": 5, "optimizer": {"lr": 0.003, "betas": [0.8, 0.99],
                                      "weight_decay": 0.1}}]),
    "mlp rmsprop, mini-batches": (
        MLP | {"optimizer": {"name": "rmsprop", "centered": True}, "batch_size": 16,
               "epochs": 12, "grad_clip": 0.5}, [
            {"seed": 0, "optimizer": {"lr": 0.003, "momentum": 0.5}},
            {"seed": 3, "optimizer": {"lr": 0.001, "alpha": 0.9}}]),
    "logistic adam": ({"model": {"kind": "logistic"}, "epochs": 40, "loss": "cross_entropy",
                       "optimizer": {"name": "adam"}}, [
        {"seed": 0, "optimizer": {"lr": 0.05}}, {"seed": 1, "optimizer": {"lr": 0.2}}]),
    "linear fused, mini-batches": ({"epochs": 15, "batch_size": 10, "optimizer": {
        "nesterov": True}}, [
        {"seed": 0, "optimizer": {"lr": 0.05, "momentum": 0.5}},
        {"seed": 1, "optimizer": {"lr": 0.01, "momentum": 0.8}}]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_trial_of_a_batch_is_the_trial_alone(case):
    base, varied = CASES[case]
    x, y = make_linear_data(48, [[1.0, -2.0]], [0.5], noise=0.3, seed=1)
    if base["model"]["kind"] == "logistic" if "model" in base else False:
        y = (y > 0.5).astype(np.float32) + (y > 2).astype(np.float32)
    specs = _specs(base, varied)
    keys = {batched.batch_key(s) for s in specs}
    assert len(keys) == 1 and None not in keys
    for got, spec in zip(batch_fit(specs, x, y), specs, strict=True):
        assert_same(got, alone(spec, x, y))


def _written(call: Any) -> batched.Gradient | None:
    cpu = torch.device("cpu")
    return batched._gradient_for(call.model, call.crit, batched._forward_for(call.model, cpu),
                                 cpu)


WRITTEN = {  # batches whose mlp's gradient is written out (MSE through Linear, tanh/ReLU)
    "relu, two hidden layers, two outputs, split per seed": (
        {"model": {"kind": "mlp", "hidden": [8, 4], "activation": "relu"}, "epochs": 60,
         "optimizer": {"name": "adam"}, "validation_fraction": 0.25}, [
            {"seed": 0, "optimizer": {"lr": 0.01}},
            {"seed": 2, "optimizer": {"lr": 0.003}, "epochs": 41}]),
    "tanh, one input, mini-batches, clipped": (
        {"model": {"kind": "mlp", "hidden": [16]}, "epochs": 8, "batch_size": 10,
         "grad_clip": 0.5, "optimizer": {"name": "sgd", "momentum": 0.9}}, [
            {"seed": 0, "optimizer": {"lr": 0.05}}, {"seed": 1, "optimizer": {"lr": 0.02}}]),
}


@pytest.mark.parametrize("case", list(WRITTEN))
def test_a_batch_with_the_gradient_written_out_is_each_trial_alone(case):
    base, varied = WRITTEN[case]
    inputs = 1 if "one input" in case else 2
    outputs = 2 if "two outputs" in case else 1
    x, y = make_linear_data(48, np.arange(1, 1 + inputs * outputs).reshape(outputs, inputs),
                            np.zeros(outputs), noise=0.3, seed=1)
    y = np.sin(y)  # not linear: the hidden layers have something to learn
    specs = _specs(base, varied)
    assert _written(_collected(specs[0], x, y)) is not None
    for got, spec in zip(batch_fit(specs, x, y), specs, strict=True):
        assert_same(got, alone(spec, x, y))


def test_other_losses_and_models_keep_autograd():
    x, y = make_linear_data(20, [[1.0]], [0.0], noise=0.1, seed=0)
    assert _written(_collected(TrainingSpec.model_validate(MLP), x, y)) is not None
    for loss in ("huber", "l1"):
        spec = TrainingSpec.model_validate(MLP | {"loss": loss})
        assert _written(_collected(spec, x, y)) is None
    assert batched._layers_of(nn.Sequential(nn.Linear(1, 2), nn.Sigmoid(), nn.Linear(2, 1))
                              ) is None


@pytest.mark.parametrize(("hidden", "activation", "inputs", "outputs", "stacked", "bias"), [
    ([32], "tanh", 1, 1, False, True),
    ([7], "tanh", 3, 1, True, False),
    ([8, 4], "relu", 3, 2, True, True),
    ([5, 6], "tanh", 2, 1, True, True),
])
def test_the_written_gradient_is_autograds(hidden, activation, inputs, outputs, stacked,
                                           bias):
    model = MLPModel(MLPConfig(in_features=inputs, out_features=outputs, bias=bias,
                               hidden=tuple(hidden), activation=activation))
    crit, cpu, trials, rows = nn.MSELoss(), torch.device("cpu"), 4, 50
    forward = batched._forward_for(model, cpu)
    written = batched._gradient_for(model, crit, forward, cpu)
    assert written is not None
    gen = torch.Generator().manual_seed(1)
    params = {n: torch.randn(trials, *p.shape, generator=gen, requires_grad=True)
              for n, p in model.named_parameters()}
    lead = (trials,) if stacked else ()
    x = torch.randn(*lead, rows, inputs, generator=gen)
    y = torch.randn(*lead, rows, outputs, generator=gen)
    want = torch.vmap(crit, in_dims=(0, 0 if stacked else None))(
        forward(params, x, stacked), y)
    want_grads = dict(zip(params, torch.autograd.grad(want.sum(), list(params.values())),
                          strict=True))
    with torch.no_grad():
        got, got_grads = written({n: p.detach() for n, p in params.items()}, x, y, True)
        loss_only, none = written({n: p.detach() for n, p in params.items()}, x, y, False)
    torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=0)
    torch.testing.assert_close(loss_only, got, rtol=0, atol=0)
    assert none == {} and got_grads.keys() == want_grads.keys()
    for name, g in want_grads.items():
        torch.testing.assert_close(got_grads[name], g, rtol=1e-4, atol=1e-6)


def test_the_written_tanh_is_torchs_within_a_unit_in_the_last_place():
    h = torch.linspace(-20, 20, 400_001)
    got, want = batched._tanh_(h * 2, batched._Space(), True), torch.tanh(h)
    assert float((got - want).abs().max()) <= 1.2e-7
    ulps = (got.view(torch.int32).long() - want.view(torch.int32).long()).abs()
    big = want.abs() >= 0.5  # where 1 - tanh² rests on the last bits
    assert int(ulps[big].max()) <= 1 and float((ulps[big] == 0).float().mean()) > 0.98


def test_a_diverging_trial_leaves_the_batch_as_it_fails_alone():
    x, y = make_linear_data(32, [[3.0]], [0.0], noise=0.1, seed=2)
    specs = _specs(MLP | {"seed": 0}, [{"optimizer": {"lr": 0.01}},
                                        {"optimizer": {"lr": 50.0}},
                                        {"optimizer": {"lr": 0.02}}])
    got = batch_fit(specs, 100 * x, y)
    assert isinstance(got[1], TrainingError) and got[1].type == "diverged"
    for g, spec in zip(got, specs, strict=True):
        assert_same(g, alone(spec, 100 * x, y))


def test_a_stopped_trial_leaves_the_batch_without_stopping_the_others(monkeypatch):
    # chunks of one epoch after the first: the chunk after the pruning is then never the
    # last (a fast machine ran the other 384 epochs in one chunk, and watch was not asked)
    monkeypatch.setattr(batched, "_CHUNK_SECONDS", 0.0)
    x, y = make_linear_data(32, [[1.0]], [0.0], noise=0.1, seed=3)
    specs = _specs(MLP | {"epochs": 400}, [{"seed": s} for s in range(3)])
    seen: list[list[int]] = []

    def watch(progress: list[batched.Progress]) -> set[int]:
        seen.append([i for i, *_ in progress])
        return {1}  # trial 1 is pruned at the first chunk's end

    got = batch_fit(specs, x, y, watch=watch)
    assert isinstance(got[1], TrainingError) and got[1].type == "cancelled"
    stopped_at = got[1].extra["history"][0][-1]
    assert 0 < stopped_at < 400 and got[1].job_error()["epoch"] == stopped_at
    assert all(1 not in s for s in seen[1:]) and len(seen) > 1
    for i in (0, 2):
        assert_same(got[i], alone(specs[i], x, y))


def test_only_trials_of_one_program_share_a_key():
    key = batched.batch_key
    mlp = TrainingSpec.model_validate(MLP | {"optimizer": {"name": "adam"}})
    assert key(mlp) == key(mlp.model_copy(update={"seed": 4, "epochs": 7}))
    assert key(mlp) != key(TrainingSpec.model_validate(
        MLP | {"optimizer": {"name": "adam", "amsgrad": True}}))
    assert key(mlp) != key(TrainingSpec.model_validate(
        {**MLP, "model": {"kind": "mlp", "hidden": [9]}, "optimizer": {"name": "adam"}}))
    assert key(TrainingSpec()) is None  # the closed form's
    assert key(mlp.model_copy(update={"early_stopping": {"patience": 3}})) is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("options", [
    {},  # the written gradient, one hidden tanh layer to one output
    {"model": {"kind": "mlp", "hidden": [8, 4], "activation": "relu"}},  # written, deeper
    {"loss": "huber"},  # autograd
])
def test_a_batch_on_cuda_is_each_trial_alone_on_cuda(options):
    x, y = make_linear_data(256, [[1.0, -2.0]], [0.5], noise=0.3, seed=1)
    specs = _specs(MLP | {"epochs": 200, "optimizer": {"name": "adam"}, "batch_size": 64}
                   | options,
                   [{"seed": s, "optimizer": {"lr": lr}}
                    for s, lr in ((0, 0.01), (1, 0.003), (2, 0.03))])
    for got, spec in zip(batch_fit(specs, x, y, "cuda"), specs, strict=True):
        assert isinstance(got, FitResult) and got.device == "cuda"
        assert_same(got, alone(spec, x, y, "cuda"))
