"""A multi-layer perceptron: Linear, activation, ..., Linear."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.defaults import MLP_ACTIVATION, MLP_HIDDEN

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


@dataclass(frozen=True)
class MLPConfig:
    in_features: int = 1
    out_features: int = 1
    bias: bool = True
    hidden: tuple[int, ...] = MLP_HIDDEN
    activation: str = MLP_ACTIVATION


class MLPModel(nn.Module):
    """Parameters are named ``layers.{i}.weight`` / ``layers.{i}.bias`` (i = 0, 2, 4, ...)."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        sizes = [config.in_features, *config.hidden, config.out_features]
        act = ACTIVATIONS[config.activation]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(a, b, bias=config.bias))
            if i < len(sizes) - 2:
                layers.append(act())
        self.layers = nn.Sequential(*layers)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def head(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)  # (N, in) -> (N, hidden[0]) -> ... -> (N, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.transform(x))
