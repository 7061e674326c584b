"""Budget accounting (study/ledger.py's counts, study/budget.py) on real in-memory Optuna studies:
which trials count, what is done, the target a sweep completes to, and who of several racing
workers goes on."""

from __future__ import annotations

import datetime
import itertools
import textwrap

import optuna
import pytest
from conftest import TINY
from optuna.distributions import CategoricalDistribution
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState, create_trial

from study.budget import finished_with, over_budget, target_trials
from study.config import load_sweep
from study.ledger import Counts, count_trials, counted

pytestmark = pytest.mark.unit  # pure logic: no TensorFlow, no store

optuna.logging.set_verbosity(optuna.logging.WARNING)

WIDTH = {"model.width": CategoricalDistribution([4, 8, 16])}
T0 = datetime.datetime(2024, 1, 1, 12, 0, 0)


def new_study() -> optuna.Study:
    return optuna.create_study(storage=optuna.storages.InMemoryStorage())


def add(study: optuna.Study, state: TrialState, width: int = 8, *, skipped: str | None = None, start=None,
        system_attrs: dict | None = None) -> optuna.trial.FrozenTrial:
    """Add a trial in `state` and return it as stored (with its number)."""
    trial = create_trial(
        state=state,
        params={"model.width": width},
        distributions=WIDTH,
        value=0.5 if state == TrialState.COMPLETE else None,
        # why, as the workers write it; a failure told by a worker says so (one without is a dead worker's)
        user_attrs={"study_skipped": skipped} if skipped else {"study_state": "failed"} if state == TrialState.FAIL else {},
        system_attrs=system_attrs or {},
    )
    if start is not None:
        trial.datetime_start = start
    study.add_trial(trial)
    return study.get_trials()[-1]


def retry(study: optuna.Study, failed: optuna.trial.FrozenTrial) -> optuna.trial.FrozenTrial:
    """Queue a failed trial again exactly as Optuna's stale-trial callback does."""
    RetryHeartbeatStaleTrialCallback()(study, failed)
    return study.get_trials()[-1]


# ------------------------------------------------------------------------------- counting
def test_counts_done_is_finished_pruned_and_failed_only():
    counts = Counts(finished=3, pruned=2, failed=1, running=4, waiting=5, interrupted=6)
    assert counts.done == 6
    assert Counts().done == 0


def test_each_state_is_counted_once_in_its_own_field():
    study = new_study()
    for state, n in ((TrialState.COMPLETE, 3), (TrialState.PRUNED, 2), (TrialState.FAIL, 1),
                     (TrialState.RUNNING, 4), (TrialState.WAITING, 5)):
        for _ in range(n):
            add(study, state)
    counts = count_trials(study.get_trials())
    assert counts == Counts(finished=3, pruned=2, failed=1, running=4, waiting=5, interrupted=0)
    assert counts.done == 6


def test_skipped_trials_do_not_count_in_any_state():
    study = new_study()
    add(study, TrialState.COMPLETE)
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING):
        for why in ("budget", "repeat"):
            add(study, state, skipped=why)
    trials = study.get_trials()
    assert [t.number for t in counted(trials)] == [0]
    assert count_trials(trials) == Counts(finished=1), "a skipped failure is not an interrupted trial either"


def test_a_failed_trial_queued_again_is_interrupted_and_its_retry_counts_instead():
    study = new_study()
    failed = add(study, TrialState.FAIL, width=16)
    queued = retry(study, failed)
    assert queued.state == TrialState.WAITING and queued.system_attrs["failed_trial"] == failed.number
    assert queued.system_attrs["retry_history"] == [failed.number]
    trials = study.get_trials()
    assert [t.number for t in counted(trials)] == [queued.number]
    counts = count_trials(trials)
    assert counts == Counts(waiting=1, interrupted=1) and counts.done == 0


def test_a_chain_of_retries_leaves_only_the_last_attempt_counted():
    """0 fails; its retry 1 (asked from the queue by a worker) fails too; its retry 2 finishes:
    one finished trial, two interrupted."""
    study = new_study()
    first = add(study, TrialState.FAIL, width=4)
    retry(study, first)
    second = study.ask()  # a worker takes the queued retry
    assert second.params == {"model.width": 4}
    study.tell(second, state=TrialState.FAIL)
    retry(study, study.get_trials()[second.number])
    third = study.ask()
    assert study.get_trials()[third.number].system_attrs["retry_history"] == [first.number, second.number]
    study.tell(third, 0.3)
    trials = study.get_trials()
    assert [t.number for t in counted(trials)] == [third.number]
    assert count_trials(trials) == Counts(finished=1, interrupted=2)


