"""Trials counted against a sweep's budget: one count for `study run`, `study list`, the report
and the sweep run's MLflow metrics.

A sweep completes to its budget of *done* trials (finished, pruned or failed), counted in the
shared Optuna storage. Trials that do not count: those asked over the budget or repeating settings
that already ran (marked `study_skipped`), and failed trials whose settings were queued again or
settled from their MLflow run (their retry counts instead). Those last are `interrupted`: MLflow's
FAILED runs of a sweep are its failed plus its interrupted trials.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from study.config import Sweep
from study.names import Attr
from study.search import grid_size


@dataclass
class Counts:
    finished: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    interrupted: int = 0  # failed runs whose settings were queued again (Ctrl+C, a dead worker): not done

    @property
    def done(self) -> int:
        return self.finished + self.pruned + self.failed


def counted(trials: list) -> list:
    """The trials that count: not skipped (over budget, or repeating finished settings), and not
    failed trials that were queued again or settled (their retry counts instead)."""
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    retried |= {t.system_attrs.get("failed_trial") for t in trials} - {None}
    return [
        t for t in trials
        if not t.user_attrs.get("study_skipped") and not (t.state == TrialState.FAIL and t.number in retried)
    ]


def count_trials(trials: list) -> Counts:
    """Trials per state, of those that count; and the interrupted ones that were queued again.
    MLflow's FAILED runs of a sweep are its `failed` plus its `interrupted` trials."""
    counts = Counts()
    kept = counted(trials)
    numbers = {t.number for t in kept}
    counts.interrupted = sum(
        1 for t in trials if t.state == TrialState.FAIL and t.number not in numbers and not t.user_attrs.get("study_skipped")
    )
    for t in kept:
        if t.state == TrialState.COMPLETE:
            counts.finished += 1
        elif t.state == TrialState.PRUNED:
            counts.pruned += 1
        elif t.state == TrialState.FAIL:
            counts.failed += 1
        elif t.state == TrialState.RUNNING:
            counts.running += 1
        elif t.state == TrialState.WAITING:
            counts.waiting += 1
    return counts


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
