"""Structured pruning: remove whole neurons (Dense) and filters (Conv), giving a smaller dense model.

Unstructured pruning (prune.py) zeroes weights inside layers of unchanged shape: the file keeps
its raw size and its latency, and shrinks only once compressed. Here every hidden layer keeps the
`1 - fraction` of its output units (or, with scope 'global', the network keeps `1 - fraction` of
all its hidden units, ranked together) (a Dense layer's neurons, a conv layer's filters) whose weights
have the largest L1 (or L2) norm, and loses the rest, together with the weights that read them in
the next layer (rows of a Dense kernel, input channels of a conv kernel, and through a Flatten the
positions of each removed channel). The output layer keeps all its units. The result is a plain
Keras model of the same architecture and smaller widths, which the pipeline fine-tunes.

The criterion is the one of Li et al. (2017, "Pruning filters for efficient ConvNets"): a unit whose
incoming weights are small contributes little. `random` keeps as many units, drawn at random with
the replicate's seed: the baseline a norm must beat to be worth its name (Blalock et al. 2020). Pure NumPy on the weights; Keras only to rebuild.
"""

from __future__ import annotations

import math

import numpy as np

from study.keras_compat import keras

CRITERIA = ("l1", "l2", "random")  # random: the baseline a norm must beat (Blalock et al. 2020)
SCOPES = ("layer", "global")  # the fraction of each hidden layer's units, or of all of them ranked together
PASS_THROUGH = ("InputLayer", "Dropout", "Activation", "Rescaling", "ReLU")  # they keep the channel axis as it is


def unit_scores(kernel: np.ndarray, criterion: str = "l1", rng: np.random.Generator | None = None) -> np.ndarray:
    """The norm of each output unit's weights (the kernel's last axis); with `random`, a random
    score per unit from `rng`, so the units kept are a random choice of the same number."""
    flat = np.abs(kernel.reshape(-1, kernel.shape[-1]))
    if criterion == "random":
        if rng is None:
            raise ValueError("random scores need a random generator (a seed)")
        return rng.random(flat.shape[1])
    if criterion == "l1":
        return flat.sum(axis=0)
    if criterion == "l2":
        return np.sqrt((flat**2).sum(axis=0))
    raise ValueError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")


def units_to_keep(scores: np.ndarray, fraction: float) -> np.ndarray:
    """Indices (ascending) of the `ceil((1 - fraction) * n)` highest-scoring units, at least one;
    ties go to the lower index, so the choice is deterministic."""
    if not 0 <= fraction < 1:
        raise ValueError(f"the fraction of units to remove must be in [0, 1), got {fraction}")
    n = len(scores)
    keep = max(1, math.ceil((1 - fraction) * n - 1e-9))
    order = np.lexsort((np.arange(n), -scores))  # highest score first, then lowest index
    return np.sort(order[:keep])


