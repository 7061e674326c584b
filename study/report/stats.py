"""Uncertainty for the report's conclusions: intervals, tests and a multiple-comparison correction.
Pure NumPy/SciPy, numbers in and numbers out.

Two sources of noise are told apart and named wherever an interval is drawn:
- seeds: a setting trained with R replicates (seeds) gives R values; their spread says how much
  another seed would move the result (Student's t with R − 1 degrees of freedom);
- the test set: a held-out error measured on n examples is a sample of the error on the data
  distribution (binomial for an error rate, the standard error over examples for a mean loss).
Replicates share the test set, so its noise does not show in their spread: an interval for one
setting combines both in quadrature. A comparison of two settings is paired twice over: by seed
(settings share their seeds) and by test example (seeds.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

LEVEL = 0.95  # every interval on the page
ALPHA = 0.05  # family-wise error rate of a page's verdicts (Holm)


@dataclass(frozen=True)
class Estimate:
    """A measured value with its 95% interval and where the interval comes from."""

    value: float
    low: float
    high: float
    source: str  # 'seeds', 'test set', 'seeds + test set' or 'none'

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def t_quantile(df: float, level: float = LEVEL) -> float:
    return float(sps.t.ppf(0.5 + level / 2, df))


def z_quantile(level: float = LEVEL) -> float:
    return float(sps.norm.ppf(0.5 + level / 2))


def sample_std(population_std: float, n: int) -> float:
    """The sample (n − 1) standard deviation from the population one MLflow's `_std` metrics hold."""
    return population_std * math.sqrt(n / (n - 1)) if n > 1 else float("nan")


def binomial_se(rate: float, n: float) -> float:
    """Standard error of an error rate measured on n examples."""
    if not n or not np.isfinite(n) or n <= 0:
        return float("nan")
    return math.sqrt(max(rate * (1 - rate), 0.0) / n)


def wilson(rate: float, n: float, level: float = LEVEL) -> tuple[float, float]:
    """Wilson's score interval for a rate measured on n examples (sound near 0 and 1)."""
    if not n or not np.isfinite(n) or n <= 0:
        return float("nan"), float("nan")
    z = z_quantile(level)
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return min(rate, max(0.0, centre - half)), max(rate, min(1.0, centre + half))  # rounding never excludes the rate


def estimate(mean: float, population_std: float | None, replicates: int, sampling_se: float | None,
             examples: float | None = None) -> Estimate:
    """Mean of a setting's replicates with a 95% interval.

    R ≥ 2 replicates: the seeds' standard error combined in quadrature with the test set's where it
    is known, with Student's t at Welch–Satterthwaite's degrees of freedom. One replicate: the test set's interval alone (Wilson's, for a rate
    measured on `examples` examples), or none. Rates (given `examples`) are clipped to [0, 1].
    """
    rate = examples is not None and np.isfinite(examples) and examples > 0
    seeds = replicates >= 2 and population_std is not None and np.isfinite(population_std)
    sampling = sampling_se is not None and np.isfinite(sampling_se)
    if not seeds:
        if rate:
            assert examples is not None  # narrowed by `rate`
            low, high = wilson(mean, examples)
            return Estimate(mean, low, high, "test set")
        if sampling:
            assert sampling_se is not None  # narrowed by `sampling`
            half = z_quantile() * sampling_se
            return Estimate(mean, mean - half, mean + half, "test set")
        return Estimate(mean, float("nan"), float("nan"), "none")
    assert population_std is not None  # narrowed by `seeds`
    seed_se = sample_std(population_std, replicates) / math.sqrt(replicates)
    test_se = sampling_se if sampling and sampling_se is not None else 0.0
    se = math.hypot(seed_se, test_se)
    # Welch–Satterthwaite: the seeds' part has R − 1 degrees of freedom, the test set's many; adding
    # two half-widths each at its own quantile (t with R − 1 df for the seeds) over-covered (99%)
    df = se**4 / (seed_se**4 / (replicates - 1)) if seed_se > 0 else math.inf
    half = (t_quantile(df) if math.isfinite(df) else z_quantile()) * se
    return _clip(Estimate(mean, mean - half, mean + half, "seeds + test set" if sampling else "seeds"), rate)


def _clip(e: Estimate, rate: bool) -> Estimate:
    return Estimate(e.value, max(0.0, e.low), min(1.0, e.high), e.source) if rate else e


