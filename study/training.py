"""Compile, fit and predict with Keras: how compression trains (its fine-tunes, distillation and
quantization-aware training use the Model Optimization Toolkit's callbacks and wrapped layers,
which expect `fit`). Plain trials train with the packed engine (`multifit`), which shares this
module's metric names, monitors and `FitResult`.

`fit` trains with the sweep's optimizer, batch size, epochs and early stopping, and calls
`on_epoch(epoch, metrics)` after every epoch so the caller can log and prune (it returns a
reason to stop, or None). A loss that becomes
NaN or infinite stops training within a few batches and is reported as `diverged`.

Per-epoch `train_*` values are Keras' running means over the epoch's batches (dropout active);
final metrics are measured afterwards in inference mode (see `measure.final_metrics`).
Losses are data losses: the L1/L2 penalties are excluded so that they compare across settings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from study import names
from study.keras_compat import keras, tf
from study.schema import TrainSpec

EVAL_BATCH = 1024  # evaluation batches: large, as no gradients are kept

OnEpoch = Callable[[int, dict[str, float]], "str | None"]  # returns a reason to stop, or None


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)  # one dict per epoch run
    epochs: int = 0
    best_epoch: int = 0  # 1-based epoch of the best monitored validation value
    stopped_epoch: int = 0  # the epoch where early stopping stopped training (0: it did not)
    stopped: str | None = None  # None, 'early_stopping', 'pruned' or 'diverged'
    reason: str = ""
    seconds: float = 0.0


def build_optimizer(spec: TrainSpec):
    if spec.optimizer == "adam":
        return keras.optimizers.Adam(spec.learning_rate)
    if spec.optimizer == "sgd":
        return keras.optimizers.SGD(spec.learning_rate, momentum=spec.momentum)
    return keras.optimizers.RMSprop(spec.learning_rate, momentum=spec.momentum)


def compile_model(model: keras.Model, spec: TrainSpec, task: str) -> None:
    """Loss, data-loss metric and accuracy (classification) or MAE (regression)."""
    if task == "classification":
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metrics = [
            keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name="data_loss"),
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        ]
    else:
        loss = keras.losses.MeanSquaredError()
        metrics = [keras.metrics.MeanSquaredError(name="data_loss"), keras.metrics.MeanAbsoluteError(name="mae")]
    model.compile(optimizer=build_optimizer(spec), loss=loss, metrics=metrics)


NAN_CHECK_EVERY = 8  # batches; reading the loss every batch costs ~10% of a small model's fit


class _EpochHook(keras.callbacks.Callback):
    """Stops on a non-finite loss (read every few batches) and hands each epoch to `on_epoch`."""

    _supports_tf_logs = True  # logs stay tensors: Keras skips converting them every batch

    def __init__(self, on_epoch: OnEpoch | None, result: FitResult):
        super().__init__()
        self.on_epoch = on_epoch
        self.result = result
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        if batch % NAN_CHECK_EVERY != NAN_CHECK_EVERY - 1 or not logs or "loss" not in logs:
            return
        loss = float(logs["loss"])
        if not math.isfinite(loss):
            self.result.stopped = "diverged"
            self.result.reason = f"training loss became {loss} at epoch {self.epoch}, batch {batch + 1}"
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        metrics = {names.KERAS_KEYS[k]: float(v) for k, v in logs.items() if k in names.KERAS_KEYS}
        self.result.history.append(metrics)
        self.result.epochs = epoch + 1
        if self.result.stopped != "diverged":
            checked = {"training loss": float(logs.get("loss", 0.0)), **metrics}
            bad = next((name for name, value in checked.items() if not math.isfinite(value)), None)
            if bad:
                self.result.stopped = "diverged"
                self.result.reason = f"{bad} became {checked[bad]} at epoch {epoch + 1}"
        if self.result.stopped == "diverged":
            self.model.stop_training = True
        elif self.on_epoch is not None:
            reason = self.on_epoch(epoch + 1, metrics)
            if reason:
                self.result.stopped, self.result.reason = "pruned", reason
                self.model.stop_training = True


def best_epoch(history: list[dict[str, float]], monitor: str) -> int:
    """1-based epoch of the best value of `monitor` ('val/loss', ...), or 0 without history."""
    key = names.MONITORS[monitor].short
    values = [h.get(key, math.nan) for h in history]
    if not values or all(math.isnan(v) for v in values):
        return 0
    pick = np.nanargmax if monitor == "val/accuracy" else np.nanargmin
    return int(pick(values)) + 1


def fit(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    spec: TrainSpec,
    on_epoch: OnEpoch | None = None,
    extra_callbacks=(),
) -> FitResult:
    """Train a compiled `model`; returns the per-epoch history and why training ended.

    `train` is (x, y); y may be a tuple of arrays for models that take several targets
    (distillation's labels and teacher logits). `extra_callbacks` run first (pruning's step).
    """
    result = FitResult()
    callbacks: list = [*extra_callbacks, _EpochHook(on_epoch, result)]
    stopper = None
    if spec.early_stopping.enabled:
        es = spec.early_stopping
        stopper = keras.callbacks.EarlyStopping(
            monitor=names.MONITORS[es.monitor].keras_key,
            mode="max" if es.monitor == "val/accuracy" else "min",
            patience=es.patience,
            min_delta=es.min_delta,
            restore_best_weights=es.restore_best_weights,
        )
        callbacks.insert(len(extra_callbacks), stopper)  # before the hook, so a pruned epoch still counts
    # Validation from numpy arrays makes Keras rebuild its data pipeline every epoch (~15 ms, up to
    # a third of a small model's epoch); a cached dataset is built once.
    val_data = tf.data.Dataset.from_tensor_slices(val).batch(EVAL_BATCH).cache()
    start = time.perf_counter()
    model.fit(
        train[0], train[1], validation_data=val_data, epochs=spec.epochs, batch_size=spec.batch_size,
        shuffle=True, verbose=0, callbacks=callbacks,
    )
    result.seconds = time.perf_counter() - start
    result.best_epoch = best_epoch(result.history, spec.early_stopping.monitor)
    if result.stopped is None and stopper is not None and stopper.stopped_epoch > 0:
        result.stopped, result.stopped_epoch = "early_stopping", stopper.stopped_epoch + 1
        result.reason = (
            f"{spec.early_stopping.monitor} did not improve for {spec.early_stopping.patience} epochs; "
            f"stopped after epoch {stopper.stopped_epoch + 1}"
        )
    return result


def predict(model: keras.Model, x: np.ndarray, batch_size: int = 4 * EVAL_BATCH) -> np.ndarray:
    """Outputs in inference mode (dropout off). Direct calls skip `model.predict`'s set-up cost."""
    parts = [model(x[i : i + batch_size], training=False).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(parts) if parts else np.empty((0,))
