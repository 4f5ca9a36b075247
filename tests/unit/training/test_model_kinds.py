"""Every model kind and training option against an outside reference: scikit-learn,
numpy.polyfit, a plain PyTorch loop written out here, or gradients computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.training.fit import fit
from service.training.spec import TrainingSpec
from tests.helpers import make_linear_data, seed_arrays


def spec(**values) -> TrainingSpec:
    return TrainingSpec.model_validate({"seed": 0, **values})


def blobs(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two features, ``classes`` overlapping Gaussian clusters; y = class index."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.5, (classes, 2))
    labels = rng.integers(0, classes, n)
    x = centres[labels] + rng.normal(0, 1.0, (n, 2))
    return x.astype(np.float32), labels.astype(np.float32)[:, None]


def sklearn_reference(x: np.ndarray, labels: np.ndarray, weight_decay: float) -> np.ndarray:
    """scikit-learn's L2 logistic regression with the same objective as SGD's weight decay:
    the mean log loss + wd/2 |theta|^2, the bias included (a column of ones, no separate
    intercept), is sklearn's sum + |theta|^2 / (2C) with C = 1 / (n wd)."""
    from sklearn.linear_model import LogisticRegression

    a = np.hstack([x, np.ones((len(x), 1))]).astype(np.float64)
    clf = LogisticRegression(C=1.0 / (len(x) * weight_decay), fit_intercept=False, tol=1e-12,
                             max_iter=10_000)
    clf.fit(a, labels.ravel().astype(int))
    return clf.coef_  # (1 or C, features + 1)


@pytest.mark.parametrize("classes", [2, 3])
def test_logistic_with_weight_decay_converges_to_sklearn(classes):
    x, y = blobs(300, classes, seed=classes)
    wd = 0.01
    # lr 1: within 2e-5 of the optimum after 1000 epochs (lr 0.5 needs 2000)
    result = fit(spec(model={"kind": "logistic"}, epochs=1000,
                      loss="bce" if classes == 2 else "cross_entropy",
                      optimizer={"name": "sgd", "lr": 1.0, "weight_decay": wd}), x, y)
    coef = sklearn_reference(x, y, wd)
    ours = np.hstack([result.weight, result.bias[:, None]])
    assert ours.shape == coef.shape == ((1 if classes == 2 else classes), 3)
    np.testing.assert_allclose(ours, coef, atol=1e-3)
    assert result.engine == "autograd" and result.r2 is None
    assert 0.5 < result.accuracy <= 1.0
    assert result.log_loss == pytest.approx(result.train_loss)


def test_logistic_takes_one_hot_rows_as_class_indices():
    x, labels = blobs(120, 3, seed=7)
    one_hot = np.eye(3, dtype=np.float32)[labels[:, 0].astype(int)]
    s = spec(model={"kind": "logistic"}, loss="cross_entropy", epochs=50, lr=0.1)
    a, b = fit(s, x, labels), fit(s, x, one_hot)
    np.testing.assert_array_equal(a.loss, b.loss)
    np.testing.assert_array_equal(a.weight, b.weight)
    assert a.config["classes"] == 3 and a.config["out_features"] == 3


def test_logistic_metrics_are_accuracy_and_log_loss_of_the_fitted_model():
    x, y = blobs(200, 2, seed=11)
    r = fit(spec(model={"kind": "logistic"}, loss="bce", epochs=300, lr=0.5,
                 validation_fraction=0.25), x, y)
    z = torch.from_numpy(x.astype(np.float64)) @ torch.from_numpy(r.weight.astype(np.float64)).T
    z = z + torch.from_numpy(r.bias.astype(np.float64))
    p = torch.sigmoid(z).numpy()[:, 0]
    # the metrics are on the training split: rebuild it as fit does
    from service.training.fit import split_rows

    train, _ = split_rows(len(x), 0.25, 0)
    t, pt = y[train, 0], p[train]
    expected_nll = -np.mean(t * np.log(pt) + (1 - t) * np.log(1 - pt))
    assert r.log_loss == pytest.approx(expected_nll, rel=1e-4)
    assert r.accuracy == pytest.approx(np.mean((pt > 0.5) == (t == 1)))
    assert r.val_accuracy is not None and r.final_val_loss is not None


def test_polynomial_matches_numpy_polyfit():
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (200, 1)).astype(np.float32)
    y = (0.5 - 1.2 * x + 0.8 * x**2 + 2.0 * x**3 + 0.05 * rng.normal(size=x.shape))
    y = y.astype(np.float32)
    r = fit(spec(model={"kind": "polynomial", "degree": 3}, epochs=20_000, lr=0.3), x, y)
    assert r.engine == "closed_form"
    coef = np.polyfit(x[:, 0].astype(np.float64), y[:, 0].astype(np.float64), 3)  # x^3 .. 1
    np.testing.assert_allclose(r.weight[0], coef[:3][::-1], atol=1e-4)  # x, x^2, x^3
    assert r.bias[0] == pytest.approx(coef[3], abs=1e-4)
    assert r.state["linear.weight"].shape == (1, 3)


