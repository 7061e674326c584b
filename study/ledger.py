"""A trial's life, in one place: how it is asked, skipped, finished, pruned, failed, interrupted,
settled after its worker died, and counted, written to Optuna and MLflow together.

`TABLE` maps each of our states to Optuna's state, the MLflow run's status, whether the trial
counts against the budget and whether its settings are queued again. Every transition writes in
an order where a crash at any instruction leaves a state the next worker settles:

- the MLflow run is ended before Optuna hears the outcome (a worker that dies between the two is
  settled from its run: the outcome is recorded, nothing is trained again);
- a retry is queued *before* the trial it repeats is failed, and settling first looks for a retry
  or recorded outcome that already exists: never a lost setting, never one queued twice;
- a dead worker's trial is settled while it is still RUNNING, and failed last (Optuna refuses
  attrs on a finished trial, so its reason is written first; `optuna.storages.fail_stale_trials`
  fails first, which is why it is not used here);
- settling and asking happen under one lock (`Store.ask_lock`), so two workers never settle the
  same trial, and never pop the same queued one.

This is the only module that reaches into Optuna's storage: its stale-trial query, heartbeats, and
one query for RUNNING trials that never sent a heartbeat (a worker killed between Optuna's ask and
its first beat, which Optuna's check never sees). Retries are Optuna's own
(`RetryHeartbeatStaleTrialCallback`, whose `retry_history` links a retry to the trial it repeats).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import logging
import threading
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import optuna
from optuna.trial import TrialState as OptunaState

from study import store
from study.names import Attr, Role, Tag, TrialState
from study.tracking import end_orphan_run

log = logging.getLogger(__name__)

MAX_RETRIES = 3  # a trial whose worker dies this often is left failed, with the reason
SKIPPED = "skipped"  # asked over the budget, or repeating settings that already ran: not a trial at all


class Entry(NamedTuple):
    optuna: OptunaState  # the Optuna trial's state
    mlflow: str | None  # the MLflow run's status (None: no run)
    done: bool  # counts against the budget
    again: bool  # its settings are queued to run again


TABLE: dict[str, Entry] = {
    TrialState.FINISHED: Entry(OptunaState.COMPLETE, "FINISHED", True, False),
    TrialState.PRUNED: Entry(OptunaState.PRUNED, "KILLED", True, False),
    TrialState.DIVERGED: Entry(OptunaState.PRUNED, "KILLED", True, False),
    TrialState.FAILED: Entry(OptunaState.FAIL, "FAILED", True, False),
    TrialState.INTERRUPTED: Entry(OptunaState.FAIL, "FAILED", False, True),  # Ctrl+C, or a dead worker
    SKIPPED: Entry(OptunaState.FAIL, None, False, False),
}


with warnings.catch_warnings():  # "experimental" since Optuna 2.8; its behaviour is what we test
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    RETRY = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)  # our cap counts deaths only


def history(trial) -> list[int]:
    """The trials this one repeats, oldest first (Optuna's retry_history; empty for a first try)."""
    return list(trial.system_attrs.get("retry_history", []))


def repeats(trial) -> int | None:
    """The number of the trial this one repeats directly (Optuna's retry, or a recorded outcome,
    records it as `failed_trial`); None for a first try."""
    return trial.system_attrs.get("failed_trial")


def repeated(trials: list) -> set[int]:
    """Numbers of the trials that a retry or a recorded outcome repeats: they are settled."""
    found = {n for t in trials for n in history(t)}
    return found | {number for t in trials if (number := repeats(t)) is not None}


# ----------------------------------------------------------------------------- counting
@dataclass
class Counts:
    finished: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    interrupted: int = 0  # failed runs whose settings were queued again (Ctrl+C, a dead worker): not done
    unsettled: int = 0  # failed in Optuna by a worker that died before settling them: the next worker does

    @property
    def done(self) -> int:
        return self.finished + self.pruned + self.failed


def state_of(trial, settled: set[int]) -> str:
    """Our state of a trial (TABLE's keys, 'running', 'waiting', or 'unsettled'), given the numbers
    of the trials that retries repeat (`repeated`)."""
    if trial.user_attrs.get(Attr.SKIPPED):
        return SKIPPED
    if trial.state == OptunaState.COMPLETE:
        return TrialState.FINISHED
    if trial.state == OptunaState.PRUNED:
        return TrialState.DIVERGED if trial.user_attrs.get(Attr.STATE) == TrialState.DIVERGED else TrialState.PRUNED
    if trial.state == OptunaState.FAIL:
        if trial.number in settled:
            return TrialState.INTERRUPTED
        return TrialState.FAILED if trial.user_attrs.get(Attr.STATE) == TrialState.FAILED else "unsettled"
    return "waiting" if trial.state == OptunaState.WAITING else TrialState.RUNNING


def counted(trials: list) -> list:
    """The trials that count (or will): not skipped, and not failed trials that a retry or a
    recorded outcome repeats (that one counts instead)."""
    settled = repeated(trials)
    return [t for t in trials if state_of(t, settled) not in (SKIPPED, TrialState.INTERRUPTED)]


def count_trials(trials: list) -> Counts:
    """Trials per state, each once. MLflow's FAILED trial runs are `failed` + `interrupted`."""
    counts = Counts()
    settled = repeated(trials)
    field = {TrialState.FINISHED: "finished", TrialState.PRUNED: "pruned", TrialState.DIVERGED: "pruned",
             TrialState.FAILED: "failed", TrialState.INTERRUPTED: "interrupted", TrialState.RUNNING: "running",
             "waiting": "waiting", "unsettled": "unsettled"}
    for t in trials:
        state = state_of(t, settled)
        if state != SKIPPED:
            setattr(counts, field[state], getattr(counts, field[state]) + 1)
    return counts


# ---------------------------------------------------------------------------- transitions
_held: set[tuple[int, int]] = set()  # (storage, trial id) this process asked and has not told: alive by definition


def _told(trial) -> None:
    _held.discard((id(trial.study._storage), trial._trial_id))


def ask(study: optuna.Study, lock=None, settle: Settle | None = None, sampler=None) -> optuna.Trial:
    """A new trial (a queued one first: a grid point, a retry), its first heartbeat recorded at
    once. Under `lock`, the trials of dead workers are settled first (`settle`), and `sampler(n)`,
    where n is the trial's place in the study's sequence (`place`), replaces the study's sampler
    for what it draws at the ask (multivariate samplers); `reseed` does the same for the draws
    at suggest. So the same sweep draws the same settings, run twice, or killed and resumed."""
    with lock if lock is not None else contextlib.nullcontext():
        if settle is not None:
            settle(study)
        if sampler is not None:
            study.sampler = sampler(place(study.get_trials(deepcopy=False)))
        trial = study.ask()
        _held.add((id(study._storage), trial._trial_id))
        for storage, trial_id in list(_held):  # this one's first beat, and fresh ones for the pack asked so far
            if storage == id(study._storage):
                beat(study, trial_id)
    reset_inherited(trial)
    return trial


def reseed(study: optuna.Study, trial: optuna.Trial, sampler) -> None:
    """Replace the study's sampler by `sampler(n)`, n the trial's place (`place`), just before the
    trial's settings are drawn: each trial's draws start from a seed of their own, however many
    draws the trials asked with it in one pack made (a retry's settings are set, and draw nothing)."""
    study.sampler = sampler(place(study.get_trials(deepcopy=False), trial.number))


def place(trials: list, number: int | None = None) -> int:
    """How many trials came before trial `number` (or a new one) in the sweep's sequence: trials
    asked (queued ones not yet), not counting failed trials that a retry repeats, so a resumed
    sweep's n-th trial has the same place as an uninterrupted one's."""
    settled = repeated(trials)
    return sum(1 for t in trials if (number is None or t.number < number) and t.state != OptunaState.WAITING
               and not (t.state == OptunaState.FAIL and t.number in settled))


def reset_inherited(trial) -> None:
    """A retry starts as itself: Optuna's retry callback copies the failed trial's user attrs (its
    state, reason and MLflow run id), which would otherwise point at the run of the trial it
    repeats. Idempotent, and a no-op for a trial that is not a retry (a new trial has none of them)."""
    attrs = trial.user_attrs
    if attrs.get(Attr.STATE, TrialState.RUNNING) != TrialState.RUNNING or attrs.get(Attr.REASON) or attrs.get(Attr.RUN_ID):
        trial.set_user_attr(Attr.STATE, TrialState.RUNNING)
        trial.set_user_attr(Attr.REASON, "")
        trial.set_user_attr(Attr.RUN_ID, "")


def skip(study: optuna.Study, trial: optuna.Trial, why: str, reason: str = "") -> None:
    """A trial that does not count: asked over the budget ('budget') or repeating finished
    settings ('repeat'). It never had a run."""
    trial.set_user_attr(Attr.SKIPPED, why)
    if reason:
        trial.set_user_attr(Attr.REASON, reason)
    study.tell(trial, state=TABLE[SKIPPED].optuna)
    _told(trial)


def conclude(study: optuna.Study, trial: optuna.Trial, state: str, reason: str, end_run, values=None):
    """A trained trial's outcome: finished (with its `values`), pruned or diverged. `end_run()`
    logs the run's results and ends it; Optuna hears after MLflow. Returns the frozen trial."""
    trial.set_user_attr(Attr.STATE, state)
    if reason:
        trial.set_user_attr(Attr.REASON, reason[:1000])
    end_run()
    frozen = study.tell(trial, values) if state == TrialState.FINISHED else study.tell(trial, state=TABLE[state].optuna)
    _told(trial)
    return frozen


def fail(study: optuna.Study, trial: optuna.Trial, run, message: str, error: BaseException | None = None) -> str:
    """A trial that raised an error: counted as done, not retried (it would fail again)."""
    if run is not None:
        run.end(TrialState.FAILED, message[:1000], error)
    trial.set_user_attr(Attr.STATE, TrialState.FAILED)
    trial.set_user_attr(Attr.REASON, message[:1000])
    study.tell(trial, state=TABLE[TrialState.FAILED].optuna)
    _told(trial)
    return TrialState.FAILED


def interrupt(study: optuna.Study, trial: optuna.Trial, run=None) -> None:
    """Ctrl+C (or SIGTERM) while the trial was asked or training: its settings are queued again
    first, then its run is closed and the trial failed. A crash in between leaves a RUNNING trial
    with a retry, which the next worker only fails (`Settle`)."""
    trial.set_user_attr(Attr.STATE, TrialState.INTERRUPTED)
    queue_again(study, frozen(study, trial))
    if run is not None:
        try:
            run.end(TrialState.INTERRUPTED, "interrupted by the user (Ctrl+C); the trial is queued again")
        except Exception as exc:  # the next worker closes it (close_orphan_runs)
            log.warning("trial %d: its run could not be closed: %s", trial.number, exc)
    study.tell(trial, state=TABLE[TrialState.INTERRUPTED].optuna)
    _told(trial)


def frozen(study: optuna.Study, trial: optuna.Trial):
    """The trial as stored now."""
    return study._storage.get_trial(trial._trial_id)


def queue_again(study: optuna.Study, trial) -> bool:
    """Queue a trial's exact settings again with Optuna's retry callback (which links the retry to
    it), unless its worker died more than MAX_RETRIES times (`deaths`) or it already has a retry.
    The retry inherits the trial's user attrs; `reset_inherited` clears ours when it is asked."""
    if deaths(study, trial) > MAX_RETRIES:
        return False
    if trial.number in repeated(study.get_trials(deepcopy=False)):
        return True  # queued before a crash: once is enough
    RETRY(study, copy.deepcopy(trial))  # the callback appends to the trial's own retry_history list
    return True


def _lost(study: optuna.Study, trial, numbers: list[int]) -> list:
    """The trials among `numbers` (a retry chain) whose settings were lost with their worker, not
    to a Ctrl+C (the user's doing, never the trial's fault)."""
    known = {t.number: t for t in study.get_trials(deepcopy=False)} if numbers != [trial.number] else {}
    known[trial.number] = trial
    return [known[n] for n in numbers if n in known and known[n].user_attrs.get(Attr.STATE) != TrialState.INTERRUPTED]


def deaths(study: optuna.Study, trial) -> int:
    """How often a trial's settings were lost with their worker while they trained alone: the trials
    of its retry chain, itself included, that the user did not interrupt and that were the only
    trial of their pack. A Ctrl+C is not the trial's fault; nor is a death shared with pack-mates
    (any of them, or a kill from outside, may have caused it): such a trial's retry trains alone
    (`suspect`), so a trial that keeps killing its worker (out of memory) is still caught, while
    kills from outside spread over many trials instead of using up the retries of a few."""
    lost = _lost(study, trial, [*history(trial), trial.number])
    return sum(1 for t in lost if int(t.user_attrs.get(Attr.PACK, 1)) <= 1)


def suspect(study: optuna.Study, trial) -> bool:
    """Whether a trial repeats one whose worker died under it (not a Ctrl+C): it trains alone."""
    trial = frozen(study, trial) if isinstance(trial, optuna.Trial) else trial
    chain = history(trial)
    return bool(chain) and bool(_lost(study, trial, chain))


# ---------------------------------------------------------------------------- heartbeats
def beat(study: optuna.Study, trial_id: int) -> None:
    study._storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]


