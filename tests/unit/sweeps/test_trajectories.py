"""A closed-form batch's trajectories (service/training/closed_form.py's ``trials_together``:
every trial of the batch from one eigendecomposition, as arrays with a trial axis) held to
each trial's trajectory computed alone, on the cases the batched arrays treat apart:
oscillating plain steps (r < 0), a direction without curvature, momentum with dampening,
Nesterov and weight decay, a recurrence near its critically damped point, few epochs logged
out of many, a validation split, and trials whose recurrence grows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.training import closed_form
from service.training.fit import logged_epochs
from service.training.spec import TrainingSpec
from tests.helpers import make_linear_data, seed_example


def _theta0(d: int, k: int, seed: int = 0) -> np.ndarray:
    torch.manual_seed(seed)
    layer = torch.nn.Linear(d, k)
    return np.vstack([layer.weight.detach().double().numpy().T,
                      layer.bias.detach().double().numpy()[None, :]])


def _spec(epochs: int, log_every: int = 1, **optimizer: float | bool) -> TrainingSpec:
    return TrainingSpec.model_validate({"epochs": epochs, "log_every": log_every, "seed": 0,
                                        "optimizer": {"name": "sgd", **optimizer}})


def _stats(x: np.ndarray, y: np.ndarray) -> closed_form.Stats:
    return closed_form.sufficient_stats(x, y, True)


def _compare(specs: list[TrainingSpec], theta0: np.ndarray, train: closed_form.Stats,
             val: closed_form.Stats | None = None) -> list[str]:
    """Each spec's trajectory from the batch against its own; returns how each came out
    (``ok`` or ``unstable``)."""
    alone = {}
    for spec in specs:
        try:
            alone[spec.model_dump_json()] = closed_form._trajectory(
                spec, theta0, train, val, logged_epochs(spec))
        except closed_form.Unstable:
            alone[spec.model_dump_json()] = None
    out = []
    with closed_form.trials_together(specs) as trials:
        for spec in specs:
            want = alone[spec.model_dump_json()]
            if want is None:
                with pytest.raises(closed_form.Unstable):
                    closed_form.batch_trajectory(trials, spec) if trials.used else \
                        closed_form.trajectory(spec, theta0, train, val, logged_epochs(spec))
                out.append("unstable")
                continue
            got = closed_form.trajectory(spec, theta0, train, val, logged_epochs(spec))
            again = closed_form.batch_trajectory(trials, spec)  # the same, without a fit
            assert again is not None
            for g in (got, again):
                np.testing.assert_allclose(g[0], want[0], rtol=1e-10, atol=1e-12)
                np.testing.assert_allclose(g[1], want[1], rtol=1e-10)
                if val is None:
                    assert g[2] is None and want[2] is None
                else:
                    np.testing.assert_allclose(g[2], want[2], rtol=1e-10)
            out.append("ok")
        # every trajectory came from the batch's arrays: none was computed alone
        assert trials.used is not None and len(trials.paths) == len(specs)
    return out


def test_plain_steps_that_oscillate_and_momentum_variants_match_each_trial_alone():
    seed = seed_example()
    x, y = np.array(seed["x"], np.float32), np.array(seed["y"], np.float32)
    train = _stats(x, y)
    lam = np.linalg.eigvalsh(train.gram) * 2 / train.n
    specs = [
        _spec(3000, lr=0.001),
        _spec(3000, lr=1.5 / lam.max()),  # r = 1 - lr a < 0 in the steepest direction
        _spec(3000, lr=2.5 / lam.max()),  # grows
        _spec(3000, lr=0.005, momentum=0.9),
        _spec(3000, lr=0.005, momentum=0.5, dampening=0.3),
        _spec(3000, lr=0.004, momentum=0.7, nesterov=True),
        _spec(3000, lr=0.004, momentum=0.6, weight_decay=0.05),
        _spec(3000, lr=4.5 / lam.max(), momentum=0.99),  # grows: lr a > 2 (1 + mu)
        _spec(2000, lr=0.002, momentum=0.3),  # other epochs: a group of its own
    ]
    assert _compare(specs, _theta0(1, 1), train) == [
        "ok", "ok", "unstable", "ok", "ok", "ok", "ok", "unstable", "ok"]


def test_a_recurrence_near_critical_damping_is_computed_as_alone():
    x, y = make_linear_data(50, [[1.0, -2.0]], [0.5], 0.1, seed=2)
    train = _stats(x, y)
    lam = np.linalg.eigvalsh(train.gram) * 2 / train.n
    lr = 0.5 / lam.max()
    mu = (1 - np.sqrt(lr * lam.max())) ** 2  # a double eigenvalue of T in that direction
    specs = [_spec(800, lr=lr, momentum=float(mu)), _spec(800, lr=lr, momentum=0.5)]
    assert _compare(specs, _theta0(2, 1), train) == ["ok", "ok"]


def test_a_direction_without_curvature_and_few_epochs_logged_of_many():
    x, y = make_linear_data(40, [[1.0, 0.5]], [0.2], 0.1, seed=3)
    x = np.hstack([x, x[:, :1]])  # a repeated column: the Gram matrix is singular
    train = _stats(x, y)
    specs = [_spec(5000, 997, lr=0.01), _spec(5000, 997, lr=0.02),
             _spec(5000, 997, lr=0.01, momentum=0.9)]  # momentum: a flat direction grows
    assert _compare(specs, _theta0(3, 1), train) == ["ok", "ok", "unstable"]


def test_several_targets_and_a_validation_split():
    x, y = make_linear_data(60, [[1.5, -2.0, 0.5], [0.3, 0.0, 1.0]], [0.2, -1.0], 0.1, seed=1)
    train, val = _stats(x[:45], y[:45]), _stats(x[45:], y[45:])
    specs = [_spec(600, 7, lr=lr, momentum=m, nesterov=n)
             for lr in (0.01, 0.05) for m, n in ((0.0, False), (0.5, False), (0.5, True))]
    assert _compare(specs, _theta0(3, 2), train, val) == ["ok"] * 6
