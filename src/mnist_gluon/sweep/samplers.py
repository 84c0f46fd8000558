"""How a sweep proposes its trials, so that sweeps sharing one study never repeat each other.

Optuna's samplers draw from one random stream seeded once. Two sweep processes seeded alike
(both with the config's seed) then propose the same points in lockstep, and half of a shared
search is wasted. Here every trial is proposed by a sampler seeded from the sweep's seed and
the trial's own number, which the study's storage hands out once per study: trials differ
across processes and machines, and a sweep run alone still repeats itself exactly. A grid
gives its point N to trial N, which no two processes can both be given.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import warnings

import optuna

from .search import Search


def make_sampler(search: Search) -> optuna.samplers.BaseSampler:
    grid = {a.key: list(a.values) for a in search.axes if a.values is not None}
    if search.sampler == "grid":
        return NumberedGrid(grid, search.seed)
    if search.sampler == "random":
        return PerTrialSeed(lambda seed: optuna.samplers.RandomSampler(seed=seed), search.seed)

    def tpe(seed: int) -> optuna.samplers.TPESampler:
        # constant_liar: a running trial counts as a poor one, so parallel sweeps spread out
        # instead of all proposing near the current best.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, constant_liar=True)

    return PerTrialSeed(tpe, search.seed)


def trial_seed(seed: int, number: int) -> int:
    """A seed for trial `number` of a sweep seeded `seed`: unrelated to its neighbours'."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{number}".encode()).digest()[:4], "big")


class PerTrialSeed(optuna.samplers.BaseSampler):
    """A sampler (from `make(seed)`) per trial, seeded by `trial_seed`. TPE and random
    sampling keep no state but their random stream: what they know of the search comes from
    the study's trials, which every process reads alike."""

    def __init__(self, make, seed: int):
        self.make, self.seed = make, seed
        self.current: tuple[int | None, optuna.samplers.BaseSampler | None] = (None, None)

    def for_trial(self, trial) -> optuna.samplers.BaseSampler:
        if self.current[0] != trial.number:
            self.current = (trial.number, self.make(trial_seed(self.seed, trial.number)))
        return self.current[1]

    def infer_relative_search_space(self, study, trial):
        return self.for_trial(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.for_trial(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.for_trial(trial).sample_independent(study, trial, param_name,
                                                        param_distribution)

    def before_trial(self, study, trial) -> None:
        self.for_trial(trial).before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.for_trial(trial).after_trial(study, trial, state, values)


class NumberedGrid(optuna.samplers.BaseSampler):
    """Every point of `grid` once, in an order shuffled by `seed`: trial N gets point N. A
    trial numbered past the grid's end (two processes asked for the last point at once) gets
    a point again; the sweep discards it (`Sweep.ask`)."""

    def __init__(self, grid: dict[str, list], seed: int):
        self.keys = list(grid)
        self.points = list(itertools.product(*grid.values()))
        random.Random(seed).shuffle(self.points)

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        point = self.points[trial.number % len(self.points)]
        return point[self.keys.index(param_name)]
