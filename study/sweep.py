"""Create or resume a sweep's study and run its trials, in this process or in worker processes.

Each worker loads TensorFlow and the dataset once, then loops with Optuna's ask/tell: ask a
trial, sample its settings, create its MLflow run, train, tell Optuna the outcome, end the run.
The sweep completes to its budget of done trials (finished, pruned or failed), counted in the
shared Optuna storage, so rerunning the same command after an interruption finishes the work and
never repeats it. A trial that was interrupted (Ctrl+C) or whose worker died (no heartbeat) is
marked failed in Optuna and MLflow alike and queued again with the same settings (`study.ledger`),
and before a sweep says "complete" its stores are checked to hold what a complete sweep must
(`budget.audit`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field, replace

import optuna

from study.budget import audit, target_trials
from study.config import Sweep
from study.errors import StudyError
from study.ledger import Counts, close_orphan_runs, count_trials, counted
from study.names import Attr, SweepState
from study.processes import check_interrupt, shielded
from study.runner import progress_metrics
from study.search import grid_points
from study.store import Store
from study.tracking import Tracker
from study.worker import Job, Stop, _worker_main, check_data, references, work


class Interrupted(Exception):
    """Ctrl+C: the running trial was marked failed and will be retried on resume."""


def queue_grid(study: optuna.Study, sweep: Sweep) -> None:
    """Queue every grid point not yet in the study as a fixed trial (a no-op for other samplers,
    and on resume). Run once before workers start: `study run` does, and `study init` across
    machines."""
    points = grid_points(sweep)
    if not points:
        return
    present = {
        json.dumps(t.params or t.system_attrs.get("fixed_params", {}), sort_keys=True)  # queued: fixed_params
        for t in counted(study.get_trials(deepcopy=False))
    }
    for point in points:
        if json.dumps(point, sort_keys=True) not in present:
            study.enqueue_trial(point)


def prepare(sweep: Sweep, store: Store, allow_changed: bool = False) -> tuple[optuna.Study, Tracker, str]:
    """Check the data, initialise the stores, then create or resume the study, the experiment and
    the sweep run (and a compression sweep's base)."""
    data = check_data(sweep)  # a bad CSV fails here, before anything is written to the stores
    store.init()
    with store.lock():  # several processes starting on one new local store set it up one at a time
        store.check_agree(sweep.name)  # Optuna and MLflow hold this sweep both, or neither
        study, tracker, sweep_run_id = _create_or_resume(sweep, store, data, allow_changed)
    if sweep.config.base is not None:  # trained (or found) once, under its own lock, before any worker needs it
        references(sweep, tracker, store).base(data)
    return study, tracker, sweep_run_id


def _create_or_resume(sweep: Sweep, store: Store, data, allow_changed: bool) -> tuple[optuna.Study, Tracker, str]:
    tracker = Tracker(store.mlflow(), sweep, store.artifact_root)
    study = optuna.create_study(
        study_name=sweep.name, storage=store.optuna(), directions=sweep.directions, load_if_exists=True
    )
    known = study.user_attrs.get(Attr.CONFIG_HASH)
    if known is not None and known != sweep.config_hash and not allow_changed:
        fix = "copy the file to a new name to start a new study, or pass --allow-changed to continue this one with these settings"
        if sweep.overrides:  # the file, or the --set options, or both: the hash cannot tell which
            given = " ".join(f"--set {key}=..." for key in sweep.overrides)
            raise StudyError(f"{sweep.path} with {given} is not what study {sweep.name!r} began with in "
                             f"{store.describe()}; give the same file and --set options, {fix}")
        raise StudyError(f"{sweep.path} has changed since study {sweep.name!r} began in {store.describe()} (or it began "
                         f"with --set options); {fix}")
    digest = study.user_attrs.get(Attr.DATA_DIGEST)
    if digest is not None and digest != data.digest:
        if not allow_changed:
            raise StudyError(
                f"the dataset of study {sweep.name!r} has changed since it began in {store.describe()} (content "
                f"digest {digest}, now {data.digest}); restore the data, copy the sweep file to a new name to start a "
                "new study, or pass --allow-changed to continue this one (its report then keeps only the trials "
                "of the new data)"
            )
    if [d.name.lower() for d in study.directions] != sweep.directions:
        raise StudyError(f"study {sweep.name!r} was created with other objectives; copy the sweep file to a new name")
    if study.metric_names != sweep.metrics:  # optuna-dashboard and trials_dataframe() name each objective by them
        study.set_metric_names(sweep.metrics)
    recorded = study.user_attrs.get(Attr.SWEEP_RUN_ID)
    sweep_run_id = tracker.open_sweep_run(recorded)
    if recorded is None:
        # the dataset row is created here, once, before any worker links trials to it
        tracker.log_dataset(sweep_run_id, data)
        study.set_user_attr(Attr.SWEEP_RUN_ID, sweep_run_id)  # at once: a second process must not make another
    if digest != data.digest:
        study.set_user_attr(Attr.DATA_DIGEST, data.digest)  # trials record the digest they ran on (runner)
    queue_grid(study, sweep)
    if known != sweep.config_hash:  # a new study, or one continued with other settings (--allow-changed): the settings now
        study.set_user_attr(Attr.CONFIG_HASH, sweep.config_hash)
    if known is None:
        study.set_user_attr(Attr.METRICS, sweep.metrics)
        study.set_user_attr(Attr.DESCRIPTION, sweep.config.description)
        study.set_user_attr(Attr.SWEEP_FILE, str(sweep.path))
        study.set_user_attr(Attr.EXPERIMENT_ID, tracker.experiment_id)
    return study, tracker, sweep_run_id


@dataclass
class Summary:
    name: str
    counts: Counts
    target: int | None
    seconds: float
    state: SweepState  # complete, partial (deadline), exhausted (no new settings left) or interrupted
    experiment_id: str
    best: list = field(default_factory=list)  # FrozenTrials: the best, or the Pareto set
    failed: list = field(default_factory=list)  # FrozenTrials that failed for good (after any retries)


def run_sweep(
    sweep: Sweep,
    store: Store,
    *,
    trials: int | None = None,
    timeout: float | None = None,
    workers: int = 1,
    allow_changed: bool = False,
    progress=None,
) -> Summary:
    """Run `sweep` to its budget. Raises Interrupted on Ctrl+C (after marking the running trials)."""
    start = time.time()
    study, tracker, sweep_run_id = prepare(sweep, store, allow_changed)
    check_interrupt()  # one a finalizer swallowed while the stores were set up
    target = target_trials(sweep, trials, len(study.user_attrs.get(Attr.ROUNDS, [])))
    timeout = timeout or sweep.config.budget.timeout
    job = Job(
        sweep_path=str(sweep.path), overrides=sweep.overrides, store=store, target=target,
        deadline=start + timeout if timeout else None,
    )
    if progress is not None:
        progress.start(sweep, target, count_trials(study.get_trials(deepcopy=False)))
    try:
        outcome = work(job, progress) if workers <= 1 else _run_workers(job, workers, study, progress)
    except StudyError:
        tracker.end_sweep(SweepState.FAILED)
        raise
    counts = count_trials(study.get_trials(deepcopy=False))
    if progress is not None:
        progress.update(study, final=True)
    close_orphan_runs(study, tracker.client)
    if outcome == Stop.INTERRUPTED:
        state = SweepState.INTERRUPTED
    elif outcome == Stop.EXHAUSTED:
        state = SweepState.EXHAUSTED
    elif target is None or counts.done >= target:
        state = SweepState.COMPLETE  # a time budget is complete when its time is up
    else:
        state = SweepState.PARTIAL
    problems = audit(study, sweep, target) if state == SweepState.COMPLETE and target is not None else []
    if problems:  # done means done: say what is missing rather than "complete"
        tracker.end_sweep(SweepState.PARTIAL, progress_metrics(study, sweep))
        raise StudyError(f"{sweep.name} reached {counts.done} of {target} trials but is not complete: "
                         f"{'; '.join(problems)}; run the same command again to finish it")
    tracker.end_sweep(state, progress_metrics(study, sweep) if counts.done else None)
    failed = [t for t in counted(study.get_trials(deepcopy=False)) if t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get(Attr.STATE) == "failed"]
    summary = Summary(sweep.name, counts, target, time.time() - start, state, tracker.experiment_id, best_trials(study),
                      failed)
    if outcome == Stop.INTERRUPTED:
        raise Interrupted(summary)
    return summary


def best_trials(study: optuna.Study) -> list:
    try:
        return study.best_trials if len(study.directions) > 1 else [study.best_trial]
    except ValueError:
        return []


def _run_workers(job: Job, workers: int, study: optuna.Study, progress) -> str:
    """Start `workers` processes and wait for them; relays Ctrl+C to each exactly once."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    procs = [
        context.Process(target=_worker_main, args=(replace(job, worker=i, threads=threads), os.getpid()))
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    try:
        while any(p.is_alive() for p in procs):
            check_interrupt()
            if progress is not None:
                progress.update(study)
            time.sleep(1.0)
    except KeyboardInterrupt:
        with shielded(signal.SIGINT):  # the workers stop on their own; SIGTERM still stops this process (and them)
            for proc in procs:
                if proc.is_alive() and proc.pid is not None:
                    os.kill(proc.pid, signal.SIGINT)
            for proc in procs:
                proc.join()
        return Stop.INTERRUPTED
    codes = [p.exitcode for p in procs]
    if any(code == 130 for code in codes):
        return Stop.INTERRUPTED
    if all(code not in (0, None) for code in codes):
        raise StudyError(f"every worker failed (exit codes {codes}); see the messages above")
    return Stop.BUDGET if job.deadline is None or time.time() < job.deadline else Stop.DEADLINE
