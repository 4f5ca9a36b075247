"""Standardization as predict and training's metrics both apply it."""

from __future__ import annotations

import numpy as np

from service.training.scaling import Scaling, served


def test_no_normalization_means_no_scaling():
    assert Scaling.from_normalization(None) is None
    assert Scaling.from_normalization({}) is None


def test_served_scales_in_forwards_and_unscales_out():
    norm = {"x_mean": [1.0, -2.0], "x_std": [2.0, 4.0], "y_mean": [10.0], "y_std": [3.0]}
    scaling = Scaling.from_normalization(norm)
    x = np.array([[3.0, 2.0], [1.0, -2.0]], np.float32)
    w = np.array([[0.5], [-1.0]], np.float32)
    out = served(x, lambda z: z @ w, scaling)
    expected = ((x - [1.0, -2.0]) / [2.0, 4.0]) @ w * 3.0 + 10.0
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_a_classifier_keeps_its_logits_unscaled():
    scaling = Scaling.from_normalization({"x_mean": [1.0], "x_std": [2.0],
                                          "y_mean": None, "y_std": None})
    out = served(np.array([[5.0]], np.float32), lambda z: z * 10, scaling)
    np.testing.assert_allclose(out, [[20.0]])