class Heartbeat:
    """Records the heartbeats of a pack's trials, from a thread, until each is told (`forget`)."""

    def __init__(self, study: optuna.Study, trials: list[optuna.Trial]):
        self.study, self.trial_ids = study, {t._trial_id for t in trials}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while not self.stop.wait(store.HEARTBEAT_SECONDS):
            for trial_id in list(self.trial_ids):
                try:
                    beat(self.study, trial_id)
                except Exception as exc:  # a missed beat is not worth failing the trial for
                    log.debug("trial %d: heartbeat not recorded: %s", trial_id, exc)

    def __enter__(self):  # the first beat was recorded as the trial was asked (`ask`)
        self.thread.start()
        return self

    def forget(self, trial: optuna.Trial) -> None:
        self.trial_ids.discard(trial._trial_id)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


# ------------------------------------------------------------------------- dead workers
def _stale(study: optuna.Study) -> list[int]:
    """Ids of RUNNING trials whose worker is dead: a heartbeat older than the grace period
    (Optuna's own check), or none at all and started longer ago than that."""
    from optuna.storages._rdb import models

    storage: Any = getattr(study._storage, "_backend", study._storage)  # the RDB storage under Optuna's cache
    stale = list(storage._get_stale_trial_ids(study._study_id))
    cutoff = datetime.datetime.now() - datetime.timedelta(seconds=store.GRACE_SECONDS)
    session = storage.scoped_session()
    try:
        running = (
            session.query(models.TrialModel)
            .filter(models.TrialModel.study_id == study._study_id, models.TrialModel.state == OptunaState.RUNNING)
            .all()
        )
        stale += [t.trial_id for t in running
                  if not t.heartbeats and t.datetime_start is not None and t.datetime_start < cutoff]
    finally:
        session.close()
    return stale


