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

    def _trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)  # study.trials copies every trial

    def __len__(self) -> int:
        return len(self._trials())

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
        self.study.sampler = self._sampler(len(self))
        try:
            trial = self.study.ask(self.distributions)
        finally:
            self.study.sampler = self._neutral
        raw = dict(trial.params)
        params = {d.path: d.value(raw[d.path], self.grid) for d in self.config.dims}
        return trial.number, params, raw

    def system_attrs(self, number: int) -> dict[str, Any]:
        return _jsonable(self._trials()[number].system_attrs)

    def add(self, number: int, raw: dict[str, Any], status: str, value: float | None,
            intermediate: dict[str, Any], system_attrs: dict[str, Any]) -> None:
        """Put back a stored trial (rebuilding the study); ``status`` ``open`` for one whose
        job has not ended."""
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
