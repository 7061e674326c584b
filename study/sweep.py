"""Create or resume a sweep's study and run its trials, in this process or in worker processes.

Each worker loads TensorFlow and the dataset once, then loops with Optuna's ask/tell: ask a
trial, sample its settings, create its MLflow run, train, tell Optuna the outcome, end the run.
The sweep completes to its budget of done trials (finished, pruned or failed), counted in the
shared Optuna storage, so rerunning the same command after an interruption finishes the work and
never repeats it. A trial that was interrupted (Ctrl+C) or whose worker died (no heartbeat) is
marked failed in Optuna and MLflow alike and queued again with the same settings.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from study import measure
from study.config import Sweep, flatten, load_sweep
from study.datasets import load_dataset, load_for_objective
from study.errors import StudyError
from study.search import build_pruner, build_sampler, grid_points, grid_size, relevant, suggest
from study.store import DISK_FULL, HEARTBEAT_SECONDS, Store, quiet_libraries
from study.processes import die_with_parent, terminate_as_interrupt
from study.recovery import queue_again, recover
from study.tracking import Tracker

# Optuna warns that heartbeats are meant for Study.optimize; with ask/tell we beat ourselves (Heartbeat).
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

MAX_FAILURES_IN_A_ROW = 5  # a sweep whose every trial fails is broken: stop and say why
MAX_DUPLICATES_IN_A_ROW = 100  # samples that only repeat finished settings: the space is used up
WAIT_SECONDS = 2.0  # how often an idle worker looks again while others finish the last trials


class Interrupted(Exception):
    """Ctrl+C: the running trial was marked failed and will be retried on resume."""


# ----------------------------------------------------------------------------- trial counts
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


def target_trials(sweep: Sweep, trials: int | None = None) -> int | None:
    """Done trials the sweep completes to: --trials, else the budget, capped by a grid's size."""
    target = trials or sweep.config.budget.trials
    size = grid_size(sweep)
    if size is not None:
        target = min(target or size, size)
    return target


# ------------------------------------------------------------------------------- preparing
@dataclass(frozen=True)
class Job:
    """What a worker needs, picklable so that it can start in a fresh process."""

    sweep_path: str
    overrides: dict
    store: Store
    target: int | None
    deadline: float | None  # time.time() after which no trial starts
    worker: int = 0
    threads: int = 0  # TensorFlow threads; 0 leaves TensorFlow's default


def prepare(sweep: Sweep, store: Store, allow_changed: bool = False) -> tuple[optuna.Study, Tracker, str]:
    """Check the data, initialise the stores, then create or resume the study, the experiment and
    the sweep run (and a compression sweep's base)."""
    data = check_data(sweep)  # a bad CSV fails here, before anything is written to the stores
    store.init()
    with store.lock():  # several processes starting on one new local store set it up one at a time
        study, tracker, sweep_run_id = _create_or_resume(sweep, store, data, allow_changed)
    if sweep.config.base is not None:  # trained (or found) once, under its own lock, before any worker needs it
        references(sweep, tracker, store, sweep_run_id).base(data)
    return study, tracker, sweep_run_id


