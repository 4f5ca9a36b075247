"""The Optuna side of a sweep: one in-memory study per sweep, driven through ask and tell.

The study is never stored by Optuna (its RDB storage would stamp its own alembic_version on
our metadata database): the sweep's tables keep every trial's parameters, state, objective,
the losses its pruner saw and the sampler's and pruner's own records (``system_attrs``), and
a study is rebuilt from them (``create_trial`` + ``add_trial``) by whichever controller
takes the sweep, so a sweep survives a restart without running a finished trial again.

Trial ``n`` of the sweep is trial ``n`` of the study. Each ask uses a sampler seeded from
the sweep's seed and the trial's number, so what a trial is asked to run depends on the
seed and on the trials the study holds then, not on how many times the study was rebuilt:
grid and random sweeps are reproducible whatever the parallelism, tpe with one trial at a
time (``max_parallel`` 1).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from service.jobs.sweeps.space import Dimension

if TYPE_CHECKING:
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler
    from optuna.trial import FrozenTrial, TrialState

STRATEGIES = ("grid", "random", "tpe")
PRUNERS = ("median", "successive_halving")


@functools.cache
def _optuna() -> ModuleType:
    """Optuna, imported at a sweep's first study: a server that runs no sweep (a predict
    replica above all) never loads it (some 12 MB and 0.2 s of start-up)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its per-trial INFO lines: not ours
    optuna.logging.disable_propagation()
    logging.getLogger("optuna").setLevel(logging.WARNING)
    return optuna


