"""Our MLflow wiring: one experiment per sweep, a run for the sweep, a run per trial.

A trial's run is created when the trial starts, so running trials show in the UI, and ends with
a status that tells the truth: FINISHED; KILLED for pruned or diverged trials, with the reason in
`study.reason`; FAILED for errors (the message in `study.error`) and interruptions. Per-epoch
metrics are buffered and written in batches (at most every FLUSH_SECONDS while a trial runs), so
tracking costs a few writes per trial. With replicates > 1, each replicate gets a run of its own
under the trial's run, and the trial's run holds the averages.

Trial runs are top-level (MLflow's UI folds nested runs away) and name their sweep's run in the
tag study.sweep_run; replicate and reference runs are nested. Tags every run carries:
study.role (sweep, trial, replicate, base, control), study.name, study.state, study.sweep_hash,
study.config_hash; trial runs add study.trial and study.sampled (all named in `names.Tag`).
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
import time
import traceback
from functools import cache
from importlib import metadata
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import (
    Dataset,
    DatasetInput,
    InputTag,
    Metric,
    Param,
    RunStatus,
    RunTag,
)
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from mlflow.utils.validation import MAX_METRICS_PER_BATCH

from study.config import Sweep, flatten
from study.errors import StudyError
from study.names import EPOCH_PREFIX, Role, SweepState, Tag, TrialState
from study.store import redact

log = logging.getLogger(__name__)

FLUSH_SECONDS = 10.0  # live per-epoch curves in the UI without one write per epoch
ERROR_CHARS = 5000  # a failed trial's traceback (its end says what went wrong; MLflow would keep the start), a reason
STATUS = {  # a trial's state -> its MLflow run's status
    TrialState.FINISHED: RunStatus.FINISHED,
    TrialState.PRUNED: RunStatus.KILLED,
    TrialState.DIVERGED: RunStatus.KILLED,
    TrialState.FAILED: RunStatus.FAILED,
    TrialState.INTERRUPTED: RunStatus.FAILED,
}
PACKAGES = ("tensorflow", "tf-keras", "tensorflow-model-optimization", "mlflow", "optuna", "study")


def _as_metrics(values: dict, step: int = 0) -> list[Metric]:
    """Named values as MLflow metrics at `step`, stamped now."""
    now = _now_ms()
    return [Metric(k, float(v), now, step) for k, v in values.items()]


def _now_ms() -> int:
    return int(time.time() * 1000)


@cache
def environment_tags(folder: str) -> dict[str, str]:
    """Versions of the main packages and the git commit of the sweep file's repository."""
    tags = {}
    for package in PACKAGES:
        try:
            tags[f"study.version.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    try:
        commit = subprocess.run(
            ["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def _param_value(value) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


# MLflow 3's UI opens an experiment without this tag as a GenAI one (traces, no runs); ours are
# model training, and open on their runs. Its GenAI/Model-training switch overrides the tag, so
# our links also name the view (`serve.ui_link`).
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
SWEEP_RUN = Tag.SWEEP_RUN  # a trial run's tag: the id of its sweep's run


class Tracker:
    """MLflow runs of one sweep: it owns the experiment and the sweep's run (`open_sweep_run`, or
    `attach` in a worker), and every write of a run goes through its public methods."""

    def __init__(self, client: MlflowClient, sweep: Sweep, artifact_root: str | None):
        self.client = client
        self.sweep = sweep
        self.artifact_root = artifact_root
        self.base_tags = {
            Tag.NAME: sweep.name,
            Tag.SWEEP_HASH: sweep.file_hash,
            Tag.CONFIG_HASH: sweep.config_hash,
            **environment_tags(str(sweep.path.resolve().parent)),
        }
        self.experiment_id = self._experiment()
        self.sweep_run_id: str | None = None

    def _experiment(self) -> str:
        name = self.sweep.name
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None and experiment.lifecycle_stage == "deleted":
            raise StudyError(
                f"the MLflow experiment {name!r} was deleted; restore it (mlflow experiments restore "
                f"--experiment-id {experiment.experiment_id}) or copy the sweep file to a new name"
            )
        if experiment is not None:
            if experiment.tags.get(EXPERIMENT_KIND) != MODEL_TRAINING:  # made by an older version
                self.client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
            return experiment.experiment_id
        location = f"{self.artifact_root.rstrip('/')}/{name}" if self.artifact_root else None
        tags = {"mlflow.note.content": self.sweep.config.description, Tag.NAME: name, EXPERIMENT_KIND: MODEL_TRAINING}
        try:
            return self.client.create_experiment(name, artifact_location=location, tags=tags)
        except Exception:  # another worker or machine created it first
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    # ------------------------------------------------------------------------------ sweep run
    def open_sweep_run(self, known: str | None = None) -> str:
        """The sweep's run, RUNNING again: `known` (the id the Optuna study recorded), else found
        by its role (a first run that stopped before recording it), else created."""
        run_id = known
        if run_id is None:
            found = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`{Tag.ROLE}` = '{Role.SWEEP}'", max_results=1,
                order_by=["attributes.start_time ASC"],
            )
            run_id = found[0].info.run_id if found else None
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
        else:
            run_id = self._create_sweep_run()
        self.sweep_run_id = run_id
        return run_id

    def attach(self, sweep_run_id: str) -> None:
        """A worker's tracker: the sweep's run exists (`open_sweep_run` made it)."""
        self.sweep_run_id = sweep_run_id

    def _create_sweep_run(self) -> str:
        tags = {
            **self.base_tags,
            Tag.ROLE: Role.SWEEP,
            Tag.STATE: SweepState.RUNNING,
            MLFLOW_RUN_NAME: self.sweep.name,
            "mlflow.note.content": self.sweep.config.description,
        }
        run = self.client.create_run(self.experiment_id, run_name=self.sweep.name, tags=tags)
        config = self.sweep.config
        params = {
            **{k: _param_value(v) for k, v in flatten(self.sweep.defaults()).items()},
            "seed": str(config.seed),
            "replicates": str(config.replicates),
            "objective": json.dumps(config.objective),
            "sampler": config.sampler.name,
            "pruner": config.pruner.name,
            "search": json.dumps(config.model_dump(mode="json")["search"]),
        }
        self.log(run.info.run_id, params=params)
        self.client.log_text(run.info.run_id, self.sweep.text, "sweep.yaml")
        return run.info.run_id

    def _sweep_run(self) -> str:
        if self.sweep_run_id is None:
            raise RuntimeError("the sweep's run is not open: call open_sweep_run or attach first")
        return self.sweep_run_id

    def end_sweep(self, state: SweepState, metrics: dict[str, float] | None = None) -> None:
        run_id = self._sweep_run()
        self.log(run_id, metrics=metrics or {}, tags={Tag.STATE: state})
        finished = (SweepState.COMPLETE, SweepState.EXHAUSTED)  # a deadline, or Ctrl+C, leaves it KILLED
        status = RunStatus.FINISHED if state in finished else RunStatus.FAILED if state == SweepState.FAILED else RunStatus.KILLED
        self.client.set_terminated(run_id, RunStatus.to_string(status))

    def log_progress(self, step: int, metrics: dict[str, float]) -> None:
        """The sweep's running totals (best value so far, trials per state) after a trial."""
        self.log(self._sweep_run(), metrics=metrics, step=step)

    # ------------------------------------------------------------------------------ trial run
    def start_trial(self, number: int, params: dict, setup_params: dict, data, round_: int = 0) -> TrialRun:
        """Create the trial's run with every resolved setting as a param, and the dataset as an input;
        a trial of a later round of seeds (`round_` k > 0) trains seeds seed + k·R + r."""
        tags = {  # top-level runs (the UI shows nested runs folded): linked to the sweep by a tag
            **self.base_tags,
            SWEEP_RUN: self._sweep_run(),
            Tag.ROLE: Role.TRIAL,
            Tag.TRIAL: str(number),
            Tag.STATE: TrialState.RUNNING,
            Tag.SAMPLED: json.dumps(sorted(params)),
        }
        name = f"trial-{number:04d}"
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        all_params = {
            **{k: _param_value(v) for k, v in setup_params.items()},
            "seed": str(self.sweep.config.seed),
            "replicates": str(self.sweep.config.replicates),
        }
        if round_:
            all_params["round"] = str(round_)
        if self.sweep.config.reference_error is not None:
            all_params["reference_error"] = str(self.sweep.config.reference_error)
        if self.sweep.config.smallest_effect is not None:
            all_params["smallest_effect"] = str(self.sweep.config.smallest_effect)
        trial_run = TrialRun(self, run.info.run_id, name, all_params)
        try:
            self.log(run.info.run_id, params=all_params)
            self.log_dataset(run.info.run_id, data)
        except BaseException as exc:
            trial_run.end(TrialState.FAILED, f"could not record the trial's settings: {exc}"[:1000], exc)
            raise
        return trial_run

    def start_replicate(self, trial_run_id: str, name: str, replicate: int, params: dict) -> str:
        """A replicate's own run, nested under its trial's run."""
        tags = {
            **self.base_tags,
            MLFLOW_PARENT_RUN_ID: trial_run_id,
            Tag.ROLE: Role.REPLICATE,
            Tag.STATE: TrialState.RUNNING,
            Tag.REPLICATE: str(replicate),
        }
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        self.log(run.info.run_id, params=params)
        return run.info.run_id

    def end_run(self, run_id: str, state: TrialState, metrics: list[Metric] | dict | None = None,
                tags: dict | None = None, artifacts: dict[str, Path] | None = None, folder: Path | None = None) -> None:
        """Log a trial's or replicate's last metrics, tags and artifacts (files by artifact folder,
        or a whole `folder`), then end its run with the state's status."""
        if isinstance(metrics, dict):
            self.log(run_id, metrics=metrics, tags=tags)
        else:
            self.log_entities(run_id, metrics or [], tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])
        for where, path in (artifacts or {}).items():
            self.client.log_artifact(run_id, str(path), where)
        if folder is not None:
            self.client.log_artifacts(run_id, str(folder))
        self.client.set_terminated(run_id, RunStatus.to_string(STATUS[state]))

    def log_dataset(self, run_id: str, data) -> None:
        """Link the dataset to a run. MLflow inserts the experiment's dataset row on first use with
        a check-then-insert, which two workers can race: the loser finds the row on its retry."""
        try:
            self.client.log_inputs(run_id, datasets=[dataset_input(data)])
        except Exception as exc:
            log.debug("linking the dataset to run %s failed once (%s); trying again", run_id, exc)
            time.sleep(0.2)
            self.client.log_inputs(run_id, datasets=[dataset_input(data)])

    # -------------------------------------------------------------------------- reference runs
    def log_reference(self, role: Role, key: str, params: dict, metrics: dict, model_path: Path,
                      started_ms: int | None = None) -> str:
        """Log a trained reference model (a compression sweep's base, a distillation control) under
        the sweep's run; the run starts when its training started (`started_ms`), so its duration
        is the training's."""
        tags = {
            **self.base_tags,
            MLFLOW_PARENT_RUN_ID: self._sweep_run(),
            Tag.ROLE: role,
            Tag.STATE: TrialState.FINISHED,
            Tag.MODEL_KEY: key,
        }
        run = self.client.create_run(self.experiment_id, run_name=f"{role}-{key[:8]}", tags=tags, start_time=started_ms)
        self.log(run.info.run_id, metrics=metrics, params={k: _param_value(v) for k, v in params.items()})
        with tempfile.TemporaryDirectory() as folder:
            named = Path(folder) / "model.keras"
            named.write_bytes(Path(model_path).read_bytes())
            self.client.log_artifact(run.info.run_id, str(named), "model")
        self.client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FINISHED))
        return run.info.run_id

    def find_reference(self, key: str):
        """The first finished run of the reference model `key` in any experiment of the store
        (sweeps with the same base share it), or None."""
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        runs = self.client.search_runs(
            experiments, filter_string=f"tags.`{Tag.MODEL_KEY}` = '{key}' and attributes.status = 'FINISHED'",
            max_results=1, order_by=["attributes.start_time ASC"],
        )
        return runs[0] if runs else None

    def best_trial_runs(self, sweep_name: str) -> list | None:
        """The finished runs tagged best in sweep `sweep_name` (None: no such sweep in the store)."""
        experiment = self.client.get_experiment_by_name(sweep_name)
        if experiment is None:
            return None
        return self.client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`{Tag.ROLE}` = '{Role.TRIAL}' and tags.`{Tag.BEST}` = 'true' and attributes.status = 'FINISHED'",
        )

    def get_run(self, run_id: str):
        return self.client.get_run(run_id)

    def download(self, run_id: str, path: str, folder: str) -> Path:
        """Download one artifact of a run into `folder`; returns its local path."""
        return Path(self.client.download_artifacts(run_id, path, folder))

    def mark_best(self, run_ids: dict[str, bool]) -> None:
        """Set `study.best` to 'true' or 'false' on runs (the Pareto set, for several objectives)."""
        for run_id, best in run_ids.items():
            self.client.set_tag(run_id, Tag.BEST, "true" if best else "false")

    # -------------------------------------------------------------------------------- writing
    def log(self, run_id: str, metrics: dict | None = None, params: dict | None = None, tags: dict | None = None,
            step: int = 0) -> None:
        """Metrics (at `step`), params and tags of a run, in as few requests as MLflow allows
        (its client splits a batch at its limits and truncates over-long values)."""
        metric_list = _as_metrics(metrics or {}, step)
        param_list = [Param(k, str(v)) for k, v in (params or {}).items()]
        tag_list = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        self.log_entities(run_id, metric_list, param_list, tag_list)

    def log_entities(self, run_id: str, metrics: list, params: list | tuple = (), tags: list | tuple = ()) -> None:
        self.client.log_batch(run_id, metrics=list(metrics), params=list(params), tags=list(tags))