def _create_or_resume(sweep: Sweep, store: Store, data, allow_changed: bool) -> tuple[optuna.Study, Tracker, str]:
    tracker = Tracker(store.mlflow(), sweep, store.artifact_root)
    study = optuna.create_study(
        study_name=sweep.name, storage=store.optuna(), directions=sweep.directions, load_if_exists=True
    )
    known = study.user_attrs.get("config_hash")
    if known is not None and known != sweep.config_hash and not allow_changed:
        raise StudyError(
            f"{sweep.path} has changed since study {sweep.name!r} began in {store.describe()}; copy it to a "
            "new file name to start a new study, or pass --allow-changed to continue this one"
        )
    if [d.name.lower() for d in study.directions] != sweep.directions:
        raise StudyError(f"study {sweep.name!r} was created with other objectives; copy the sweep file to a new name")
    sweep_run_id = study.user_attrs.get("mlflow_sweep_run_id")
    if sweep_run_id is None:
        sweep_run_id = tracker.sweep_run()
        # the dataset row is created here, once, before any worker links trials to it
        tracker.log_dataset(sweep_run_id, data)
        study.set_user_attr("mlflow_sweep_run_id", sweep_run_id)  # at once: a second process must not make another
    queue_grid(study, sweep)
    if known is None:
        study.set_user_attr("config_hash", sweep.config_hash)
        study.set_user_attr("metrics", sweep.metrics)
        study.set_user_attr("description", sweep.config.description)
        study.set_user_attr("sweep_file", str(sweep.path))
        study.set_user_attr("mlflow_experiment_id", tracker.experiment_id)
    else:
        tracker.client.update_run(sweep_run_id, status="RUNNING")
    return study, tracker, sweep_run_id


# ------------------------------------------------------------------------------ one worker
class Heartbeat:
    """Records the heartbeats of the trials in training in Optuna's storage, from a thread."""

    def __init__(self, storage, trial_ids: list[int]):
        self.storage, self.trial_ids = storage, trial_ids
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while not self.stop.wait(HEARTBEAT_SECONDS):
            for trial_id in self.trial_ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception:  # a missed beat is not worth failing the trial for
                    pass

    def __enter__(self):  # the first beat was recorded as the trial was asked (_loop)
        self.thread.start()
        return self

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
        self.key = metric.replace("/", "_") if single and metric.startswith("val/") else None
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


def _best_runs(study: optuna.Study, sweep: Sweep, current) -> dict[str, bool]:
    """Runs whose `study.best` tag changes now that `current` has finished.

    The best set (Pareto set with several objectives) with and without `current` differ only
    by what `current` changes, so this needs no memory of earlier marks and suits many workers.
    """
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
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


def _progress_metrics(study: optuna.Study, sweep: Sweep) -> dict[str, float]:
    counts = count_trials(study.get_trials(deepcopy=False))
    metrics = {"trials/finished": counts.finished, "trials/pruned": counts.pruned, "trials/failed": counts.failed}
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
    setup: object  # Setup
    data: object  # Data
    run: object  # TrialRun
    workdir: Path
    told: bool = False


def run_pack(
    trials: list[optuna.Trial], study: optuna.Study, sweep: Sweep, tracker: Tracker, sweep_run_id: str, references=None
) -> list[str]:
    """Train asked trials together (`pack` models at a time; a compression sweep's one at a time)
    and tell Optuna and MLflow how each ended: their states are returned ('finished', 'pruned',
    'diverged', 'failed' or 'duplicate'). On Ctrl+C every trial not yet told is marked
    interrupted and queued again, and KeyboardInterrupt is raised."""
    from study.objective import TrialJob, run_trial, run_trials

    states: dict[int, str] = {}
    started: list[Started] = []
    with tempfile.TemporaryDirectory(prefix="study-") as tmp:
        try:
            taken: dict[str, int] = {}
            for trial in trials:
                begun = _begin(trial, study, sweep, tracker, sweep_run_id, taken, Path(tmp))
                if isinstance(begun, str):
                    states[trial.number] = begun
                else:
                    started.append(begun)
            with Heartbeat(study._storage, [s.trial._trial_id for s in started]):
                observers = [Observer(s.trial, s.run, sweep) for s in started]
                if references is None:
                    jobs = [
                        TrialJob(s.setup, s.data, sweep.config.seed, sweep.config.replicates, s.workdir, o)
                        for s, o in zip(started, observers)
                    ]
                    outcomes = run_trials(jobs, sweep.config.pack)
                else:
                    outcomes = [
                        _attempt(run_trial, s.setup, s.data, sweep.config.seed, sweep.config.replicates, s.workdir, o, references)
                        for s, o in zip(started, observers)
                    ]
                for begun, outcome in zip(started, outcomes):
                    states[begun.trial.number] = _conclude(begun, outcome, study, sweep, tracker, sweep_run_id)
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
                        trial.set_user_attr("study_state", "interrupted")
                        study.tell(trial, state=TrialState.FAIL)
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


