"""TPE whose random draws depend on the search seed and the trial number, not on the worker.

The README tells every machine of a shared search to use the same settings, ``search_seed`` included. With
one seeded TPE per worker, every worker then draws the same random numbers in the same order: during the
start-up phase they propose identical schedules, one after the other (29-33 distinct schedules among 40-42
trials were measured with 2-3 workers). Trial numbers are unique across workers (the storage hands them
out), so seeding each trial's draws from (search seed, trial number) gives concurrent workers different
proposals while one worker stays exactly reproducible, as the ``search_seed`` tooltip promises.
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import optuna
from optuna.samplers import BaseSampler


def trial_seed(search_seed: int, number: int) -> int:
    """A 32-bit seed for one trial, well mixed (neighbouring trials get unrelated streams)."""
    return int(np.random.SeedSequence([int(search_seed) & 0xFFFFFFFF, int(number)]).generate_state(1)[0])


class TrialSeededSampler(BaseSampler):
    """Delegates each trial to a TPESampler seeded with :func:`trial_seed`, kept while the trial runs (one at a
    time: each worker process optimises one trial after another with its own sampler)."""

    def __init__(self, search_seed: int, **tpe_options: Any):
        self.search_seed = int(search_seed)
        self.tpe_options = tpe_options
        self._current: tuple[int, BaseSampler] | None = None

    def for_trial(self, number: int) -> BaseSampler:
        if self._current is None or self._current[0] != number:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                sampler = optuna.samplers.TPESampler(seed=trial_seed(self.search_seed, number), **self.tpe_options)
            self._current = (number, sampler)
        return self._current[1]

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return self.for_trial(trial.number).infer_relative_search_space(study, trial)

    def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        return self.for_trial(trial.number).sample_relative(study, trial, search_space)

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        return self.for_trial(trial.number).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Any, trial: Any) -> None:
        self.for_trial(trial.number).before_trial(study, trial)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Sequence[float] | None) -> None:
        self.for_trial(trial.number).after_trial(study, trial, state, values)
        self._current = None

    def reseed_rng(self) -> None:
        """Nothing to reseed: every trial's stream is fixed by its number."""
