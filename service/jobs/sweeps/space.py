"""A sweep's search space: which job fields vary and over what, parsed and checked against
the job's own schema before anything is stored.

A dimension is a job field by its path (``optimizer.lr``, ``epochs``, ``model.hidden``)
and one of ``{"uniform": [lo, hi]}``, ``{"log_uniform": [lo, hi]}``, ``{"int": [lo, hi]}``
or ``{"choice": [v1, v2, ...]}``; a range may carry ``"steps": N``, the points a grid takes
along it (a grid needs them; random and tpe sample the range itself).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

import numpy as np

from service.errors import InvalidInput, LimitExceeded, clip, closest_name

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

KINDS = ("uniform", "log_uniform", "int", "choice")
MAX_DIMENSIONS = 32
MAX_CHOICES = 1000
MAX_VALUES = 2000
"""Choices, grid points and range ends of a search space in all: each is checked at submit."""
MAX_PAIRS = 200
"""A value the base job refuses is tried with at most this many values of other fields."""
MAX_INT_GRID = 10_000
"""An int range without ``steps`` takes every integer on a grid: at most this many."""
EXAMPLE = '{"log_uniform": [0.0001, 0.1]}'


@dataclass(frozen=True)
class Dimension:
    path: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    steps: int | None = None

    @property
    def field(self) -> str:
        """Where an error about it points: ``search_space.optimizer.lr``."""
        return f"search_space.{self.path}"

    def public(self) -> dict[str, Any]:
        """The dimension as a client writes it."""
        out: dict[str, Any] = ({"choice": list(self.choices)} if self.kind == "choice"
                               else {self.kind: [self.low, self.high]})
        if self.steps is not None:
            out["steps"] = self.steps
        return out

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["choices"] = list(self.choices)
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> Dimension:
        return Dimension(**{**d, "choices": tuple(d.get("choices") or ())})

    def grid(self) -> list[Any]:
        """The points a grid takes along this dimension."""
        if self.kind == "choice":
            return list(self.choices)
        assert self.low is not None and self.high is not None
        if self.kind == "int":
            lo, hi = int(self.low), int(self.high)
            if self.steps is None:
                return list(range(lo, hi + 1))
            return sorted({int(round(v)) for v in np.linspace(lo, hi, self.steps)})
        assert self.steps is not None
        points = (np.geomspace(self.low, self.high, self.steps) if self.kind == "log_uniform"
                  else np.linspace(self.low, self.high, self.steps))
        return [float(p) for p in points]

    def distribution(self, grid: bool) -> BaseDistribution:
        """What Optuna samples: a grid's points and a choice's values by their index."""
        from optuna.distributions import (  # Optuna loads with a sweep's first study
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if grid or self.kind == "choice":
            return CategoricalDistribution(list(range(len(self.grid() if grid else
                                                          self.choices))))
        assert self.low is not None and self.high is not None
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high))
        return FloatDistribution(self.low, self.high, log=self.kind == "log_uniform")

    def value(self, raw: Any, grid: bool) -> Any:
        """The job field's value for what Optuna sampled."""
        if grid:
            return self.grid()[int(raw)]
        if self.kind == "choice":
            return self.choices[int(raw)]
        return int(raw) if self.kind == "int" else float(raw)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def parse_dimension(path: str, raw: Any) -> Dimension:
    """One dimension of the body, checked for form (not yet against the job's schema)."""
    field = f"search_space.{path}"
    if not isinstance(raw, dict):
        raise InvalidInput(f"{field} must be an object such as {EXAMPLE}; got "
                           f"{clip(repr(raw), 60)}", field=field)
    kinds = [k for k in raw if k in KINDS]
    extra = sorted(set(raw) - set(KINDS) - {"steps"})
    if extra:
        guess = closest_name(extra[0], [*KINDS, "steps"])
        raise InvalidInput(f"{field}: unknown key {clip(extra[0], 40)!r}"
                           + (f"; did you mean {guess!r}?" if guess else "")
                           + f"; give one of {', '.join(KINDS)} (and steps)", field=field)
    if len(kinds) != 1:
        raise InvalidInput(f"{field} takes exactly one of {', '.join(KINDS)}, e.g. {EXAMPLE}",
                           field=field)
    kind = kinds[0]
    steps = raw.get("steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool)
                              or steps < 2 or steps > MAX_CHOICES):
        raise InvalidInput(f"{field}.steps must be a whole number from 2 to {MAX_CHOICES}",
                           field=f"{field}.steps")
    spec = raw[kind]
    if kind == "choice":
        if steps is not None:
            raise InvalidInput(f"{field}: steps goes with a range, not a choice", field=field)
        if not isinstance(spec, list) or not spec:
            raise InvalidInput(f"{field}.choice must be a non-empty list of values",
                               field=field)
        if len(spec) > MAX_CHOICES:
            raise InvalidInput(f"{field}.choice has {len(spec)} values; at most "
                               f"{MAX_CHOICES}", field=field)
        return Dimension(path, kind, choices=tuple(spec))
    if not isinstance(spec, list) or len(spec) != 2 or not all(_number(v) for v in spec):
        raise InvalidInput(f"{field}.{kind} must be [low, high], two finite numbers",
                           field=field)
    lo, hi = spec
    if kind == "int":
        if not all(isinstance(v, int) or float(v).is_integer() for v in spec):
            raise InvalidInput(f"{field}.int must be two whole numbers", field=field)
        lo, hi = int(lo), int(hi)
        if hi < lo:
            raise InvalidInput(f"{field}: the range [{lo}, {hi}] is empty (high < low)",
                               field=field)
    elif not hi > lo:
        raise InvalidInput(f"{field}: the range [{lo:g}, {hi:g}] is empty (it needs low < "
                           "high)", field=field)
    if kind == "log_uniform" and lo <= 0:
        raise InvalidInput(f"{field}: a log_uniform range must be above 0 (got low {lo:g})",
                           field=field)
    return Dimension(path, kind, float(lo), float(hi), steps=steps)