def _begin(trial, study, sweep: Sweep, tracker: Tracker, sweep_run_id: str, taken: dict[str, int], tmp: Path) -> Started | str:
    """Sample the trial's settings and start its MLflow run; 'duplicate' or 'failed' if it cannot."""
    params = suggest(trial, sweep)
    key = json.dumps(params, sort_keys=True, default=str)
    earlier = _finished_with(study, params, trial.number)
    earlier = earlier if earlier is not None else taken.get(key)
    if earlier is not None:  # categorical spaces repeat: finished work is not done again
        trial.set_user_attr("study_skipped", "repeat")
        trial.set_user_attr("study_reason", f"same settings as trial {earlier}")
        study.tell(trial, state=TrialState.FAIL)
        return "duplicate"
    taken[key] = trial.number
    run = None
    try:
        setup = sweep.resolve(params)
        data = load_dataset(setup.dataset, sweep.config.seed, sweep.path.parent)
        run = tracker.start_trial(sweep_run_id, trial.number, params, setting_params(sweep, setup), data)
        trial.set_user_attr("mlflow_run_id", run.run_id)
    except BaseException as exc:
        if not interruption(exc):
            return _failed(trial, study, run, exc)
        if run is not None:  # the caller queues the trial again; its run is closed here
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                run.end("interrupted", "interrupted by the user (Ctrl+C); the trial is queued again")
            finally:
                signal.signal(signal.SIGINT, signal.default_int_handler)
        raise KeyboardInterrupt from exc
    return Started(trial, setup, data, run, tmp / f"trial-{trial.number}")


def _conclude(begun: Started, outcome, study, sweep: Sweep, tracker: Tracker, sweep_run_id: str) -> str:
    """Log a trained trial's outcome (a TrialResult, or the exception that stopped it) and tell
    Optuna; returns its state."""
    from study.objective import write_outputs

    trial, run, setup = begun.trial, begun.run, begun.setup
    try:
        if isinstance(outcome, BaseException):
            raise outcome
        result = outcome
        missing = [m for m in sweep.metrics if m not in result.metrics]
        if result.status == "finished" and missing:
            raise StudyError(f"objective: this trial measured no {missing[0]} (method {setup.compress.method}); pick a metric it measures")
        outputs = begun.workdir / "outputs"
        write_outputs(result, begun.data, outputs)
        state = result.status
        trial.set_user_attr("study_state", state)
        if result.reason:
            trial.set_user_attr("study_reason", result.reason[:1000])
        run.finish(result, outputs)
    except Exception as exc:
        if interruption(exc):
            raise KeyboardInterrupt from exc
        begun.told = True
        return _failed(trial, study, run, exc)
    begun.told = True
    if state == "finished":
        values = [result.metrics[m] for m in sweep.metrics]
        frozen = study.tell(trial, values)
        tracker.mark_best(_best_runs(study, sweep, frozen))
    else:  # pruned or diverged: never a best trial
        study.tell(trial, state=TrialState.PRUNED)
    tracker.log_progress(sweep_run_id, trial.number, _progress_metrics(study, sweep))
    return state


