"""A pack of asked trials: begun (settings sampled, MLflow run created), trained together, told.

`run_pack` sees every asked trial to an end, whatever happened: each outcome goes through one of
the ledger's transitions (`study.ledger`), which write Optuna and MLflow in a crash-safe order (an
error fails the trial alone; Ctrl+C marks every trial not yet told as interrupted and queues its
settings again). Plain trials train with `objective.run_trials`, compression trials with
`compression.pipeline.run_compression_trial`: the runner chooses.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState as OptunaState

from study import ledger, measure, names
from study.budget import finished_with
from study.config import Sweep, flatten
from study.datasets import Data, load_dataset
from study.errors import StudyError
from study.ledger import count_trials
from study.names import Attr, TrialState
from study.processes import check_interrupt, deferred, interrupted, shielded
from study.schema import Setup
from study.search import build_sampler, relevant, suggest
from study.tracking import Tracker, TrialRun

# Optuna warns that heartbeats are meant for Study.optimize; with ask/tell we beat ourselves (Heartbeat).
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

log = logging.getLogger(__name__)

DUPLICATE = "duplicate"  # what run_pack answers for a trial that repeats settings that already ran


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
        with deferred():  # writes to the stores (a replicate's run, its epochs, Optuna's report)
            self.run.log_epoch(replicate, epoch, metrics)
            if self.key is None or replicate != 0 or self.key not in metrics:
                return None
            self.trial.report(metrics[self.key], epoch)
            if self.trial.should_prune():
                return f"pruned by the {self.pruner} pruner after epoch {epoch} ({self.metric} {metrics[self.key]:.4g})"
            return None

    def replicate_end(self, replicate) -> None:
        with deferred():
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
    trials: list[optuna.Trial], study: optuna.Study, sweep: Sweep, tracker: Tracker, references=None,
    following: list[dict] | None = None,
) -> list[str]:
    """Train asked trials together (`pack` models at a time; a compression sweep's one at a time)
    and tell Optuna and MLflow how each ended: their states are returned ('finished', 'pruned',
    'diverged', 'failed' or 'duplicate'). On Ctrl+C every trial not yet told is marked
    interrupted and queued again, and KeyboardInterrupt is raised. `following`: the settings of
    the trials likely asked next (queued ones), whose graph compiles while the last pack trains."""
    from study.objective import (  # TensorFlow: imported once a worker trains
        TrialJob,
        run_trials,
        settle_ahead,
    )

    states: dict[int, str] = {}
    started: list[Started] = []
    with tempfile.TemporaryDirectory(prefix="study-") as tmp:
        try:
            # every asked trial beats from now on: beginning a pack (runs created, settings logged)
            # can outlast the grace period on a loaded machine, and its trials must not look dead
            with ledger.Heartbeat(study, trials) as beat:
                taken: dict[str, int] = {}
                for trial in trials:
                    with deferred():
                        trial.set_user_attr(Attr.PACK, len(trials))  # a death is blamed on a trial only if it trained alone
                    begun = _begin(trial, study, sweep, tracker, taken, Path(tmp))
                    if isinstance(begun, str):
                        states[trial.number] = begun
                        beat.forget(trial)
                    else:
                        started.append(begun)
                    check_interrupt()  # one that came while `_begin` told Optuna the trial was skipped or failed
                observers = [Observer(s.trial, s.run, sweep) for s in started]
                if references is None:
                    jobs = [
                        TrialJob(s.setup, s.data, s.first_seed, sweep.config.replicates, s.workdir, o)
                        for s, o in zip(started, observers)
                    ]
                    outcomes = run_trials(jobs, sweep.config.pack, _jobs_of(following or [], sweep, tmp))
                else:
                    from study.compression.pipeline import run_compression_trial

                    outcomes = [
                        _attempt(run_compression_trial, s.setup, s.data, s.first_seed, sweep.config.replicates,
                                 s.workdir, o, references)
                        for s, o in zip(started, observers)
                    ]
                check_interrupt()  # one a finalizer swallowed while the pack trained
                for begun, outcome in zip(started, outcomes):
                    states[begun.trial.number] = _conclude(begun, outcome, study, sweep, tracker)
                    beat.forget(begun.trial)
        except KeyboardInterrupt:
            with shielded():  # a second Ctrl+C must not leave things half-written
                for begun in started:
                    if not begun.told:
                        ledger.interrupt(study, begun.trial, begun.run)
                        begun.told = True
                begun_numbers = {b.trial.number for b in started} | set(states)
                for trial in trials:
                    if trial.number not in begun_numbers:  # asked, never started: nothing to log
                        _suggest(trial, study, sweep)  # its settings are queued again
                        ledger.interrupt(study, trial)
            raise
        finally:
            settle_ahead()  # the next pack's graph compiled while these trials were logged
    return [states[t.number] for t in trials]


def _jobs_of(following: list[dict], sweep: Sweep, tmp: str) -> list:
    """Jobs for the settings of trials not yet asked, to read their models' shapes from; none
    for settings that do not resolve or load (their trials meet that error themselves)."""
    from study.objective import TrialJob

    jobs = []
    for params in following:
        try:
            setup = sweep.resolve(params)
            data = load_dataset(setup.dataset, sweep.config.seed, sweep.path.parent)
        except Exception:  # noqa: BLE001 - only a guess at what comes next
            continue
        jobs.append(TrialJob(setup, data, sweep.config.seed, sweep.config.replicates, Path(tmp) / "following"))
    return jobs


def _attempt(function, *args):
    """function(*args), or the exception it raised (KeyboardInterrupt goes through)."""
    try:
        return function(*args)
    except Exception as exc:
        return exc


def _suggest(trial, study, sweep: Sweep) -> dict:
    """The trial's settings, drawn by a sampler seeded for this trial alone (`ledger.reseed`)."""
    ledger.reseed(study, trial, lambda place: build_sampler(sweep, place))
    return suggest(trial, sweep)


def _begin(trial, study, sweep: Sweep, tracker: Tracker, taken: dict[str, int], tmp: Path) -> Started | str:
    """Sample the trial's settings and start its MLflow run; 'duplicate' or 'failed' if it cannot."""
    params = _suggest(trial, study, sweep)
    round_ = int(trial.user_attrs.get(Attr.ROUND, 0))
    key = json.dumps([params, round_], sort_keys=True, default=str)
    earlier = finished_with(study, params, trial.number, round_)
    earlier = earlier if earlier is not None else taken.get(key)
    if earlier is not None:  # categorical spaces repeat: finished work is not done again
        with deferred(raising=False):  # told whatever comes; run_pack raises a Ctrl+C that came meanwhile
            ledger.skip(study, trial, "repeat", f"same settings as trial {earlier}")
        return DUPLICATE
    taken[key] = trial.number
    trial.set_user_attr(Attr.DATA_DIGEST, study.user_attrs.get(Attr.DATA_DIGEST))  # the study's data, as it began this trial
    run = None
    try:
        setup = sweep.resolve(params)
        data = load_dataset(setup.dataset, sweep.config.seed, sweep.path.parent)
        with deferred():  # writes to the stores: a Ctrl+C waits for them (processes.deferred)
            run = tracker.start_trial(trial.number, params, setting_params(sweep, setup), data, round_)
            trial.set_user_attr(Attr.RUN_ID, run.run_id)
    except BaseException as exc:
        if not interruption(exc):
            with deferred(raising=False):  # as for a repeat, above
                return _failed(trial, study, run, exc)
        if run is not None:  # the caller queues the trial again; its run is closed here
            with shielded():
                run.end(TrialState.INTERRUPTED, "interrupted by the user (Ctrl+C); the trial is queued again")
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
        values = [result.metrics[m] for m in sweep.metrics] if state == TrialState.FINISHED else None
        with deferred():  # a Ctrl+C that came meanwhile is raised once the trial is told
            frozen = ledger.conclude(study, trial, state, result.reason, lambda: run.finish(result, outputs), values)
            begun.told = True
    except Exception as exc:
        if interruption(exc):
            raise KeyboardInterrupt from exc
        with deferred():  # a Ctrl+C that came meanwhile is raised once the trial is told it failed
            state = _failed(trial, study, run, exc)
            begun.told = True
        return state
    begun.told = True
    with deferred():
        if state == TrialState.FINISHED:  # pruned or diverged: never a best trial
            tracker.mark_best(best_runs(study, sweep, frozen))
        tracker.log_progress(trial.number, progress_metrics(study, sweep))
    return state


def interruption(exc: BaseException) -> bool:
    """True for Ctrl+C, also where a library turned it into an error of its own (SQLite answers
    a signal during a query with "interrupted"), and for any error once a Ctrl+C or SIGTERM came
    (one SQLAlchemy met inside a query leaves the connection failing the next query): the trial is
    queued again, not failed."""
    if interrupted():
        return True
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
    return ledger.fail(study, trial, run, message, exc)


def setting_params(sweep: Sweep, setup) -> dict:
    """The resolved settings a trial logs: all of them, except in a compression sweep the ones its
    method does not read (the compress.* knobs of other methods, and model.* unless it trains)."""
    flat = flatten(setup.model_dump(mode="python"))
    if sweep.config.base is None:
        return {k: v for k, v in flat.items() if not k.startswith("compress.")}
    return {k: v for k, v in flat.items() if relevant(k, setup.compress.model_dump())}