def _state(status: str) -> TrialState:
    """The Optuna state of a trial's status; RUNNING for one whose job has not ended."""
    states = _optuna().trial.TrialState
    return {"succeeded": states.COMPLETE, "pruned": states.PRUNED, "failed": states.FAIL,
            "cancelled": states.FAIL}.get(status, states.RUNNING)


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number``'s sampler: drawn from the sweep's seed and the number."""
    return int(np.random.SeedSequence([seed % 2**63, number]).generate_state(1)[0])


def rungs(pruning: dict[str, Any] | None, epochs: int) -> list[int]:
    """The epochs at which a trial of ``epochs`` epochs reports its loss to the pruner:
    median: the grace period, then every ``interval`` epochs; successive halving: the
    grace period times powers of the reduction factor."""
    if not pruning:
        return []
    grace = int(pruning["grace_period"])
    if pruning["name"] == "median":
        return list(range(grace, epochs + 1, int(pruning.get("interval") or grace)))
    out, r, eta = [], grace, int(pruning.get("reduction_factor") or 3)
    while r <= epochs:
        out.append(r)
        r *= eta
    return out


def make_pruner(pruning: dict[str, Any] | None) -> BasePruner:
    pruners = _optuna().pruners
    if not pruning:
        return pruners.NopPruner()
    grace = int(pruning["grace_period"])
    if pruning["name"] == "median":
        return pruners.MedianPruner(n_startup_trials=int(pruning.get("startup_trials", 5)),
                            n_warmup_steps=grace,
                            interval_steps=int(pruning.get("interval") or grace))
    return pruners.SuccessiveHalvingPruner(min_resource=grace,
                                   reduction_factor=int(pruning.get("reduction_factor") or 3))


@dataclass(frozen=True)
class StudyConfig:
    strategy: str
    seed: int
    direction: Literal["minimize", "maximize"]
    dims: tuple[Dimension, ...]
    pruning: dict[str, Any] | None


class SweepStudy:
    """One sweep's study. Not thread-safe: one controller thread drives it."""

    def __init__(self, config: StudyConfig) -> None:
        self.config = config
        self.grid = config.strategy == "grid"
        self.distributions = {d.path: d.distribution(self.grid) for d in config.dims}
        # tells never go through a grid's stop()
        self._neutral = _optuna().samplers.RandomSampler(seed=0)
        self.study = _optuna().create_study(direction=config.direction, sampler=self._neutral,
                                            pruner=make_pruner(config.pruning))
        self._grid: BaseSampler | None = None
        self._grid_points = math.prod(len(d.grid()) for d in config.dims) if self.grid else 0
        # grid trials asked for but not yet asked of Optuna (``_read_grid``), in number order
        self._deferred: list[tuple[int, dict[str, Any]]] = []

    def _trials(self) -> list[FrozenTrial]:
        self._catch_up()
        return self.study.get_trials(deepcopy=False)  # study.trials copies every trial

    def __len__(self) -> int:
        return len(self.study.get_trials(deepcopy=False)) + len(self._deferred)

    def _sampler(self, number: int) -> BaseSampler:
        samplers = _optuna().samplers
        if self.grid:  # its seed shuffles the grid's order: the sweep's, for every ask
            if self._grid is None or number >= self._grid_points:
                # one for the study: trial n < the grid's size takes point n of the
                # shuffled grid (no random draw: the same as a new sampler's); past it a
                # new one draws as it would have
                self._grid = samplers.GridSampler(
                    {d.path: list(range(len(d.grid()))) for d in self.config.dims},
                    seed=self.config.seed % 2**32)
            return self._grid
        seed = trial_seed(self.config.seed, number)
        if self.config.strategy == "random":
            return samplers.RandomSampler(seed=seed)
        return samplers.TPESampler(seed=seed)

    def ask(self) -> tuple[int, dict[str, Any], dict[str, Any]]:
        """The next trial: (number, the job fields it sets, Optuna's own values of them)."""
        number = len(self)
        raw = self._read_grid(number)
        if raw is not None:
            self._deferred.append((number, raw))
        else:
            self._catch_up()
            number, raw = self._ask_optuna()
        params = {d.path: d.value(raw[d.path], self.grid) for d in self.config.dims}
        return number, params, raw

    def _ask_optuna(self) -> tuple[int, dict[str, Any]]:
        self.study.sampler = self._sampler(len(self))
        try:
            trial = self.study.ask(self.distributions)
        finally:
            self.study.sampler = self._neutral
        return trial.number, dict(trial.params)

    def _read_grid(self, number: int) -> dict[str, Any] | None:
        """Trial ``number``'s values read off the shuffled grid, as the grid sampler gives
        them without a draw (trial n < the grid's size takes point n), or None (not a grid,
        past its size, or an Optuna whose sampler keeps its grid otherwise). Optuna is
        asked for such a trial only when the study is next used otherwise
        (``_catch_up``): a grid sweep whose every trial is asked at once never asks it
        (100 asks: some 10 ms of a sweep's queueing)."""
        if not self.grid or number >= self._grid_points:
            return None
        sampler = self._sampler(number)
        grids = getattr(sampler, "_all_grids", None)
        names = getattr(sampler, "_param_names", None)
        if (grids is None or names is None or len(grids) != self._grid_points
                or not isinstance(getattr(sampler, "_search_space", None), dict)):
            return None
        point = dict(zip(names, grids[number], strict=True))
        # as Optuna keeps a suggested value: in its distribution's internal form and back
        return {path: dist.to_external_repr(dist.to_internal_repr(point[path]))
                for path, dist in self.distributions.items()}

    def _deferred_attrs(self, number: int) -> dict[str, Any]:
        """What the grid sampler records of trial ``number`` (``before_trial``)."""
        space = getattr(self._grid, "_search_space", {})
        return {"search_space": {k: list(v) for k, v in space.items()}, "grid_id": number}

    def _catch_up(self) -> None:
        """Ask Optuna for the deferred grid trials, in number order, as ``ask`` would have
        (nothing was asked, told or added since: every other use of the study catches up
        first); each must come out as it was read off the grid."""
        deferred, self._deferred = self._deferred, []
        for number, raw in deferred:
            got = self._ask_optuna()
            attrs = _jsonable(self.study.get_trials(deepcopy=False)[number].system_attrs)
            if got != (number, raw) or attrs != self._deferred_attrs(number):
                raise RuntimeError(f"grid trial {number} was read as {raw}, asked as {got[1]}")

    def system_attrs(self, number: int) -> dict[str, Any]:
        if self._deferred and number >= self._deferred[0][0]:
            return self._deferred_attrs(number)
        return _jsonable(self._trials()[number].system_attrs)

    def add(self, number: int, raw: dict[str, Any], status: str, value: float | None,
            intermediate: dict[str, Any], system_attrs: dict[str, Any]) -> None:
        """Put back a stored trial (rebuilding the study); ``status`` ``open`` for one whose
        job has not ended."""
        self._catch_up()
        assert number == len(self), f"trial {number} added out of order ({len(self)} held)"
        state = _state(status)
        complete = _optuna().trial.TrialState.COMPLETE
        self.study.add_trial(_optuna().trial.create_trial(
            state=state, params=raw, distributions=self.distributions,
            value=value if state == complete else None,
            intermediate_values={int(k): float(v) for k, v in intermediate.items()},
            system_attrs=system_attrs,
        ))

    def report(self, number: int, epoch: int, value: float) -> bool:
        """The trial's loss at a rung; whether the pruner stops it there."""
        frozen = self._trials()[number]
        trial = _optuna().trial.Trial(self.study, frozen._trial_id)
        trial.report(value if math.isfinite(value) else math.inf, epoch)
        return trial.should_prune()

    def tell(self, number: int, status: str, value: float | None = None) -> None:
        self._catch_up()
        state = _state(status)
        complete = _optuna().trial.TrialState.COMPLETE
        self.study.tell(number, value if state == complete else None, state=state)

    def trials(self) -> Sequence[FrozenTrial]:
        return self._trials()


def _jsonable(attrs: dict[str, Any]) -> dict[str, Any]:
    import orjson

    out = {}
    for k, v in attrs.items():
        try:
            out[k] = orjson.loads(orjson.dumps(v))
        except TypeError:
            continue
    return out