def interruption(exc: BaseException) -> bool:
    """True for Ctrl+C, also where a library turned it into an error of its own (SQLite answers
    a signal during a query with "interrupted"): the trial is queued again, not failed."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, KeyboardInterrupt) or (type(exc).__name__ == "OperationalError" and "interrupted" in str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _failed(trial, study, run, exc: BaseException) -> str:
    message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, StudyError) else str(exc)
    trial.set_user_attr("study_state", "failed")
    trial.set_user_attr("study_reason", message[:1000])
    if run is not None:
        run.end("failed", message[:1000], exc)
    study.tell(trial, state=TrialState.FAIL)
    return "failed"


def _interrupted(begun: Started, study) -> None:
    begun.trial.set_user_attr("study_state", "interrupted")
    begun.run.end("interrupted", "interrupted by the user (Ctrl+C); the trial is queued again")
    study.tell(begun.trial, state=TrialState.FAIL)
    queue_again(study, study._storage.get_trial(begun.trial._trial_id))
    begun.told = True


def references(sweep: Sweep, tracker: Tracker, store: Store, sweep_run_id: str):
    """The reference models (base, controls) of a compression sweep, else None."""
    if sweep.config.base is None:
        return None
    from study.compression.base import References

    return References(sweep, tracker, store, sweep_run_id)


def setting_params(sweep: Sweep, setup) -> dict:
    """The resolved settings a trial logs: all of them, except in a compression sweep the ones its
    method does not read (the compress.* knobs of other methods, and model.* unless it trains)."""
    flat = flatten(setup.model_dump(mode="python"))
    if sweep.config.base is None:
        return {k: v for k, v in flat.items() if not k.startswith("compress.")}
    return {k: v for k, v in flat.items() if relevant(k, setup.compress.model_dump())}


def _finished_with(study: optuna.Study, params: dict, number: int) -> int | None:
    """The number of a finished or pruned trial with exactly these settings, if there is one."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if t.number != number and t.params == params:
            return t.number
    return None


def _over_budget(study: optuna.Study, trial: optuna.Trial, target: int | None) -> bool:
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


def work(job: Job, progress=None) -> str:
    """A worker's loop: ask, train, tell until the budget or deadline; returns why it stopped
    ('budget', 'deadline', 'exhausted', 'interrupted'). Raises StudyError after repeated failures."""
    if job.threads:
        os.environ["STUDY_TF_THREADS"] = str(job.threads)
    sweep = load_sweep(job.sweep_path, job.overrides)
    quiet_libraries()
    client = job.store.mlflow()
    tracker = Tracker(client, sweep, job.store.artifact_root)
    storage = job.store.optuna()
    study = optuna.load_study(
        study_name=sweep.name, storage=storage, sampler=build_sampler(sweep),
        pruner=build_pruner(sweep),
    )
    sweep_run_id = study.user_attrs["mlflow_sweep_run_id"]
    check_data(sweep)
    from study import objective  # noqa: F401 - TensorFlow is imported here, once per worker

    refs = references(sweep, tracker, job.store, sweep_run_id)
    try:
        return _loop(job, study, sweep, tracker, sweep_run_id, progress, refs)
    except KeyboardInterrupt:  # between trials: nothing is running, nothing to mark
        return "interrupted"


