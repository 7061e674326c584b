"""One worker: load TensorFlow and the data once, then ask, train and tell until the budget or
the deadline. `study run` runs one in its own process or starts several (`sweep._run_workers`);
on many machines each `study worker` is one."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from enum import StrEnum

import optuna

from study import ledger, runner
from study.budget import over_budget
from study.config import Sweep, load_sweep
from study.datasets import load_for_objective
from study.errors import StudyError
from study.ledger import count_trials
from study.names import Attr, TrialState
from study.processes import catch_interrupts, check_interrupt, die_with_parent, interrupted, terminate_as_interrupt
from study.search import build_pruner, build_sampler
from study.store import DISK_FULL, Store, quiet_libraries, redact
from study.tracking import Tracker

MAX_FAILURES_IN_A_ROW = 5  # a sweep whose every trial fails is broken: stop and say why
MAX_DUPLICATES_IN_A_ROW = 100  # samples that only repeat finished settings: the space is used up
WAIT_SECONDS = 2.0  # how often an idle worker looks again while others finish the last trials


class Stop(StrEnum):
    """Why a worker stopped."""

    BUDGET = "budget"  # the done trials fill the budget
    DEADLINE = "deadline"  # the time budget (or --timeout) ran out
    EXHAUSTED = "exhausted"  # the sampler only repeats settings that already ran
    INTERRUPTED = "interrupted"  # Ctrl+C, or SIGTERM


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


def references(sweep: Sweep, tracker: Tracker, store: Store):
    """The reference models (base, controls) of a compression sweep, else None."""
    if sweep.config.base is None:
        return None
    from study.compression.base import References

    return References(sweep, tracker, store)


def check_data(sweep: Sweep):
    """Read the sweep's dataset (kept for the trials) and check that its objective fits the task:
    a csv's task is known only once it is read. Returns the data."""
    return load_for_objective(sweep.config.dataset, sweep.config.seed, sweep.path.parent, sweep.metrics,
                              sweep.train_count())


def work(job: Job, progress=None) -> Stop:
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
    tracker.attach(study.user_attrs[Attr.SWEEP_RUN_ID])
    check_data(sweep)
    from study import objective  # noqa: F401 - TensorFlow is imported here, once per worker

    refs = references(sweep, tracker, job.store)
    try:
        check_interrupt()  # one a finalizer swallowed during `import tensorflow`
        with job.store.ask_lock():
            ledger.Settle(tracker.client, sweep.metrics)(study)
        ledger.close_orphan_runs(study, tracker.client)
        return _loop(job, study, sweep, tracker, progress, refs)
    except KeyboardInterrupt:  # between trials: nothing is running, nothing to mark
        return Stop.INTERRUPTED


