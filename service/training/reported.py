"""The linear layer of a model as GET /v1/models/{id} reports it: in the original units of
x and y, whatever standardization it was trained with. numpy only (no torch): training
reports it for a new model, checkpoint import for an imported one."""

from __future__ import annotations

from typing import Any

import numpy as np

from models.registry import ModelKind


def reported_linear(kind: ModelKind, state: dict[str, np.ndarray], config: dict[str, Any],
                    norm: dict[str, Any] | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The linear layer as ModelPublic reports it, in the original units of x and y, so
    that ``y = terms(x) W_o^T + b_o`` is what predict computes; none for an mlp."""
    if not kind.linear_head:
        return None, None
    if norm is None:
        return state["linear.weight"], state.get("linear.bias")
    w = state["linear.weight"].astype(np.float64)  # (out, terms)
    b = state.get("linear.bias")
    b = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
    mx, sx = np.asarray(norm["x_mean"]), np.asarray(norm["x_std"])
    if kind.transforms_inputs:
        w_o, b_o = polynomial_in_original_units(w, b, mx, sx, config)
    else:  # x' = (x - mx) / sx:  W x' + b = (W / sx) x + (b - W mx / sx)
        w_o, b_o = w / sx, b - w @ (mx / sx)
    if norm["y_mean"] is not None:  # y = sy y' + my
        sy, my = np.asarray(norm["y_std"]), np.asarray(norm["y_mean"])
        w_o, b_o = sy[:, None] * w_o, sy * b_o + my
    # without bias nothing was centred (means 0), so there is no offset to report
    if state.get("linear.bias") is None:
        return w_o.astype(np.float32), None
    return w_o.astype(np.float32), b_o.astype(np.float32)


def polynomial_in_original_units(w: np.ndarray, b: np.ndarray, mx: np.ndarray, sx: np.ndarray,
                                 config: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients over the terms of x of a layer over the same terms of z = (x - m) / s:
    z^p = sum_q C(p, q) x^q (-m)^(p-q) / s^p, and z_i z_j = (x_i - m_i)(x_j - m_j) / (s_i s_j);
    every power and product this yields is itself a term (or the constant)."""
    from math import comb

    degree, f = int(config["degree"]), len(mx)
    w_o, b_o = np.zeros_like(w), b.copy()

    def col(feature: int, power: int) -> int:  # feature-major, powers 1..degree
        return feature * degree + power - 1

    for i in range(f):
        for p in range(1, degree + 1):
            c = w[:, col(i, p)] / sx[i] ** p
            for q in range(p + 1):
                part = c * comb(p, q) * (-mx[i]) ** (p - q)
                if q == 0:
                    b_o += part
                else:
                    w_o[:, col(i, q)] += part
    if config.get("interactions"):
        k = f * degree
        for i in range(f):
            for j in range(i + 1, f):
                c = w[:, k] / (sx[i] * sx[j])
                w_o[:, k] += c
                w_o[:, col(j, 1)] -= c * mx[i]
                w_o[:, col(i, 1)] -= c * mx[j]
                b_o += c * mx[i] * mx[j]
                k += 1
    return w_o, b_o
