"""The linear model of the classic PyTorch regression example."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn


@dataclass(frozen=True)
class LinearConfig:
    in_features: int = 1
    out_features: int = 1
    bias: bool = True


class LinearShape(Protocol):
    """What ``LinearModel`` reads of its config (the other kinds' configs have it too)."""

    @property
    def in_features(self) -> int: ...
    @property
    def out_features(self) -> int: ...
    @property
    def bias(self) -> bool: ...


class LinearModel(nn.Module):
    """``y = x @ W.T + b``; the parameter is named ``linear`` as in the seed program."""

    config: LinearShape
    linear: nn.Linear

    def __init__(self, config: LinearShape) -> None:
        super().__init__()
        self.config = config
        self.linear = nn.Linear(config.in_features, config.out_features, bias=config.bias)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The parameter-free part of forward, applied to the data once before training."""
        return x

    def head(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z)  # (N, in_features) -> (N, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.transform(x))