@pytest.mark.parametrize("interactions", [False, True])
def test_polynomial_fast_paths_match_the_autograd_loop(interactions):
    w = np.array([[1.0, -0.5]])
    x, y = make_linear_data(100, w, np.array([0.2]), noise=0.1, seed=4)
    y = y + 0.3 * x[:, :1] * x[:, 1:]
    model = {"kind": "polynomial", "degree": 2, "interactions": interactions}
    for extra in ({}, {"batch_size": 16}):
        s = spec(model=model, epochs=300, lr=0.05, **extra)
        fast, plain = fit(s, x, y), fit(s.model_copy(update={"engine": "autograd"}), x, y)
        assert fast.engine == ("fused" if extra else "closed_form")
        np.testing.assert_allclose(fast.loss, plain.loss, rtol=1e-5)
        np.testing.assert_allclose(fast.weight, plain.weight, atol=1e-5)
    assert fast.weight.shape == (1, 5 if interactions else 4)


def test_mlp_learns_sine():
    x = np.linspace(-3, 3, 200, dtype=np.float32)[:, None]
    y = np.sin(x)
    r = fit(spec(model={"kind": "mlp", "hidden": [32, 32], "activation": "tanh"},
                 optimizer={"name": "adam", "lr": 0.003}, epochs=400), x, y)  # ~1.3e-4
    # (at lr 0.01 Adam's loss spikes now and then; whether epoch 400 fell on a spike
    # depended on the CPU's kernels: 1e-5 on one machine, 1.3e-3 on an AVX-512 one)
    assert r.train_loss < 1e-3
    assert r.weight is None
    assert [k for k in r.state] == ["layers.0.weight", "layers.0.bias", "layers.2.weight",
                                    "layers.2.bias", "layers.4.weight", "layers.4.bias"]
    assert r.state["layers.2.weight"].shape == (32, 32)


def test_mlp_initial_weights_are_the_seeded_modules():
    from models.mlp import MLPConfig, MLPModel

    x, y = seed_arrays()
    r = fit(spec(model={"kind": "mlp", "hidden": [4], "activation": "relu"}, epochs=1,
                 lr=1e-9), x, y)
    torch.manual_seed(0)
    ref = MLPModel(MLPConfig(1, 1, True, (4,), "relu"))
    for name, value in ref.state_dict().items():
        np.testing.assert_allclose(r.state[name], value.numpy(), atol=1e-6)


def test_standardized_seed_fit_reports_weight_and_bias_in_original_units():
    x, y = seed_arrays()
    r = fit(spec(standardize=True), x, y)
    assert r.weight[0, 0] == pytest.approx(0.26, abs=5e-3)
    assert r.bias[0] == pytest.approx(0.75, abs=5e-3)
    n = r.normalization
    assert n["x_mean"][0] == pytest.approx(float(x.mean()), rel=1e-6)
    assert n["y_std"][0] == pytest.approx(float(y.std()), rel=1e-6)
    # the checkpoint's layer is in standardized units: with the statistics it is the same map
    w_s, b_s = r.state["linear.weight"][0, 0], r.state["linear.bias"][0]
    x0 = np.float64(5.0)
    via_std = (w_s * (x0 - n["x_mean"][0]) / n["x_std"][0] + b_s) * n["y_std"][0] + n["y_mean"][0]
    assert via_std == pytest.approx(r.weight[0, 0] * x0 + r.bias[0], rel=1e-5)


def test_standardize_trains_on_the_scaled_rows_as_a_plain_loop_does():
    x, y = seed_arrays()
    r = fit(spec(standardize=True, epochs=500, engine="autograd"), x, y)
    xs = ((x - x.mean(0, dtype=np.float64)) / x.std(0, dtype=np.float64)).astype(np.float32)
    ys = ((y - y.mean(0, dtype=np.float64)) / y.std(0, dtype=np.float64)).astype(np.float32)
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    ref = []
    for _ in range(500):
        loss = torch.nn.functional.mse_loss(model(torch.from_numpy(xs)), torch.from_numpy(ys))
        opt.zero_grad()
        loss.backward()
        opt.step()
        ref.append(loss.item())
    np.testing.assert_allclose(r.loss, ref, rtol=1e-5)
    np.testing.assert_allclose(r.state["linear.weight"], model.weight.detach(), atol=1e-6)
    closed = fit(spec(standardize=True, epochs=500), x, y)
    assert closed.engine == "closed_form"
    np.testing.assert_allclose(closed.loss, ref, rtol=1e-5)


