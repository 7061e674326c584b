"""`study run --until-decided`: add seeds to a grid's settings, a round at a time, until every claim
of its report is decided or the budget of seeds runs out.

Each round adds the sweep's `replicates` seeds to every finished setting of the grid: replicate r
of round k trains with seed + k·R + r, so a round's seeds are new and, as before, shared by every
setting (the per-seed contrasts of report/seeds.py stay paired). A round is asked for only when an
undecided claim could be decided within the budget, by the report's own estimate of the seeds it
needs (from the per-seed spread).

Looking at the claims after every round and stopping once they are decided is optional stopping,
which inflates the error rate of a test run at 5% each time. The study records how many looks it
may take (1 + the rounds the seed budget allows) before the first look, and every look, the
report's included, tests at α / looks: a Bonferroni bound over looks, valid whatever the stopping
rule and whatever the looks see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import optuna

from study.config import Sweep
from study.errors import BadInput
from study.ledger import count_trials
from study.names import Attr
from study.report.load import load_sweep_runs
from study.report.sections import compute_report
from study.store import Store
from study.sweep import Summary

DEFAULT_MAX_SEEDS = 12  # seeds per setting: enough to decide effects of about 3 points (see README)


@dataclass
class Decided:
    summary: Summary  # the last round's run
    looks: int
    rounds: list[dict] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)  # claims left undecided, with what would decide them


def check(sweep: Sweep, max_seeds: int) -> int:
    """The looks a sweep run until decided may take; BadInput where it cannot be."""
    replicates = sweep.config.replicates
    if sweep.config.base is not None:
        raise BadInput("--until-decided: compression sweeps compare files, not seeds; run them with more replicates")
    if sweep.config.sampler.name != "grid":
        raise BadInput("--until-decided: the claims need a grid (sampler: grid), so that every setting gets the same seeds")
    if max_seeds < replicates:
        raise BadInput(f"--max-seeds {max_seeds}: below the sweep's {replicates} replicates; give at least {replicates}")
    return max(1, max_seeds // replicates)


def run_until_decided(sweep: Sweep, store: Store, max_seeds: int, run: Callable[[int | None], Summary]) -> Decided:
    """Run the sweep (`run(trials)` runs it to that budget), then rounds of new seeds while an
    undecided claim could be decided within `max_seeds` seeds per setting."""
    looks = check(sweep, max_seeds)
    replicates = sweep.config.replicates
    summary = run(None)
    study = optuna.load_study(study_name=sweep.name, storage=store.optuna())
    study.set_user_attr(Attr.LOOKS, looks)
    rounds: list[dict] = list(study.user_attrs.get(Attr.ROUNDS, []))
    while True:
        claims = compute_report(load_sweep_runs(store, sweep.name)).claims
        pending = [c for c in claims if c.verdict == "inconclusive"]
        seeds = replicates * (1 + len(rounds))
        decidable = [c for c in pending if c.noise == "seeds" and c.needed is not None and c.needed <= max_seeds]
        if not decidable or seeds + replicates > max_seeds:
            return Decided(summary, looks, rounds, [f"{c.claim}: {c.decide}" for c in pending])
        added = add_round(study, sweep, [c.claim for c in decidable])
        rounds.append(added)
        summary = run(count_trials(study.get_trials(deepcopy=False)).done + added["settings"])


def add_round(study: optuna.Study, sweep: Sweep, claims: list[str]) -> dict:
    """Queue the next round of seeds: one trial per finished setting of the first round, marked
    with its round (the runner trains replicate r of round k with seed + k·R + r); recorded with
    the claims that asked for it in the study's rounds."""
    rounds = list(study.user_attrs.get(Attr.ROUNDS, []))
    round_ = len(rounds) + 1
    points = [t.params for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
              if int(t.user_attrs.get(Attr.ROUND, 0)) == 0]
    for point in points:
        study.enqueue_trial(point, user_attrs={Attr.ROUND: round_})
    added = {"round": round_, "first_seed": sweep.config.seed + round_ * sweep.config.replicates,
             "seeds": sweep.config.replicates, "settings": len(points), "claims": claims}
    study.set_user_attr(Attr.ROUNDS, [*rounds, added])
    return added