def _flattened(keep: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Indices in a flattened (positions..., channels) tensor of the kept channels."""
    channels = shape[-1]
    positions = int(np.prod(shape[:-1]))
    return (np.arange(positions)[:, None] * channels + keep[None, :]).reshape(-1)


def global_plan(model: keras.Model, fraction: float, criterion: str = "l1", rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Which units each hidden layer keeps when `fraction` of all hidden units go at once: units
    are ranked across layers by their score relative to their layer's mean score (raw norms
    differ in scale from layer to layer), and every layer keeps at least its best unit."""
    hidden = _hidden_layers(model)
    if not hidden:
        return {}
    scores = {layer.name: unit_scores(_unit_kernel(layer), criterion, rng) for layer in hidden}
    relative = {name: s / (s.mean() or 1.0) for name, s in scores.items()}
    owner = np.concatenate([np.full(len(r), i) for i, r in enumerate(relative.values())])
    unit = np.concatenate([np.arange(len(r)) for r in relative.values()])
    pooled = np.concatenate(list(relative.values()))
    drop = int(np.floor(fraction * len(pooled) + 1e-9))
    dropped = np.zeros(len(pooled), dtype=bool)
    dropped[np.lexsort((unit, owner, pooled))[:drop]] = True  # the weakest first; ties by position, never all of them
    plan = {}
    for i, (name, r) in enumerate(relative.items()):
        keep = unit[(owner == i) & ~dropped]
        plan[name] = keep if len(keep) else np.array([int(np.argmax(r))])  # every layer keeps its best unit
    return plan


def _hidden_layers(model: keras.Model) -> list:
    weighted = [layer for layer in model.layers if type(layer).__name__ in ("Dense", "Conv2D", "SeparableConv2D")]
    return weighted[:-1]  # the output layer keeps every unit


def _unit_kernel(layer) -> np.ndarray:
    """The kernel whose last axis is the layer's output units (a separable conv's pointwise one)."""
    return layer.weights[1 if type(layer).__name__ == "SeparableConv2D" else 0].numpy()


def shrink(model: keras.Model, fraction: float, criterion: str = "l1", scope: str = "layer",
           seed: int | None = None) -> tuple[keras.Model, dict[str, int]]:
    """A copy of `model` whose hidden Dense and conv layers lose `fraction` of their units: of each
    layer's (scope 'layer'), or of all hidden units ranked together (scope 'global', `global_plan`),
    with the surviving weights. Returns it and the kept width of each shrunk layer. Criterion
    `random` draws the units kept with `seed`: the same widths as a norm, a random choice of units."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    rng = np.random.default_rng(seed) if criterion == "random" else None
    plan = global_plan(model, fraction, criterion, rng) if scope == "global" else {}
    config = model.get_config()
    by_name = {entry["config"]["name"]: entry for entry in config["layers"]}
    hidden = {layer.name for layer in _hidden_layers(model)}
    weights: dict[str, list[np.ndarray]] = {}
    widths: dict[str, int] = {}
    keep: np.ndarray | None = None  # the kept indices on the last axis of the current tensor
    for layer in model.layers:
        kind = type(layer).__name__
        values = [w.numpy() for w in layer.weights]
        if kind == "Flatten" and keep is not None:
            keep = _flattened(keep, tuple(int(d) for d in layer.input_shape[1:]))
        elif kind == "Dense":
            kernel, *bias = values
            if keep is not None:
                kernel = kernel[keep, :]
            if layer.name not in hidden:  # the output keeps every unit
                weights[layer.name], keep = [kernel, *bias], None
                continue
            keep = plan.get(layer.name, None)
            keep = units_to_keep(unit_scores(kernel, criterion, rng), fraction) if keep is None else keep
            weights[layer.name] = [kernel[:, keep], *(b[keep] for b in bias)]
            by_name[layer.name]["config"]["units"] = widths[layer.name] = len(keep)
        elif kind == "Conv2D":
            kernel, *bias = values
            if keep is not None:
                kernel = kernel[:, :, keep, :]
            keep = plan.get(layer.name, None)
            keep = units_to_keep(unit_scores(kernel, criterion, rng), fraction) if keep is None else keep
            weights[layer.name] = [kernel[..., keep], *(b[keep] for b in bias)]
            by_name[layer.name]["config"]["filters"] = widths[layer.name] = len(keep)
        elif kind == "SeparableConv2D":
            depthwise, pointwise, *bias = values
            multiplier = depthwise.shape[-1]
            if keep is not None:
                depthwise = depthwise[:, :, keep, :]
                rows = (keep[:, None] * multiplier + np.arange(multiplier)[None, :]).reshape(-1)
                pointwise = pointwise[:, :, rows, :]
            keep = plan.get(layer.name, None)
            keep = units_to_keep(unit_scores(pointwise, criterion, rng), fraction) if keep is None else keep
            weights[layer.name] = [depthwise, pointwise[..., keep], *(b[keep] for b in bias)]
            by_name[layer.name]["config"]["filters"] = widths[layer.name] = len(keep)
        elif kind in PASS_THROUGH:  # elementwise or channel-preserving: a Dropout's generator state is copied
            if values:
                weights[layer.name] = values
        elif keep is not None or values:
            raise ValueError(f"structured pruning does not know how to shrink through a {kind} layer ({layer.name})")
    smaller = keras.Model.from_config(config)
    for layer in smaller.layers:
        if layer.name in weights:
            layer.set_weights(weights[layer.name])
    return smaller, widths