@dataclass(frozen=True)
class Difference:
    """An effect: mean(b) − mean(a), with its standard error, degrees of freedom and p-value
    (two-sided, against no difference)."""

    effect: float
    se: float
    df: float
    source: str  # what the noise estimate comes from
    one_sided: bool = False  # p-value of the one-sided test in the direction the effect lies
    fixed_se: float = 0.0  # the part of `se` that more seeds would not shrink (the test set's)
    n: int = 0  # the independent units (seeds, pairs) whose spread `se` comes from; 0: none counted

    @property
    def statistic(self) -> float:
        return self.effect / self.se if self.se > 0 else (math.inf if self.effect else 0.0)

    @property
    def p_value(self) -> float:
        if not np.isfinite(self.se):
            return float("nan")
        if self.se == 0:
            return 0.0 if self.effect else 1.0
        tail = float(sps.t.sf(abs(self.statistic), self.df)) if np.isfinite(self.df) else float(sps.norm.sf(abs(self.statistic)))
        return tail if self.one_sided else 2 * tail

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        q = t_quantile(self.df, level) if np.isfinite(self.df) else z_quantile(level)
        return self.effect - q * self.se, self.effect + q * self.se

    def text(self, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
        low, high = self.interval()
        if not np.isfinite(self.se):
            return f"{self.effect * scale:+.{digits}f}{unit} (no noise estimate)"
        return f"{self.effect * scale:+.{digits}f}{unit} [{low * scale:+.{digits}f}, {high * scale:+.{digits}f}]"


def equivalence_p(diff: Difference, margin: float) -> float:
    """Two one-sided tests (TOST) of 'the effect lies within ±margin': the larger of the p-values
    of 'effect ≤ −margin' and 'effect ≥ +margin' (NaN without a noise estimate or a margin)."""
    if not (np.isfinite(diff.se) and np.isfinite(margin) and margin > 0 and np.isfinite(diff.effect)):
        return float("nan")
    if diff.se == 0:
        return 0.0 if abs(diff.effect) < margin else 1.0
    dist = sps.t(diff.df) if np.isfinite(diff.df) else sps.norm
    return float(max(dist.sf((diff.effect + margin) / diff.se), dist.cdf((diff.effect - margin) / diff.se)))


def seeds_to_decide(diff: Difference, seeds: int, level: float, margin: float, limit: int = 1000) -> tuple[int | None, str]:
    """The fewest seeds (up to `limit`) at which an effect as measured, with the seeds' spread as
    measured, would be significant at `level` (two-sided) or shown within ±`margin` (two
    one-sided tests at `level`), and which; (None, why) when no number of seeds would. The test
    set's part of the noise (`diff.fixed_se`) does not shrink with seeds."""
    if not (np.isfinite(diff.se) and diff.se > 0 and seeds >= 1):
        return None, "no noise estimate"
    seed_var = max(diff.se**2 - diff.fixed_se**2, 0.0) * seeds
    effect = abs(diff.effect)
    for n in range(seeds + 1, limit + 1):
        se = math.sqrt(seed_var / n + diff.fixed_se**2)
        if effect > t_quantile(n - 1, 1 - level) * se:
            return n, "significant"
        if np.isfinite(margin) and effect + float(sps.t.ppf(1 - level, n - 1)) * se < margin:
            return n, "negligible"
    never_significant = effect <= z_quantile(1 - level) * diff.fixed_se
    never_negligible = not np.isfinite(margin) or effect + z_quantile(1 - 2 * level) * diff.fixed_se >= margin
    if diff.fixed_se > 0 and never_significant and never_negligible:
        return None, "the test set's own noise is too large for any number of seeds: a larger test set"
    return None, f"more than {limit} seeds"


def paired_differences(values) -> Difference:
    """Mean of k paired differences, with Student's t over the pairs (k ≥ 2)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return Difference(float(values.mean()) if len(values) else float("nan"), float("nan"), float("nan"), "one pair")
    return Difference(float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values))), len(values) - 1,
                      f"Student's t over {len(values)} pairs", n=len(values))


def holm(p_values: list[float], alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down procedure: which hypotheses are rejected at family-wise level `alpha`.
    NaN p-values (no test possible) are never rejected and do not count as tests."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if np.isfinite(p))
    m = len(indexed)
    rejected = [False] * len(p_values)
    for rank, (p, i) in enumerate(indexed):
        if p > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected


def holm_level(p_values: list[float], index: int, alpha: float = ALPHA) -> float:
    """The level the `index`-th hypothesis was (or would next be) compared with under Holm."""
    finite = sorted(p for p in p_values if np.isfinite(p))
    m = len(finite)
    if not m or not np.isfinite(p_values[index]):
        return alpha
    rank = finite.index(p_values[index])
    return alpha / (m - rank)


def replicates_to_decide(diff: Difference, replicates: int, alpha: float) -> int | None:
    """Roughly how many replicates per setting would make this effect significant at `alpha`, if
    the true effect is the one measured (the standard error shrinks as 1/√R); None if it is zero."""
    if not np.isfinite(diff.se) or diff.se <= 0 or diff.effect == 0:
        return None
    needed = replicates * (z_quantile(1 - alpha) / abs(diff.statistic)) ** 2
    return max(replicates + 1, int(math.ceil(needed)))