def test_a_retry_naming_only_its_original_trial_still_marks_it_interrupted():
    """Retries recorded with `failed_trial` alone (no retry_history) are links all the same."""
    study = new_study()
    failed = add(study, TrialState.FAIL)
    add(study, TrialState.COMPLETE, system_attrs={"failed_trial": failed.number})
    assert count_trials(study.get_trials()) == Counts(finished=1, interrupted=1)


def test_a_failed_trial_that_was_not_queued_again_counts_as_failed():
    """The last attempt of a trial retried up to the cap is a real failure."""
    study = new_study()
    add(study, TrialState.COMPLETE)
    last = add(study, TrialState.FAIL, system_attrs={"failed_trial": 0, "retry_history": [0]})
    counts = count_trials(study.get_trials())
    assert counts == Counts(finished=1, failed=1) and counts.done == 2
    assert last.number in {t.number for t in counted(study.get_trials())}


def test_a_retry_link_spares_only_failed_trials():
    """A finished trial named in another's retry history (settled from its MLflow run) still counts."""
    study = new_study()
    finished = add(study, TrialState.COMPLETE)
    add(study, TrialState.COMPLETE, system_attrs={"failed_trial": finished.number, "retry_history": [finished.number]})
    assert count_trials(study.get_trials()) == Counts(finished=2)


def test_counting_a_study_run_by_optuna_itself():
    """ask/tell as the workers do: two finish, one is pruned, one fails, one still runs."""
    study = new_study()
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE, TrialState.FAIL):
        trial = study.ask()
        trial.suggest_categorical("model.width", [4, 8, 16])
        if state == TrialState.FAIL:
            trial.set_user_attr("study_state", "failed")
        study.tell(trial, 0.1 if state == TrialState.COMPLETE else None, state=state)
    study.ask()
    assert count_trials(study.get_trials()) == Counts(finished=2, pruned=1, failed=1, running=1)


def test_a_failure_nobody_settled_is_not_done_until_a_worker_queues_it_again():
    """Failed in Optuna without our state (a worker died while settling it): neither done nor
    interrupted, but still counted as present, so a grid point is not queued a second time."""
    study = new_study()
    dead = study.ask()
    dead.suggest_categorical("model.width", [4, 8, 16])
    study.tell(dead, state=TrialState.FAIL)
    counts = count_trials(study.get_trials())
    assert counts == Counts(unsettled=1) and counts.done == 0
    assert [t.number for t in counted(study.get_trials())] == [dead.number]


# --------------------------------------------------------------------------------- target
GRID_OF_SIX = TINY  # model.width: 3 values x model.kind: 2 values, sampler: grid, no budget


def test_a_grid_without_budget_completes_to_its_size(write_sweep):
    sweep = load_sweep(write_sweep("tiny", GRID_OF_SIX))
    assert target_trials(sweep) == 3 * 2


@pytest.mark.parametrize("trials, expected", [(1, 1), (5, 5), (6, 6), (7, 6), (1000, 6)])
def test_trials_is_capped_by_the_grid_size(write_sweep, trials, expected):
    sweep = load_sweep(write_sweep("tiny", GRID_OF_SIX))
    assert target_trials(sweep, trials) == expected


def test_a_grid_budget_is_capped_by_the_grid_size_and_trials_wins_over_it(write_sweep):
    small = load_sweep(write_sweep("small", GRID_OF_SIX + "budget: {trials: 4}\n"))
    large = load_sweep(write_sweep("large", GRID_OF_SIX + "budget: {trials: 40}\n"))
    assert target_trials(small) == 4 and target_trials(large) == 6
    assert target_trials(small, 5) == 5 and target_trials(large, 2) == 2


RANDOM = textwrap.dedent("""
    dataset: {name: mnist1d, num_samples: 400}
    search:
      model.width: {type: int, low: 2, high: 64}
    sampler: random
""")


def test_a_sampled_space_completes_to_its_budget_or_to_trials(write_sweep):
    sweep = load_sweep(write_sweep("random", RANDOM + "budget: {trials: 5}\n"))
    assert target_trials(sweep) == 5
    assert target_trials(sweep, 500) == 500, "only a grid caps the target"


def test_a_timeout_only_budget_has_no_target(write_sweep):
    sweep = load_sweep(write_sweep("timed", RANDOM + "budget: {timeout: 10m}\n"))
    assert target_trials(sweep) is None
    assert target_trials(sweep, 3) == 3


