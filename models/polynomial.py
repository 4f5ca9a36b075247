"""Polynomial regression: the inputs expanded into powers (and pairwise products), then
a linear layer over the expanded terms."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.defaults import POLYNOMIAL_DEGREE, POLYNOMIAL_INTERACTIONS
from models.linear import LinearModel
from models.terms import term_count


@dataclass(frozen=True)
class PolynomialConfig:
    in_features: int = 1
    out_features: int = 1
    bias: bool = True
    degree: int = POLYNOMIAL_DEGREE
    interactions: bool = POLYNOMIAL_INTERACTIONS


class PolynomialModel(LinearModel):
    config: PolynomialConfig

    def __init__(self, config: PolynomialConfig) -> None:
        terms = term_count(config.in_features, config.degree, config.interactions)
        super().__init__(_Inner(terms, config.out_features, config.bias))
        self.config = config

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        d = self.config.degree
        # (N, F) -> (N, F, d) -> (N, F * d): feature-major, x_f^1 .. x_f^d
        powers = x.unsqueeze(2) ** torch.arange(1, d + 1, dtype=x.dtype, device=x.device)
        out = powers.reshape(x.shape[0], -1)
        if self.config.interactions and x.shape[1] > 1:
            i, j = torch.triu_indices(x.shape[1], x.shape[1], offset=1, device=x.device)
            out = torch.cat([out, x[:, i] * x[:, j]], dim=1)  # (N, F*d + F(F-1)/2)
        return out


@dataclass(frozen=True)
class _Inner:
    in_features: int
    out_features: int
    bias: bool
