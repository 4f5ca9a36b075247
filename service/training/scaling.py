"""What ``standardize`` learnt, applied the one way both training's final metrics and
serving apply it: ``(x - x_mean) / x_std`` in, ``y' * y_std + y_mean`` out, in float32."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


def _vec(values: Any) -> np.ndarray | None:
    return None if values is None else np.asarray(values, np.float32)


@dataclass(frozen=True)
class Scaling:
    x_mean: np.ndarray  # (in,) float32
    x_std: np.ndarray
    y_mean: np.ndarray | None = None  # (out,), regression only
    y_std: np.ndarray | None = None

    @classmethod
    def from_normalization(cls, norm: Mapping[str, Any] | None) -> Scaling | None:
        """From a model's stored ``normalization`` (lists of floats), or None without one."""
        if not norm or norm.get("x_mean") is None:
            return None
        x_mean, x_std = _vec(norm["x_mean"]), _vec(norm["x_std"])
        assert x_mean is not None and x_std is not None  # both are stored together
        return cls(x_mean, x_std, _vec(norm.get("y_mean")), _vec(norm.get("y_std")))

    def inputs(self, x: np.ndarray) -> np.ndarray:
        return (x - self.x_mean) / self.x_std

    def outputs(self, y: np.ndarray) -> np.ndarray:
        if self.y_mean is None or self.y_std is None:
            return y
        return y * self.y_std + self.y_mean


def served(x: np.ndarray, forward: Callable[[np.ndarray], np.ndarray],
           scaling: Scaling | None) -> np.ndarray:
    """The model's outputs in original units: scale x, forward, unscale y (float32)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # callers check
        if scaling is not None:
            x = scaling.inputs(x)
        y = forward(np.ascontiguousarray(x, dtype=np.float32))
        return y if scaling is None else scaling.outputs(y)
