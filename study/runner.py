"""A pack of asked trials: begun (settings sampled, MLflow run created), trained together, told.

`run_pack` is the only place where a trial's outcome reaches both stores: Optuna is told how the
trial ended and MLflow gets its run's metrics, artifacts and final status, whatever happened
(an error fails the trial alone; Ctrl+C marks every trial not yet told as interrupted and queues
its settings again). Plain trials train with `objective.run_trials`, compression trials with
`compression.pipeline.run_compression_trial`: the runner chooses.
"""

from __future__ import annotations

import json
import logging
import signal
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState as OptunaState

from study import measure, names
from study.budget import count_trials, finished_with
from study.config import Sweep, flatten
from study.datasets import Data, load_dataset
from study.errors import StudyError
from study.names import Attr, TrialState
from study.recovery import queue_again
from study.schema import Setup
from study.search import relevant, suggest
from study.store import HEARTBEAT_SECONDS
from study.tracking import Tracker, TrialRun

# Optuna warns that heartbeats are meant for Study.optimize; with ask/tell we beat ourselves (Heartbeat).
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

log = logging.getLogger(__name__)

DUPLICATE = "duplicate"  # what run_pack answers for a trial that repeats settings that already ran


class Heartbeat:
    """Records the heartbeats of a pack's trials in Optuna's storage, from a thread, until each is
    told (`forget`)."""

    def __init__(self, storage, trial_ids: list[int]):
        self.storage, self.trial_ids = storage, set(trial_ids)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while not self.stop.wait(HEARTBEAT_SECONDS):
            for trial_id in list(self.trial_ids):
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as exc:  # a missed beat is not worth failing the trial for
                    log.debug("trial %d: heartbeat not recorded: %s", trial_id, exc)

    def __enter__(self):  # the first beat was recorded as the trial was asked (worker._ask_pack)
        self.thread.start()
        return self

    def forget(self, trial_id: int) -> None:
        self.trial_ids.discard(trial_id)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


class Observer:
    """Receives each epoch of a trial: logs it and, for replicate 0, reports it to the pruner."""

    def __init__(self, trial: optuna.Trial, run, sweep: Sweep):
        self.trial, self.run = trial, run
        metric = sweep.metrics[0]
        single = len(sweep.metrics) == 1 and sweep.config.pruner.name != "none"
        # the per-epoch counterpart of a val/ objective: val/accuracy -> val_accuracy
        self.key = names.MONITORS[metric].short if single and metric in names.MONITORS else None
        self.metric, self.pruner = metric, sweep.config.pruner.name

    def epoch(self, replicate: int, epoch: int, metrics: dict[str, float]) -> str | None:
        self.run.log_epoch(replicate, epoch, metrics)
        if self.key is None or replicate != 0 or self.key not in metrics:
            return None
        self.trial.report(metrics[self.key], epoch)
        if self.trial.should_prune():
            return f"pruned by the {self.pruner} pruner after epoch {epoch} ({self.metric} {metrics[self.key]:.4g})"
        return None

    def replicate_end(self, replicate) -> None:
        self.run.end_replicate(replicate)


def best_runs(study: optuna.Study, sweep: Sweep, current) -> dict[str, bool]:
    """Runs whose `study.best` tag changes now that `current` has finished.

    The best set (Pareto set with several objectives) with and without `current` differ only
    by what `current` changes, so this needs no memory of earlier marks and suits many workers.
    """
    complete = [t for t in study.get_trials(deepcopy=False, states=(OptunaState.COMPLETE,))]
    if not complete:
        return {}
    values = np.array([t.values for t in complete], dtype=float)
    after = measure.pareto_mask(values, sweep.directions)
    others = np.array([t.number != current.number for t in complete])
    before = np.zeros(len(complete), dtype=bool)
    before[others] = measure.pareto_mask(values[others], sweep.directions) if others.any() else []
    changes = {}
    for t, was, now in zip(complete, before, after):
        run_id = t.user_attrs.get("mlflow_run_id")
        if run_id and was != now:
            changes[run_id] = bool(now)
    return changes


def progress_metrics(study: optuna.Study, sweep: Sweep) -> dict[str, float]:
    counts = count_trials(study.get_trials(deepcopy=False))
    metrics: dict[str, float] = {"trials/finished": counts.finished, "trials/pruned": counts.pruned, "trials/failed": counts.failed}
    if len(sweep.metrics) == 1:
        try:
            metrics[f"best/{sweep.metrics[0]}"] = study.best_value
        except ValueError:
            pass
    else:
        metrics["trials/pareto"] = len(study.best_trials)
    return metrics


