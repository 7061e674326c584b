"""Trials whose worker died, found and put right: in Optuna and MLflow together.

A worker can die (kill -9, out of memory, a machine lost) at any point of a trial's life. Every
worker runs `recover` before it asks for a trial, so whatever the moment, the next live worker
finds the trial and settles it:

- RUNNING with a heartbeat older than the grace period (Optuna's own stale check), or RUNNING
  with no heartbeat at all and started longer ago than the grace period (the worker died between
  Optuna's ask and the first beat, which Optuna's check never sees): the trial is failed, then
- its MLflow run is found (by the id the trial recorded, else by the trial number the run is
  tagged with, which covers a death between creating the run and recording its id);
- if that run had FINISHED with every objective measured (the worker died after MLflow heard the
  outcome and before Optuna did), the outcome is recorded in Optuna as a new trial with the same
  settings and values, linked to the failed one: nothing is trained again;
- otherwise the run is closed as failed and the settings are queued again, at most MAX_RETRIES
  times (a trial that kills its worker, e.g. out of memory, must not loop forever; a Ctrl+C
  does not count: `deaths`).

Last, trial runs still RUNNING in MLflow whose Optuna trial has ended (a run created a moment
before a Ctrl+C or kill, whose id never reached the trial) are closed as interrupted.

Queued retries and recorded outcomes carry `failed_trial` and `retry_history` as Optuna's
RetryHeartbeatStaleTrialCallback writes them, so `budget.counted` counts each trial once.
"""

from __future__ import annotations

import copy
import datetime
import logging
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState as OptunaState

from study import store
from study.names import Attr, Role, Tag, TrialState
from study.tracking import end_orphan_run

log = logging.getLogger(__name__)

MAX_RETRIES = 3  # a trial whose worker dies this often is left failed, with the reason


def recover(study: optuna.Study, client, metrics: list[str], orphans: bool = False) -> list[int]:
    """Settle the trials of dead workers (see the module doc); returns their numbers. With
    `orphans`, also close trial runs left RUNNING (one MLflow search: a worker does it as it
    starts, the sweep as it ends, not before every pack)."""
    settle = Settle(client, metrics)
    storage = study._storage
    settled = []
    stale = storage._get_stale_trial_ids(study._study_id)  # type: ignore[attr-defined]  # Optuna's own stale check
    for trial_id in [*stale, *_never_beat(study)]:
        try:
            if deaths(study, storage.get_trial(trial_id)) > MAX_RETRIES:  # said while it can be
                storage.set_trial_user_attr(trial_id, Attr.REASON, f"its worker died {MAX_RETRIES + 1} times "
                                            "(out of memory?): not retried")
            if not storage.set_trial_state_values(trial_id, state=OptunaState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker settled it first
        trial = storage.get_trial(trial_id)
        settle(study, trial)
        settled.append(trial.number)
    if orphans or settled:
        close_orphan_runs(study, client)
    return settled


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


def _never_beat(study: optuna.Study) -> list[int]:
    """Ids of RUNNING trials with no heartbeat row that started more than the grace period ago."""
    from optuna.storages._rdb import models

    storage: Any = getattr(study._storage, "_backend", study._storage)  # the RDB storage under Optuna's cache
    cutoff = datetime.datetime.now() - datetime.timedelta(seconds=store.GRACE_SECONDS)
    session = storage.scoped_session()
    try:
        running = (
            session.query(models.TrialModel)
            .filter(models.TrialModel.study_id == study._study_id, models.TrialModel.state == OptunaState.RUNNING)
            .all()
        )
        return [t.trial_id for t in running if not t.heartbeats and t.datetime_start is not None and t.datetime_start < cutoff]
    finally:
        session.close()


def retry_attrs(trial) -> dict:
    """The system attrs that link a retry to the trial it repeats (as Optuna's retry callback writes them)."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    return {"failed_trial": history[0], "retry_history": history}


with warnings.catch_warnings():  # "experimental" since Optuna 2.8; its behaviour is what we test
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    RETRY = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)  # our cap counts deaths only


def queue_again(study: optuna.Study, trial) -> bool:
    """Queue a failed trial's exact settings again with Optuna's retry callback (which links the
    retry to it), unless its worker died more than MAX_RETRIES times (`deaths`). The retry inherits the failed
    trial's user attrs; the runner resets ours when it begins (`runner._begin`)."""
    if deaths(study, trial) > MAX_RETRIES:
        return False
    RETRY(study, copy.deepcopy(trial))  # the callback appends to the trial's own retry_history list
    return True


def deaths(study: optuna.Study, trial) -> int:
    """How often a trial's settings were lost with their worker: the trials of its retry chain,
    itself included, that the user did not interrupt. A Ctrl+C is not the trial's fault, so it
    never uses up the retries that stop a trial which keeps killing its worker (out of memory)."""
    chain = retry_attrs(trial)["retry_history"]
    known = {t.number: t for t in study.get_trials(deepcopy=False)} if len(chain) > 1 else {}
    known[trial.number] = trial
    return sum(1 for n in chain if n in known and known[n].user_attrs.get(Attr.STATE) != TrialState.INTERRUPTED)


class Settle:
    """What happens to a trial whose worker died: see the module doc."""

    def __init__(self, client, metrics: list[str]):
        self.client, self.metrics = client, metrics

    def __call__(self, study: optuna.Study, trial) -> None:
        run = self._run_of(study, trial)
        attrs = retry_attrs(trial)
        if run is not None and run.info.status == "FINISHED" and all(m in run.data.metrics for m in self.metrics):
            state = run.data.tags.get(Tag.STATE, TrialState.FINISHED)
            outcome: dict[str, Any] = {"state": OptunaState.COMPLETE, "values": [run.data.metrics[m] for m in self.metrics]}
            if state != TrialState.FINISHED:
                outcome = {"state": OptunaState.PRUNED, "values": None}
            study.add_trial(optuna.trial.create_trial(
                params=trial.params, distributions=trial.distributions,
                user_attrs={**trial.user_attrs, Attr.RUN_ID: run.info.run_id, Attr.STATE: state,
                            Attr.REASON: f"recorded from its MLflow run: the worker of trial {trial.number} died "
                                            "after the run ended"},
                system_attrs=attrs, **outcome,
            ))
            return
        if run is not None and run.info.status == "RUNNING":
            end_orphan_run(self.client, run.info.run_id, "its worker stopped (no heartbeat); the trial is queued again"
                           if deaths(study, trial) <= MAX_RETRIES else "its worker stopped (no heartbeat) too often")
        if not queue_again(study, trial):
            log.warning("trial %d: its worker died %d times; not retried", trial.number, deaths(study, trial))

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
