"""The Optuna side of a sweep (service/jobs/sweeps/study.py) as the controller drives it
cheaply: one grid sampler per study asks what a new sampler per ask asked, a study rebuilt
from stored trials asks the same next trial, and a tell changes no trial's system_attrs
(the controller records them before it tells, and tells only when the study is next
asked)."""

from __future__ import annotations

import optuna
import pytest

from service.jobs.sweeps.space import parse_dimension
from service.jobs.sweeps.study import StudyConfig, SweepStudy

DIMS = (parse_dimension("optimizer.lr", {"choice": [0.001, 0.002, 0.004]}),
        parse_dimension("optimizer.momentum", {"choice": [0.0, 0.3, 0.6, 0.9]}))


def _config(strategy: str = "grid", seed: int = 7) -> StudyConfig:
    return StudyConfig(strategy, seed, "minimize", DIMS, None)


def _asked_with_a_sampler_per_ask(seed: int, count: int) -> list[dict]:
    """What the study asked when it built a new GridSampler for every ask."""
    study = SweepStudy(_config(seed=seed))
    out = []
    for _ in range(count):
        study.study.sampler = optuna.samplers.GridSampler(
            {d.path: list(range(len(d.grid()))) for d in DIMS}, seed=seed % 2**32)
        trial = study.study.ask(study.distributions)
        study.study.sampler = study._neutral
        out.append(dict(trial.params))
    return out


@pytest.mark.parametrize("seed", [0, 7, 2**40 + 3])
def test_one_grid_sampler_asks_what_a_sampler_per_ask_asked(seed):
    study = SweepStudy(_config(seed=seed))
    asked = [study.ask()[2] for _ in range(12)]
    assert asked == _asked_with_a_sampler_per_ask(seed, 12)
    assert len({tuple(sorted(a.items())) for a in asked}) == 12  # the whole grid


def test_a_rebuilt_study_asks_the_same_next_trials():
    first = SweepStudy(_config())
    asked = [first.ask() for _ in range(5)]
    for number, _, _ in asked[:3]:
        first.tell(number, "succeeded", float(number))
    rebuilt = SweepStudy(_config())
    for number, _, raw in asked:
        status = "succeeded" if number < 3 else "open"
        rebuilt.add(number, raw, status, float(number) if number < 3 else None, {},
                    first.system_attrs(number))
    assert [rebuilt.ask()[2] for _ in range(7)] == [first.ask()[2] for _ in range(7)]


@pytest.mark.parametrize("strategy", ["grid", "random", "tpe"])
@pytest.mark.parametrize("status", ["succeeded", "failed", "pruned", "cancelled"])
def test_a_tell_changes_no_system_attrs(strategy, status):
    study = SweepStudy(_config(strategy))
    number, _, _ = study.ask()
    before = study.system_attrs(number)
    study.tell(number, status, 0.5 if status == "succeeded" else None)
    assert study.system_attrs(number) == before


class _AskingEachTime(SweepStudy):
    """The study as it was: Optuna asked at every ask, a grid's included."""

    def _read_grid(self, number):
        return None


def _optuna_trials(study: SweepStudy) -> list[tuple]:
    return [(t.number, t.state, dict(t.params), t.distributions, t.system_attrs, t.value)
            for t in study.trials()]


@pytest.mark.parametrize("seed", [0, 7, 2**40 + 3])
def test_grid_trials_read_off_the_grid_are_the_trials_optuna_asks(seed):
    """A grid's asks read the shuffled grid and ask Optuna only when the study is next
    used: every trial, its system_attrs and the study Optuna holds after a tell are what
    an ask of Optuna each time gave, past the grid's size too."""
    read, asked = SweepStudy(_config(seed=seed)), _AskingEachTime(_config(seed=seed))
    for _ in range(5):
        one, two = read.ask(), asked.ask()
        assert one == two
        assert read.system_attrs(one[0]) == asked.system_attrs(two[0])
    assert len(read) == len(asked) == 5
    assert read.study.get_trials(deepcopy=False) == []  # Optuna not asked yet
    for study in (read, asked):
        study.tell(1, "succeeded", 0.25)
    assert _optuna_trials(read) == _optuna_trials(asked)
    for _ in range(10):  # the rest of the grid (12), then past it
        one, two = read.ask(), asked.ask()
        assert one == two and read.system_attrs(one[0]) == asked.system_attrs(two[0])
    for study in (read, asked):
        study.tell(7, "failed")
    assert _optuna_trials(read) == _optuna_trials(asked)


def test_a_study_rebuilt_from_grid_trials_read_off_the_grid_asks_the_same():
    first = SweepStudy(_config())
    asked = [first.ask() for _ in range(6)]
    rebuilt = _AskingEachTime(_config())
    for number, _, raw in asked:
        rebuilt.add(number, raw, "open", None, {}, first.system_attrs(number))
    assert [rebuilt.ask() for _ in range(8)] == [first.ask() for _ in range(8)]
