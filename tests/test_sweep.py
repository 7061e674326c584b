"""Sweeps end to end, in this process, into temporary stores read back with MLflow and Optuna."""

from __future__ import annotations

import time

import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import TINY
from optuna.trial import TrialState

from study import objective
from study import store as store_module
from study.config import load_sweep
from study.errors import StudyError
from study.sweep import Interrupted, prepare, run_sweep


def runs_of(store, name: str, role: str = "trial"):
    client = store.mlflow()
    experiment = client.get_experiment_by_name(name)
    return client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`study.role` = '{role}'", order_by=["attributes.start_time ASC"]
    )


def study_of(store, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=store.optuna())


def test_every_trial_has_its_run_with_params_metrics_state_and_artifacts(write_sweep, store):
    sweep = load_sweep(write_sweep("tiny", TINY))
    summary = run_sweep(sweep, store, trials=3)
    assert summary.state == "complete" and summary.counts.finished == 3

    study = study_of(store, "tiny")
    client = store.mlflow()
    runs = {r.info.run_id: r for r in runs_of(store, "tiny")}
    assert len(runs) == 3
    ran = [t for t in study.trials if t.state != TrialState.WAITING]
    assert len(ran) == 3 and len(study.trials) == 6, "the other grid points wait in the queue"
    for trial in ran:
        run = runs[trial.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED" and run.data.tags["study.state"] == "finished"
        assert run.data.tags["study.trial"] == str(trial.number)
        assert run.data.tags["study.name"] == "tiny" and run.data.tags["study.sweep_hash"] == sweep.file_hash
        assert "study.version.tensorflow" in run.data.tags and "study.version.optuna" in run.data.tags
        # every resolved setting, sampled or not, under its dotted name
        assert run.data.params["model.width"] == str(trial.params["model.width"])
        assert run.data.params["train.epochs"] == "2" and run.data.params["dataset.name"] == "mnist1d"
        # final metrics, and the objective Optuna was told
        for name in ("train/loss", "val/accuracy", "test/accuracy", "gap/accuracy", "model/params", "model/size_bytes", "fit/seconds", "fit/epochs"):
            assert name in run.data.metrics, name
        assert trial.values[0] == pytest.approx(run.data.metrics["val/accuracy"])
        # per-epoch curves, one point per epoch
        history = client.get_metric_history(run.info.run_id, "epoch/val_loss")
        assert sorted(m.step for m in history) == [1, 2]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"sweep.yaml", "history.csv", "predictions.npz", "replicates.csv", "model"} <= artifacts
        assert [a.path for a in client.list_artifacts(run.info.run_id, "model")] == ["model/model.keras"]
        assert run.inputs.dataset_inputs[0].dataset.name == "mnist1d"

    parent = runs_of(store, "tiny", role="sweep")
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert all(r.data.tags["study.sweep_run"] == parent[0].info.run_id for r in runs.values())
    assert not any("mlflow.parentRunId" in r.data.tags for r in runs.values()), "trials are top-level runs: the UI shows them unfolded"
    assert parent[0].data.metrics["trials/finished"] == 3
    best = [r for r in runs.values() if r.data.tags.get("study.best") == "true"]
    assert [b.data.tags["study.trial"] for b in best] == [str(study.best_trial.number)]


def test_predictions_artifact_holds_every_replicate(write_sweep, store, tmp_path):
    sweep = load_sweep(write_sweep("reps", TINY + "replicates: 2\n"))
    run_sweep(sweep, store, trials=1)
    trial_run = runs_of(store, "reps")[0]
    path = store.mlflow().download_artifacts(trial_run.info.run_id, "predictions.npz", str(tmp_path))
    with np.load(path) as saved:
        assert saved["outputs"].shape == (2, 80, 10) and saved["y_test"].shape == (80,)
        assert saved["seeds"].tolist() == [0, 1]
    replicate_runs = runs_of(store, "reps", role="replicate")
    assert len(replicate_runs) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in replicate_runs} == {trial_run.info.run_id}
    assert all(r.info.status == "FINISHED" and "test/accuracy" in r.data.metrics for r in replicate_runs)
    mean = np.mean([r.data.metrics["test/accuracy"] for r in replicate_runs])
    assert trial_run.data.metrics["test/accuracy"] == pytest.approx(mean)
    assert "test/accuracy_std" in trial_run.data.metrics


NAN_SWEEP = """
    dataset: {name: polynomial, num_samples: 60}
    model: {depth: 1, width: 8}
    train: {optimizer: sgd, epochs: 3, batch_size: 8}
    search:
      train.learning_rate: [1.0e+6, 0.01]
    sampler: grid
"""