def dataset_input(data) -> DatasetInput:
    """The dataset as an MLflow input: name, content digest, how it was made, split sizes."""
    generated = "path" not in json.loads(data.source)
    profile = {
        "train": len(data.x_train), "val": len(data.x_val), "test": len(data.x_test),
        "task": data.task, "description": data.description,
    }
    dataset = Dataset(
        name=data.name, digest=data.digest, source_type="code" if generated else "local",
        source=data.source, profile=json.dumps(profile),
    )
    return DatasetInput(dataset=dataset, tags=[InputTag(key="mlflow.data.context", value="training")])


class TrialRun:
    """The MLflow run of one trial, with buffered per-epoch metrics."""

    def __init__(self, tracker: Tracker, run_id: str, name: str, params: dict):
        self.tracker = tracker
        self.run_id = run_id
        self.name = name
        self.params = params
        self.replicate_runs: dict[int, str] = {}
        self.logged_epochs: dict[int, int] = {}  # replicate -> last epoch logged
        self.pending: dict[str, list[Metric]] = {}
        self.last_flush = time.monotonic()
        self.several = tracker.sweep.config.replicates > 1

    def _run_for(self, replicate: int) -> str:
        """With several replicates each logs to a run of its own under the trial's run."""
        if not self.several:
            return self.run_id
        if replicate not in self.replicate_runs:
            seed = int(self.params["seed"]) + int(self.params.get("round", 0)) * self.tracker.sweep.config.replicates + replicate
            self.replicate_runs[replicate] = self.tracker.start_replicate(
                self.run_id, f"{self.name}-r{replicate}", replicate, {**self.params, "replicate_seed": seed}
            )
        return self.replicate_runs[replicate]

    def log_epoch(self, replicate: int, epoch: int, metrics: dict[str, float]) -> None:
        run_id = self._run_for(replicate)
        now = _now_ms()
        self.pending.setdefault(run_id, []).extend(Metric(EPOCH_PREFIX + k, v, now, epoch) for k, v in metrics.items())
        self.logged_epochs[replicate] = epoch
        if time.monotonic() - self.last_flush > FLUSH_SECONDS:
            self.flush()

    def _log_unseen_epochs(self, replicate) -> None:
        """Epochs the observer never saw: the one where the loss blew up, for a diverged model."""
        for epoch, row in enumerate(replicate.history, start=1):
            if epoch > self.logged_epochs.get(replicate.index, 0):
                self.log_epoch(replicate.index, epoch, row)

    def flush(self) -> None:
        """Write the buffered epochs, one request of at most MAX_METRICS_PER_BATCH at a time (as
        MLflow splits them), each leaving the buffer as it is sent: a flush that an error or a
        Ctrl+C stops part way is taken up where it stopped, and no row is sent twice (MLflow meets
        a row written twice with an IntegrityError, then searches the run's rows for the request's:
        on a long run of small models, minutes, with a Ctrl+C waiting on it). A request an error
        stopped was not written (MLflow commits a request whole, at its end) and goes back to the
        buffer; one a Ctrl+C stopped may have been, and is dropped: its run is closed as
        interrupted, its trial trained again. (The runner's calls run `processes.deferred`, so a
        first Ctrl+C waits for the flush; a second stops it.)"""
        for run_id in list(self.pending):
            metrics = self.pending[run_id]
            while metrics:
                request = metrics[:MAX_METRICS_PER_BATCH]
                del metrics[:MAX_METRICS_PER_BATCH]
                try:
                    self.tracker.log_entities(run_id, request)
                except Exception:
                    metrics[:0] = request
                    raise
            del self.pending[run_id]
        self.last_flush = time.monotonic()

    def end_replicate(self, replicate) -> None:
        """Final metrics, model and state of one replicate's own run (several replicates only)."""
        self._log_unseen_epochs(replicate)
        if not self.several:
            return
        run_id = self._run_for(replicate.index)
        # its epochs still buffered go in the same request as its final metrics: one write fewer
        metrics = self.pending.pop(run_id, []) + _as_metrics(replicate.metrics)
        artifacts = {"model": replicate.model_path} if replicate.model_path is not None else {}
        artifacts.update(replicate.files)
        tags = {Tag.STATE: replicate.status, Tag.REASON: replicate.reason, **replicate.tags}
        self.tracker.end_run(run_id, replicate.status, metrics, tags, artifacts)

    def finish(self, result, outputs: Path) -> None:
        """Log the trial's final metrics and artifacts, then end the run with the trial's state."""
        self.flush()
        metrics = _as_metrics(result.metrics)
        if self.several:  # the trial's own curves: averages over its replicates
            now = _now_ms()
            for epoch, row in enumerate(result.mean_history(), start=1):
                metrics.extend(Metric(EPOCH_PREFIX + k, v, now, epoch) for k, v in row.items())
        first = next((r for r in result.replicates if r.model_path is not None), None)
        tags = {Tag.STATE: result.status, Tag.REASON: result.reason[:ERROR_CHARS], **(first.tags if first else {})}
        if first is not None:
            model_dir = outputs / "model"
            model_dir.mkdir(exist_ok=True)
            first.model_path.replace(model_dir / "model.keras")
            for name, path in first.files.items():  # the compressed file and its per-layer table
                folder = outputs / name
                folder.mkdir(exist_ok=True)
                path.replace(folder / path.name)
        (outputs / "sweep.yaml").write_text(self.tracker.sweep.text)
        self.tracker.end_run(self.run_id, result.status, metrics, tags, folder=outputs)

    def end(self, state: TrialState, reason: str, error: BaseException | None = None) -> None:
        """End a run that produced no result: failed with an error, or interrupted."""
        try:
            self.flush()
        except Exception as exc:  # the run must still be closed even if the store hiccups
            log.warning("run %s: its last epochs could not be logged: %s", self.run_id, redact(str(exc)))
        tags = {Tag.STATE: state, Tag.REASON: reason[:ERROR_CHARS]}
        if error is not None:
            tags[Tag.ERROR] = "".join(traceback.format_exception(error))[-ERROR_CHARS:]
        failure = None
        for run_id in [*self.replicate_runs.values(), self.run_id]:  # the trial's own run last, closed whatever happens
            try:
                self.tracker.end_run(run_id, state, tags=tags)
            except Exception as exc:
                log.warning("run %s could not be closed: %s", run_id, redact(str(exc)))
                failure = failure or exc
        if failure is not None:
            raise failure


def end_orphan_run(client: MlflowClient, run_id: str, reason: str) -> None:
    """Close a run whose worker died (its trial went stale), and its replicate runs."""
    runs = [run_id]
    try:
        run = client.get_run(run_id)
        children = client.search_runs(
            [run.info.experiment_id], filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{run_id}'"
        )
        runs += [c.info.run_id for c in children if c.info.status == "RUNNING"]
    except Exception as exc:  # its replicate runs stay as they are; the trial's own run is closed below
        log.warning("run %s: its replicate runs could not be listed: %s", run_id, redact(str(exc)))
    for rid in runs:
        client.log_batch(rid, tags=[RunTag(Tag.STATE, TrialState.INTERRUPTED), RunTag(Tag.REASON, reason)])
        client.set_terminated(rid, RunStatus.to_string(STATUS[TrialState.INTERRUPTED]))
