"""One trial: for each replicate, draw the training set, build, fit and measure a model.

`run_trial` knows nothing of Optuna or MLflow. It reports each epoch to an observer, which may
answer "stop" (that is how pruning reaches in), and returns a `TrialResult` that the sweep
runner tells Optuna and logs to MLflow. Keeping the trial a plain function of (setup, data) is
what lets several trials later be trained together in one process with Optuna's ask/tell.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from study import measure
from study.datasets import Data, expand_features, train_rows, training_set
from study.keras_compat import keras
from study.models import build_model, target_scale
from study.schema import Setup
from study.multifit import Member, fit_together, pack_key
from study.training import compile_model, predict


class TrialObserver(Protocol):
    def epoch(self, replicate: int, epoch: int, metrics: dict[str, float]) -> str | None:
        """Called after every epoch; return a reason to stop the trial (pruning), else None."""

    def replicate_end(self, replicate: "ReplicateResult") -> None:
        """Called when a replicate has been measured."""


@dataclass
class ReplicateResult:
    index: int
    seed: int
    status: str  # 'finished', 'pruned' or 'diverged'
    reason: str
    history: list[dict[str, float]]
    metrics: dict[str, float]
    test_outputs: np.ndarray | None  # logits (n, classes) or predictions (n, 1)
    model_path: Path | None
    files: dict[str, Path] = field(default_factory=dict)  # more artifacts: a compressed file, layers.csv
    tags: dict[str, str] = field(default_factory=dict)  # what the compressed artifact is


@dataclass
class TrialResult:
    task: str
    replicates: list[ReplicateResult] = field(default_factory=list)

    @property
    def status(self) -> str:
        """'diverged' if any replicate diverged, else the first replicate's status."""
        statuses = [r.status for r in self.replicates]
        if "diverged" in statuses:
            return "diverged"
        return statuses[0] if statuses else "failed"

    @property
    def reason(self) -> str:
        for r in self.replicates:
            if r.status == self.status and r.reason:
                return r.reason if len(self.replicates) == 1 else f"replicate {r.index}: {r.reason}"
        return ""

    @property
    def metrics(self) -> dict[str, float]:
        """Final metrics, averaged over the replicates that have them (with `_std` when several)."""
        return measure.summarize_replicates([r.metrics for r in self.replicates if r.metrics])

    def mean_history(self) -> list[dict[str, float]]:
        """Per-epoch metrics averaged over the replicates that reached each epoch."""
        longest = max((len(r.history) for r in self.replicates), default=0)
        curves = []
        for epoch in range(longest):
            rows = [r.history[epoch] for r in self.replicates if epoch < len(r.history)]
            curves.append({k: float(np.mean([row[k] for row in rows if k in row])) for k in rows[0]})
        return curves


def prepare_inputs(setup: Setup, data: Data, seed: int) -> Data:
    """The data one replicate sees: its own training set drawn for `seed`, and polynomial
    features (if asked), which make every split tabular."""
    x_train, y_train = training_set(data, setup.dataset, seed)
    if setup.model.poly_degree > 1:
        x_train, x_val, x_test = expand_features(setup.model.poly_degree, x_train, data.x_val, data.x_test)
        return replace(data, x_train=x_train, y_train=y_train, x_val=x_val, x_test=x_test, layout="tabular")
    return replace(data, x_train=x_train, y_train=y_train)


def build_for(setup: Setup, data: Data, inputs: Data, model_spec=None, compiled: bool = True) -> keras.Model:
    """The model of `setup` (or of `model_spec`) for these inputs, compiled for Keras' `fit` unless
    `compiled` is False (packed training needs no compiling)."""
    regression = data.task == "regression"
    model = build_model(
        model_spec or setup.model, inputs.x_train.shape[1:], inputs.layout,
        n_outputs=1 if regression else data.n_classes,
        target_scale=target_scale(inputs.y_train) if regression else None,
    )
    if compiled:
        compile_model(model, setup.train, data.task)
    return model