class Settle:
    """Settles the trials of dead workers (kill -9, out of memory, a machine lost), whatever the
    moment they died, in Optuna and MLflow together. For each stale trial, while it is RUNNING:

    - a retry or recorded outcome already exists (its worker died while interrupting it, or a
      settler died): nothing more than failing it;
    - its MLflow run ended with every objective measured (the worker died after MLflow heard the
      outcome and before Optuna did): the outcome is recorded as a new trial linked to it;
    - its worker died more than MAX_RETRIES times (out of memory?): failed with the reason;
    - otherwise its run, found by the id the trial recorded or by its trial number, is closed,
      and its settings are queued again;

    then the trial is failed. Called under the ask lock (`ask`); returns the numbers settled."""

    def __init__(self, client, metrics: list[str]):
        self.client, self.metrics = client, metrics

    def __call__(self, study: optuna.Study) -> list[int]:
        storage = study._storage
        settled = []
        for trial_id in _stale(study):
            if (id(storage), trial_id) in _held:  # ours, asked a moment ago and alive (a pack's asks can outlast the grace period)
                continue
            trial = storage.get_trial(trial_id)
            try:
                self.one(study, trial)
                storage.set_trial_state_values(trial_id, state=OptunaState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker (on a database server) settled it first
            settled.append(trial.number)
        if settled:
            close_orphan_runs(study, self.client)
        return settled

    def one(self, study: optuna.Study, trial) -> None:
        if trial.number in repeated(study.get_trials(deepcopy=False)):
            return
        if deaths(study, trial) > MAX_RETRIES:
            study._storage.set_trial_user_attr(trial._trial_id, Attr.STATE, TrialState.FAILED)
            study._storage.set_trial_user_attr(trial._trial_id, Attr.REASON, f"its worker died {MAX_RETRIES + 1} "
                                               "times (out of memory?): not retried")
            log.warning("trial %d: its worker died %d times; not retried", trial.number, deaths(study, trial))
            run = self._run_of(study, trial)
            if run is not None and run.info.status == "RUNNING":
                end_orphan_run(self.client, run.info.run_id, "its worker stopped (no heartbeat) too often")
            return
        run = self._run_of(study, trial)
        if run is not None and self._ended_measured(run):
            state = run.data.tags.get(Tag.STATE, TrialState.FINISHED)
            outcome: dict[str, Any] = {"state": OptunaState.COMPLETE, "values": [run.data.metrics[m] for m in self.metrics]}
            if state != TrialState.FINISHED:
                outcome = {"state": OptunaState.PRUNED, "values": None}
            study.add_trial(optuna.trial.create_trial(
                params=trial.params, distributions=trial.distributions,
                user_attrs={**trial.user_attrs, Attr.RUN_ID: run.info.run_id, Attr.STATE: state,
                            Attr.REASON: f"recorded from its MLflow run: the worker of trial {trial.number} died "
                                         "after the run ended"},
                system_attrs={"failed_trial": [*history(trial), trial.number][0],
                              "retry_history": [*history(trial), trial.number]},
                **outcome,
            ))
            return
        if run is not None and run.info.status == "RUNNING":
            end_orphan_run(self.client, run.info.run_id, "its worker stopped (no heartbeat); the trial is queued again")
        queue_again(study, trial)

    def _ended_measured(self, run) -> bool:
        """Whether a run ended with its outcome logged: finished with every objective, or stopped
        (pruned, diverged) by the trial itself."""
        state = run.data.tags.get(Tag.STATE)
        if run.info.status == "FINISHED":
            return all(m in run.data.metrics for m in self.metrics)
        return run.info.status == "KILLED" and state in (TrialState.PRUNED, TrialState.DIVERGED)

    def _run_of(self, study: optuna.Study, trial):
        """The trial's MLflow run: by the id it recorded, else by the trial number it is tagged with."""
        run_id = trial.user_attrs.get(Attr.RUN_ID)
        try:
            if run_id:
                return self.client.get_run(run_id)
            experiment = study.user_attrs.get(Attr.EXPERIMENT_ID)
            if experiment is None:
                return None
            found = self.client.search_runs(
                [experiment], filter_string=f"tags.`{Tag.TRIAL}` = '{trial.number}' and tags.`{Tag.ROLE}` = '{Role.TRIAL}'",
                max_results=5,
            )
            return found[0] if found else None
        except Exception as exc:  # the run is gone: nothing to close, the settings are queued all the same
            log.warning("trial %d: its MLflow run could not be read: %s", trial.number, exc)
            return None


def close_orphan_runs(study: optuna.Study, client) -> list[str]:
    """Close trial runs left RUNNING although their Optuna trial has ended: a run created a moment
    before Ctrl+C or a kill, whose id never reached the trial. Returns the ids closed."""
    experiment = study.user_attrs.get(Attr.EXPERIMENT_ID)
    if experiment is None:
        return []
    try:
        running = client.search_runs(
            [experiment], filter_string=f"attributes.status = 'RUNNING' and tags.`{Tag.ROLE}` = '{Role.TRIAL}'", max_results=1000
        )
    except Exception as exc:  # the store hiccuped: the next look closes them
        log.warning("could not look for orphaned runs: %s", exc)
        return []
    if not running:
        return []
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    closed = []
    for run in running:
        number = run.data.tags.get(Tag.TRIAL)
        state = states.get(int(number)) if number is not None and number.isdigit() else None
        if state is not None and state.is_finished():
            end_orphan_run(client, run.info.run_id, f"trial {number} ended without closing its run (interrupted); "
                           "its settings were queued again")
            closed.append(run.info.run_id)
    return closed
