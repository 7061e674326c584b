"""A Ctrl+C that lands inside a trial's writes to the stores waits for them (processes.deferred):
the trial is told to Optuna and its run closed in MLflow, then the sweep stops. Raised inside a
database call, it left SQLite's write lock held, or a trial marked told that Optuna never heard.
The signal is real (SIGINT to this process, under `catch_interrupts`), sent from inside the
tracker's first write; the stores are real."""

from __future__ import annotations

import os
import signal

import pytest
from conftest import TINY
from optuna.trial import TrialState as OptunaState

from study import runner
from study.config import load_sweep
from study.datasets import load_dataset
from study.sweep import prepare


@pytest.fixture
def ctrl_c_in_a_write(write_sweep, store, ctrl_c_recorded):
    """(sweep, study, tracker, trial, run, data, arm): `arm()` makes the tracker's next write send
    this process a Ctrl+C from inside it, with Ctrl+C recorded as `study run` records it."""
    sweep = load_sweep(write_sweep("deferred", TINY))
    study, tracker, _ = prepare(sweep, store)
    data = load_dataset(sweep.config.dataset, sweep.config.seed, sweep.path.parent)
    trial = study.ask()
    run = tracker.start_trial(trial.number, {"model.width": 4}, {"model.width": 4}, data)
    run.log_epoch(0, 1, {"train_loss": 1.0})  # buffered: the run's end flushes it
    write = tracker.log_entities

    def arm():
        def ctrl_c_then_write(*args, **kwargs):
            tracker.log_entities = write  # once
            os.kill(os.getpid(), signal.SIGINT)
            return write(*args, **kwargs)

        tracker.log_entities = ctrl_c_then_write

    return sweep, study, tracker, trial, run, data, arm


def test_a_ctrl_c_inside_a_failed_trial_s_writes_stops_after_they_are_done(ctrl_c_in_a_write, tmp_path):
    sweep, study, tracker, trial, run, data, arm = ctrl_c_in_a_write
    begun = runner.Started(trial, None, data, run, tmp_path / "work", 0)
    arm()
    with pytest.raises(KeyboardInterrupt):
        runner._conclude(begun, RuntimeError("training failed"), study, sweep, tracker)
    assert begun.told, "run_pack's clean-up leaves it alone"
    assert study.trials[trial.number].state == OptunaState.FAIL, "told as failed, not left RUNNING"
    assert tracker.client.get_run(run.run_id).info.status == "FAILED"


def test_a_ctrl_c_inside_an_epoch_s_writes_is_raised_after_them(ctrl_c_in_a_write):
    sweep, study, tracker, trial, run, data, arm = ctrl_c_in_a_write
    observer = runner.Observer(trial, run, sweep)
    run.last_flush = float("-inf")  # this epoch flushes
    arm()
    with pytest.raises(KeyboardInterrupt):
        observer.epoch(0, 2, {"train_loss": 0.5})
    steps = [m.step for m in tracker.client.get_metric_history(run.run_id, "epoch/train_loss")]
    assert steps == [1, 2] and not any(run.pending.values()), "both epochs written, once"
