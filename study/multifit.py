"""Train several small models at once: one TensorFlow graph call per epoch for the whole pack.

A sweep of small models is bound by per-step framework overhead, not arithmetic: Keras' `fit`
spends most of a small model's step dispatching Python callbacks, metrics and ops. Here each
pack member's training step is written into one `tf.function` that runs a whole epoch (a
`tf.while_loop` over the batches, every member's step inside it), so the overhead is paid once
per step for all members and TensorFlow's executor runs the members' independent ops side by
side on the machine's cores.

Each member keeps everything it would have alone: its own model, optimizer, learning rate,
penalties, dropout, training set, shuffling, epoch budget, early stopping, per-epoch callback
(logging and pruning) and divergence check. A member that stops (pruned, early-stopped,
diverged, or out of epochs) stops updating; the pack ends when all have. A pack of one is how a
trial trains alone, so a model trained alone and in a pack at the same seed follow the same
computation: same initial weights (built after seeding), same batch order (a NumPy generator
seeded per member), same dropout masks (each Dropout layer's own seeded generator; see
`models.py`).

The per-epoch metrics have Keras' meaning: `train_*` are means over the epoch's examples with
dropout active; `val_*` are measured in inference mode after the epoch; losses are data losses
(the penalties are excluded). Models compressed with the Model Optimization Toolkit still train
with Keras' `fit` (`training.fit`): its pruning step and quantization wrappers are callbacks and
layers that expect `fit`; they may join packs later.
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
from study.training import FitResult, OnEpoch, best_epoch

VAL_BATCH = 4096  # validation examples per graph op: large, as no gradients are kept


@dataclass
class Member:
    """One model of a pack with what it trains on and how."""

    model: keras.Model  # built, not compiled
    spec: TrainSpec
    task: str  # 'classification' or 'regression'
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    seed: int  # of its batch order
    on_epoch: OnEpoch | None = None  # after each epoch: a reason to stop (pruning), or None
    on_stop: Callable[[FitResult], None] | None = None  # when it stops training, before later members are judged
    result: FitResult = field(default_factory=FitResult)


def pack_key(spec: TrainSpec, task: str, train_size: int) -> tuple:
    """Models with equal keys can share a pack: the same number of batches of the same size."""
    return (task, spec.batch_size, train_size)


class _Stopper:
    """Keras' EarlyStopping rule, for one member (same improvement test, patience and restore)."""

    def __init__(self, spec):
        self.spec = spec
        self.key = names.MONITORS[spec.monitor].short
        self.maximize = spec.monitor == "val/accuracy"
        self.best = -math.inf if self.maximize else math.inf
        self.best_weights = None
        self.wait = 0
        self.stopped_epoch = 0  # 1-based; 0: did not stop

    def _improved(self, value: float) -> bool:
        if self.maximize:
            return value - self.spec.min_delta > self.best
        return value + self.spec.min_delta < self.best

    def update(self, epoch: int, metrics: dict[str, float], model) -> bool:
        """Record the epoch (1-based); True when training should stop."""
        value = metrics.get(self.key)
        if value is None:
            return False
        if self.spec.restore_best_weights and self.best_weights is None:
            self.best_weights = model.get_weights()
        self.wait += 1
        if self._improved(value):
            self.best, self.wait = value, 0
            if self.spec.restore_best_weights:
                self.best_weights = model.get_weights()
            return False
        if self.wait >= self.spec.patience and epoch > 1:
            self.stopped_epoch = epoch
            return True
        return False

    def finish(self, model) -> None:
        if self.spec.restore_best_weights and self.best_weights is not None:
            model.set_weights(self.best_weights)


def _losses(task: str):
    if task == "classification":
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")

        def second(y, out):  # correct predictions
            return tf.cast(tf.equal(tf.cast(tf.argmax(out, axis=-1), y.dtype), tf.reshape(y, [-1])), tf.float32)
    else:
        def loss(y, out):
            return tf.reduce_mean(tf.math.squared_difference(tf.reshape(out, [tf.shape(out)[0], -1]), tf.reshape(tf.cast(y, out.dtype), [tf.shape(out)[0], -1])), axis=-1)

        def second(y, out):  # absolute errors
            return tf.reduce_mean(tf.abs(tf.reshape(out, [tf.shape(out)[0], -1]) - tf.reshape(tf.cast(y, out.dtype), [tf.shape(out)[0], -1])), axis=-1)
    return loss, second