def measure_model(model: keras.Model, task: str, inputs: Data, noise_floor: float | None = None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Final metrics of every split in inference mode (with the data's sizes, chance error and
    noise floor), and the outputs they came from."""
    outputs = {split: predict(model, x) for split, x in inputs.xs().items()}
    metrics = measure.final_metrics(task, inputs.labels(), outputs)
    metrics.update(measure.data_metrics(task, inputs.labels(), outputs, noise_floor))
    return metrics, outputs


def noise_floor(setup: Setup, data: Data) -> float | None:
    """The training error of the noiseless labelling, where the data's making says it: the known
    noise variance of generated regression data; for the generated and shipped class labels
    (exact), the fraction that label_noise flips. None for a user's CSV, whose noise is unknown."""
    if data.task == "regression":
        return data.noise_std**2 if data.noise_std is not None else None
    return setup.dataset.label_noise if data.name in ("mnist1d", "digits") else None


def save_model(model: keras.Model, path: Path) -> None:
    """Save architecture and weights only: optimizer state is training baggage, not the model
    (it would triple the bytes of an Adam-trained model). An uncompiled clone carries none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.save(path)


def model_metrics(model: keras.Model, path: Path) -> dict[str, float]:
    """Parameters of `model` and the bytes of its saved file at `path`."""
    return {"model/params": measure.count_params(model.get_weights()), "model/size_bytes": path.stat().st_size}


def start_replicate(setup: Setup, data: Data, seed: int) -> tuple[Data, keras.Model]:
    """The inputs and the (uncompiled) model of one replicate. The model is built right after
    seeding, so a seed gives the same initial weights and dropout generators whatever else is
    built in the process."""
    keras.utils.set_random_seed(seed)
    inputs = prepare_inputs(setup, data, seed)
    return inputs, build_for(setup, data, inputs, compiled=False)


def end_replicate(
    setup: Setup, data: Data, index: int, seed: int, inputs: Data, model: keras.Model, fitted, workdir: Path
) -> ReplicateResult:
    """Measure and save one trained replicate (unless it was pruned or diverged)."""
    status = fitted.stopped if fitted.stopped in ("pruned", "diverged") else "finished"
    result = ReplicateResult(index, seed, status, fitted.reason, fitted.history, {}, None, None)
    if status == "diverged":
        return result
    metrics, outputs = measure_model(model, data.task, inputs, noise_floor(setup, data))
    if not measure.all_finite(metrics):
        result.status, result.reason = "diverged", "the trained model's predictions are not finite"
        return result
    path = Path(workdir) / "models" / f"r{index}.keras"
    save_model(model, path)
    metrics.update(model_metrics(model, path))
    metrics.update(fit_metrics(fitted))
    result.metrics, result.test_outputs, result.model_path = metrics, outputs["test"].astype(np.float32), path
    return result


def epoch_hook(observer, index: int):
    """The per-epoch callback `fit` takes, forwarding to the trial's observer."""
    return (lambda epoch, metrics: observer.epoch(index, epoch, metrics)) if observer else None


def fit_metrics(fitted) -> dict[str, float]:
    return {
        "fit/seconds": fitted.seconds, "fit/epochs": fitted.epochs, "fit/best_epoch": fitted.best_epoch,
        "fit/stopped_epoch": fitted.stopped_epoch,
    }


# ------------------------------------------------------------------------- trials in packs
@dataclass
class TrialJob:
    """One trial to train: `replicates` models of `setup`, seeds seed, seed+1, ..."""

    setup: Setup
    data: Data
    seed: int
    replicates: int
    workdir: Path
    observer: TrialObserver | None = None


class _Trial:
    """A job while its replicates train: what has ended, and where the trial was cut.

    A trial ends at its first replicate that is pruned or diverges, as it would trained one
    replicate after another: later replicates are stopped and dropped, earlier ones finish.
    Replicate 0 reports its epochs as they happen (the pruner watches it); a later replicate's
    epochs reach the observer when it ends, after the replicates before it, as they would alone.
    """

    def __init__(self, job: TrialJob):
        self.job = job
        self.result = TrialResult(task=job.data.task)
        self.cut: int | None = None  # the first replicate that was pruned or diverged
        self.error: BaseException | None = None

    def dropped(self, index: int) -> bool:
        return self.error is not None or (self.cut is not None and index > self.cut)

    def on_epoch(self, index: int):
        observer = self.job.observer

        def hook(epoch: int, metrics: dict[str, float]) -> str | None:
            if self.dropped(index):
                return f"replicate {self.cut} of this trial stopped it"
            if index == 0 and observer is not None:
                return observer.epoch(index, epoch, metrics)
            return None

        return hook

    def on_stop(self, index: int, fitted) -> None:
        if fitted.stopped in ("pruned", "diverged") and (self.cut is None or index < self.cut):
            self.cut = index

    def end(self, index: int, seed: int, inputs: Data, model, fitted) -> None:
        if self.dropped(index):
            return
        replicate = end_replicate(self.job.setup, self.job.data, index, seed, inputs, model, fitted, self.job.workdir)
        self.result.replicates.append(replicate)
        if self.job.observer is not None:
            self.job.observer.replicate_end(replicate)
        if replicate.status != "finished":
            self.cut = index


def pack_key_of(job: TrialJob) -> tuple:
    """Trials whose replicates can train in one pack share this key (see `multifit.pack_key`)."""
    return pack_key(job.setup.train, job.data.task, train_rows(job.data, job.setup.dataset))


def run_trials(jobs: list[TrialJob], pack: int = 1) -> list[TrialResult | BaseException]:
    """Train the jobs' replicates in packs of at most `pack` models (1: one at a time), grouped by
    `pack_key_of`, in trial then replicate order. Returns each job's result, or the exception that
    stopped its pack (the other packs go on). KeyboardInterrupt is raised as is."""
    trials = [_Trial(job) for job in jobs]
    units: dict[tuple, list[tuple[_Trial, int]]] = {}
    for trial in trials:
        for index in range(trial.job.replicates):
            units.setdefault(pack_key_of(trial.job), []).append((trial, index))
    for group in units.values():
        for start in range(0, len(group), pack):
            chosen = [(trial, index) for trial, index in group[start : start + pack] if not trial.dropped(index)]
            if chosen:
                _train_pack(chosen)
    return [trial.error if trial.error is not None else trial.result for trial in trials]


def _train_pack(chosen: list[tuple[_Trial, int]]) -> None:
    """Build the chosen replicates' models (a trial whose model cannot be built fails alone),
    train them as one pack (an error there fails every trial in it), then measure each."""
    keras.backend.clear_session()
    built = []
    for trial, index in chosen:
        job = trial.job
        seed = job.seed + index
        try:
            inputs, model = start_replicate(job.setup, job.data, seed)
        except Exception as exc:
            trial.error = trial.error or exc
            continue
        member = Member(
            model, job.setup.train, job.data.task, (inputs.x_train, inputs.y_train), (inputs.x_val, inputs.y_val),
            seed, on_epoch=trial.on_epoch(index), on_stop=lambda fitted, t=trial, i=index: t.on_stop(i, fitted),
        )
        built.append((trial, index, seed, inputs, member))
    built = [entry for entry in built if entry[0].error is None]
    if not built:
        return
    try:
        fit_together([member for *_, member in built])
    except Exception as exc:
        for trial, *_ in built:
            trial.error = trial.error or exc
        return
    for trial, index, seed, inputs, member in built:
        try:
            trial.end(index, seed, inputs, member.model, member.result)
        except Exception as exc:
            trial.error = exc


def run_trial(
    setup: Setup, data: Data, seed: int, replicates: int, workdir: Path, observer: TrialObserver | None = None,
    references=None, pack: int = 1,
) -> TrialResult:
    """Train `replicates` models of `setup` with seeds seed, seed+1, ... (`pack` at a time); the
    trial ends at a replicate that diverges or at the first one's pruning. With `references` (a
    compression sweep's base and controls) each replicate compresses the base instead of training
    from nothing, one at a time."""
    if references is None:
        outcome = run_trials([TrialJob(setup, data, seed, replicates, Path(workdir), observer)], pack)[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome
    from study.compression.pipeline import run_compression_replicate

    result = TrialResult(task=data.task)
    for index in range(replicates):
        replicate = run_compression_replicate(setup, data, index, seed + index, Path(workdir), observer, references)
        result.replicates.append(replicate)
        if observer is not None:
            observer.replicate_end(replicate)
        if replicate.status != "finished":
            break
    return result


def write_outputs(result: TrialResult, data: Data, folder: Path) -> None:
    """history.csv, replicates.csv and predictions.npz of a trial, into `folder`.

    predictions.npz holds `outputs` (replicates, n_test, k) with the test labels `y_test`, and for
    generated regression data the noiseless truth `f_test` and `noise_std`: all a bias–variance
    decomposition needs.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"replicate": r.index, "epoch": e + 1, **h} for r in result.replicates for e, h in enumerate(r.history)]
    _write_csv(folder / "history.csv", rows)
    _write_csv(
        folder / "replicates.csv",
        [{"replicate": r.index, "seed": r.seed, "status": r.status, **r.metrics} for r in result.replicates],
    )
    outputs = [r.test_outputs for r in result.replicates if r.test_outputs is not None]
    if outputs:
        extra = {}
        if data.f_test is not None:
            extra = {"f_test": data.f_test, "noise_std": np.float32(data.noise_std or 0.0)}
        np.savez_compressed(
            folder / "predictions.npz",
            outputs=np.stack(outputs),
            y_test=data.y_test,
            seeds=np.array([r.seed for r in result.replicates if r.test_outputs is not None]),
            **extra,
        )


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
