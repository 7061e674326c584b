"""A worker that dies at any moment of a trial's life: the next worker settles the trial in Optuna
and MLflow together. Real stores, in this process; the deaths are staged by leaving a trial as a
killed worker would (see study/ledger.py)."""

from __future__ import annotations

import optuna
import pytest
from conftest import TINY, settle_later
from mlflow.entities import Metric, RunTag
from optuna.trial import TrialState

from study import ledger, names
from study import store as store_module
from study.config import load_sweep
from study.ledger import count_trials
from study.sweep import prepare, run_sweep


def asked(study) -> optuna.Trial:
    trial = study.ask()
    trial.suggest_categorical("model.kind", ["mlp", "cnn"])
    trial.suggest_categorical("model.width", [4, 8, 16])
    return trial




@pytest.mark.slow
def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_failed_and_queued_again(staged):
    sweep, study, tracker = staged
    trial = asked(study)  # killed between ask and the first heartbeat: Optuna's own check never sees it
    assert settle_later(study, tracker, sweep) == [trial.number]
    trials = study.get_trials(deepcopy=False)
    assert trials[trial.number].state == TrialState.FAIL
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == trial.number]
    assert len(retry) == 1 and retry[0].state == TrialState.WAITING and retry[0].params == trial.params
    assert settle_later(study, tracker, sweep) == [], "settled once"


def test_a_run_whose_id_was_never_recorded_is_found_by_its_trial_number_and_closed(staged):
    sweep, study, tracker = staged
    trial = asked(study)
    study._storage.record_heartbeat(trial._trial_id)
    orphan = tracker.client.create_run(tracker.experiment_id, tags={"study.role": "trial", "study.trial": str(trial.number)})
    assert settle_later(study, tracker, sweep) == [trial.number]
    closed = tracker.client.get_run(orphan.info.run_id)
    assert closed.info.status == "FAILED" and "no heartbeat" in closed.data.tags["study.reason"]


def test_a_run_left_running_by_an_ended_trial_is_closed(staged):
    sweep, study, tracker = staged
    trial = asked(study)  # Ctrl+C just after its run was made: the trial was failed and queued, the run not closed
    orphan = tracker.client.create_run(tracker.experiment_id, tags={"study.role": "trial", "study.trial": str(trial.number)})
    study.tell(trial, state=TrialState.FAIL)
    live = asked(study)  # a trial still training: its run is left alone
    running = tracker.client.create_run(tracker.experiment_id, tags={"study.role": "trial", "study.trial": str(live.number)})
    study._storage.record_heartbeat(live._trial_id)
    assert ledger.Settle(tracker.client, sweep.metrics)(study) == []
    ledger.close_orphan_runs(study, tracker.client)
    closed = tracker.client.get_run(orphan.info.run_id)
    assert closed.info.status == "FAILED" and closed.data.tags["study.state"] == "interrupted"
    assert tracker.client.get_run(running.info.run_id).info.status == "RUNNING"


def test_a_trial_that_finished_in_mlflow_is_recorded_not_trained_again(staged):
    sweep, study, tracker = staged
    trial = asked(study)
    study._storage.record_heartbeat(trial._trial_id)
    run = tracker.client.create_run(tracker.experiment_id, tags={"study.role": "trial", "study.trial": str(trial.number)})
    tracker.client.log_batch(run.info.run_id, metrics=[Metric("val/accuracy", 0.75, 0, 0)],
                             tags=[RunTag("study.state", "finished")])
    tracker.client.set_terminated(run.info.run_id, "FINISHED")
    trial.set_user_attr("mlflow_run_id", run.info.run_id)  # the worker died here, before telling Optuna
    settle_later(study, tracker, sweep)
    trials = study.get_trials(deepcopy=False)
    recorded = [t for t in trials if t.system_attrs.get("failed_trial") == trial.number]
    assert len(recorded) == 1 and recorded[0].state == TrialState.COMPLETE and recorded[0].values == [0.75]
    assert recorded[0].params == trial.params and recorded[0].user_attrs["mlflow_run_id"] == run.info.run_id
    assert tracker.client.get_run(run.info.run_id).info.status == "FINISHED", "the run is left as it ended"
    assert count_trials(trials).finished == 1 and count_trials(trials).failed == 0, "counted once"


