"""Bias–variance decompositions of test error across replicates of one configuration. Pure NumPy.

Squared error (regression), with the noiseless truth f known (the `polynomial` data). For each
test point, with predictions ŷ_r of the R replicates and their mean ȳ:
    mean_r (ŷ_r − f)²  =  (ȳ − f)²  +  mean_r (ŷ_r − ȳ)²          exactly
    error against the truth = bias² + variance
and the expected error against noisy labels adds the noise variance σ²:
    E[(y − ŷ)²] = bias² + variance + σ².
Averaged over the test set; the first identity holds to rounding.

Zero-one loss (classification): Domingos (2000), "A Unified Bias-Variance Decomposition", with
the test labels taken as noise-free. The main prediction m is the most frequent class across
replicates; bias B = [m ≠ y]; variance V = the fraction of replicates that disagree with m; and
    E_r[L] = B + c·V   with c = 1 where B = 0 and c = −P(ŷ = y | ŷ ≠ m) where B = 1,
exactly, point by point. Averaged: mean loss = mean bias + net variance (unbiased variance minus
biased variance, weighted as above).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SquaredDecomposition:
    error_vs_truth: float  # mean_r,i (ŷ − f)²
    bias2: float
    variance: float
    noise: float | None  # σ², where the data's noise is known
    error_vs_labels: float  # mean_r,i (ŷ − y)², what test/loss measures

    @property
    def residual(self) -> float:
        """error_vs_truth − (bias² + variance): zero up to rounding."""
        return self.error_vs_truth - self.bias2 - self.variance


def squared_error(predictions: np.ndarray, truth: np.ndarray, labels: np.ndarray, noise_std: float | None = None) -> SquaredDecomposition:
    """Decompose the squared error of `predictions` (replicates, n) against the noiseless `truth` (n)."""
    p = np.asarray(predictions, dtype=np.float64).reshape(len(predictions), -1)
    f = np.asarray(truth, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    mean = p.mean(axis=0)
    return SquaredDecomposition(
        error_vs_truth=float(np.mean((p - f) ** 2)),
        bias2=float(np.mean((mean - f) ** 2)),
        variance=float(np.mean(p.var(axis=0))),
        noise=None if noise_std is None else float(noise_std) ** 2,
        error_vs_labels=float(np.mean((p - y) ** 2)),
    )


@dataclass(frozen=True)
class ZeroOneDecomposition:
    loss: float  # mean 0-1 loss over replicates and points
    bias: float  # fraction of points whose main prediction is wrong
    variance: float  # mean disagreement with the main prediction
    net_variance: float  # the variance term as it enters the loss: unbiased minus biased

    @property
    def residual(self) -> float:
        """loss − (bias + net variance): zero up to rounding (Domingos' identity)."""
        return self.loss - self.bias - self.net_variance


def zero_one(predicted_classes: np.ndarray, labels: np.ndarray) -> ZeroOneDecomposition:
    """Domingos' decomposition of the 0-1 loss of `predicted_classes` (replicates, n)."""
    p = np.asarray(predicted_classes)
    y = np.asarray(labels).ravel()
    replicates, n = p.shape
    classes = int(max(p.max(), y.max())) + 1
    votes = np.zeros((n, classes), dtype=np.int64)
    for row in p:
        votes[np.arange(n), row] += 1
    main = votes.argmax(axis=1)  # ties go to the smallest class index
    wrong = p != y
    bias = (main != y).astype(np.float64)
    variance = (p != main).mean(axis=0)
    # c = 1 when unbiased; otherwise −P(ŷ = y | ŷ ≠ m): the share of disagreeing votes that are right
    disagree = (p != main).sum(axis=0)
    right_but_disagree = ((p == y) & (p != main)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        share_right = np.where(disagree > 0, right_but_disagree / np.maximum(disagree, 1), 0.0)
    c = np.where(bias == 0, 1.0, -share_right)
    return ZeroOneDecomposition(
        loss=float(wrong.mean()),
        bias=float(bias.mean()),
        variance=float(variance.mean()),
        net_variance=float(np.mean(c * variance)),
    )


def classes_from_outputs(outputs: np.ndarray) -> np.ndarray:
    """Predicted classes (replicates, n) from logits (replicates, n, k)."""
    return np.asarray(outputs).argmax(axis=-1)
