"""The search space meets Optuna here: samplers, pruners, and the only calls to `suggest_*`."""

from __future__ import annotations

import itertools
import json
import os
import random
from typing import Any

import numpy as np
import optuna
from pydantic import ValidationError

from study.config import Sweep
from study.schema import (
    TRAINS_OWN_MODEL,
    CategoricalParam,
    CompressSpec,
    FloatParam,
    IntParam,
    knobs_read,
)


def relevant(key: str, compress: dict | None) -> bool:
    """Whether a trial with these `compress` settings reads `key` (None: not a compression sweep).

    Only what the trial's method reads is sampled and logged, so a multi-method sweep's trials
    carry only the settings that shaped them; `model.*` matters to methods that train a model.
    """
    if compress is None:
        return True
    section, _, name = key.partition(".")
    if section == "compress":
        return name == "method" or name in knobs_read(
            compress["method"], compress["bits"], compress["scheme"], compress["structure"]
        )
    if section == "model":
        return compress["method"] in TRAINS_OWN_MODEL
    return True


# Sampled first, in this order: they decide which other knobs a trial reads.
DECIDING = ("compress.method", "compress.bits", "compress.scheme", "compress.structure")


def suggest(trial: optuna.Trial, sweep: Sweep) -> dict[str, Any]:
    """Sample every searched key of `sweep` that the trial reads."""
    space = sweep.searched
    compress = dict(sweep.defaults()["compress"]) if sweep.config.base is not None else None
    params: dict[str, Any] = {}
    for key in [*(k for k in DECIDING if k in space), *(k for k in space if k not in DECIDING)]:
        if relevant(key, compress):
            params[key] = _suggest_one(trial, key, space[key])
            if compress is not None and key in DECIDING:
                compress[key.split(".")[1]] = params[key]
    return params


def _suggest_one(trial: optuna.Trial, key: str, spec) -> Any:
    if isinstance(spec, IntParam):
        step = spec.step if not spec.log else 1
        return trial.suggest_int(key, spec.low, spec.high, step=step, log=spec.log)
    if isinstance(spec, FloatParam):
        return trial.suggest_float(key, spec.low, spec.high, step=spec.step, log=spec.log)
    if isinstance(spec, CategoricalParam):
        return trial.suggest_categorical(key, spec.choices)
    raise TypeError(f"cannot search {key}: {spec!r}")  # pragma: no cover - the schema admits no other kind


def sampler_seed(sweep_seed: int, salt: int | None = None) -> int:
    """A sampler seed: the sweep seed mixed with `salt`. Workers pass the place of the trial they
    ask in the sweep's sequence (`ledger.place`), so the same sweep draws the same settings when
    run twice or resumed, and two workers asking at once draw with different seeds. Without a
    salt, fresh random bits."""
    salt = int.from_bytes(os.urandom(8), "little") if salt is None else salt
    return int(np.random.SeedSequence([sweep_seed % 2**32, salt % 2**64]).generate_state(1)[0]) % 2**31


def build_sampler(sweep: Sweep, salt: int | None = None) -> optuna.samplers.BaseSampler:
    """The sweep's sampler, seeded by the sweep's seed and `salt` (see sampler_seed)."""
    spec = sweep.config.sampler
    seed = sampler_seed(sweep.config.seed, salt)
    if spec.name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=spec.n_startup_trials, multivariate=spec.multivariate, constant_liar=True
        )
    if spec.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.name == "grid":
        # Grid points are queued as fixed trials (see grid_points); nothing is left to sample.
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.name == "nsgaii":
        return optuna.samplers.NSGAIISampler(population_size=spec.population_size, seed=seed)
    raise ValueError(f"unknown sampler {spec.name!r}")  # pragma: no cover - the schema admits no other


def max_epochs(sweep: Sweep) -> int:
    """The most epochs any trial of the sweep can run (Hyperband's largest budget)."""
    searched = sweep.config.search.get("train.epochs")
    if isinstance(searched, IntParam):
        return searched.high
    if isinstance(searched, CategoricalParam):
        return max(int(c) for c in searched.choices if isinstance(c, (int, float)))  # the schema makes them ints
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


def grid_points(sweep: Sweep) -> list[dict[str, Any]]:
    """The grid sampler's trials: every combination of the searched values, keeping only the keys
    a trial reads and each distinct configuration once, in an order shuffled by the sweep's seed
    (so a half-finished grid is a fair sample of it). Combinations no method can make (4-bit
    weights by ptq_int8) are left out, as knobs a method does not read are."""
    if sweep.config.sampler.name != "grid":
        return []
    space = sweep.grid()
    defaults = dict(sweep.defaults()["compress"]) if sweep.config.base is not None else None
    seen, points = set(), []
    for combo in itertools.product(*space.values()):
        values = dict(zip(space, combo))
        compress = None
        if defaults is not None:
            compress = {**defaults, **{k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("compress.")}}
        if compress is not None and not _makeable(compress):
            continue
        point = {k: v for k, v in values.items() if relevant(k, compress)}
        identity = json.dumps(point, sort_keys=True)
        if identity not in seen:
            seen.add(identity)
            points.append(point)
    random.Random(sweep.config.seed).shuffle(points)
    return points


def _makeable(compress: dict) -> bool:
    try:
        CompressSpec.model_validate(compress)
    except ValidationError:
        return False
    return True


def grid_size(sweep: Sweep) -> int | None:
    """Number of distinct grid points for the grid sampler, else None."""
    return len(grid_points(sweep)) if sweep.config.sampler.name == "grid" else None