def trials_per_pack(sweep: Sweep) -> int:
    """How many trials to ask at once: as many as fill a pack of `pack` models with their
    replicates (at least one); a compression sweep trains one trial at a time."""
    if sweep.config.base is not None:
        return 1
    return max(1, sweep.config.pack // sweep.config.replicates)


def _ask_pack(study: optuna.Study, sweep: Sweep, target: int | None, lock, settle: ledger.Settle) -> list[optuna.Trial]:
    """Ask up to `trials_per_pack` trials, fewer where the budget ends; those asked over it are
    marked skipped. Each ask happens under `lock` (Store.ask_lock: one process at a time), after
    the trials of dead workers are settled, with a sampler seeded by the trial's place in the
    sweep (`ledger.place`)."""
    trials: list[optuna.Trial] = []
    while len(trials) < trials_per_pack(sweep):
        if trials and target is not None:
            counts = count_trials(study.get_trials(deepcopy=False))
            if counts.done + counts.running >= target:
                break
        trial = ledger.ask(study, lock, settle, lambda place: build_sampler(sweep, place))
        if over_budget(study, trial, target):
            ledger.skip(study, trial, "budget")
            break
        trials.append(trial)
        alone = len(trials) == 1 and ledger.suspect(study, trial)  # its worker died under it: it trains alone
        trial.set_user_attr(Attr.PACK, 1 if alone else trials_per_pack(sweep))  # run_pack sets the final size
        if alone:
            break
    return trials


def queued_next(snapshot: list, asked: list[optuna.Trial], sweep: Sweep) -> list[dict]:
    """The settings of the queued trials (a grid's, a decision's rounds) that a worker would ask
    next, as a snapshot taken before `asked` were asked shows them: only a guess where several
    workers ask, and nothing for a compression sweep (its trials compile nothing of ours)."""
    if sweep.config.base is not None:
        return []
    numbers = {t.number for t in asked}
    queued = sorted((t for t in snapshot if t.state == optuna.trial.TrialState.WAITING and t.number not in numbers),
                    key=lambda t: t.number)
    return [t.system_attrs.get("fixed_params", {}) for t in queued[: trials_per_pack(sweep)]]


def _loop(job: Job, study: optuna.Study, sweep: Sweep, tracker: Tracker, progress, refs) -> Stop:
    ask_lock = job.store.ask_lock()
    settle = ledger.Settle(tracker.client, sweep.metrics)
    failures = duplicates = 0
    last_failed = None
    while True:
        check_interrupt()  # between packs: nothing running, nothing to mark
        snapshot = study.get_trials(deepcopy=False)
        counts = count_trials(snapshot)
        if progress is not None:
            progress.update(study)
        if job.target is not None and counts.done >= job.target:
            return Stop.BUDGET
        if job.deadline is not None and time.time() >= job.deadline:
            return Stop.DEADLINE
        if job.target is not None and not counts.waiting and counts.done + counts.running >= job.target:
            time.sleep(WAIT_SECONDS)  # others are finishing the last trials; one may fail and be retried
            with ask_lock:  # or its worker died: settled here, its retry is asked next
                settle(study)
            continue
        trials = _ask_pack(study, sweep, job.target, ask_lock, settle)
        if not trials:
            continue
        try:
            states = runner.run_pack(trials, study, sweep, tracker, refs, queued_next(snapshot, trials, sweep))
        except KeyboardInterrupt:
            return Stop.INTERRUPTED  # run_pack has marked the trials failed and queued them again
        for trial, state in zip(trials, states):
            if state == runner.DUPLICATE:
                duplicates += 1
                continue
            duplicates = 0
            failures = failures + 1 if state == TrialState.FAILED else 0
            last_failed = trial if state == TrialState.FAILED else None
        if duplicates >= MAX_DUPLICATES_IN_A_ROW:
            return Stop.EXHAUSTED
        if failures >= MAX_FAILURES_IN_A_ROW and last_failed is not None:
            last = ledger.frozen(study, last_failed).user_attrs.get(Attr.REASON, "")
            if "No space left" in last or "disk is full" in last:
                raise StudyError(DISK_FULL)
            raise StudyError(f"{failures} trials in a row failed; the last: {last} (fix the sweep and run again)")


def _worker_main(job: Job, parent: int) -> None:
    """Entry point of a worker process: own process group (the parent relays Ctrl+C once), and
    SIGTERM when the parent dies, handled as Ctrl+C."""
    os.setpgrp()
    die_with_parent(parent)
    catch_interrupts()
    terminate_as_interrupt()
    try:
        outcome = work(job)
    except KeyboardInterrupt:  # before its loop began (setting up, importing TensorFlow)
        raise SystemExit(130) from None
    except Exception as exc:
        if interrupted():  # an error after a Ctrl+C or SIGTERM is its consequence (cli.main)
            raise SystemExit(130) from None
        if not isinstance(exc, StudyError):
            raise  # a bug: keep its traceback
        print(f"error: worker {job.worker}: {redact(str(exc))}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    raise SystemExit(130 if outcome == Stop.INTERRUPTED else 0)