# ---------------------------------------------------------------------------- same settings
def test_finished_with_finds_a_finished_or_pruned_trial_with_the_same_settings():
    study = new_study()
    add(study, TrialState.FAIL, width=4)
    add(study, TrialState.RUNNING, width=4)
    pruned = add(study, TrialState.PRUNED, width=8)
    finished = add(study, TrialState.COMPLETE, width=16)
    asked = add(study, TrialState.RUNNING, width=16)
    assert finished_with(study, {"model.width": 16}, asked.number) == finished.number
    assert finished_with(study, {"model.width": 8}, asked.number) == pruned.number
    assert finished_with(study, {"model.width": 4}, asked.number) is None, "failed and running trials do not settle it"
    assert finished_with(study, {"model.width": 16}, finished.number) is None, "a trial does not repeat itself"
    assert finished_with(study, {"model.width": 16, "model.depth": 2}, asked.number) is None, "exactly these settings"


# ---------------------------------------------------------------------------------- budget
def test_without_a_target_nothing_is_over_budget():
    study = new_study()
    for _ in range(5):
        add(study, TrialState.COMPLETE)
    assert not over_budget(study, study.ask(), None)


def test_done_trials_fill_the_budget():
    study = new_study()
    add(study, TrialState.COMPLETE)
    add(study, TrialState.PRUNED)
    mine = study.ask()
    assert over_budget(study, mine, 2)
    assert not over_budget(study, mine, 3)


def test_failed_trials_fill_the_budget_but_interrupted_and_skipped_ones_do_not():
    study = new_study()
    add(study, TrialState.FAIL)  # a real failure: done
    retry(study, add(study, TrialState.FAIL))  # interrupted, queued again (the retry waits)
    add(study, TrialState.COMPLETE, skipped="budget")
    mine = study.ask()
    assert not over_budget(study, mine, 2)
    assert over_budget(study, mine, 1)


def test_queued_trials_are_not_commitments():
    study = new_study()
    add(study, TrialState.COMPLETE)
    for _ in range(3):
        add(study, TrialState.WAITING)  # queued grid points: earlier numbers, never started
    mine = study.ask()
    assert not over_budget(study, mine, 2)


def test_running_trials_that_started_earlier_are_commitments_later_ones_are_not():
    study = new_study()
    add(study, TrialState.COMPLETE)
    add(study, TrialState.RUNNING, start=T0)
    mine = add(study, TrialState.RUNNING, start=T0 + datetime.timedelta(seconds=1))
    add(study, TrialState.RUNNING, start=T0 + datetime.timedelta(seconds=2))
    assert over_budget(study, mine, 2), "the earlier trial took the last place"
    assert not over_budget(study, mine, 3), "the later one does not count against me"


def test_a_skipped_running_trial_is_no_commitment():
    study = new_study()
    add(study, TrialState.RUNNING, start=T0, skipped="budget")
    mine = add(study, TrialState.RUNNING, start=T0 + datetime.timedelta(seconds=1))
    assert not over_budget(study, mine, 1)


def test_of_two_asked_for_the_last_place_exactly_one_goes_on():
    study = new_study()
    add(study, TrialState.COMPLETE)
    first, second = study.ask(), study.ask()
    assert [over_budget(study, t, 2) for t in (first, second)] == [False, True]


def test_a_start_time_tie_is_broken_by_the_trial_number():
    study = new_study()
    low = add(study, TrialState.RUNNING, start=T0)
    high = add(study, TrialState.RUNNING, start=T0)
    assert not over_budget(study, low, 1) and over_budget(study, high, 1)


def test_the_earlier_start_goes_on_even_with_the_higher_number():
    study = new_study()
    late = add(study, TrialState.RUNNING, start=T0 + datetime.timedelta(seconds=5))
    early = add(study, TrialState.RUNNING, start=T0)
    assert late.number < early.number
    assert not over_budget(study, early, 1) and over_budget(study, late, 1)


@pytest.mark.parametrize("done, racing, target", [
    (d, r, t) for d, r, t in itertools.product(range(3), range(1, 5), range(1, 6))
])
def test_exactly_the_places_left_go_to_the_earliest_starters(done, racing, target):
    """Every racing worker asks over_budget at once: the budget is never overrun, never left short,
    and the places go to the first starters (start times scrambled against trial numbers)."""
    study = new_study()
    for _ in range(done):
        add(study, TrialState.COMPLETE)
    starts = [T0 + datetime.timedelta(seconds=(7 * i) % racing) for i in range(racing)]  # ties included
    runners = [add(study, TrialState.RUNNING, start=s) for s in starts]
    goes_on = [t.number for t in runners if not over_budget(study, t, target)]
    places = max(0, target - done)
    expected = sorted(runners, key=lambda t: (t.datetime_start, t.number))[:places]
    assert sorted(goes_on) == sorted(t.number for t in expected)