class _Optimizer:
    """Keras' Adam, SGD and RMSprop update rules (their defaults: Adam's betas 0.9 and 0.999,
    RMSprop's rho 0.9, epsilon 1e-7), written as plain graph ops: Keras' own `apply_gradients`
    costs more to trace than a small model's whole epoch."""

    def __init__(self, spec: TrainSpec, variables):
        self.kind, self.variables = spec.optimizer, list(variables)
        self.rate = tf.constant(spec.learning_rate, tf.float32)
        self.momentum = spec.momentum
        self.step = tf.Variable(0.0, trainable=False, name="step")
        slots = {"adam": 2, "sgd": 1 if spec.momentum > 0 else 0, "rmsprop": 2 if spec.momentum > 0 else 1}[self.kind]
        self.slots = [[tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables] for _ in range(slots)]

    def apply(self, grads) -> None:
        step = self.step.assign_add(1.0)
        rate = self.rate
        if self.kind == "adam":
            beta_1, beta_2, epsilon = 0.9, 0.999, 1e-7
            alpha = rate * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
            for var, g, m, v in zip(self.variables, grads, *self.slots):
                m.assign_add((g - m) * (1 - beta_1))
                v.assign_add((tf.square(g) - v) * (1 - beta_2))
                var.assign_sub((m * alpha) / (tf.sqrt(v) + epsilon))
        elif self.kind == "sgd":
            if not self.slots:
                for var, g in zip(self.variables, grads):
                    var.assign_add(-g * rate)
                return
            for var, g, m in zip(self.variables, grads, self.slots[0]):
                var.assign_add(m.assign(-g * rate + m * self.momentum))
        else:
            rho, epsilon = 0.9, 1e-7
            for i, (var, g) in enumerate(zip(self.variables, grads)):
                velocity = self.slots[0][i].assign(rho * self.slots[0][i] + (1 - rho) * tf.square(g))
                increment = rate * g * tf.math.rsqrt(velocity + epsilon)
                if self.momentum > 0:
                    var.assign_add(-self.slots[1][i].assign(self.momentum * self.slots[1][i] + increment))
                else:
                    var.assign_add(-increment)


class Pack:
    """Members trained together; `run()` trains them all and fills each member's `result`."""

    def __init__(self, members: list[Member]):
        check_pack(members)
        self.members = members
        self.n = len(members[0].train[0])
        self.batch = members[0].spec.batch_size
        self.steps = max(1, math.ceil(self.n / self.batch))
        self.optimizers = [_Optimizer(m.spec, m.model.trainable_variables) for m in members]
        self.data = [
            (tf.constant(m.train[0]), tf.constant(m.train[1]), tf.constant(m.val[0]), tf.constant(m.val[1]))
            for m in members
        ]
        self.epoch_fn = tf.function(self._epoch, autograph=False)  # loops and conds are written as graph ops

    # -- the graph: one epoch of every active member -----------------------------------------
    def _member_epoch(self, k: int, order):
        """Member k's epoch: its steps over `order` (its shuffled indices), then validation.
        Returns [data-loss sum, second-metric sum, first bad step (0: none), val loss, val second]."""
        member, opt = self.members[k], self.optimizers[k]
        model = member.model
        x, y, x_val, y_val = self.data[k]
        loss_fn, second_fn = _losses(member.task)
        n, batch, steps = self.n, self.batch, self.steps

        def step(i, loss_sum, second_sum, bad):
            idx = order[i * batch : tf.minimum((i + 1) * batch, n)]
            xb, yb = tf.gather(x, idx), tf.gather(y, idx)
            with tf.GradientTape() as tape:
                out = model(xb, training=True)
                per_example = loss_fn(yb, out)
                data_loss = tf.reduce_mean(per_example)
                total = data_loss + tf.add_n(model.losses) if model.losses else data_loss
            finite = tf.math.is_finite(total)

            def update():
                grads = tape.gradient(total, model.trainable_variables)
                opt.apply(grads)
                return tf.constant(0)

            bad = tf.cond(finite, update, lambda: i + 1)
            return (
                i + 1,
                loss_sum + tf.reduce_sum(per_example),
                second_sum + tf.reduce_sum(second_fn(yb, out)),
                bad,
            )

        def more(i, loss_sum, second_sum, bad):
            return tf.logical_and(i < steps, tf.equal(bad, 0))

        zero = tf.constant(0.0)
        _, loss_sum, second_sum, bad = tf.while_loop(more, step, (tf.constant(0), zero, zero, tf.constant(0)))
        val_loss, val_second = zero, zero
        for start in range(0, int(x_val.shape[0]), VAL_BATCH):
            xv, yv = x_val[start : start + VAL_BATCH], y_val[start : start + VAL_BATCH]
            out = model(xv, training=False)
            val_loss += tf.reduce_sum(loss_fn(yv, out))
            val_second += tf.reduce_sum(second_fn(yv, out))
        return tf.stack([loss_sum, second_sum, tf.cast(bad, tf.float32), val_loss, val_second])

    def _epoch(self, orders, active):
        rows = []
        for k in range(len(self.members)):
            rows.append(tf.cond(active[k], lambda k=k: self._member_epoch(k, orders[k]), lambda: tf.zeros(5)))
        return tf.stack(rows)

    # -- the loop: shuffle, run the graph, judge each member ---------------------------------
    def run(self) -> list[FitResult]:
        members = self.members
        rngs = [np.random.default_rng(m.seed) for m in members]
        stoppers = [_Stopper(m.spec.early_stopping) if m.spec.early_stopping.enabled else None for m in members]
        active = np.ones(len(members), dtype=bool)
        seconds = np.zeros(len(members))
        epoch = 0
        while active.any():
            epoch += 1
            orders = np.stack([rng.permutation(self.n) if on else np.arange(self.n) for rng, on in zip(rngs, active)])
            start = time.perf_counter()
            sums = self.epoch_fn(tf.constant(orders, dtype=tf.int32), tf.constant(active)).numpy()
            seconds[active] += (time.perf_counter() - start) / max(1, active.sum())
            for k, m in enumerate(members):
                if not active[k]:
                    continue
                keep_going = self._judge(m, epoch, sums[k], stoppers[k])
                if not keep_going or epoch >= m.spec.epochs:
                    active[k] = False
                    if m.on_stop is not None:
                        m.on_stop(m.result)
        for k, m in enumerate(members):
            self._finish(m, stoppers[k], seconds[k])
        return [m.result for m in members]

    def _judge(self, m: Member, epoch: int, row: np.ndarray, stopper: _Stopper | None) -> bool:
        return judge_epoch(m, epoch, row, stopper, m.model, self.n)

    def _finish(self, m: Member, stopper: _Stopper | None, seconds: float) -> None:
        if stopper is not None and m.result.stopped != "diverged":
            stopper.finish(m.model)
        m.result.seconds = float(seconds)
        m.result.best_epoch = best_epoch(m.result.history, m.spec.early_stopping.monitor)


