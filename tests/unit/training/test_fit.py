from typing import Any

import numpy as np
import pytest
import torch

from service.errors import Cancelled, Diverged
from service.training.fit import fit
from service.training.spec import TrainingSpec
from tests.helpers import (
    make_linear_data,
    plain_torch_loop,
    seed_arrays,
    seed_example,
    seed_plain_loop,
)

ENGINES = {"autograd": "autograd", "auto": "closed_form"}


@pytest.fixture(scope="module", params=list(ENGINES))
def seed_fit(request) -> tuple[str, Any]:
    """The seed job (10 000 epochs) on each engine, fitted once for the tests that read it."""
    return request.param, fit(TrainingSpec(seed=0, engine=request.param), *seed_arrays())


def test_seed_parity_with_reference_figures(seed_fit):
    engine, result = seed_fit
    ref = seed_example()["reference"]
    assert result.weight[0, 0] == pytest.approx(0.25999, abs=1e-4)
    assert result.bias[0] == pytest.approx(0.74765, abs=1e-3)
    assert result.train_loss == pytest.approx(0.168915, abs=1e-5)
    for epoch, loss in ref["sgd_seed0_loss_at_epoch"].items():
        assert result.loss[int(epoch) - 1] == pytest.approx(loss, rel=1e-5)
    assert result.lstsq_loss == pytest.approx(ref["ordinary_least_squares"]["mse"], rel=1e-5)
    assert result.engine == ENGINES[engine]


def test_seed_history_matches_plain_loop_at_every_epoch(seed_fit):
    _, result = seed_fit
    losses, w, b = seed_plain_loop(10_000)
    assert list(result.epochs[:3]) == [1, 2, 3] and len(result.epochs) == 10_000
    np.testing.assert_allclose(result.loss, losses, rtol=1e-5)
    np.testing.assert_allclose(result.weight, w, atol=1e-4)
    np.testing.assert_allclose(result.bias, b, atol=1e-4)


@pytest.mark.parametrize("engine", ENGINES)
def test_five_features_two_targets_reach_least_squares(engine):
    w = np.array([[1.0, -2.0, 0.5, 3.0, 0.0], [0.0, 1.0, 1.0, -1.0, 2.0]])
    x, y = make_linear_data(200, w, np.array([0.5, -1.0]), noise=0.1, seed=1)
    result = fit(TrainingSpec(seed=3, epochs=500, lr=0.1, engine=engine), x, y)
    assert result.engine == ENGINES[engine]
    a = np.hstack([x, np.ones((len(x), 1))]).astype(np.float64)
    coef, *_ = np.linalg.lstsq(a, y.astype(np.float64), rcond=None)
    np.testing.assert_allclose(result.weight, coef[:5].T, atol=1e-4)
    np.testing.assert_allclose(result.bias, coef[5], atol=1e-4)
    assert result.train_loss == pytest.approx(result.lstsq_loss, rel=1e-4)
    assert result.r2 > 0.99


def test_minibatch_runs_are_reproducible_and_differ_by_seed():
    x, y = make_linear_data(100, np.array([[2.0]]), np.array([1.0]), noise=0.1, seed=0)
    spec = TrainingSpec(seed=5, epochs=20, batch_size=16)
    a, b = fit(spec, x, y), fit(spec, x, y)
    np.testing.assert_array_equal(a.loss, b.loss)
    np.testing.assert_array_equal(a.weight, b.weight)
    c = fit(spec.model_copy(update={"seed": 6}), x, y)
    assert not np.array_equal(a.loss, c.loss)


