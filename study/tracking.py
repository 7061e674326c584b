"""Our MLflow wiring: one experiment per sweep, a parent run for the sweep, a child run per trial.

A trial's run is created when the trial starts, so running trials show in the UI, and ends with
a status that tells the truth: FINISHED; KILLED for pruned or diverged trials, with the reason in
`study.reason`; FAILED for errors (the message in `study.error`) and interruptions. Per-epoch
metrics are buffered and written in batches (at most every FLUSH_SECONDS while a trial runs), so
tracking costs a few writes per trial. With replicates > 1, each replicate gets a run of its own
under the trial's run, and the trial's run holds the averages.

Tags every run carries: study.role (sweep, trial, replicate), study.name, study.state,
study.sweep_hash, study.config_hash; trial runs add study.trial and study.sampled.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import traceback
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from study.config import Sweep, flatten
from study.errors import StudyError

FLUSH_SECONDS = 10.0  # live per-epoch curves in the UI without one write per epoch
BATCH = 100  # MLflow accepts at most 100 params or tags, 1000 metrics, per batch
STATUS = {
    "finished": RunStatus.FINISHED,
    "pruned": RunStatus.KILLED,
    "diverged": RunStatus.KILLED,
    "failed": RunStatus.FAILED,
    "interrupted": RunStatus.FAILED,
}
PACKAGES = ("tensorflow", "tf-keras", "tensorflow-model-optimization", "mlflow", "optuna", "study")


def _now_ms() -> int:
    return int(time.time() * 1000)


@lru_cache(maxsize=None)
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


def _chunks(items: list, size: int = BATCH):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _param_value(value) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


# MLflow 3's UI opens an experiment without this tag as a GenAI one (traces, no runs); ours are
# model training, and open on their runs. Its GenAI/Model-training switch overrides the tag, so
# our links also name the view (`serve.ui_link`).
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
SWEEP_RUN = "study.sweep_run"  # a trial run's tag: the id of its sweep's run


class Tracker:
    """MLflow runs of one sweep."""

    def __init__(self, client: MlflowClient, sweep: Sweep, artifact_root: str | None):
        self.client = client
        self.sweep = sweep
        self.artifact_root = artifact_root
        self.base_tags = {
            "study.name": sweep.name,
            "study.sweep_hash": sweep.file_hash,
            "study.config_hash": sweep.config_hash,
            **environment_tags(str(sweep.path.resolve().parent)),
        }
        self.experiment_id = self._experiment()

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
        tags = {"mlflow.note.content": self.sweep.config.description, "study.name": name, EXPERIMENT_KIND: MODEL_TRAINING}
        try:
            return self.client.create_experiment(name, artifact_location=location, tags=tags)
        except Exception:  # another worker or machine created it first
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    # ------------------------------------------------------------------------------ sweep run
    def sweep_run(self) -> str:
        """The sweep's parent run: found again on resume, created on the first run."""
        found = self.client.search_runs(
            [self.experiment_id], filter_string="tags.`study.role` = 'sweep'", max_results=1,
            order_by=["attributes.start_time ASC"],
        )
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        tags = {
            **self.base_tags,
            "study.role": "sweep",
            "study.state": "running",
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
        self._log(run.info.run_id, params=params)
        self._log_text(run.info.run_id, self.sweep.text, "sweep.yaml")
        return run.info.run_id

    def end_sweep(self, run_id: str, state: str, metrics: dict[str, float] | None = None) -> None:
        self._log(run_id, metrics=metrics or {}, tags={"study.state": state})
        finished = ("complete", "exhausted")  # a time budget that ran out, or Ctrl+C, leaves it KILLED
        status = RunStatus.FINISHED if state in finished else RunStatus.FAILED if state == "failed" else RunStatus.KILLED
        self.client.set_terminated(run_id, RunStatus.to_string(status))

    def log_progress(self, run_id: str, step: int, metrics: dict[str, float]) -> None:
        """The sweep's running totals (best value so far, trials per state) after a trial."""
        self._log(run_id, metrics=metrics, step=step)

    # ------------------------------------------------------------------------------ trial run
    def start_trial(self, parent_id: str, number: int, params: dict, setup_params: dict, data) -> "TrialRun":
        """Create the trial's run with every resolved setting as a param, and the dataset as an input."""
        tags = {  # top-level runs (the UI shows nested runs folded): linked to the sweep by a tag
            **self.base_tags,
            SWEEP_RUN: parent_id,
            "study.role": "trial",
            "study.trial": str(number),
            "study.state": "running",
            "study.sampled": json.dumps(sorted(params)),
        }
        name = f"trial-{number:04d}"
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        all_params = {
            **{k: _param_value(v) for k, v in setup_params.items()},
            "seed": str(self.sweep.config.seed),
            "replicates": str(self.sweep.config.replicates),
        }
        if self.sweep.config.reference_error is not None:
            all_params["reference_error"] = str(self.sweep.config.reference_error)
        trial_run = TrialRun(self, run.info.run_id, name, all_params)
        try:
            self._log(run.info.run_id, params=all_params)
            self.log_dataset(run.info.run_id, data)
        except BaseException as exc:
            trial_run.end("failed", f"could not record the trial's settings: {exc}"[:1000], exc)
            raise
        return trial_run

    def log_dataset(self, run_id: str, data) -> None:
        """Link the dataset to a run. MLflow inserts the experiment's dataset row on first use with
        a check-then-insert, which two workers can race: the loser finds the row on its retry."""
        try:
            self.client.log_inputs(run_id, datasets=[dataset_input(data)])
        except Exception:
            time.sleep(0.2)
            self.client.log_inputs(run_id, datasets=[dataset_input(data)])

    def log_reference(self, parent_id: str, role: str, key: str, params: dict, metrics: dict, model_path: Path,
                      started_ms: int | None = None) -> str:
        """Log a trained reference model (a compression sweep's base, a distillation control); the
        run starts when its training started (`started_ms`), so its duration is the training's."""
        tags = {
            **self.base_tags,
            MLFLOW_PARENT_RUN_ID: parent_id,
            "study.role": role,
            "study.state": "finished",
            "study.model_key": key,
        }
        run = self.client.create_run(self.experiment_id, run_name=f"{role}-{key[:8]}", tags=tags, start_time=started_ms)
        self._log(run.info.run_id, metrics=metrics, params={k: _param_value(v) for k, v in params.items()})
        with tempfile.TemporaryDirectory() as folder:
            named = Path(folder) / "model.keras"
            named.write_bytes(Path(model_path).read_bytes())
            self.client.log_artifact(run.info.run_id, str(named), "model")
        self.client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FINISHED))
        return run.info.run_id

    def mark_best(self, run_ids: dict[str, bool]) -> None:
        """Set `study.best` to 'true' or 'false' on runs (the Pareto set, for several objectives)."""
        for run_id, best in run_ids.items():
            self.client.set_tag(run_id, "study.best", "true" if best else "false")

    # -------------------------------------------------------------------------------- helpers
    def _log(self, run_id: str, metrics: dict | None = None, params: dict | None = None, tags: dict | None = None, step: int = 0):
        now = _now_ms()
        metric_list = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items()]
        param_list = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
        tag_list = [RunTag(k, str(v)[:5000]) for k, v in (tags or {}).items()]
        self.log_entities(run_id, metric_list, param_list, tag_list)

    def log_entities(self, run_id: str, metrics: list, params: list = (), tags: list = ()) -> None:
        metrics, params, tags = list(metrics), list(params), list(tags)
        while metrics or params or tags:
            self.client.log_batch(run_id, metrics=metrics[:1000], params=params[:BATCH], tags=tags[:BATCH])
            metrics, params, tags = metrics[1000:], params[BATCH:], tags[BATCH:]

    def _log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)


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
            tags = {
                **self.tracker.base_tags,
                MLFLOW_PARENT_RUN_ID: self.run_id,
                "study.role": "replicate",
                "study.state": "running",
                "study.replicate": str(replicate),
            }
            client = self.tracker.client
            run = client.create_run(self.tracker.experiment_id, run_name=f"{self.name}-r{replicate}", tags=tags)
            seed = int(self.params["seed"]) + replicate
            self.tracker._log(run.info.run_id, params={**self.params, "replicate_seed": seed})
            self.replicate_runs[replicate] = run.info.run_id
        return self.replicate_runs[replicate]

    def log_epoch(self, replicate: int, epoch: int, metrics: dict[str, float]) -> None:
        run_id = self._run_for(replicate)
        now = _now_ms()
        self.pending.setdefault(run_id, []).extend(Metric(f"epoch/{k}", v, now, epoch) for k, v in metrics.items())
        self.logged_epochs[replicate] = epoch
        if time.monotonic() - self.last_flush > FLUSH_SECONDS:
            self.flush()

    def _log_unseen_epochs(self, replicate) -> None:
        """Epochs the observer never saw: the one where the loss blew up, for a diverged model."""
        for epoch, row in enumerate(replicate.history, start=1):
            if epoch > self.logged_epochs.get(replicate.index, 0):
                self.log_epoch(replicate.index, epoch, row)

    def flush(self) -> None:
        for run_id, metrics in self.pending.items():
            self.tracker.log_entities(run_id, metrics)
        self.pending = {}
        self.last_flush = time.monotonic()

    def end_replicate(self, replicate) -> None:
        """Final metrics, model and state of one replicate's own run (several replicates only)."""
        self._log_unseen_epochs(replicate)
        if not self.several:
            return
        run_id = self._run_for(replicate.index)
        self.flush()
        tags = {"study.state": replicate.status, "study.reason": replicate.reason, **replicate.tags}
        self.tracker._log(run_id, metrics=replicate.metrics, tags=tags)
        if replicate.model_path is not None:
            self.tracker.client.log_artifact(run_id, str(replicate.model_path), "model")
        for name, path in replicate.files.items():
            self.tracker.client.log_artifact(run_id, str(path), name)
        self.tracker.client.set_terminated(run_id, RunStatus.to_string(STATUS[replicate.status]))

    def finish(self, result, outputs: Path) -> None:
        """Log the trial's final metrics and artifacts, then end the run with the trial's state."""
        self.flush()
        metrics = [Metric(k, float(v), _now_ms(), 0) for k, v in result.metrics.items()]
        if self.several:  # the trial's own curves: averages over its replicates
            now = _now_ms()
            for epoch, row in enumerate(result.mean_history(), start=1):
                metrics.extend(Metric(f"epoch/{k}", v, now, epoch) for k, v in row.items())
        first = next((r for r in result.replicates if r.model_path is not None), None)
        tags = {"study.state": result.status, "study.reason": result.reason[:5000], **(first.tags if first else {})}
        self.tracker.log_entities(self.run_id, metrics, tags=[RunTag(k, v) for k, v in tags.items()])
        if first is not None:
            model_dir = outputs / "model"
            model_dir.mkdir(exist_ok=True)
            first.model_path.replace(model_dir / "model.keras")
            for name, path in first.files.items():  # the compressed file and its per-layer table
                folder = outputs / name
                folder.mkdir(exist_ok=True)
                path.replace(folder / path.name)
        (outputs / "sweep.yaml").write_text(self.tracker.sweep.text)
        self.tracker.client.log_artifacts(self.run_id, str(outputs))
        self.tracker.client.set_terminated(self.run_id, RunStatus.to_string(STATUS[result.status]))

    def end(self, state: str, reason: str, error: BaseException | None = None) -> None:
        """End a run that produced no result: failed with an error, or interrupted."""
        try:
            self.flush()
        except Exception:  # the run must still be closed even if the store hiccups
            pass
        tags = {"study.state": state, "study.reason": reason}
        if error is not None:
            tags["study.error"] = "".join(traceback.format_exception(error))[-5000:]
        for run_id in [*self.replicate_runs.values(), self.run_id]:
            self.tracker._log(run_id, tags=tags)
            self.tracker.client.set_terminated(run_id, RunStatus.to_string(STATUS[state]))


def end_orphan_run(client: MlflowClient, run_id: str, reason: str) -> None:
    """Close a run whose worker died (its trial went stale), and its replicate runs."""
    runs = [run_id]
    try:
        run = client.get_run(run_id)
        children = client.search_runs(
            [run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'"
        )
        runs += [c.info.run_id for c in children if c.info.status == "RUNNING"]
    except Exception:
        pass
    for rid in runs:
        client.log_batch(rid, tags=[RunTag("study.state", "interrupted"), RunTag("study.reason", reason)])
        client.set_terminated(rid, RunStatus.to_string(RunStatus.FAILED))
