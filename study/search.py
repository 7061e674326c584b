"""The search space meets Optuna here: samplers, pruners, and the only calls to `suggest_*`."""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from study.config import Sweep
from study.schema import CategoricalParam, FloatParam, IntParam

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def suggest(trial: optuna.Trial, space: dict) -> dict[str, Any]:
    """Sample every searched key of `space` (a sweep's `searched`) for `trial`."""
    params: dict[str, Any] = {}
    for key, spec in space.items():
        if isinstance(spec, IntParam):
            step = spec.step if not spec.log else 1
            params[key] = trial.suggest_int(key, spec.low, spec.high, step=step, log=spec.log)
        elif isinstance(spec, FloatParam):
            params[key] = trial.suggest_float(key, spec.low, spec.high, step=spec.step, log=spec.log)
        elif isinstance(spec, CategoricalParam):
            params[key] = trial.suggest_categorical(key, spec.choices)
        else:  # pragma: no cover - the schema admits no other kind
            raise TypeError(f"cannot search {key}: {spec!r}")
    return params


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its `study.stop()` once the grid is covered: that call
    works only inside `Study.optimize`, and with ask/tell the sweep's budget (the grid's size,
    see `sweep.target_trials`) ends the sweep instead."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def build_sampler(sweep: Sweep, worker: int = 0, existing: int = 0) -> optuna.samplers.BaseSampler:
    """The sweep's sampler, seeded by the sweep seed, the worker index and the number of trials
    already in the study: parallel workers and resumed sessions then draw new points instead of
    replaying the first session's random ones, and the same history still gives the same draws."""
    spec = sweep.config.sampler
    seed = (sweep.config.seed * 1_000_003 + worker * 10_007 + existing) % 2**31
    if spec.name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=spec.n_startup_trials, multivariate=spec.multivariate, constant_liar=True
        )
    if spec.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.name == "grid":
        # The grid's order is a shuffle by its seed, and grid ids recorded by earlier sessions
        # and other workers must keep meaning the same points: the sweep's own seed only.
        return GridSampler(sweep.grid(), seed=sweep.config.seed)
    if spec.name == "nsgaii":
        return optuna.samplers.NSGAIISampler(population_size=spec.population_size, seed=seed)
    raise ValueError(f"unknown sampler {spec.name!r}")  # pragma: no cover - the schema admits no other


def max_epochs(sweep: Sweep) -> int:
    """The most epochs any trial of the sweep can run (Hyperband's largest budget)."""
    searched = sweep.config.search.get("train.epochs")
    if isinstance(searched, IntParam):
        return searched.high
    if isinstance(searched, CategoricalParam):
        return max(int(c) for c in searched.choices)
    return int(sweep.defaults()["train"]["epochs"])


def build_pruner(sweep: Sweep) -> optuna.pruners.BasePruner:
    spec = sweep.config.pruner
    if spec.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec.n_startup_trials, n_warmup_steps=spec.n_warmup_steps)
    if spec.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=spec.min_resource, max_resource=max_epochs(sweep), reduction_factor=spec.reduction_factor
        )
    return optuna.pruners.NopPruner()


def grid_size(sweep: Sweep) -> int | None:
    """Number of grid points for the grid sampler, else None."""
    if sweep.config.sampler.name != "grid":
        return None
    size = 1
    for values in sweep.grid().values():
        size *= len(values)
    return size