def test_a_diverging_trial_is_pruned_with_a_reason_and_never_best(write_sweep, store):
    run_sweep(load_sweep(write_sweep("nan", NAN_SWEEP)), store)
    study = study_of(store, "nan")
    by_lr = {t.params["train.learning_rate"]: t for t in study.trials}
    diverged = by_lr[1e6]
    assert diverged.state == TrialState.PRUNED and diverged.user_attrs["study_state"] == "diverged"
    assert "became" in diverged.user_attrs["study_reason"]
    assert study.best_trial.number == by_lr[0.01].number
    run = store.mlflow().get_run(diverged.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["study.state"] == "diverged"
    assert "became" in run.data.tags["study.reason"]


def test_an_exception_fails_only_its_trial_and_the_sweep_goes_on(write_sweep, store):
    text = TINY.replace("model.kind: [mlp, cnn]", "dataset.train_size: [50, 100000]")
    summary = run_sweep(load_sweep(write_sweep("oops", text)), store)
    assert summary.counts.failed == 3 and summary.counts.finished == 3
    failed = [t for t in study_of(store, "oops").trials if t.state == TrialState.FAIL]
    assert all("exceeds the" in t.user_attrs["study_reason"] for t in failed)
    run = store.mlflow().get_run(failed[0].user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and "exceeds the" in run.data.tags["study.error"]
    from study.cli import render_summary

    named = [line for line in render_summary(summary, load_sweep(write_sweep("oops", text))).splitlines()
             if line.startswith("failed: trial")]
    assert len(named) == 3 and all("dataset.train_size=100000" in line and "exceeds the" in line for line in named)


def test_a_sweep_whose_trials_all_fail_stops_and_says_why(write_sweep, store):
    text = TINY.replace("model.kind: [mlp, cnn]", "dataset.train_size: [100000, 200000]")
    with pytest.raises(StudyError, match=r"\d+ trials in a row failed; the last: dataset.train_size"):
        run_sweep(load_sweep(write_sweep("broken", text.replace("model.width: [4, 8, 16]", "model.width: [1, 2, 3, 4]"))), store)


@pytest.mark.slow
def test_resume_completes_to_n_trials_and_never_repeats_finished_work(write_sweep, store):
    sweep = load_sweep(write_sweep("resume", TINY))
    run_sweep(sweep, store, trials=2)
    first = {t.number: t.params for t in study_of(store, "resume").trials if t.state == TrialState.COMPLETE}
    summary = run_sweep(sweep, store, trials=5)
    study = study_of(store, "resume")
    ran = [t for t in study.trials if t.state != TrialState.WAITING]
    assert summary.counts.finished == 5 and len(ran) == 5
    assert {t.number: t.params for t in ran if t.number in first} == first
    grid_points = [tuple(sorted(t.params.items())) for t in ran]
    assert len(set(grid_points)) == 5, "the grid sampler visits each point once"
    assert len(runs_of(store, "resume")) == 5
    again = run_sweep(sweep, store, trials=5)
    assert again.counts.done == 5 and len(study_of(store, "resume").trials) == 6, "a finished sweep starts nothing"


@pytest.mark.slow
def test_interrupt_fails_the_trial_in_both_stores_and_resume_retries_it(write_sweep, store, monkeypatch):
    sweep = load_sweep(write_sweep("stop", TINY), {"pack": 1})
    real = objective.run_trials
    calls = []

    def interrupted_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(objective, "run_trials", interrupted_on_third)
    with pytest.raises(Interrupted):
        run_sweep(sweep, store, trials=4)
    study = study_of(store, "stop")
    stopped = next(t for t in study.trials if t.state == TrialState.FAIL)
    assert stopped.user_attrs["study_state"] == "interrupted"
    run = store.mlflow().get_run(stopped.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["study.state"] == "interrupted"
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == stopped.number]
    assert len(retries) == 1 and retries[0].state == TrialState.WAITING and retries[0].params == stopped.params
    assert runs_of(store, "stop", role="sweep")[0].info.status == "KILLED"

    monkeypatch.setattr(objective, "run_trials", real)
    summary = run_sweep(sweep, store)  # the whole grid: 6 points
    study = study_of(store, "stop")
    assert summary.counts.finished == 6 and summary.state == "complete"
    retried = next(t for t in study.trials if t.system_attrs.get("failed_trial") == stopped.number)
    assert retried.state == TrialState.COMPLETE and retried.params == stopped.params
    finished_runs = [r for r in runs_of(store, "stop") if r.info.status == "FINISHED"]
    assert len(finished_runs) == 6


@pytest.mark.slow
def test_an_interrupted_pack_queues_every_trial_in_it_again(write_sweep, store, monkeypatch):
    sweep = load_sweep(write_sweep("stoppack", TINY), {"pack": 4})

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(objective, "run_trials", interrupted)
    with pytest.raises(Interrupted):
        run_sweep(sweep, store)
    study = study_of(store, "stoppack")
    stopped = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(stopped) == 4 and all(t.user_attrs["study_state"] == "interrupted" for t in stopped)
    for trial in stopped:
        assert store.mlflow().get_run(trial.user_attrs["mlflow_run_id"]).data.tags["study.state"] == "interrupted"
    monkeypatch.undo()
    summary = run_sweep(sweep, store)
    assert summary.counts.finished == 6 and summary.counts.failed == 0
    assert len([r for r in runs_of(store, "stoppack") if r.info.status == "FINISHED"]) == 6


@pytest.mark.slow
def test_a_trial_whose_worker_died_is_failed_and_retried(write_sweep, store, monkeypatch):
    monkeypatch.setattr(store_module, "GRACE_SECONDS", 1)
    sweep = load_sweep(write_sweep("dead", TINY))
    study, tracker, sweep_run_id = prepare(sweep, store)
    orphan = study.ask()  # a trial whose worker is gone: it beat once, then nothing
    orphan.suggest_categorical("model.kind", ["mlp", "cnn"])
    run = tracker.client.create_run(tracker.experiment_id, tags={"study.role": "trial"})
    orphan.set_user_attr("mlflow_run_id", run.info.run_id)
    study._storage.record_heartbeat(orphan._trial_id)
    time.sleep(2.5)
    summary = run_sweep(sweep, store, trials=2)
    assert summary.counts.finished == 2
    dead = study_of(store, "dead").trials[orphan.number]
    assert dead.state == TrialState.FAIL
    closed = store.mlflow().get_run(run.info.run_id)
    assert closed.info.status == "FAILED" and "no heartbeat" in closed.data.tags["study.reason"]


PRUNED = """
    dataset: {{name: mnist1d, num_samples: 400}}
    model: {{width: 16, depth: 1}}
    train: {{epochs: 4}}
    search:
      train.learning_rate: {{type: float, low: 1.0e-9, high: 0.01, log: true}}
    objective: {{val/accuracy: maximize}}
    pruner: {{name: median, n_startup_trials: 1, n_warmup_steps: 0}}
    sampler: random
    budget: {{trials: {trials}}}
    pack: {pack}
"""


def test_the_pruner_stops_poor_trials_and_records_why(write_sweep, store):
    text = PRUNED.format(trials=2, pack=1)
    sweep = load_sweep(write_sweep("prune", text))
    study, _, _ = prepare(sweep, store)
    study.enqueue_trial({"train.learning_rate": 0.01})  # a good first trial sets the median,
    study.enqueue_trial({"train.learning_rate": 1e-9})  # then one that cannot learn
    run_sweep(sweep, store)
    pruned = [t for t in study_of(store, "prune").trials if t.state == TrialState.PRUNED]
    assert len(pruned) == 1 and pruned[0].params["train.learning_rate"] == pytest.approx(1e-9)
    assert pruned[0].user_attrs["study_reason"].startswith("pruned by the median pruner after epoch 1")
    run = store.mlflow().get_run(pruned[0].user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["study.state"] == "pruned"


def test_in_packs_the_pruner_judges_against_the_trials_of_earlier_packs(write_sweep, store):
    text = PRUNED.format(trials=4, pack=2)
    sweep = load_sweep(write_sweep("prunepack", text))
    study, _, _ = prepare(sweep, store)
    for rate in (1e-9, 0.01, 1e-9 * 1.5, 0.005):  # packs: (bad, good) then (bad, good)
        study.enqueue_trial({"train.learning_rate": rate})
    run_sweep(sweep, store)
    trials = study_of(store, "prunepack").trials
    assert [t.state for t in trials[:2]] == [TrialState.COMPLETE] * 2, "the first pack has no finished trial to judge against"
    pruned = trials[2]
    assert pruned.state == TrialState.PRUNED and pruned.user_attrs["study_reason"].startswith("pruned by the median pruner after epoch 1")
    run = store.mlflow().get_run(pruned.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["study.state"] == "pruned"
    assert [m.step for m in store.mlflow().get_metric_history(run.info.run_id, "epoch/val_accuracy")] == [1]


@pytest.mark.slow
def test_several_objectives_mark_the_pareto_set(write_sweep, store):
    text = TINY.replace("objective: {val/accuracy: maximize}", "objective: {val/accuracy: maximize, model/params: minimize}")
    run_sweep(load_sweep(write_sweep("pareto", text)), store, trials=4)
    study = study_of(store, "pareto")
    front = {t.user_attrs["mlflow_run_id"] for t in study.best_trials}
    marked = {r.info.run_id for r in runs_of(store, "pareto") if r.data.tags.get("study.best") == "true"}
    assert marked == front


def test_the_study_names_its_objectives_for_optuna_dashboard_and_trials_dataframe(write_sweep, store):
    text = TINY.replace("objective: {val/accuracy: maximize}", "objective: {val/accuracy: maximize, model/params: minimize}")
    run_sweep(load_sweep(write_sweep("named", text)), store, trials=1)
    study = study_of(store, "named")
    assert study.metric_names == ["val/accuracy", "model/params"]
    assert {"values_val/accuracy", "values_model/params"} <= set(study.trials_dataframe().columns)


def test_a_study_begun_without_objective_names_resumes_and_gets_them(write_sweep, store):
    sweep = load_sweep(write_sweep("older", TINY))
    store.init()
    optuna.create_study(study_name="older", storage=store.optuna(), directions=sweep.directions)  # as earlier versions made it
    assert study_of(store, "older").metric_names is None
    assert run_sweep(sweep, store, trials=1).counts.finished == 1
    assert study_of(store, "older").metric_names == ["val/accuracy"]
    assert run_sweep(sweep, store, trials=2).counts.finished == 2, "a study that has its names resumes as before"
    assert "value_val/accuracy" in study_of(store, "older").trials_dataframe().columns


def test_a_changed_sweep_file_is_refused_unless_allowed(write_sweep, store):
    path = write_sweep("changing", TINY)
    run_sweep(load_sweep(path), store, trials=1)
    changed = load_sweep(path, {"train.epochs": 1})
    with pytest.raises(StudyError, match=r"with --set train.epochs=\.\.\. is not what study 'changing' began with"):
        run_sweep(changed, store, trials=2)
    assert run_sweep(changed, store, trials=2, allow_changed=True).counts.finished == 2
    assert run_sweep(changed, store, trials=3).counts.finished == 3, "continued once, it goes on with the new settings"
    path.write_text(TINY.replace("epochs: 2", "epochs: 3"))
    with pytest.raises(StudyError, match="has changed since study 'changing' began"):
        run_sweep(load_sweep(path), store, trials=4)


def test_a_deleted_experiment_is_reported_with_the_fix(write_sweep, store):
    sweep = load_sweep(write_sweep("gone", TINY))
    run_sweep(sweep, store, trials=1)
    client = store.mlflow()
    client.delete_experiment(client.get_experiment_by_name("gone").experiment_id)
    with pytest.raises(StudyError, match="was deleted; restore it"):
        run_sweep(sweep, store, trials=2)


@pytest.mark.slow
def test_settings_that_already_ran_are_not_trained_again(write_sweep, store):
    text = TINY.replace("model.width: [4, 8, 16]\n", "").replace("sampler: grid", "sampler: random\nbudget: {trials: 5}")
    summary = run_sweep(load_sweep(write_sweep("small", text)), store)
    assert summary.state == "exhausted" and summary.counts.finished == 2, "only mlp and cnn exist"
    study = study_of(store, "small")
    skipped = [t for t in study.trials if t.user_attrs.get("study_skipped")]
    assert skipped and all(t.user_attrs["study_reason"].startswith("same settings as trial") for t in skipped)
    assert len(runs_of(store, "small")) == 2, "no run for a repeat"
    from study.report import tables

    counts = tables.state_counts(pd.DataFrame(), study.get_trials(deepcopy=False)).set_index("state")["Optuna trials"]
    assert counts["skipped (repeat)"] == len(skipped) and counts["finished"] == 2, "the report says why trials were skipped"


def test_an_error_that_ctrl_c_caused_counts_as_an_interruption_not_a_failure():
    import sqlite3

    from study.runner import interruption

    assert interruption(KeyboardInterrupt())
    assert interruption(sqlite3.OperationalError("interrupted")), "SQLite's answer to a signal during a query"
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("while logging")  # noqa: B904 - the implicit chain is what interruption() reads
    except RuntimeError as wrapped:
        assert interruption(wrapped), "a library's error raised while handling Ctrl+C"
    assert not interruption(ValueError("bad value"))
    assert not interruption(sqlite3.OperationalError("database is locked"))
