"""Pure measurements: numbers in, numbers out. No TensorFlow, no I/O.

Final metrics are measured once training has ended, in inference mode, on each split; their
names (and the per-epoch curves') are declared once, in `names`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def cross_entropy(y: np.ndarray, logits: np.ndarray) -> float:
    """Mean negative log-likelihood (nats) of integer labels `y` under `logits` (n, k)."""
    z = logits - logits.max(axis=-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean())


def accuracy(y: np.ndarray, logits: np.ndarray) -> float:
    """Fraction of rows whose arg-max class equals the label."""
    return float((logits.argmax(axis=-1) == y).mean())


def mean_squared_error(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean((np.ravel(y) - np.ravel(pred)) ** 2))


def mean_absolute_error(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(np.ravel(y) - np.ravel(pred))))


def split_metrics(task: str, y: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """Loss and accuracy (classification) or loss and MAE (regression) of one split."""
    if task == "classification":
        return {"loss": cross_entropy(y, outputs), "accuracy": accuracy(y, outputs)}
    return {"loss": mean_squared_error(y, outputs), "mae": mean_absolute_error(y, outputs)}


def final_metrics(task: str, labels: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> dict[str, float]:
    """`split/name` metrics for every split given, plus the generalization gaps.

    The gaps compare the training split with the test split, the held-out data the article
    means when it says a model "does well on training data but poorly on new data".
    """
    metrics = {
        f"{split}/{name}": value
        for split in labels
        for name, value in split_metrics(task, labels[split], outputs[split]).items()
    }
    if "train/loss" in metrics and "test/loss" in metrics:
        metrics["gap/loss"] = metrics["test/loss"] - metrics["train/loss"]
    if "train/accuracy" in metrics and "test/accuracy" in metrics:
        metrics["gap/accuracy"] = metrics["train/accuracy"] - metrics["test/accuracy"]
    return metrics


def per_example_losses(task: str, y: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Each example's loss: cross-entropy (nats) or squared error."""
    if task == "classification":
        z = outputs - outputs.max(axis=-1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        return -log_p[np.arange(len(y)), y]
    return (np.ravel(y) - np.ravel(outputs)) ** 2


def standard_error(values: np.ndarray) -> float:
    """Standard error of the mean of `values` (0 for fewer than two)."""
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def chance_error(task: str, y_train: np.ndarray, y_test: np.ndarray) -> float:
    """Held-out error of a model that learned nothing from the inputs: the most frequent training
    class (error rate) or the training mean (squared error)."""
    if task == "classification":
        common = np.bincount(np.asarray(y_train, dtype=np.int64)).argmax()
        return float(np.mean(np.asarray(y_test) != common))
    return float(np.mean((np.ravel(y_test) - np.mean(y_train)) ** 2))


def data_metrics(task: str, labels: dict[str, np.ndarray], outputs: dict[str, np.ndarray], noise_floor: float | None) -> dict[str, float]:
    """The numbers behind the report's intervals and references (see names.FINAL)."""
    metrics = {
        "data/train_size": float(len(labels["train"])),
        "data/test_size": float(len(labels["test"])),
        "data/chance_error": chance_error(task, labels["train"], labels["test"]),
        "train/loss_se": standard_error(per_example_losses(task, labels["train"], outputs["train"])),
        "test/loss_se": standard_error(per_example_losses(task, labels["test"], outputs["test"])),
    }
    if noise_floor is not None:
        metrics["data/noise_floor"] = float(noise_floor)
    return metrics


def all_finite(values) -> bool:
    """True when every number in `values` (an iterable or a dict's values) is finite."""
    if isinstance(values, dict):
        values = values.values()
    return bool(np.all(np.isfinite(np.asarray(list(values), dtype=float))))


def summarize_replicates(per_replicate: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over replicates, plus `<name>_std` (population) when there are several."""
    if not per_replicate:
        return {}
    keys = [k for k in per_replicate[0] if all(k in m for m in per_replicate)]
    summary: dict[str, float] = {}
    for key in keys:
        values = np.array([m[key] for m in per_replicate], dtype=float)
        summary[key] = float(values.mean())
        if len(values) > 1 and not key.startswith("data/"):  # the data's sizes do not vary by seed
            summary[f"{key}_std"] = float(values.std())
    return summary


def count_params(weights: list[np.ndarray]) -> int:
    """Number of scalars in a list of weight arrays."""
    return int(sum(np.size(w) for w in weights))


def count_nonzero(weights: list[np.ndarray]) -> int:
    """Number of non-zero scalars in a list of weight arrays."""
    return int(sum(np.count_nonzero(w) for w in weights))


def pareto_mask(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Which rows of `values` (n, objectives) no other row dominates.

    A row dominates another when it is at least as good in every objective and strictly better in
    one; `directions` holds 'minimize' or 'maximize' per column. Rows with NaN are never optimal.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    signs = np.array([1.0 if d == "minimize" else -1.0 for d in directions])
    costs = values * signs  # now every column is minimized
    valid = ~np.isnan(costs).any(axis=1)
    optimal = valid.copy()
    for i in np.flatnonzero(valid):
        others = costs[valid]
        dominated = np.all(others <= costs[i], axis=1) & np.any(others < costs[i], axis=1)
        optimal[i] = not dominated.any()
    return optimal


def gzip_size(data: bytes) -> int:
    """Bytes of `data` after gzip at the highest level: what a file takes to store or ship."""
    import gzip

    return len(gzip.compress(data, compresslevel=9, mtime=0))


CONV_KINDS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D")


def layer_macs(kind: str, kernel_shapes: list[tuple[int, ...]], output_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one layer for one example.

    A Dense kernel (in, out) costs in·out. A conv kernel (kh, kw, in, out), a depthwise kernel
    (kh, kw, in, multiplier) and a pointwise kernel (1, 1, in, out) cost their size at every
    output position, so a separable conv costs the sum of its two kernels there.
    """
    per_position = int(sum(np.prod(shape) for shape in kernel_shapes))
    if kind in CONV_KINDS:
        return per_position * int(np.prod(output_shape[:-1]))
    return per_position


def sparsity(weights: list[np.ndarray]) -> float:
    """Fraction of zeros among all scalars of `weights` (0 for none)."""
    total = count_params(weights)
    return 1.0 - count_nonzero(weights) / total if total else 0.0
