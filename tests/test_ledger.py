"""The trial ledger (study/ledger.py): its table, and a crash at each instruction of a transition
leaves a state the next worker settles, on a real SQLite Optuna store and MLflow store. The
crashes are staged by stopping a transition where a killed worker would have stopped."""

from __future__ import annotations

import textwrap
import time

import optuna
import pytest
from conftest import TINY, settle_later
from mlflow.entities import RunStatus
from optuna.trial import TrialState

from study import ledger
from study.budget import audit
from study.config import load_sweep
from study.names import Attr
from study.names import TrialState as Ours
from study.tracking import STATUS


def test_the_table_agrees_with_the_mlflow_statuses_the_tracker_writes():
    for state, status in STATUS.items():
        assert ledger.TABLE[state].mlflow == RunStatus.to_string(status)
    assert [s for s, e in ledger.TABLE.items() if e.again] == [Ours.INTERRUPTED]
    assert {s for s, e in ledger.TABLE.items() if e.done} == {Ours.FINISHED, Ours.PRUNED, Ours.DIVERGED, Ours.FAILED}






def retries_of(study, number: int) -> list:
    return [t for t in study.get_trials(deepcopy=False) if number in ledger.history(t)]


def test_a_worker_killed_between_queueing_the_retry_and_failing_the_trial_loses_nothing_and_doubles_nothing(staged):
    sweep, study, tracker = staged
    trial = ledger.ask(study)  # a grid point
    trial.set_user_attr(Attr.STATE, Ours.INTERRUPTED)
    ledger.queue_again(study, ledger.frozen(study, trial))  # ledger.interrupt's first write; then kill -9
    ledger._held.clear()  # the process that asked it is gone
    assert settle_later(study, tracker, sweep) == [trial.number]
    assert ledger.frozen(study, trial).state == TrialState.FAIL
    assert len(retries_of(study, trial.number)) == 1, "queued once, not again by the settler"
    assert ledger.count_trials(study.get_trials(deepcopy=False)).interrupted == 1


def test_a_settler_killed_after_queueing_the_retry_is_finished_by_the_next_without_a_second_retry(staged):
    sweep, study, tracker = staged
    trial = ledger.ask(study)
    ledger._held.clear()  # the process that asked it is gone
    time.sleep(2.5)
    settle = ledger.Settle(tracker.client, sweep.metrics)
    settle.one(study, ledger.frozen(study, trial))  # the first settler queued the retry, then died
    assert ledger.frozen(study, trial).state == TrialState.RUNNING
    assert settle(study) == [trial.number]
    assert len(retries_of(study, trial.number)) == 1


def test_two_settlers_one_after_the_other_settle_a_dead_trial_once(staged):
    sweep, study, tracker = staged
    trial = ledger.ask(study)
    ledger._held.clear()  # the process that asked it is gone
    assert settle_later(study, tracker, sweep) == [trial.number]
    assert ledger.Settle(tracker.client, sweep.metrics)(study) == []
    assert len(retries_of(study, trial.number)) == 1


def test_a_workers_own_trials_are_never_settled_by_it_however_long_its_asks_take(staged):
    sweep, study, tracker = staged
    first = ledger.ask(study)  # a pack's first trial; asking the rest outlasts the grace period
    time.sleep(2.5)
    settle = ledger.Settle(tracker.client, sweep.metrics)
    second = ledger.ask(study, settle=settle)
    assert ledger.frozen(study, first).state == TrialState.RUNNING and not retries_of(study, first.number)
    for trial in (first, second):
        ledger.interrupt(study, trial)


def test_interrupt_queues_first_then_fails_and_counts_nothing_as_done(staged):
    sweep, study, tracker = staged
    trial = ledger.ask(study)
    ledger.interrupt(study, trial)
    counts = ledger.count_trials(study.get_trials(deepcopy=False))
    assert counts.interrupted == 1 and counts.done == 0 and counts.unsettled == 0
    retry = retries_of(study, trial.number)
    assert len(retry) == 1 and retry[0].state == TrialState.WAITING
    assert retry[0].system_attrs["fixed_params"] == ledger.frozen(study, trial).system_attrs["fixed_params"]


