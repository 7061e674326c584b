"""Magnitude pruning: set the smallest weights to zero while fine-tuning, then strip the wrappers.

The sparsity ramps up with the polynomial (cubic) schedule of Zhu & Gupta (2017) over the first
three quarters of fine-tuning, the rest recovering accuracy at the final sparsity; `constant`
prunes to the target at once. The first layer stays dense, as is common practice: it has few
weights and each sees the raw input (its measured sparsity, 0, is recorded like every layer's). `2:4` keeps the two largest of every four consecutive weights (sparsity 0.5,
the structure sparse tensor cores accelerate), on the layers whose shapes allow it.
"""

from __future__ import annotations

from study.compression.layers import KERNELS, fresh_copy
from study.keras_compat import keras, tfmot


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