@dataclass
class Started:
    """A trial whose settings are sampled and whose MLflow run exists, ready to train."""

    trial: optuna.Trial
    setup: Setup
    data: Data
    run: TrialRun
    workdir: Path
    first_seed: int  # replicate r trains with first_seed + r: the sweep's seed, shifted by the trial's round
    told: bool = False


def run_pack(
    trials: list[optuna.Trial], study: optuna.Study, sweep: Sweep, tracker: Tracker, references=None
) -> list[str]:
    """Train asked trials together (`pack` models at a time; a compression sweep's one at a time)
    and tell Optuna and MLflow how each ended: their states are returned ('finished', 'pruned',
    'diverged', 'failed' or 'duplicate'). On Ctrl+C every trial not yet told is marked
    interrupted and queued again, and KeyboardInterrupt is raised."""
    from study.objective import (  # TensorFlow: imported once a worker trains
        TrialJob,
        run_trials,
    )

    states: dict[int, str] = {}
    started: list[Started] = []
    with tempfile.TemporaryDirectory(prefix="study-") as tmp:
        try:
            # every asked trial beats from now on: beginning a pack (runs created, settings logged)
            # can outlast the grace period on a loaded machine, and its trials must not look dead
            with Heartbeat(study._storage, [t._trial_id for t in trials]) as beat:
                taken: dict[str, int] = {}
                for trial in trials:
                    begun = _begin(trial, study, sweep, tracker, taken, Path(tmp))
                    if isinstance(begun, str):
                        states[trial.number] = begun
                        beat.forget(trial._trial_id)
                    else:
                        started.append(begun)
                observers = [Observer(s.trial, s.run, sweep) for s in started]
                if references is None:
                    jobs = [
                        TrialJob(s.setup, s.data, s.first_seed, sweep.config.replicates, s.workdir, o)
                        for s, o in zip(started, observers)
                    ]
                    outcomes = run_trials(jobs, sweep.config.pack)
                else:
                    from study.compression.pipeline import run_compression_trial

                    outcomes = [
                        _attempt(run_compression_trial, s.setup, s.data, sweep.config.seed, sweep.config.replicates,
                                 s.workdir, o, references)
                        for s, o in zip(started, observers)
                    ]
                for begun, outcome in zip(started, outcomes):
                    states[begun.trial.number] = _conclude(begun, outcome, study, sweep, tracker)
                    beat.forget(begun.trial._trial_id)
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl+C must not leave things half-written
            try:
                for begun in started:
                    if not begun.told:
                        _interrupted(begun, study)
                begun_numbers = {b.trial.number for b in started} | set(states)
                for trial in trials:
                    if trial.number not in begun_numbers:  # asked, never started: nothing to log
                        suggest(trial, sweep)  # its settings (a grid point) are queued again
                        trial.set_user_attr(Attr.STATE, TrialState.INTERRUPTED)
                        study.tell(trial, state=OptunaState.FAIL)
                        queue_again(study, study._storage.get_trial(trial._trial_id))
            finally:
                signal.signal(signal.SIGINT, signal.default_int_handler)
            raise
    return [states[t.number] for t in trials]


def _attempt(function, *args):
    """function(*args), or the exception it raised (KeyboardInterrupt goes through)."""
    try:
        return function(*args)
    except Exception as exc:
        return exc


def reset_inherited(trial) -> None:
    """A retry starts as itself: Optuna's retry callback copies the failed trial's user attrs (its
    state, reason and MLflow run id), which would otherwise point at the run of the trial it
    repeats. Idempotent, and a no-op for a trial that is not a retry (a new trial has none of them)."""
    attrs = trial.user_attrs
    if attrs.get(Attr.STATE, TrialState.RUNNING) != TrialState.RUNNING or attrs.get(Attr.REASON) or attrs.get(Attr.RUN_ID):
        trial.set_user_attr(Attr.STATE, TrialState.RUNNING)
        trial.set_user_attr(Attr.REASON, "")
        trial.set_user_attr(Attr.RUN_ID, "")


