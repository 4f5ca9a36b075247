"""Logistic regression: a linear layer whose outputs are logits.

Binary (``classes == 2``): one output, trained with BCE on the logit, ``p = sigmoid(z)``.
Multi-class: one output per class, trained with cross-entropy, ``p = softmax(z)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.linear import LinearModel


@dataclass(frozen=True)
class LogisticConfig:
    in_features: int = 1
    out_features: int = 1  # 1 for two classes, else one logit per class
    bias: bool = True
    classes: int = 2


class LogisticModel(LinearModel):
    """Logits ``z = x @ W.T + b`` (the service turns them into probabilities and labels)."""

    config: LogisticConfig

    def __init__(self, config: LogisticConfig) -> None:
        super().__init__(config)
