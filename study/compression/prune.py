"""Magnitude pruning: set the smallest weights to zero while fine-tuning, then strip the wrappers.

Random pruning (`criterion: random`) is the baseline magnitude must beat (Blalock et al. 2020):
the same layers, schedule and final sparsity, but the weights to zero are drawn at random (each
weight gets a random rank, fixed for the whole run, so the pruned set only grows as the schedule
ramps up), held at zero by a callback after every training step.

The sparsity ramps up with the polynomial (cubic) schedule of Zhu & Gupta (2017) over the first
three quarters of fine-tuning, the rest recovering accuracy at the final sparsity; `constant`
prunes to the target at once. The first layer stays dense, as is common practice: it has few
weights and each sees the raw input (its measured sparsity, 0, is recorded like every layer's). `2:4` keeps the two largest of every four consecutive weights (sparsity 0.5,
the structure sparse tensor cores accelerate), on the layers whose shapes allow it.
"""

from __future__ import annotations

import numpy as np

from study.compression.layers import KERNELS, fresh_copy
from study.keras_compat import keras, tf, tfmot


def schedule(kind: str, sparsity: float, total_steps: int):
    """The toolkit's pruning schedule reaching `sparsity` within `total_steps` training steps."""
    sparsity_module = tfmot().sparsity.keras
    ramp_end = max(1, int(total_steps * 0.75))
    frequency = max(1, ramp_end // 10)  # ten mask updates on the way up
    if kind == "constant":
        return sparsity_module.ConstantSparsity(sparsity, begin_step=0, frequency=frequency)
    return sparsity_module.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0, end_step=ramp_end, power=3, frequency=frequency
    )


def _m_by_n_fits(layer) -> bool:
    """2:4 sparsity groups four consecutive input weights of each output: the input size must divide."""
    kernel = next((w for w in layer.weights if "kernel" in w.name), None)
    return kernel is not None and kernel.shape[-2] % 4 == 0


def prunable_copy(model: keras.Model, sparsity: float, kind: str, structure: str, total_steps: int) -> keras.Model:
    """A copy of `model` with its Dense and conv layers wrapped for pruning."""
    sparsity_module = tfmot().sparsity.keras
    plan = schedule(kind, 0.5 if structure == "2:4" else sparsity, total_steps)

    def wrap(layer):
        if type(layer).__name__ not in KERNELS:
            return layer
        if structure == "2:4":
            if not _m_by_n_fits(layer):
                return layer
            return sparsity_module.prune_low_magnitude(layer, pruning_schedule=plan, sparsity_m_by_n=(2, 4))
        return sparsity_module.prune_low_magnitude(layer, pruning_schedule=plan)

    copy = fresh_copy(model)  # built, so that 2:4 can look at kernel shapes
    first = next(layer.name for layer in copy.layers if type(layer).__name__ in KERNELS)
    return keras.models.clone_model(copy, clone_function=lambda layer: layer if layer.name == first else wrap(layer))


def prune_callbacks() -> list:
    return [tfmot().sparsity.keras.UpdatePruningStep()]


def strip(model: keras.Model) -> keras.Model:
    """The plain Keras model with the pruned (zeroed) weights, wrappers removed."""
    return tfmot().sparsity.keras.strip_pruning(model)


def _pruned_layers(model: keras.Model) -> list:
    """The layers magnitude pruning wraps: every Dense and conv layer but the first."""
    weighted = [layer for layer in model.layers if type(layer).__name__ in KERNELS]
    return weighted[1:]


class RandomMask(keras.callbacks.Callback):
    """Holds a random set of each pruned kernel's weights at zero, the set growing with `plan` (the
    toolkit's schedule, so random and magnitude pruning ramp alike) to the final sparsity."""

    def __init__(self, model: keras.Model, plan, seed: int):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.kernels = [getattr(layer, name) for layer in _pruned_layers(model) for name in KERNELS[type(layer).__name__]]
        self.ranks = [rng.permutation(int(np.prod(k.shape))).reshape(k.shape) for k in self.kernels]  # 0: pruned first
        self.plan, self.step, self.sparsity = plan, 0, 0.0
        self.masks: list | None = None

    def apply(self) -> None:
        should, sparsity = self.plan(tf.constant(self.step, dtype=tf.int64))
        if bool(should) and float(sparsity) > self.sparsity or self.masks is None:
            self.sparsity = max(self.sparsity, float(sparsity)) if bool(should) else self.sparsity
            self.masks = [tf.constant(ranks >= int(round(self.sparsity * ranks.size)), dtype=k.dtype)
                          for k, ranks in zip(self.kernels, self.ranks)]
        for kernel, mask in zip(self.kernels, self.masks):
            kernel.assign(kernel * mask)

    def on_train_begin(self, logs=None):
        self.apply()

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self.apply()


def random_prunable(model: keras.Model, sparsity: float, kind: str, total_steps: int, seed: int) -> tuple[keras.Model, list]:
    """A copy of `model` to fine-tune with the returned callbacks: the same layers as magnitude
    pruning (the first stays dense) reach `sparsity` by the same schedule, the weights chosen at random."""
    copy = fresh_copy(model)
    return copy, [RandomMask(copy, schedule(kind, sparsity, total_steps), seed)]