def _begin(trial, study, sweep: Sweep, tracker: Tracker, taken: dict[str, int], tmp: Path) -> Started | str:
    """Sample the trial's settings and start its MLflow run; 'duplicate' or 'failed' if it cannot."""
    params = suggest(trial, sweep)
    round_ = int(trial.user_attrs.get(Attr.ROUND, 0))
    key = json.dumps([params, round_], sort_keys=True, default=str)
    earlier = finished_with(study, params, trial.number, round_)
    earlier = earlier if earlier is not None else taken.get(key)
    if earlier is not None:  # categorical spaces repeat: finished work is not done again
        trial.set_user_attr(Attr.SKIPPED, "repeat")
        trial.set_user_attr(Attr.REASON, f"same settings as trial {earlier}")
        study.tell(trial, state=OptunaState.FAIL)
        return DUPLICATE
    taken[key] = trial.number
    run = None
    try:
        setup = sweep.resolve(params)
        data = load_dataset(setup.dataset, sweep.config.seed, sweep.path.parent)
        run = tracker.start_trial(trial.number, params, setting_params(sweep, setup), data, round_)
        trial.set_user_attr(Attr.RUN_ID, run.run_id)
    except BaseException as exc:
        if not interruption(exc):
            return _failed(trial, study, run, exc)
        if run is not None:  # the caller queues the trial again; its run is closed here
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                run.end(TrialState.INTERRUPTED, "interrupted by the user (Ctrl+C); the trial is queued again")
            finally:
                signal.signal(signal.SIGINT, signal.default_int_handler)
        raise KeyboardInterrupt from exc
    return Started(trial, setup, data, run, tmp / f"trial-{trial.number}", sweep.config.seed + round_ * sweep.config.replicates)


def _conclude(begun: Started, outcome, study, sweep: Sweep, tracker: Tracker) -> str:
    """Log a trained trial's outcome (a TrialResult, or the exception that stopped it) and tell
    Optuna; returns its state."""
    from study.replicate import write_outputs

    trial, run, setup = begun.trial, begun.run, begun.setup
    try:
        if isinstance(outcome, BaseException):
            raise outcome
        result = outcome
        missing = [m for m in sweep.metrics if m not in result.metrics]
        if result.status == TrialState.FINISHED and missing:
            raise StudyError(f"objective: this trial measured no {missing[0]} (method {setup.compress.method}); pick a metric it measures")
        outputs = begun.workdir / "outputs"
        write_outputs(result, begun.data, outputs)
        state = result.status
        trial.set_user_attr(Attr.STATE, state)
        if result.reason:
            trial.set_user_attr(Attr.REASON, result.reason[:1000])
        run.finish(result, outputs)
    except Exception as exc:
        if interruption(exc):
            raise KeyboardInterrupt from exc
        begun.told = True
        return _failed(trial, study, run, exc)
    begun.told = True
    if state == TrialState.FINISHED:
        values = [result.metrics[m] for m in sweep.metrics]
        frozen = study.tell(trial, values)
        tracker.mark_best(best_runs(study, sweep, frozen))
    else:  # pruned or diverged: never a best trial
        study.tell(trial, state=OptunaState.PRUNED)
    tracker.log_progress(trial.number, progress_metrics(study, sweep))
    return state


def interruption(exc: BaseException) -> bool:
    """True for Ctrl+C, also where a library turned it into an error of its own (SQLite answers
    a signal during a query with "interrupted"): the trial is queued again, not failed."""
    seen = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, KeyboardInterrupt) or (type(link).__name__ == "OperationalError" and "interrupted" in str(link)):
            return True
        link = link.__cause__ or link.__context__
    return False


def _failed(trial, study, run, exc: BaseException) -> str:
    message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, StudyError) else str(exc)
    trial.set_user_attr(Attr.STATE, TrialState.FAILED)
    trial.set_user_attr(Attr.REASON, message[:1000])
    if run is not None:
        run.end(TrialState.FAILED, message[:1000], exc)
    study.tell(trial, state=OptunaState.FAIL)
    return TrialState.FAILED


def _interrupted(begun: Started, study) -> None:
    begun.trial.set_user_attr(Attr.STATE, TrialState.INTERRUPTED)
    begun.run.end(TrialState.INTERRUPTED, "interrupted by the user (Ctrl+C); the trial is queued again")
    study.tell(begun.trial, state=OptunaState.FAIL)
    queue_again(study, study._storage.get_trial(begun.trial._trial_id))
    begun.told = True


def setting_params(sweep: Sweep, setup) -> dict:
    """The resolved settings a trial logs: all of them, except in a compression sweep the ones its
    method does not read (the compress.* knobs of other methods, and model.* unless it trains)."""
    flat = flatten(setup.model_dump(mode="python"))
    if sweep.config.base is None:
        return {k: v for k, v in flat.items() if not k.startswith("compress.")}
    return {k: v for k, v in flat.items() if relevant(k, setup.compress.model_dump())}