def test_minibatch_epoch_loss_is_the_row_weighted_mean_of_batches():
    x, y = make_linear_data(10, np.array([[1.0]]), np.array([0.0]), noise=0.5, seed=2)
    spec = TrainingSpec(seed=0, epochs=1, batch_size=4, lr=0.05)
    result = fit(spec, x, y)
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    xt, yt, total = torch.from_numpy(x), torch.from_numpy(y), 0.0
    for s in range(0, 10, 4):
        idx = perm[s : s + 4]
        loss = torch.nn.functional.mse_loss(model(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    assert result.loss[0] == pytest.approx(total / 10, rel=1e-6)


def test_divergence_names_the_epoch_and_keeps_earlier_history():
    x, y = seed_arrays()
    with pytest.raises(Diverged) as err:
        fit(TrainingSpec(seed=0, lr=10.0, epochs=1000), x, y)
    epoch = err.value.extra["epoch"]
    assert 1 < epoch < 1000
    assert "learning rate" in err.value.extra["hint"]
    epochs, losses, _ = err.value.extra["history"]
    assert len(losses) == epoch - 1 and np.isfinite(losses).all()


def test_should_stop_cancels_between_chunks():
    x, y = seed_arrays()
    seen = []
    with pytest.raises(Cancelled):
        fit(TrainingSpec(seed=0, epochs=10_000_000, engine="autograd"), x, y,
            on_progress=lambda e, loss, v: seen.append(e), should_stop=lambda: len(seen) >= 2)
    assert 0 < seen[-1] < 10_000_000


def test_validation_split_and_log_every():
    x, y = make_linear_data(50, np.array([[1.5]]), np.array([0.2]), noise=0.3, seed=4)
    result = fit(TrainingSpec(seed=1, epochs=95, log_every=10, validation_fraction=0.2), x, y)
    assert list(result.epochs) == [10, 20, 30, 40, 50, 60, 70, 80, 90, 95]
    assert result.val_loss is not None and len(result.val_loss) == len(result.epochs)
    assert result.final_val_loss is not None and result.final_val_loss > 0


# the reference: each configuration written directly against torch, with torch's defaults
# (the service's defaults for these options are torch's: lr 0.01, Huber delta 1, Adam's betas
# and eps, AdamW's weight decay 0.01, RMSprop's alpha)
OTHER_LOSSES_AND_OPTIMIZERS = {
    "l1": ({"loss": "l1"}, torch.nn.L1Loss,
           lambda p: torch.optim.SGD(p, lr=0.01)),
    "huber": ({"loss": "huber"}, torch.nn.HuberLoss,
              lambda p: torch.optim.SGD(p, lr=0.01)),
    "adam": ({"optimizer": {"name": "adam", "lr": 0.05}}, torch.nn.MSELoss,
             lambda p: torch.optim.Adam(p, lr=0.05)),
    "adamw": ({"optimizer": {"name": "adamw", "lr": 0.05}}, torch.nn.MSELoss,
              lambda p: torch.optim.AdamW(p, lr=0.05)),
    "rmsprop": ({"optimizer": {"name": "rmsprop", "lr": 0.01}}, torch.nn.MSELoss,
                lambda p: torch.optim.RMSprop(p, lr=0.01)),
    "nesterov": ({"optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": True}},
                 torch.nn.MSELoss,
                 lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True)),
}


@pytest.mark.parametrize("name", OTHER_LOSSES_AND_OPTIMIZERS)
def test_other_losses_and_optimizers_match_torch(name):
    spec, make_crit, make_opt = OTHER_LOSSES_AND_OPTIMIZERS[name]
    x, y = seed_arrays()
    s = TrainingSpec.model_validate({**spec, "epochs": 500, "seed": 0})
    result = fit(s, x, y)
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    crit, opt = make_crit(), make_opt(model.parameters())
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    ref = []
    for _ in range(s.epochs):
        loss = crit(model(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ref.append(loss.item())
    np.testing.assert_allclose(result.loss, ref, rtol=1e-5)
    np.testing.assert_allclose(result.weight, model.weight.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(result.bias, model.bias.detach().numpy(), atol=1e-5)
    assert result.lstsq_loss is None or s.loss == "mse"


def test_flat_seed_hyperparameters_are_accepted():
    hp = seed_example()["hyperparameters"]
    spec = TrainingSpec.model_validate(hp)
    assert spec.optimizer.name == "sgd" and spec.optimizer.lr == 0.01
    assert spec.model.kind == "linear" and spec.model.bias is True
    assert spec.epochs == 10_000 and spec.batch_size is None


@pytest.mark.parametrize(
    "spec",
    [
        # a few hundred epochs: each run is well into convergence, where float32 rounding
        # in the loop is what the 1e-5 tolerance has to hold
        {"epochs": 500, "lr": 0.1},
        {"epochs": 5, "lr": 1.2},  # lr * curvature > 1 in some directions: r^t alternates
        {"epochs": 500, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}},
        {"epochs": 500, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.8,
                                      "nesterov": True}},
        {"epochs": 500, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.5,
                                      "dampening": 0.3, "weight_decay": 0.05}},
        {"epochs": 400, "optimizer": {"name": "sgd", "lr": 0.1, "weight_decay": 0.1}},
        {"epochs": 377, "lr": 0.1, "log_every": 10, "validation_fraction": 0.25},
        {"epochs": 500, "lr": 0.1, "model": {"kind": "linear", "bias": False}},
    ],
)
def test_closed_form_matches_the_autograd_loop(spec):
    """Every fast path gives the plain path's numbers: the loss at every logged epoch within
    1e-5 relative, the weights within 1e-4, on 5 features and 2 targets."""
    w = np.array([[1.0, -2.0, 0.5, 3.0, 0.0], [0.0, 1.0, 1.0, -1.0, 2.0]])
    x, y = make_linear_data(120, w, np.array([0.5, -1.0]), noise=0.3, seed=7)
    s = TrainingSpec.model_validate({**spec, "seed": 11})
    fast = fit(s, x, y)
    plain = fit(s.model_copy(update={"engine": "autograd"}), x, y)
    assert (fast.engine, plain.engine) == ("closed_form", "autograd")
    np.testing.assert_array_equal(fast.epochs, plain.epochs)
    np.testing.assert_allclose(fast.loss, plain.loss, rtol=1e-5)
    np.testing.assert_allclose(fast.weight, plain.weight, atol=1e-4)
    if s.model.bias:
        np.testing.assert_allclose(fast.bias, plain.bias, atol=1e-4)
    else:
        assert fast.bias is None and plain.bias is None
    if s.validation_fraction:
        np.testing.assert_allclose(fast.val_loss, plain.val_loss, rtol=1e-5)
    assert fast.train_loss == pytest.approx(plain.train_loss, rel=1e-5)


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ({"loss": "l1"}, "l1 loss has no closed form"),
        ({"optimizer": {"name": "adam"}}, "adam is not plain SGD"),
        ({"batch_size": 4, "loss": "huber"}, "huber loss has no closed form"),
        ({"batch_size": 4, "grad_clip": 1.0}, "mini-batches"),
        ({"engine": "autograd"}, "the autograd engine was asked for"),
    ],
)
def test_specs_without_a_closed_form_run_the_plain_loop(spec, why):
    from service.training.engines import why_not_closed_form as supports

    x, y = seed_arrays()
    s = TrainingSpec.model_validate({**spec, "seed": 0, "epochs": 30})
    assert supports(s, len(x)) == why
    result = fit(s, x, y)
    assert result.engine == "autograd"