@pytest.mark.slow
def test_a_trial_that_keeps_killing_its_worker_is_retried_only_up_to_the_cap(write_sweep, store, monkeypatch):
    monkeypatch.setattr(store_module, "GRACE_SECONDS", 1)
    sweep = load_sweep(write_sweep("oom", TINY.replace("sampler: grid", "sampler: random\nbudget: {trials: 10}")))
    study, tracker, _ = prepare(sweep, store)
    first = asked(study)
    history = [first.number]
    settle_later(study, tracker, sweep)
    for _ in range(ledger.MAX_RETRIES):
        retry = study.ask()  # the queued retry: it dies too
        assert retry.params == first.params
        history.append(retry.number)
        settle_later(study, tracker, sweep)
    trials = study.get_trials(deepcopy=False)
    last = trials[history[-1]]
    assert last.state == TrialState.FAIL and "not retried" in last.user_attrs["study_reason"]
    assert last.system_attrs.get("retry_history") == history[:-1]
    assert not [t for t in trials if t.state == TrialState.WAITING], "no retry after the cap"
    assert count_trials(trials).failed == 1, "the chain counts as one failed trial"


def test_a_resumed_sweep_completes_exactly_after_a_worker_died(staged, store):
    sweep, study, tracker = staged
    asked(study)  # dead before its first heartbeat
    summary = run_sweep(sweep, store)
    assert summary.counts.finished == 6 and summary.counts.failed == 0
    states = [r.info.status for r in store.mlflow().search_runs([tracker.experiment_id], "tags.`study.role` = 'trial'")]
    assert states.count("FINISHED") == 6 and "RUNNING" not in states


def test_ctrl_c_never_uses_up_the_retries_that_stop_a_trial_killing_its_worker():
    """Interrupted by the user any number of times, settings are queued again; lost with their
    worker more than MAX_RETRIES times, they are not (an out-of-memory trial must not loop)."""
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    study.enqueue_trial({"x": 1})
    for _ in range(ledger.MAX_RETRIES + 3):  # Ctrl+C, again and again, on the same settings
        trial = study.ask({"x": optuna.distributions.IntDistribution(0, 9)})
        trial.set_user_attr(names.Attr.STATE, names.TrialState.INTERRUPTED)
        study.tell(trial, state=TrialState.FAIL)
        assert ledger.queue_again(study, study._storage.get_trial(trial._trial_id))
    assert [t.state for t in study.trials].count(TrialState.WAITING) == 1
    for died in range(1, ledger.MAX_RETRIES + 2):  # now the worker dies under it each time
        trial = study.ask({"x": optuna.distributions.IntDistribution(0, 9)})
        assert trial.params == {"x": 1}, "the retry has the same settings"
        trial.set_user_attr(names.Attr.STATE, names.TrialState.RUNNING)
        study.tell(trial, state=TrialState.FAIL)
        frozen = study._storage.get_trial(trial._trial_id)
        assert ledger.deaths(study, frozen) == died
        assert ledger.queue_again(study, frozen) == (died <= ledger.MAX_RETRIES)


def test_a_retry_starts_as_itself_not_as_the_trial_it_repeats():
    """Optuna's retry callback copies the failed trial's user attrs; a retry must not keep the old
    trial's MLflow run id (recovery would settle it by the wrong run) or its state and reason."""
    from study.ledger import reset_inherited

    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    first = study.ask({"x": optuna.distributions.IntDistribution(0, 9)})
    first.set_user_attr(names.Attr.RUN_ID, "0123abcd")  # its worker died: no state was ever set
    study.tell(first, state=TrialState.FAIL)
    assert ledger.queue_again(study, study._storage.get_trial(first._trial_id))
    retry = study.ask()
    assert retry.user_attrs[names.Attr.RUN_ID] == "0123abcd", "what Optuna's callback does"
    reset_inherited(retry)
    assert retry.user_attrs == {names.Attr.STATE: "running", names.Attr.REASON: "", names.Attr.RUN_ID: ""}
    assert retry.params == first.params
    reset_inherited(retry)  # idempotent
    fresh = study.ask({"x": optuna.distributions.IntDistribution(0, 9)})
    reset_inherited(fresh)
    assert fresh.user_attrs == {}, "a new trial is left alone"
