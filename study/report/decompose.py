"""Bias–variance decompositions of held-out error across the R replicates of one setting. Pure NumPy.

Squared error (regression), with the noiseless truth f known (the `polynomial` data). At each test
point, with predictions ŷ_r, their mean ȳ and their sample variance s² (R − 1 in the denominator):
    variance = s²                        unbiased for Var ŷ
    bias²    = (ȳ − f)² − s²/R           unbiased for (E ŷ − f)²: the plug-in (ȳ − f)² carries s²/R
                                         with it, so with few replicates it grows with the variance
    mean_r (ŷ_r − f)² = bias² + variance exactly, point by point (error against the truth)
and against the noisy labels y the expected error adds the noise variance σ²:
    E[(y − ŷ)²] = bias² + variance + σ².
The measured held-out loss differs from that by the test set's realised noise, exactly:
    mean_r,i (ŷ − y)² − (bias² + variance + σ²) = mean_i[(y − f)² − σ²] − 2·mean_i[(ȳ − f)(y − f)],
a mean of n independent terms whose standard error says how far apart the two may be.

Zero-one loss (classification): Domingos (2000), with the test labels taken as noise-free. The main
prediction m is the replicates' vote (ties to the lower class); bias B = [m ≠ y]; disagreement
V = the share of replicates that differ from m; loss = bias + net variance, where net variance is
V on points with B = 0 minus the share of right replicates on points with B = 1. The vote of R
replicates is a noisy estimate of the main prediction, and no unbiased correction of B exists
for a vote (a jackknife of the arg-max depends on how ties fall): B is the plug-in, and it
overstates bias where replicates disagree, less so as R grows. The page says so.

Intervals (95%): for squared bias the jackknife over replicates with three or more (Student's t
with R − 1 degrees of freedom: the seeds' noise), else the standard error over test points (the
test set's noise alone). The variance is a sum of squares, skewed when replicates are few, and
its points share the same R models, so neither a symmetric jackknife interval (it covered 82–91%
in benchmarks/variance_intervals.py) nor the spread over points is right. With the centred
predictions Z (R × n) and G = Z Zᵀ, variance = tr G / (n (R − 1)) is a weighted sum of χ²
variables; Satterthwaite's effective degrees of freedom ν = (R − 1) (tr G)² / tr(G²) give the
interval [ν V / χ²_ν(0.975), ν V / χ²_ν(0.025)] (covered 94–99% there). For
the 0-1 bias, the standard error over test points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from study.report import stats


@dataclass(frozen=True)
class Term:
    value: float
    se: float  # NaN where none can be formed
    df: float = float("inf")  # degrees of freedom of the se: R − 1 for the jackknife over R replicates
    bounds: tuple[float, float] | None = None  # an asymmetric 95% interval, where one is formed (the variance)

    @property
    def low(self) -> float:
        return self.bounds[0] if self.bounds is not None else self.value - self.half_width

    @property
    def high(self) -> float:
        return self.bounds[1] if self.bounds is not None else self.value + self.half_width

    @property
    def half_width(self) -> float:
        if not np.isfinite(self.se):
            return float("nan")
        return (stats.t_quantile(int(self.df)) if np.isfinite(self.df) else stats.z_quantile()) * self.se


@dataclass(frozen=True)
class SquaredDecomposition:
    bias2: Term
    variance: Term
    noise: float | None  # σ², where the data's noise is known
    error_vs_truth: float  # mean_r,i (ŷ − f)²
    measured: float  # mean_r,i (ŷ − y)²: what test/loss measures, averaged over replicates
    realised: Term  # measured − (bias² + variance + σ²), with its standard error over test points
    interval: str  # where the terms' intervals come from

    @property
    def residual(self) -> float:
        """error_vs_truth − (bias² + variance): zero up to rounding, point by point."""
        return self.error_vs_truth - self.bias2.value - self.variance.value

    @property
    def predicted(self) -> float:
        return self.bias2.value + self.variance.value + (self.noise or 0.0)

    @property
    def identity_holds(self) -> bool:
        """The measured loss is within three standard errors of bias² + variance + σ²."""
        return bool(abs(self.realised.value) <= 3 * self.realised.se + 1e-12)


def _squared_terms(p: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-point unbiased bias² and variance of predictions p (R, n) against truth f (n)."""
    replicates = len(p)
    s2 = p.var(axis=0, ddof=1)
    return (p.mean(axis=0) - f) ** 2 - s2 / replicates, s2


def _jackknife_se(statistic, p: np.ndarray) -> float:
    """Jackknife standard error over replicates (rows of p) of a scalar statistic."""
    replicates = len(p)
    values = np.array([statistic(np.delete(p, r, axis=0)) for r in range(replicates)])
    return float(np.sqrt((replicates - 1) / replicates * np.sum((values - values.mean()) ** 2)))


