"""Model kinds by name, so new kinds join without the service changing.

Each kind is a config dataclass and an ``nn.Module`` taking it. A module has
``transform(x)`` (the parameter-free part of forward, applied to the data once) and
``head(z)`` (the rest), with ``forward(x) == head(transform(x))``. ``linear_head`` says the
head is a single ``nn.Linear`` named ``linear``, which the fast engines can train directly;
``transforms_inputs`` that ``transform`` is not the identity.

The registry itself does not import torch: a kind's module is imported when it is first
built, so the API process can read a kind's facts (task, fast paths) without loading torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Literal

from models import defaults

Task = Literal["regression", "classification"]
REGRESSION_LOSSES = ("mse", "l1", "huber")
CLASSIFICATION_LOSSES = ("bce", "cross_entropy")


@dataclass(frozen=True)
class ModelKind:
    name: str
    module_path: str  # "package.module:ConfigClass:ModuleClass"
    task: Task = "regression"
    linear_head: bool = True
    transforms_inputs: bool = False
    count: Callable[[dict[str, Any]], int] | None = None
    """Trainable parameters of a config (as a dict), known without building the module."""

    def parameter_count(self, config: dict[str, Any]) -> int:
        return (self.count or _linear_count)(config)

    def _attr(self, i: int) -> Any:
        path, *names = self.module_path.split(":")
        return getattr(importlib.import_module(path), names[i])

    @property
    def config_cls(self) -> type:
        return self._attr(0)

    @property
    def module_cls(self) -> Any:
        return self._attr(1)

    @property
    def losses(self) -> tuple[str, ...]:
        return CLASSIFICATION_LOSSES if self.task == "classification" else REGRESSION_LOSSES

    def make_config(self, **values: Any) -> Any:
        cls = self.config_cls
        known = {f.name for f in fields(cls)}
        picked = {k: tuple(v) if isinstance(v, list) else v
                  for k, v in values.items() if k in known}
        return cls(**picked)


def _linear_count(c: dict[str, Any]) -> int:
    return (c["in_features"] + bool(c.get("bias", True))) * c["out_features"]


def _polynomial_count(c: dict[str, Any]) -> int:
    from models.terms import term_count

    terms = term_count(c["in_features"], c.get("degree", defaults.POLYNOMIAL_DEGREE),
                       c.get("interactions", defaults.POLYNOMIAL_INTERACTIONS))
    return _linear_count({**c, "in_features": terms})


def _mlp_count(c: dict[str, Any]) -> int:
    sizes = [c["in_features"], *c.get("hidden", defaults.MLP_HIDDEN), c["out_features"]]
    return sum(_linear_count({**c, "in_features": a, "out_features": b})
               for a, b in zip(sizes[:-1], sizes[1:], strict=True))


_KINDS: dict[str, ModelKind] = {
    "linear": ModelKind("linear", "models.linear:LinearConfig:LinearModel"),
    "logistic": ModelKind("logistic", "models.logistic:LogisticConfig:LogisticModel",
                          task="classification"),
    "polynomial": ModelKind("polynomial", "models.polynomial:PolynomialConfig:PolynomialModel",
                            transforms_inputs=True, count=_polynomial_count),
    "mlp": ModelKind("mlp", "models.mlp:MLPConfig:MLPModel", linear_head=False,
                     count=_mlp_count),
}


def kinds() -> tuple[str, ...]:
    return tuple(_KINDS)


def get_kind(name: str) -> ModelKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise KeyError(f"unknown model kind {name!r}; known: {', '.join(_KINDS)}") from None


def build_model(kind: str, **config: Any) -> Any:
    k = get_kind(kind)
    return k.module_cls(k.make_config(**config))
