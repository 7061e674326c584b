"""One trial: for each replicate, draw the training set, build, fit and measure a model.

`run_trial` knows nothing of Optuna or MLflow. It reports each epoch to an observer, which may
answer "stop" (that is how pruning reaches in), and returns a `TrialResult` that the sweep
runner tells Optuna and logs to MLflow. Keeping the trial a plain function of (setup, data) is
what lets several trials later be trained together in one process with Optuna's ask/tell.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from study import measure
from study.datasets import Data, expand_features, training_set
from study.keras_compat import keras
from study.models import build_model, target_scale
from study.schema import Setup
from study.training import compile_model, fit, predict


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


def _inputs(setup: Setup, data: Data, x_train: np.ndarray):
    """The arrays the model sees, and their layout (polynomial features make them tabular)."""
    if setup.model.poly_degree > 1:
        x_train, x_val, x_test = expand_features(setup.model.poly_degree, x_train, data.x_val, data.x_test)
        return x_train, x_val, x_test, "tabular"
    return x_train, data.x_val, data.x_test, data.layout


def save_model(model: keras.Model, path: Path) -> None:
    """Save architecture and weights only: optimizer state is training baggage, not the model
    (it would triple the bytes of an Adam-trained model). An uncompiled clone carries none."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.save(path)


def _model_metrics(model: keras.Model, path: Path) -> dict[str, float]:
    weights = model.get_weights()
    return {"model/params": measure.count_params(weights), "model/size_bytes": path.stat().st_size}


def run_replicate(setup: Setup, data: Data, index: int, seed: int, workdir: Path, observer=None) -> ReplicateResult:
    """Train and measure one model of the trial with `seed`."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    x_train, y_train = training_set(data, setup.dataset, seed)
    x_train, x_val, x_test, layout = _inputs(setup, data, x_train)
    regression = data.task == "regression"
    model = build_model(
        setup.model, x_train.shape[1:], layout,
        n_outputs=1 if regression else data.n_classes,
        target_scale=target_scale(y_train) if regression else None,
    )
    compile_model(model, setup.train, data.task)
    on_epoch = (lambda epoch, metrics: observer.epoch(index, epoch, metrics)) if observer else None
    fitted = fit(model, (x_train, y_train), (x_val, data.y_val), setup.train, on_epoch)
    status = fitted.stopped if fitted.stopped in ("pruned", "diverged") else "finished"
    result = ReplicateResult(index, seed, status, fitted.reason, fitted.history, {}, None, None)
    if status == "diverged":
        return result
    labels = {"train": y_train, "val": data.y_val, "test": data.y_test}
    outputs = {"train": predict(model, x_train), "val": predict(model, x_val), "test": predict(model, x_test)}
    metrics = measure.final_metrics(data.task, labels, outputs)
    if not measure.all_finite(metrics):
        result.status, result.reason = "diverged", "the trained model's predictions are not finite"
        return result
    path = workdir / "models" / f"r{index}.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, path)
    metrics.update(_model_metrics(model, path))
    metrics.update({"fit/seconds": fitted.seconds, "fit/epochs": fitted.epochs, "fit/best_epoch": fitted.best_epoch})
    result.metrics, result.test_outputs, result.model_path = metrics, outputs["test"].astype(np.float32), path
    return result


def run_trial(
    setup: Setup, data: Data, seed: int, replicates: int, workdir: Path, observer: TrialObserver | None = None
) -> TrialResult:
    """Train `replicates` models of `setup` with seeds seed, seed+1, ...; stop early if one
    diverges or the observer prunes the first."""
    result = TrialResult(task=data.task)
    for index in range(replicates):
        replicate = run_replicate(setup, data, index, seed + index, Path(workdir), observer)
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