def test_an_unstable_learning_rate_falls_back_to_the_loop_and_diverges_there():
    x, y = seed_arrays()
    with pytest.raises(Diverged) as err:
        fit(TrainingSpec(seed=0, lr=10.0, epochs=1000), x, y)
    ref, _, _ = plain_torch_loop(x, y, 20, seed=0, lr=10.0)
    assert err.value.extra["epoch"] == int(np.argmax(~np.isfinite(ref))) + 1


@pytest.mark.parametrize(
    "spec",
    [
        {"epochs": 4, "batch_size": 16, "lr": 0.05},
        {"epochs": 4, "batch_size": 7, "optimizer": {"name": "sgd", "lr": 0.02,
                                                     "momentum": 0.9, "nesterov": True,
                                                     "weight_decay": 0.01}},
        {"epochs": 3, "batch_size": 10, "optimizer": {"name": "sgd", "lr": 0.02,
                                                      "momentum": 0.5, "dampening": 0.2}},
        {"epochs": 3, "batch_size": 32, "lr": 0.05, "validation_fraction": 0.2},
        {"epochs": 3, "batch_size": 32, "lr": 0.05, "model": {"kind": "linear", "bias": False}},
    ],
)
def test_fused_minibatch_sgd_matches_the_autograd_loop(spec, monkeypatch):
    w = np.array([[1.0, -2.0, 0.5, 3.0, 0.0], [0.0, 1.0, 1.0, -1.0, 2.0]])
    x, y = make_linear_data(300, w, np.array([0.5, -1.0]), noise=0.3, seed=9)
    import service.training.epoch_loop as epoch_loop

    monkeypatch.setattr(epoch_loop, "_GATHER_ROWS", 64)  # several gathers per epoch, a tail
    s = TrainingSpec.model_validate({**spec, "seed": 2})
    fast = fit(s, x, y)
    plain = fit(s.model_copy(update={"engine": "autograd"}), x, y)
    assert (fast.engine, plain.engine) == ("fused", "autograd")
    np.testing.assert_allclose(fast.loss, plain.loss, rtol=1e-5)
    np.testing.assert_allclose(fast.weight, plain.weight, atol=1e-4)
    if s.model.bias:
        np.testing.assert_allclose(fast.bias, plain.bias, atol=1e-4)
    if s.validation_fraction:
        np.testing.assert_allclose(fast.val_loss, plain.val_loss, rtol=1e-5)


def test_exact_fit_measures_the_least_squares_residual():
    from service.training.closed_form import sufficient_stats

    x, y = make_linear_data(500, np.array([[2.0, -1.0, 0.5]]), np.array([3.0]), noise=0.0,
                            seed=5)
    stats = sufficient_stats(x, y, bias=True)
    a = np.hstack([x, np.ones((len(x), 1))]).astype(np.float64)
    coef, *_ = np.linalg.lstsq(a, y.astype(np.float64), rcond=None)
    direct = float(np.mean((a @ coef - y) ** 2))
    assert stats.loss_ls == pytest.approx(direct, rel=1e-3, abs=1e-15)
    np.testing.assert_allclose(stats.theta_ls, coef, rtol=1e-6)
