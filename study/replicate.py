"""One replicate of a trial, and what a trial returns: its inputs, its model, its measurements.

Plain trials (`objective`) and compression trials (`compression.pipeline`) both build, measure
and save models with these functions and return a `TrialResult` of `ReplicateResult`s, which the
runner tells Optuna and logs to MLflow (`write_outputs` writes the files the report reads).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from study import measure
from study.datasets import Data, expand_features, resplit, training_set
from study.keras_compat import keras
from study.models import build_model, target_scale
from study.names import REGRESSION, TrialState
from study.schema import Setup
from study.training import compile_model, predict


class TrialObserver(Protocol):
    def epoch(self, replicate: int, epoch: int, metrics: dict[str, float]) -> str | None:
        """Called after every epoch; return a reason to stop the trial (pruning), else None."""

    def replicate_end(self, replicate: ReplicateResult) -> None:
        """Called when a replicate has been measured."""


@dataclass
class ReplicateResult:
    index: int
    seed: int
    status: TrialState  # finished, pruned or diverged
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
    def status(self) -> TrialState:
        """Diverged if any replicate diverged, else the first replicate's status."""
        statuses = [r.status for r in self.replicates]
        if TrialState.DIVERGED in statuses:
            return TrialState.DIVERGED
        return TrialState(statuses[0]) if statuses else TrialState.FAILED

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
    """The data one replicate sees: its own training/validation split (with `dataset.resplit`)
    and training set drawn for `seed`, and polynomial features (if asked), which make every split
    tabular."""
    data = resplit(data, setup.dataset, seed)
    x_train, y_train = training_set(data, setup.dataset, seed)
    if setup.model.poly_degree > 1:
        x_train, x_val, x_test = expand_features(setup.model.poly_degree, x_train, data.x_val, data.x_test)
        return replace(data, x_train=x_train, y_train=y_train, x_val=x_val, x_test=x_test, layout="tabular")
    return replace(data, x_train=x_train, y_train=y_train)


def build_for(setup: Setup, data: Data, inputs: Data, model_spec=None, compiled: bool = True) -> keras.Model:
    """The model of `setup` (or of `model_spec`) for these inputs, compiled for Keras' `fit` unless
    `compiled` is False (packed training needs no compiling)."""
    regression = data.task == REGRESSION
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
    if data.task == REGRESSION:
        return data.noise_std**2 if data.noise_std is not None else None
    return setup.dataset.label_noise if data.name in ("mnist1d", "digits") else None


def save_model(model: keras.Model, path: Path) -> None:
    """Save architecture and weights only: optimizer state is training baggage, not the model
    (it would triple the bytes of an Adam-trained model). An uncompiled model carries none, and is
    saved as it is (packed training never compiles one; cloning a small MLP costs more than saving
    it); a compiled one is saved as an uncompiled clone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if model.optimizer is None:
        model.save(path)
        return
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.save(path)


def model_metrics(model: keras.Model, path: Path) -> dict[str, float]:
    """Parameters of `model` and the bytes of its saved file at `path`."""
    return {"model/params": measure.count_params(model.get_weights()), "model/size_bytes": path.stat().st_size}


def fit_metrics(fitted) -> dict[str, float]:
    return {
        "fit/seconds": fitted.seconds, "fit/epochs": fitted.epochs, "fit/best_epoch": fitted.best_epoch,
        "fit/stopped_epoch": fitted.stopped_epoch,
    }


def epoch_hook(observer, index: int):
    """The per-epoch callback `fit` takes, forwarding to the trial's observer."""
    return (lambda epoch, metrics: observer.epoch(index, epoch, metrics)) if observer else None


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
        extra: dict[str, Any] = {}
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
