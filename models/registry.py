"""Model kinds by name, so new kinds join without the service changing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from torch import nn

from models.linear import LinearConfig, LinearModel


@dataclass(frozen=True)
class ModelKind:
    name: str
    config_cls: type
    module_cls: Callable[[Any], nn.Module]

    def make_config(self, **values: Any) -> Any:
        known = {f.name for f in fields(self.config_cls)}
        return self.config_cls(**{k: v for k, v in values.items() if k in known})


_KINDS: dict[str, ModelKind] = {
    "linear": ModelKind("linear", LinearConfig, LinearModel),
}


def kinds() -> tuple[str, ...]:
    return tuple(_KINDS)


def get_kind(name: str) -> ModelKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise KeyError(f"unknown model kind {name!r}; known: {', '.join(_KINDS)}") from None


def build_model(kind: str, **config: Any) -> nn.Module:
    k = get_kind(kind)
    return k.module_cls(k.make_config(**config))