def trials_per_pack(sweep: Sweep) -> int:
    """How many trials to ask at once: as many as fill a pack of `pack` models with their
    replicates (at least one); a compression sweep trains one trial at a time."""
    if sweep.config.base is not None:
        return 1
    return max(1, sweep.config.pack // sweep.config.replicates)


def _ask_pack(study: optuna.Study, sweep: Sweep, target: int | None) -> list[optuna.Trial]:
    """Ask up to `trials_per_pack` trials, fewer where the budget ends; those asked over it are
    marked skipped."""
    trials = []
    while len(trials) < trials_per_pack(sweep):
        if trials and target is not None:
            counts = count_trials(study.get_trials(deepcopy=False))
            if counts.done + counts.running >= target:
                break
        trial = study.ask()
        study._storage.record_heartbeat(trial._trial_id)  # at once: a worker that dies now is found by its heartbeat
        if _over_budget(study, trial, target):
            trial.set_user_attr("study_skipped", "budget")
            study.tell(trial, state=TrialState.FAIL)
            break
        trials.append(trial)
    return trials


def _loop(job: Job, study: optuna.Study, sweep: Sweep, tracker: Tracker, sweep_run_id: str, progress, refs) -> str:
    failures = duplicates = 0
    last_failed = None
    while True:
        recover(study, tracker.client, sweep.metrics)
        counts = count_trials(study.get_trials(deepcopy=False))
        if progress is not None:
            progress.update(study)
        if job.target is not None and counts.done >= job.target:
            return "budget"
        if job.deadline is not None and time.time() >= job.deadline:
            return "deadline"
        if job.target is not None and not counts.waiting and counts.done + counts.running >= job.target:
            time.sleep(WAIT_SECONDS)  # others are finishing the last trials; one may fail and be retried
            continue
        trials = _ask_pack(study, sweep, job.target)
        if not trials:
            continue
        try:
            states = run_pack(trials, study, sweep, tracker, sweep_run_id, refs)
        except KeyboardInterrupt:
            return "interrupted"  # run_pack has marked the trials failed and queued them again
        for trial, state in zip(trials, states):
            if state == "duplicate":
                duplicates += 1
                continue
            duplicates = 0
            failures = failures + 1 if state == "failed" else 0
            last_failed = trial if state == "failed" else None
        if duplicates >= MAX_DUPLICATES_IN_A_ROW:
            return "exhausted"
        if failures >= MAX_FAILURES_IN_A_ROW:
            last = study._storage.get_trial(last_failed._trial_id).user_attrs.get("study_reason", "")
            if "No space left" in last or "disk is full" in last:
                raise StudyError(DISK_FULL)
            raise StudyError(f"{failures} trials in a row failed; the last: {last} (fix the sweep and run again)")


def check_data(sweep: Sweep):
    """Read the sweep's dataset (kept for the trials) and check that its objective fits the task:
    a csv's task is known only once it is read. Returns the data."""
    return load_for_objective(sweep.config.dataset, sweep.config.seed, sweep.path.parent, sweep.metrics)


def _worker_main(job: Job, parent: int) -> None:
    """Entry point of a worker process: own process group (the parent relays Ctrl+C once), and
    SIGTERM when the parent dies, handled as Ctrl+C."""
    os.setpgrp()
    die_with_parent(parent)
    terminate_as_interrupt()
    try:
        outcome = work(job)
    except StudyError as exc:
        print(f"error: worker {job.worker}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1)
    raise SystemExit(130 if outcome == "interrupted" else 0)


# ------------------------------------------------------------------------------- the sweep
@dataclass
class Summary:
    name: str
    counts: Counts
    target: int | None
    seconds: float
    state: str  # 'complete', 'partial' (deadline), 'exhausted' (no new settings left) or 'interrupted'
    experiment_id: str
    best: list = field(default_factory=list)  # FrozenTrials: the best, or the Pareto set


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
    target = target_trials(sweep, trials)
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
        tracker.end_sweep(sweep_run_id, "failed")
        raise
    counts = count_trials(study.get_trials(deepcopy=False))
    if progress is not None:
        progress.update(study, final=True)
    if outcome == "interrupted":
        state = "interrupted"
    elif outcome == "exhausted":
        state = "exhausted"
    elif target is None or counts.done >= target:
        state = "complete"  # a time budget is complete when its time is up
    else:
        state = "partial"
    tracker.end_sweep(sweep_run_id, state, _progress_metrics(study, sweep) if counts.done else None)
    summary = Summary(sweep.name, counts, target, time.time() - start, state, tracker.experiment_id, best_trials(study))
    if outcome == "interrupted":
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
            if progress is not None:
                progress.update(study)
            time.sleep(1.0)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for proc in procs:
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGINT)
        for proc in procs:
            proc.join()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return "interrupted"
    codes = [p.exitcode for p in procs]
    if any(code == 130 for code in codes):
        return "interrupted"
    if all(code not in (0, None) for code in codes):
        raise StudyError(f"every worker failed (exit codes {codes}); see the messages above")
    return "budget" if job.deadline is None or time.time() < job.deadline else "deadline"
