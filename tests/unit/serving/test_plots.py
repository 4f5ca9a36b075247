"""The figures: what is drawn (read back from the artists), and that it renders to PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from PIL import Image

from service.serving.plots import MAX_POINTS, _subsample, fit_figure, loss_figure, png
from tests.helpers import linear_model, make_linear_data, seed_arrays


def test_one_feature_draws_the_data_in_red_and_the_fitted_line():
    x, y = seed_arrays()
    fig = fit_figure(x, y, linear_model([[0.26]], [0.75]), ["x"], ["y"], "seed v1")
    ax = fig.axes[0]
    data, line = ax.lines
    assert data.get_linestyle() == "None" and data.get_marker() == "o"
    assert to_rgba(data.get_color()) == to_rgba("red")
    np.testing.assert_allclose(data.get_xdata(), x[:, 0])
    np.testing.assert_allclose(data.get_ydata(), y[:, 0])
    lx, ly = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    assert (lx.min(), lx.max()) == pytest.approx((x.min(), x.max()))
    np.testing.assert_allclose(ly, 0.26 * lx + 0.75, rtol=1e-6)
    assert "0.26 x + 0.75" in line.get_label()
    assert "0.26" in line.get_label() and "0.75" in line.get_label()
    assert ax.get_title() == "seed v1" and ax.get_xlabel() == "x" and ax.get_ylabel() == "y"


def test_more_features_draw_predicted_against_actual():
    w, b = np.array([[1.0, -2.0, 0.5], [0.3, 0.0, 1.0]]), np.array([0.1, -0.2])
    x, y = make_linear_data(50, w, b, noise=0.1, seed=1)
    fig = fit_figure(x, y, linear_model(w, b), ["a", "b", "c"], ["u", "v"], "m")
    ax = fig.axes[0]
    *series, diagonal = ax.lines
    assert [s.get_label() for s in series] == ["u", "v"]
    predicted = x.astype(np.float64) @ w.T + b
    for j, s in enumerate(series):
        np.testing.assert_allclose(s.get_xdata(), y[:, j], rtol=1e-6)
        np.testing.assert_allclose(s.get_ydata(), predicted[:, j], rtol=1e-6)
    dx, dy = diagonal.get_xdata(), diagonal.get_ydata()
    np.testing.assert_array_equal(dx, dy)
    assert ax.get_xlabel() == "actual" and ax.get_ylabel() == "predicted"


def test_a_model_without_bias_draws_a_line_through_the_origin():
    x, y = seed_arrays()
    fig = fit_figure(x, y, linear_model([[0.4]], None), ["x"], ["y"], "t")
    line = fig.axes[0].lines[1]
    np.testing.assert_allclose(line.get_ydata(), 0.4 * np.asarray(line.get_xdata()))


def test_the_loss_curve_is_on_a_log_scale_with_validation_beside_it():
    epoch = np.arange(1, 101, dtype=np.int32)
    loss = (1.0 / epoch).astype(np.float32)
    val = (2.0 / epoch).astype(np.float32)
    ax = loss_figure(epoch, loss, val, "job").axes[0]
    assert ax.get_yscale() == "log"
    train, valid = ax.lines
    assert (train.get_label(), valid.get_label()) == ("training loss", "validation loss")
    np.testing.assert_allclose(train.get_ydata(), loss, rtol=1e-6)
    np.testing.assert_allclose(valid.get_ydata(), val, rtol=1e-6)
    np.testing.assert_array_equal(train.get_xdata(), epoch)


def test_a_diverged_or_exact_loss_leaves_gaps_and_never_breaks_the_log_scale():
    epoch = np.arange(1, 6, dtype=np.int32)
    ax = loss_figure(epoch, np.array([1.0, 0.5, 0.0, np.inf, np.nan]), None, "j").axes[0]
    assert ax.get_yscale() == "log"
    assert np.isnan(ax.lines[0].get_ydata()[2:]).all()
    zeros = loss_figure(epoch, np.zeros(5), None, "j").axes[0]
    assert zeros.get_yscale() == "linear"  # no positive value: a log axis would be empty
    png(zeros.figure)


def test_long_series_are_subsampled_keeping_both_ends():
    idx = _subsample(1_000_000)
    assert len(idx) <= MAX_POINTS and idx[0] == 0 and idx[-1] == 999_999
    assert np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(_subsample(10), np.arange(10))
    epoch = np.arange(1, 100_001, dtype=np.int32)
    ax = loss_figure(epoch, 1.0 / epoch, None, "j").axes[0]
    assert len(ax.lines[0].get_xdata()) <= MAX_POINTS
    assert ax.lines[0].get_xdata()[-1] == 100_000


def test_png_renders_an_image_with_the_red_points():
    x, y = seed_arrays()
    body = png(fit_figure(x, y, linear_model([[0.26]], [0.75]), ["x"], ["y"], "t"))
    assert body[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(body)).convert("RGB")
    assert image.size == (640, 480)
    pixels = np.asarray(image).reshape(-1, 3).astype(int)
    red = (pixels[:, 0] > 200) & (pixels[:, 1] < 60) & (pixels[:, 2] < 60)
    assert red.sum() > 15 * 20  # 15 markers of some 40 pixels each


def test_a_polynomial_draws_its_curve_and_a_classifier_its_probabilities():
    import torch

    from models.polynomial import PolynomialConfig, PolynomialModel
    from service.serving.predictor import LoadedModel

    module = PolynomialModel(PolynomialConfig(degree=2))
    with torch.no_grad():
        module.linear.weight.copy_(torch.tensor([[2.0, -3.0]]))
        module.linear.bias.copy_(torch.tensor([1.0]))
    curve = LoadedModel(id="mdl_000000000000000000000001", tenant="default", name=None,
                        version=None, kind="polynomial", in_features=1, out_features=1,
                        state={}, weight_t=None, bias=None, module=module.eval())
    x = np.linspace(-1, 1, 9, dtype=np.float32)[:, None]
    line = fit_figure(x, 1 + 2 * x - 3 * x**2, curve, ["x"], ["y"], "p").axes[0].lines[1]
    gx = np.asarray(line.get_xdata())
    assert len(gx) > 100  # a curve, not two end points
    np.testing.assert_allclose(line.get_ydata(), 1 + 2 * gx - 3 * gx**2, atol=1e-5)

    clf = LoadedModel(id="mdl_000000000000000000000002", tenant="default", name=None,
                      version=None, kind="logistic", in_features=1, out_features=1,
                      state={}, weight_t=np.array([[4.0]], np.float32),
                      bias=np.array([0.0], np.float32), classes=2)
    labels = (x > 0).astype(np.float32)
    ax = fit_figure(x, labels, clf, ["x"], ["y"], "c").axes[0]
    data, p0, p1 = ax.lines
    assert to_rgba(data.get_color()) == to_rgba("red")
    gx = np.asarray(p1.get_xdata())
    np.testing.assert_allclose(p1.get_ydata(), 1 / (1 + np.exp(-4 * gx)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(p0.get_ydata()) + p1.get_ydata(), 1, atol=1e-6)