def check_pack(members: list[Member]) -> None:
    """ValueError unless the members can share a pack (one `pack_key`)."""
    if not members:
        raise ValueError("a pack needs at least one member")
    keys = {pack_key(m.spec, m.task, len(m.train[0])) for m in members}
    if len(keys) > 1:
        raise ValueError(f"these models cannot share a pack: {sorted(keys)}")


def epoch_metrics(m: Member, row: np.ndarray, n: int) -> dict[str, float]:
    """A member's epoch as Keras logs it, from the graph's sums: [loss, second metric, bad step,
    val loss, val second metric]."""
    loss_sum, second_sum, _, val_loss, val_second = (float(v) for v in row)
    n_val = len(m.val[0])
    second = "accuracy" if m.task == names.CLASSIFICATION else "mae"
    return {
        names.TRAIN_LOSS.short: loss_sum / n, names.EPOCH[f"train_{second}"].short: second_sum / n,
        names.VAL_LOSS.short: val_loss / n_val, names.EPOCH[f"val_{second}"].short: val_second / n_val,
    }


def judge_epoch(m: Member, epoch: int, row: np.ndarray, stopper: _Stopper | None, weights, n: int) -> bool:
    """Record member m's epoch (divergence, history, early stopping, pruning); False when it stops
    training. `weights` has the member's get_weights/set_weights (its model, or a batched view)."""
    result = m.result
    bad_step = int(row[2])
    if bad_step:
        result.epochs = epoch
        result.stopped = "diverged"
        result.reason = f"training loss became non-finite at epoch {epoch}, batch {bad_step}"
        return False
    metrics = epoch_metrics(m, row, n)
    result.history.append(metrics)
    result.epochs = epoch
    bad = next((name for name, value in metrics.items() if not math.isfinite(value)), None)
    if bad:
        result.stopped, result.reason = "diverged", f"{bad} became {metrics[bad]} at epoch {epoch}"
        return False
    stop = stopper.update(epoch, metrics, weights) if stopper is not None else False
    if m.on_epoch is not None:
        reason = m.on_epoch(epoch, metrics)
        if reason:
            result.stopped, result.reason = "pruned", reason
            return False
    if stop and stopper is not None:
        result.stopped, result.stopped_epoch = "early_stopping", stopper.stopped_epoch
        result.reason = (
            f"{stopper.spec.monitor} did not improve for {stopper.spec.patience} epochs; "
            f"stopped after epoch {stopper.stopped_epoch}"
        )
        return False
    return True


def fit_together(members: list[Member]) -> list[FitResult]:
    """Train `members` (which must share a `pack_key`) as one pack, each as its own graph."""
    return Pack(members).run()