def leaf_paths(spec: dict[str, Any], prefix: str = "") -> list[str]:
    """The fields of a job (its hyperparameters as stored) that a sweep may vary."""
    out = []
    for key, value in spec.items():
        path = prefix + key
        if isinstance(value, dict):
            out.extend(leaf_paths(value, path + "."))
        else:
            out.append(path)
    return out


def set_path(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``spec`` with the field at ``path`` set."""
    out = copy.deepcopy(spec)
    node = out
    *parents, last = path.split(".")
    for p in parents:
        node = node[p]
    node[last] = copy.deepcopy(value)
    return out


def apply(spec: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``spec`` with each field of ``params`` (by path) set: the dicts along the
    paths are copied, the rest is shared with ``spec`` (left as it was): a trial's job is
    built without a deep copy of the base job."""
    out = dict(spec)
    for path, value in params.items():
        node = out
        *parents, last = path.split(".")
        for p in parents:
            node[p] = dict(node[p])
            node = node[p]
        node[last] = copy.deepcopy(value) if isinstance(value, (list, dict)) else value
    return out


def parse_space(raw: dict[str, Any], base: dict[str, Any], *, grid: bool,
                check: Callable[[dict[str, Any]], object],
                max_points: int | None = None) -> list[Dimension]:
    """The dimensions of ``raw`` over the job ``base`` (its hyperparameters as stored).
    Each names a field the job has; each choice, each end of each range (and each point of
    a grid) must be a job that ``check`` accepts (it raises InvalidInput or pydantic's
    ValidationError otherwise), with the base job's other fields or with one other searched
    field set to one of its values (nesterov needs momentum: a trial that combines them
    otherwise fails alone, saying why). A grid of more than ``max_points`` points is
    refused before its points are checked. Every refusal is an InvalidInput naming the
    field."""
    if not raw:
        raise InvalidInput("search_space needs at least one field, e.g. "
                           f'{{"optimizer.lr": {EXAMPLE}}}', field="search_space")
    if len(raw) > MAX_DIMENSIONS:
        raise InvalidInput(f"search_space has {len(raw)} fields; at most {MAX_DIMENSIONS}",
                           field="search_space")
    known = leaf_paths(base)
    dims = []
    for path, spec in raw.items():
        if path not in known:
            raise InvalidInput(_unknown(path, base, known), field=f"search_space.{path}")
        dim = parse_dimension(path, spec)
        if grid and dim.kind != "choice" and dim.steps is None and (
                dim.kind != "int" or (dim.high or 0) - (dim.low or 0) + 1 > MAX_INT_GRID):
            raise InvalidInput(f"{dim.field}: a grid needs the points of a range: add "
                               '"steps": N (or give a choice)', field=dim.field)
        dims.append(dim)
    if grid and max_points is not None and grid_size(dims) > max_points:
        raise LimitExceeded(f"the grid has {grid_size(dims)} points, over the limit of "
                            f"{max_points} trials (FITSERVE_MAX_TRIALS): fewer steps or "
                            "choices", field="search_space")
    values = sum(len(_candidates(d, grid)) for d in dims)
    if values > MAX_VALUES:
        raise InvalidInput(f"search_space has {values} values to check in all; at most "
                           f"{MAX_VALUES}: fewer choices or steps", field="search_space")
    for dim in dims:
        for value in _candidates(dim, grid):
            spec = set_path(base, dim.path, value)
            refusal = _refusal(check, spec)
            pairs = islice(((other, v) for other in dims if other is not dim
                            for v in _candidates(other, grid)), MAX_PAIRS)
            if refusal is None or any(
                    _refusal(check, set_path(spec, other.path, v)) is None
                    for other, v in pairs):
                continue
            raise InvalidInput(f"{dim.field}: the job refuses {clip(repr(value), 60)} "
                               f"({refusal})", field=dim.field)
    return dims


def _candidates(dim: Dimension, grid: bool) -> list[Any]:
    """The values that stand for a dimension in the checks: its choices or grid points,
    else both ends of its range."""
    if grid or dim.kind == "choice":
        return dim.grid()
    return [dim.value(dim.low, False), dim.value(dim.high, False)]


def _refusal(check: Callable[[dict[str, Any]], object], spec: dict[str, Any]) -> str | None:
    """Why ``check`` refuses the job ``spec``, or None."""
    from pydantic import ValidationError

    try:
        check(spec)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        return f"{where}: {msg}" if where else msg
    except InvalidInput as e:
        return e.message
    return None


def _unknown(path: str, base: dict[str, Any], known: list[str]) -> str:
    head = path.split(".")[0]
    if head in base and base[head] is None and "." in path:
        return (f"search_space: the job sets no {head}, so {path!r} is not a field of it; "
                f"give the job a {head} to search its options")
    guess = closest_name(path, known)
    return (f"search_space: unknown field {clip(path, 60)!r}"
            + (f"; did you mean {guess!r}?" if guess else "")
            + f" (the job's fields: {', '.join(known)})")


def grid_size(dims: list[Dimension]) -> int:
    return math.prod(len(d.grid()) if d.kind == "choice" or d.steps or d.kind != "int"
                     else int((d.high or 0) - (d.low or 0)) + 1 for d in dims)