def test_the_place_of_a_retry_is_the_place_of_the_trial_it_repeats():
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    dist = {"x": optuna.distributions.IntDistribution(0, 9)}
    first = study.ask(dist)
    study.tell(first, 1.0)
    assert ledger.place(study.get_trials()) == 1
    second = study.ask(dist)
    second.set_user_attr(Attr.STATE, Ours.INTERRUPTED)
    ledger.queue_again(study, ledger.frozen(study, second))
    study.tell(second, state=TrialState.FAIL)
    assert ledger.place(study.get_trials()) == 1, "the interrupted trial and its queued retry take no place yet"
    retry = study.ask()
    assert ledger.place(study.get_trials(), retry.number) == 1


def test_the_audit_names_settings_done_twice_and_grid_points_never_done(write_sweep):
    sweep = load_sweep(write_sweep("audited", TINY))
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    dist = {"model.width": optuna.distributions.CategoricalDistribution([4, 8, 16]),
            "model.kind": optuna.distributions.CategoricalDistribution(["mlp", "cnn"])}
    for width, kind in [(4, "mlp"), (4, "mlp"), (8, "cnn")]:
        study.add_trial(optuna.trial.create_trial(params={"model.width": width, "model.kind": kind},
                                                  distributions=dist, value=0.5))
    problems = audit(study, sweep, 6)
    assert any("trials 0 and 1 both ran model.width=4, model.kind=mlp" in p for p in problems), problems
    assert any("4 grid point(s) never done" in p for p in problems), problems
    assert audit(study, sweep, 2) == [problems[0]], "--trials 2 asks for part of the grid"


TPE = """
    dataset: {name: mnist1d, num_samples: 300}
    model: {kind: mlp, width: 8, depth: 1}
    train: {epochs: 2, batch_size: 64}
    search:
      model.width: {type: int, low: 2, high: 64}
      train.learning_rate: {type: float, low: 0.0001, high: 0.1, log: true}
    objective: {val/accuracy: maximize}
    sampler: {name: tpe, n_startup_trials: 3}
    budget: {trials: 10}
    pack: 3
"""


