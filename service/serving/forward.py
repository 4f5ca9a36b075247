"""Forward passes in numpy, so a predict process serves every kind without importing torch.

Each function here computes what the kind's ``nn.Module.forward`` computes (models/), in
float32, from the checkpoint's tensors and the model's config: the linear layer is
``x @ W.T + b``, the polynomial terms are the powers of each feature then the pairwise
products, an mlp's layers alternate with its activation. The numbers agree with torch's to
float32 rounding (tests/unit/serving/test_forward.py holds each kind to the module's own
forward within 1e-6 of the outputs' scale): the matrix products sum in another order, and
numpy's ``tanh`` and ``pow`` round differently in the last bit.

A kind (or an option, such as a new activation) without a numpy pass here returns None from
``numpy_forward`` and the predictor builds the torch module instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.defaults import MLP_ACTIVATION, MLP_HIDDEN, POLYNOMIAL_DEGREE, POLYNOMIAL_INTERACTIONS
from models.terms import term_count

Forward = Callable[[np.ndarray], np.ndarray]
"""(N, in_features) float32 -> (N, out) float32: the module's raw outputs (logits for a
classifier), before any unscaling."""


class CheckpointMismatch(Exception):
    """The checkpoint's tensors are not the ones the config describes (names or shapes)."""


@dataclass(frozen=True)
class Linear:
    weight_t: np.ndarray  # (in, out) float32, C-contiguous
    bias: np.ndarray | None  # (out,) float32

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.weight_t  # (N, in) @ (in, out) -> (N, out)
        if self.bias is not None:
            y += self.bias
        return y


@dataclass(frozen=True)
class PolynomialForward:
    """models/polynomial.py: powers 1..degree of each feature (feature-major), then the
    products of each pair of features, then a linear layer over those terms."""

    degree: int
    interactions: bool
    linear: Linear

    def terms(self, x: np.ndarray) -> np.ndarray:
        n, f = x.shape
        # the powers in float64, rounded once to float32 (torch's float32 pow is within an
        # ulp of that); (N, F) -> (N, F, degree) -> (N, F * degree)
        exps = np.arange(1, self.degree + 1, dtype=np.float64)
        out = np.power(x.astype(np.float64)[:, :, None], exps).astype(np.float32)
        out = out.reshape(n, f * self.degree)
        if self.interactions and f > 1:
            i, j = np.triu_indices(f, k=1)  # torch.triu_indices(f, f, offset=1)'s order
            out = np.concatenate([out, x[:, i] * x[:, j]], axis=1)  # (N, F*d + F(F-1)/2)
        return out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.linear(self.terms(x))


def _relu(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0, out=z)


def _tanh(z: np.ndarray) -> np.ndarray:
    return np.tanh(z, out=z)


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"relu": _relu, "tanh": _tanh}


@dataclass(frozen=True)
class MLPForward:
    """models/mlp.py: Linear, activation, ..., Linear."""

    layers: tuple[Linear, ...]
    activation: Callable[[np.ndarray], np.ndarray]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = x
        for layer in self.layers[:-1]:
            z = self.activation(layer(z))  # (N, a) -> (N, b)
        return self.layers[-1](z)


def _linear(tensors: Mapping[str, np.ndarray], prefix: str, shape: tuple[int, int],
            bias: bool) -> Linear:
    weight = tensors[f"{prefix}.weight"]
    if weight.shape != shape:
        raise CheckpointMismatch(f"{prefix}.weight is {weight.shape}, the config needs {shape}")
    b = tensors.get(f"{prefix}.bias") if bias else None
    if bias and (b is None or b.shape != (shape[0],)):
        raise CheckpointMismatch(f"{prefix}.bias does not fit {shape[0]} outputs")
    return Linear(np.ascontiguousarray(weight.T, dtype=np.float32),
                  None if b is None else b.astype(np.float32))


def _expect(tensors: Mapping[str, np.ndarray], names: list[str]) -> None:
    if set(tensors) != set(names):
        missing, extra = set(names) - set(tensors), set(tensors) - set(names)
        raise CheckpointMismatch(f"missing {sorted(missing)}, unexpected {sorted(extra)}")


def numpy_forward(kind: str, config: Mapping[str, Any],
                  tensors: Mapping[str, np.ndarray]) -> Forward | None:
    """The kind's forward pass in numpy; None for a kind or option it does not cover.
    Raises CheckpointMismatch when the tensors do not fit the config (as load_state_dict
    would refuse them)."""
    bias = bool(config.get("bias", True))
    n_in, n_out = int(config["in_features"]), int(config["out_features"])
    if kind in ("linear", "logistic", "polynomial"):
        degree = int(config.get("degree", POLYNOMIAL_DEGREE))
        interactions = bool(config.get("interactions", POLYNOMIAL_INTERACTIONS))
        width = term_count(n_in, degree, interactions) if kind == "polynomial" else n_in
        _expect(tensors, ["linear.weight"] + (["linear.bias"] if bias else []))
        linear = _linear(tensors, "linear", (n_out, width), bias)
        return PolynomialForward(degree, interactions, linear) if kind == "polynomial" \
            else linear
    if kind == "mlp":
        activation = ACTIVATIONS.get(str(config.get("activation", MLP_ACTIVATION)))
        if activation is None:
            return None
        sizes = [n_in, *(int(h) for h in config.get("hidden", MLP_HIDDEN)), n_out]
        names = [f"layers.{2 * i}.{p}" for i in range(len(sizes) - 1)
                 for p in (("weight", "bias") if bias else ("weight",))]
        _expect(tensors, names)
        layers = tuple(_linear(tensors, f"layers.{2 * i}", (b, a), bias)
                       for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)))
        return MLPForward(layers, activation)
    return None


_INDEX = re.compile(r"(\d+)")


def state_order(names: list[str]) -> list[str]:
    """The checkpoint's tensor names in the module's ``state_dict`` order (safetensors keeps
    none): by layer index, then the weight before the bias."""
    def key(name: str) -> tuple[Any, ...]:
        parts = [int(p) if p.isdigit() else p for p in _INDEX.split(name.rsplit(".", 1)[0])]
        return (parts, not name.endswith(".weight"), name)

    return sorted(names, key=key)
