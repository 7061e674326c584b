"""A sweep's budget: how many done trials it completes to, whether one more fits, and whether
what the stores hold is what a complete sweep must hold (`audit`).

A sweep completes to its budget of *done* trials (finished, pruned or failed), counted in the
shared Optuna storage by `ledger.count_trials` (one count for `study run`, `study list`, the report
and the sweep run's MLflow metrics). Trials that do not count: those asked over the budget or
repeating settings that already ran (marked `study_skipped`), and failed trials whose settings were
queued again or settled from their MLflow run (their retry counts instead).
"""

from __future__ import annotations

import json

import optuna
from optuna.trial import TrialState

from study import store
from study.config import Sweep
from study.ledger import count_trials, counted
from study.names import Attr
from study.search import grid_points, grid_size


def target_trials(sweep: Sweep, trials: int | None = None, rounds: int = 0) -> int | None:
    """Done trials the sweep completes to: --trials, else the budget, capped by a grid's size
    (times 1 + the rounds of added seeds, each a trial per setting: study run --until-decided)."""
    target = trials or sweep.config.budget.trials
    size = grid_size(sweep)
    if size is not None:
        size *= 1 + rounds
        target = min(target or size, size)
    return target


def finished_with(study: optuna.Study, params: dict, number: int, round_: int = 0) -> int | None:
    """The number of a finished or pruned trial with exactly these settings (in the same round of
    seeds), if there is one."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if t.number != number and t.params == params and int(t.user_attrs.get(Attr.ROUND, 0)) == round_:
            return t.number
    return None


def over_budget(study: optuna.Study, trial: optuna.Trial, target: int | None) -> bool:
    """True when the done trials and the trials that started before this one fill the budget.

    Queued trials are not commitments; running ones are, in the order they started (then by
    number), so of two workers racing for the last place exactly one goes on.
    """
    if target is None:
        return False
    trials = study.get_trials(deepcopy=False)
    mine = next(t for t in trials if t.number == trial.number)
    order = (mine.datetime_start, mine.number)
    ahead = [
        t for t in trials
        if t.state == TrialState.RUNNING and t.number != mine.number and (t.datetime_start, t.number) < order
    ]
    return count_trials(trials).done + count_trials(ahead).running >= target


def audit(study: optuna.Study, sweep: Sweep, target: int | None) -> list[str]:
    """What keeps a sweep that reached its budget from being complete, one line each (none: it
    is): a trial still RUNNING or failed without being settled, settings done twice in one round,
    grid points never done. `study run` checks before it says
    "complete"; `study list` shows the same check."""
    trials = study.get_trials(deepcopy=False)
    counts = count_trials(trials)
    problems = []
    running = [t.number for t in trials if t.state == TrialState.RUNNING]
    if running:
        problems.append(f"{_trials(running)} still running (a worker elsewhere, or one that died: it is settled "
                        f"{store.GRACE_SECONDS} s after its last heartbeat)")
    if counts.unsettled:
        problems.append(f"{counts.unsettled} trial(s) failed by a worker that died before queueing them again")
    seen: dict[str, int] = {}
    for t in counted(trials):
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
            continue
        key = json.dumps([t.params, int(t.user_attrs.get(Attr.ROUND, 0))], sort_keys=True, default=str)
        if key in seen:
            problems.append(f"trials {seen[key]} and {t.number} both ran {_settings(t.params)}")
        seen.setdefault(key, t.number)
    done_points = {json.dumps(t.params, sort_keys=True, default=str) for t in counted(trials)
                   if t.state != TrialState.RUNNING and t.state != TrialState.WAITING
                   and int(t.user_attrs.get(Attr.ROUND, 0)) == 0}
    points = grid_points(sweep)
    missing = [p for p in points if json.dumps(p, sort_keys=True, default=str) not in done_points]
    if missing and (target is None or target >= len(points)):  # --trials may ask for part of the grid
        problems.append(f"{len(missing)} grid point(s) never done, e.g. {_settings(missing[0])}")
    return problems


def _trials(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:5])) + (", ..." if len(numbers) > 5 else "")
    return f"trial{'s' if len(numbers) > 1 else ''} {shown}"


def _settings(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "the default settings"