def reference_early_stopping(x, y, patience, min_delta, epochs, lr, seed, fraction):
    """A plain loop that reads the validation loss every epoch, keeping the best weights;
    epoch e scores the weights it starts from, and the final weights are scored at the end.
    Returns (stop epoch or None, epochs behind the kept weights, kept weights, losses)."""
    from service.training.fit import split_rows

    train, val = split_rows(len(x), fraction, seed)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    xv, yv = torch.from_numpy(x[val]), torch.from_numpy(y[val])
    torch.manual_seed(seed)
    model = torch.nn.Linear(x.shape[1], y.shape[1])
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    best, best_after, since, kept, losses = float("inf"), 0, 0, None, []

    def score(after: int) -> None:
        nonlocal best, best_after, since, kept
        with torch.no_grad():
            v = torch.nn.functional.mse_loss(model(xv), yv).item()
        if v < best - min_delta:
            best, best_after, since = v, after, 0
            kept = [p.detach().clone() for p in model.parameters()]
        else:
            since += 1

    for epoch in range(1, epochs + 1):
        score(epoch - 1)
        loss = torch.nn.functional.mse_loss(model(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if since >= patience:
            return epoch, best_after, kept, losses
    score(epochs)
    return None, best_after, kept, losses


@pytest.mark.parametrize("engine", ["auto", "autograd"])
def test_early_stopping_stops_where_a_per_epoch_check_does(engine):
    # noisy data and a small validation split: the validation loss turns up early
    x, y = make_linear_data(40, np.array([[1.0, 0.5, -0.3]]), np.array([0.1]), noise=1.0, seed=5)
    s = spec(epochs=3000, lr=0.05, validation_fraction=0.3, engine=engine,
             early_stopping={"patience": 25, "min_delta": 1e-4})
    r = fit(s, x, y)
    stop, best_after, kept, losses = reference_early_stopping(x, y, 25, 1e-4, 3000, 0.05, 0, 0.3)
    assert stop is not None, "the reference must stop early for this test to mean anything"
    assert r.engine == ("fused" if engine == "auto" else "autograd")
    assert r.stopped["epoch"] == stop and r.stopped["best_epoch"] == best_after
    assert int(r.epochs[-1]) == stop
    np.testing.assert_allclose(r.loss, losses, rtol=1e-5)
    np.testing.assert_allclose(r.state["linear.weight"], kept[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(r.state["linear.bias"], kept[1].numpy(), atol=1e-6)


def test_without_a_stop_the_final_weights_are_scored_too():
    x, y = make_linear_data(60, np.array([[2.0]]), np.array([0.5]), noise=0.01, seed=1)
    s = spec(epochs=200, lr=0.005, validation_fraction=0.2, early_stopping={"patience": 500})
    r = fit(s, x, y)
    _, best_after, kept, _ = reference_early_stopping(x, y, 500, 0.0, 200, 0.005, 0, 0.2)
    # a slow rate: the validation loss falls every epoch, so the final weights are the best
    assert r.stopped is None and len(r.loss) == 200 and best_after == 200
    plain = fit(s.model_copy(update={"early_stopping": None}), x, y)  # the closed form
    np.testing.assert_allclose(r.state["linear.weight"], plain.state["linear.weight"], atol=1e-6)
    one = fit(s.model_copy(update={"epochs": 1}), x, y)  # one step is better than none
    plain_one = fit(s.model_copy(update={"epochs": 1, "early_stopping": None}), x, y)
    np.testing.assert_allclose(one.state["linear.weight"], plain_one.state["linear.weight"],
                               atol=1e-6)
    untrained = fit(spec(epochs=1, lr=1e-12), x, y)  # the seeded initial weights, near enough
    assert not np.allclose(one.state["linear.weight"], untrained.state["linear.weight"],
                           atol=1e-3)


def test_without_a_stop_the_best_weights_in_between_are_kept():
    # noisy: the validation loss turns up, but a patience longer than the run never stops it
    x, y = make_linear_data(40, np.array([[1.0, 0.5, -0.3]]), np.array([0.1]), noise=1.0, seed=5)
    r = fit(spec(epochs=400, lr=0.05, validation_fraction=0.3,
                 early_stopping={"patience": 1000}), x, y)
    stop, best_after, kept, _ = reference_early_stopping(x, y, 1000, 0.0, 400, 0.05, 0, 0.3)
    assert stop is None and r.stopped is None and 0 < best_after < 400
    np.testing.assert_allclose(r.state["linear.weight"], kept[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(r.state["linear.bias"], kept[1].numpy(), atol=1e-6)


SCHEDULERS = {
    "step": ({"name": "step", "step_size": 7, "gamma": 0.5},
             lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5)),
    "exponential": ({"name": "exponential", "gamma": 0.97},
                    lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.97)),
    "cosine": ({"name": "cosine", "eta_min": 0.001},
               lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=60, eta_min=0.001)),
    "reduce_on_plateau": (
        {"name": "reduce_on_plateau", "factor": 0.5, "patience": 2, "threshold": 0.3},
        lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=2,
                                                             threshold=0.3)),
}


@pytest.mark.parametrize("name", SCHEDULERS)
def test_schedulers_and_grad_clip_match_a_plain_loop(name):
    sched_spec, make = SCHEDULERS[name]
    x, y = make_linear_data(50, np.array([[3.0, -1.0]]), np.array([2.0]), noise=0.2, seed=8)
    r = fit(spec(epochs=60, lr=0.1, scheduler=sched_spec, grad_clip=0.5), x, y)
    assert r.engine == "autograd"
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = make(opt)
    ref = []
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(model(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        sched.step(loss.detach()) if name == "reduce_on_plateau" else sched.step()
        ref.append(loss.item())
    np.testing.assert_allclose(r.loss, ref, rtol=1e-5)
    np.testing.assert_allclose(r.state["linear.weight"], model.weight.detach(), atol=1e-6)
    assert opt.param_groups[0]["lr"] < 0.1  # the schedule did move the rate


def test_trace_of_the_seed_job_matches_gradients_by_hand():
    x, y = seed_arrays()
    r = fit(spec(trace_epochs=3, epochs=500), x, y)
    t = r.trace
    assert r.engine == "autograd" and len(t["epochs"]) == 3 and t["rows"] == 15  # all 15
    assert t["graph"]["linear.bias"] == ["MseLossBackward0", "AddmmBackward0", "AccumulateGrad"]
    # nn.Linear computes x @ W.T: the weight's path goes through the transpose
    assert t["graph"]["linear.weight"] == ["MseLossBackward0", "AddmmBackward0", "TBackward0",
                                           "AccumulateGrad"]
    xs, ys = x[:, 0].astype(np.float64), y[:, 0].astype(np.float64)
    n, lr = len(xs), 0.01
    for i, e in enumerate(t["epochs"]):
        p = e["parameters"]
        w, b = p["linear.weight"]["before"][0][0], p["linear.bias"]["before"][0]
        pred = w * xs + b
        assert e["epoch"] == i + 1 and e["lr"] == lr
        np.testing.assert_allclose(np.asarray(e["output"])[:, 0], pred, rtol=1e-5)
        assert e["loss"] == pytest.approx(np.mean((pred - ys) ** 2), rel=1e-5)
        dw = 2 / n * np.sum((pred - ys) * xs)
        db = 2 / n * np.sum(pred - ys)
        assert p["linear.weight"]["grad"][0][0] == pytest.approx(dw, rel=1e-4)
        assert p["linear.bias"]["grad"][0] == pytest.approx(db, rel=1e-4)
        assert p["linear.weight"]["after"][0][0] == pytest.approx(w - lr * dw, rel=1e-5)
        assert p["linear.bias"]["after"][0] == pytest.approx(b - lr * db, rel=1e-5)
        if i:  # each step starts where the last one ended
            prev = t["epochs"][i - 1]["parameters"]["linear.weight"]["after"]
            assert p["linear.weight"]["before"] == prev
    # the traced run ends where the untraced plain loop does
    plain = fit(spec(engine="autograd", epochs=500), x, y)
    np.testing.assert_allclose(r.loss, plain.loss, rtol=1e-6)


def test_classifier_targets_that_are_not_classes_fail_naming_the_row():
    from service.errors import TrainingError

    x, y = seed_arrays()
    with pytest.raises(TrainingError, match="row 0"):
        fit(spec(model={"kind": "logistic"}, loss="bce", epochs=1), x, y)


def test_a_trace_keeps_the_first_20_rows_and_standardized_values():
    x, y = make_linear_data(30, np.array([[2.0]]), np.array([1.0]), noise=0.1, seed=2)
    r = fit(spec(trace_epochs=1, epochs=3, standardize=True), x, y)
    e = r.trace["epochs"][0]
    assert r.trace["rows"] == 20 and len(e["output"]) == len(e["target"]) == 20
    ys = (y - y.mean(dtype=np.float64)) / y.std(dtype=np.float64)
    np.testing.assert_allclose(np.asarray(e["target"])[:, 0], ys[:20, 0], rtol=1e-5)