def variance_term(p: np.ndarray, level: float = stats.LEVEL) -> Term:
    """The mean over points of the replicates' sample variance, with Satterthwaite's χ² interval."""
    z = p - p.mean(axis=0)
    gram = z @ z.T
    replicates, n = p.shape
    value = float(np.trace(gram) / (n * (replicates - 1)))
    squares = float(np.trace(gram @ gram))
    if value <= 0 or squares <= 0:
        return Term(value, 0.0, bounds=(value, value))
    nu = (replicates - 1) * float(np.trace(gram)) ** 2 / squares
    tail = (1 - level) / 2
    bounds = (nu * value / float(sps.chi2.ppf(1 - tail, nu)), nu * value / float(sps.chi2.ppf(tail, nu)))
    return Term(value, value * math.sqrt(2 / nu), nu, bounds)


def _point_se(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def squared_error(predictions: np.ndarray, truth: np.ndarray, labels: np.ndarray, noise_std: float | None = None) -> SquaredDecomposition:
    """Decompose the squared error of `predictions` (R ≥ 2 replicates, n) against the noiseless
    `truth` (n), and check it against the measured loss on `labels` (n)."""
    p = np.asarray(predictions, dtype=np.float64).reshape(len(predictions), -1)
    f = np.asarray(truth, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if len(p) < 2:
        raise ValueError("a decomposition needs at least two replicates")
    bias2, variance = _squared_terms(p, f)
    if len(p) >= 3:
        interval = "bias²: jackknife over replicates; variance: Satterthwaite's χ²"
        bias_se = _jackknife_se(lambda q: _squared_terms(q, f)[0].mean(), p)
    else:
        interval = "bias²: test points; variance: Satterthwaite's χ²"
        bias_se = _point_se(bias2)
    sigma2 = None if noise_std is None else float(noise_std) ** 2
    measured_i = ((p - y) ** 2).mean(axis=0)
    realised_i = measured_i - bias2 - variance - (sigma2 or 0.0)
    df = len(p) - 1 if len(p) >= 3 else float("inf")
    return SquaredDecomposition(
        bias2=Term(float(bias2.mean()), bias_se, df),
        variance=variance_term(p),
        noise=sigma2,
        error_vs_truth=float(np.mean((p - f) ** 2)),
        measured=float(measured_i.mean()),
        realised=Term(float(realised_i.mean()), _point_se(realised_i)),
        interval=interval,
    )


@dataclass(frozen=True)
class ZeroOneDecomposition:
    loss: float  # mean 0-1 loss over replicates and points
    bias: Term  # share of points whose main prediction (the replicates' vote) is wrong: the plug-in
    variance: float  # mean disagreement with the main prediction
    net_variance: float  # the variance term as it enters the loss (see the module doc)
    interval: str

    @property
    def residual(self) -> float:
        """loss − (bias + net variance): zero up to rounding (Domingos' identity)."""
        return self.loss - self.bias.value - self.net_variance


def _vote(p: np.ndarray, classes: int) -> np.ndarray:
    n = p.shape[1]
    votes = np.zeros((n, classes), dtype=np.int64)
    for row in p:
        votes[np.arange(n), row] += 1
    return votes.argmax(axis=1)  # ties go to the smallest class index


def _plug_in_bias(p: np.ndarray, y: np.ndarray, classes: int) -> np.ndarray:
    return (_vote(p, classes) != y).astype(np.float64)


def zero_one(predicted_classes: np.ndarray, labels: np.ndarray) -> ZeroOneDecomposition:
    """Domingos' decomposition of the 0-1 loss of `predicted_classes` (R, n); net variance is
    computed from its definition, so `residual` checks the code, point by point."""
    p = np.asarray(predicted_classes)
    y = np.asarray(labels).ravel()
    classes = int(max(p.max(), y.max())) + 1
    main = _vote(p, classes)
    biased = main != y
    disagreement = (p != main).mean(axis=0)
    right = (p == y).mean(axis=0)  # where the vote is wrong, the disagreeing votes that are right lower the loss
    net = np.where(biased, -right, disagreement)
    bias = biased.astype(np.float64)
    return ZeroOneDecomposition(
        loss=float((p != y).mean()), bias=Term(float(bias.mean()), _point_se(bias)),
        variance=float(disagreement.mean()), net_variance=float(net.mean()), interval="test points",
    )


def classes_from_outputs(outputs: np.ndarray) -> np.ndarray:
    """Predicted classes (replicates, n) from logits (replicates, n, k)."""
    return np.asarray(outputs).argmax(axis=-1)