def trials_of(store, name: str) -> list[tuple]:
    study = optuna.load_study(study_name=name, storage=store.optuna())
    return [(t.params, t.values) for t in ledger.counted(study.get_trials(deepcopy=False))]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_tpe_sweep_run_twice_and_one_killed_and_resumed_draw_the_same_trials(write_sweep, tmp_path):
    """Same sweep file and seed: the same settings and metrics to the bit, run twice with one
    worker, and when killed (SIGKILL, mid-training) and resumed."""
    import os
    import signal
    import subprocess

    from conftest import STUDY, run_env

    from study.store import Store

    path = write_sweep("tpe", textwrap.dedent(TPE))
    env = {**run_env(tmp_path), "STUDY_HEARTBEAT_SECONDS": "1", "STUDY_GRACE_SECONDS": "3"}

    def run(store: str) -> subprocess.CompletedProcess:
        return subprocess.run([*STUDY, "run", str(path), "--store", store, "--quiet"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    assert run("first").returncode == 0
    assert run("second").returncode == 0
    proc = subprocess.Popen([*STUDY, "run", str(path), "--store", "killed", "--quiet"], cwd=tmp_path, env=env,
                            start_new_session=True, stdout=subprocess.PIPE, text=True)
    for _ in range(600):  # kill -9 once a few trials are in the store (mid-sweep)
        done = Store.resolve(tmp_path / "killed")
        if (tmp_path / "killed" / "optuna.db").exists():
            try:
                if len(optuna.load_study(study_name="tpe", storage=done.optuna()).trials) >= 4:
                    break
            except KeyError:
                pass
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    resumed = run("killed")
    assert resumed.returncode == 0, resumed.stderr
    first = trials_of(Store.resolve(tmp_path / "first"), "tpe")
    assert len(first) == 10
    assert trials_of(Store.resolve(tmp_path / "second"), "tpe") == first
    assert trials_of(Store.resolve(tmp_path / "killed"), "tpe") == first
    killed = optuna.load_study(study_name="tpe", storage=Store.resolve(tmp_path / "killed").optuna())
    assert ledger.count_trials(killed.trials).interrupted > 0, "the kill landed mid-sweep: trials were retried"


@pytest.mark.slow
def test_done_means_done_a_sweep_whose_stores_hold_a_setting_twice_is_not_called_complete(write_sweep, store, capsys):
    from study.cli import main
    from study.sweep import run_sweep

    path = write_sweep("twice", TINY)
    sweep = load_sweep(path)
    run_sweep(sweep, store)
    study = optuna.load_study(study_name="twice", storage=store.optuna())
    first = study.trials[0]
    study.add_trial(optuna.trial.create_trial(params=first.params, distributions=first.distributions,
                                              values=first.values))  # a setting trained a second time
    options = ["--store", str(store.root)]
    assert main(["run", str(path), "--quiet", *options]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not complete" in err[0] and f"trials {first.number} and 6 both ran" in err[0], err
    assert main(["list", "--sweeps", str(path.parent), *options]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("twice")]
    assert listed and "not complete: trials 0 and 6 both ran" in listed[0]


@pytest.mark.slow
def test_a_changed_dataset_is_refused_and_allowed_on_request_the_report_keeps_the_new_datas_trials(write_sweep, store, tmp_path, capsys):
    from study.cli import main
    from study.report.load import load_sweep_runs

    def table(rows: int) -> None:
        lines = ["a,b,label"] + [f"{i / 7:.3f},{(i * 37) % 11 - 5},{['x', 'y', 'z'][i % 3]}" for i in range(rows)]
        (tmp_path / "table.csv").write_text("\n".join(lines) + "\n")

    table(178)
    path = write_sweep("fromcsv", textwrap.dedent("""
        dataset: {name: csv, path: table.csv, target: label}
        model: {width: 8}
        train: {epochs: 2}
        search:
          model.width: [4, 8]
        sampler: grid
    """))
    options = ["--store", str(store.root), "--quiet"]
    assert main(["run", str(path), "--trials", "1", *options]) == 0
    capsys.readouterr()
    table(119)  # the user cut the file
    assert main(["run", str(path), *options]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the dataset of study 'fromcsv' has changed" in err[0] and "--allow-changed" in err[0]
    study = optuna.load_study(study_name="fromcsv", storage=store.optuna())
    assert len(study.trials) == 2 and ledger.count_trials(study.trials).done == 1, "nothing ran on the new data"
    assert main(["run", str(path), "--allow-changed", *options]) == 0
    data = load_sweep_runs(store, "fromcsv")
    assert len(data.runs) == 1 and "1 trial run(s) ran on an earlier version of the dataset" in data.left_out


@pytest.mark.slow
def test_an_optuna_store_lost_beside_a_full_mlflow_store_is_refused_not_started_over(write_sweep, store, capsys):
    from study.cli import main

    path = write_sweep("lost", TINY)
    options = ["--store", str(store.root), "--quiet"]
    assert main(["run", str(path), "--trials", "2", *options]) == 0
    (store.root / "optuna.db").unlink()
    capsys.readouterr()
    for command in (["run", str(path), *options], ["init", str(path), "--store", str(store.root)]):
        assert main(command) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "the stores disagree about sweep 'lost'" in err[0], err
    client = store.mlflow()
    runs = client.search_runs([client.get_experiment_by_name("lost").experiment_id], "tags.`study.role` = 'trial'")
    assert len(runs) == 2, "nothing was trained again"


def test_a_death_is_blamed_on_a_trial_only_when_it_trained_alone_and_its_retry_trains_alone():
    """Kills from outside hit whole packs: they must not use up the retry cap of the trials that
    happened to be in flight; a trial that kills its worker (out of memory) is still caught,
    because after a death its retries train alone."""
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    dist = {"x": optuna.distributions.IntDistribution(0, 9)}
    study.enqueue_trial({"x": 1})
    trial = study.ask(dist)
    for _ in range(ledger.MAX_RETRIES + 3):  # its pack of four is killed again and again
        trial.set_user_attr(Attr.PACK, 4)
        ledger.queue_again(study, ledger.frozen(study, trial))
        study.tell(trial, state=TrialState.FAIL)
        assert ledger.deaths(study, ledger.frozen(study, trial)) == 0
        trial = study.ask(dist)
        assert trial.params == {"x": 1}
        assert ledger.suspect(study, trial), "its worker died under it: it trains alone next"
    died = 0
    while True:  # now it trains alone and its worker dies each time: out of memory
        trial.set_user_attr(Attr.PACK, 1)
        died += 1
        assert ledger.deaths(study, ledger.frozen(study, trial)) == died
        queued = ledger.queue_again(study, ledger.frozen(study, trial))
        study.tell(trial, state=TrialState.FAIL)
        if not queued:
            break
        trial = study.ask(dist)
    assert died == ledger.MAX_RETRIES + 1
