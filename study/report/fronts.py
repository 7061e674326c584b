"""Pareto fronts with uncertainty, over the bases of a compression sweep. Pure NumPy.

Replicate r of a compression sweep compresses the base trained with seed + r, so every method has
one accuracy–cost front per base (cost: gzip bytes, or latency). A front drawn from all the files
at once mixes bases; these functions keep them apart:

- `front`: one base's non-dominated files (higher accuracy, lower cost);
- `attainment`: at each cost, the accuracy each base's front attains (the best accuracy of a file
  of no more cost), so that over R bases the band from the worst to the best is what every base,
  and what at least one base, attained (the empirical attainment function's 1/R and R/R surfaces,
  López-Ibáñez et al. 2010), with the median between;
- `hypervolume`: the area a front dominates up to a reference point, in accuracy × decades of
  cost (costs on a log scale, as the charts draw them);
- `dominance`: whether method A's fronts lie beyond method B's, tested base by base: the
  hypervolume difference HV(A) − HV(B) of each base is one independent draw (the base is the unit
  of replication, as the seed is for every claim on the page), tested with Student's t over the
  bases. Fewer than 3 bases give no test. A bootstrap over so few bases is not used: with 3 bases
  it has 10 distinct resamples and calls any three differences of one sign significant (a null
  with a symmetric difference does that a quarter of the time); Student's t with 2 degrees of
  freedom asks for a consistent difference over the spread instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from study.report import stats

MIN_BASES = 3  # a dominance test needs at least this many bases


def front(accuracy, cost) -> np.ndarray:
    """The non-dominated points of one base, (k, 2) columns accuracy and cost, by cost ascending:
    no other point has both higher accuracy and lower cost (ties keep one)."""
    points = np.column_stack([np.asarray(accuracy, float), np.asarray(cost, float)])
    points = points[np.isfinite(points).all(axis=1)]
    if not len(points):
        return points.reshape(0, 2)
    order = np.lexsort((-points[:, 0], points[:, 1]))  # cost ascending, then accuracy descending
    kept, best = [], -math.inf
    for accuracy_, cost_ in points[order]:
        if accuracy_ > best:
            kept.append((accuracy_, cost_))
            best = accuracy_
    return np.array(kept, dtype=float)


def hypervolume(accuracy, cost, reference: tuple[float, float]) -> float:
    """The area the points dominate, bounded by `reference` = (accuracy, cost): only accuracy
    above and cost below it counts; cost on a log10 scale, so the unit is accuracy × decades."""
    ref_accuracy, ref_cost = reference
    points = front(accuracy, cost)
    if not len(points):
        return 0.0
    keep = (points[:, 0] > ref_accuracy) & (points[:, 1] < ref_cost) & (points[:, 1] > 0)
    height = points[keep, 0] - ref_accuracy
    saved = math.log10(ref_cost) - np.log10(points[keep, 1])  # decades below the reference cost
    order = np.argsort(-saved)
    area, best = 0.0, 0.0
    for i, index in enumerate(order):
        best = max(best, height[index])
        following = saved[order[i + 1]] if i + 1 < len(order) else 0.0
        area += best * (saved[index] - following)
    return float(area)


@dataclass(frozen=True)
class Band:
    """Attainment over bases at each cost of `costs`: each base's front (R, G) and, over the
    bases, the worst (attained by all), the median and the best (attained by at least one)."""

    costs: np.ndarray
    attained: np.ndarray  # (R, G): base r's best accuracy at no more than that cost (NaN: nothing yet)
    worst: np.ndarray
    median: np.ndarray
    best: np.ndarray


def attainment(fronts: list[tuple[np.ndarray, np.ndarray]], costs=None) -> Band:
    """The attainment band of several bases' files, each given as (accuracy, cost) arrays."""
    if costs is None:
        costs = np.unique(np.concatenate([np.asarray(c, float) for _, c in fronts])) if fronts else np.array([])
    costs = np.asarray(costs, float)
    attained = np.full((len(fronts), len(costs)), np.nan)
    for r, (accuracy, cost) in enumerate(fronts):
        points = front(accuracy, cost)
        for g, c in enumerate(costs):
            within = points[points[:, 1] <= c, 0]
            if len(within):
                attained[r, g] = within.max()
    # a cost where some base has no file yet: that base attains nothing there (the band's floor is open)
    floor = np.where(np.isnan(attained), -np.inf, attained)
    worst = floor.min(axis=0) if len(fronts) else np.array([])
    worst = np.where(np.isfinite(worst), worst, np.nan)
    with np.errstate(all="ignore"):
        median = np.median(floor, axis=0) if len(fronts) else np.array([])
    median = np.where(np.isfinite(median), median, np.nan)
    best = np.nanmax(np.where(np.isnan(attained), -np.inf, attained), axis=0) if len(fronts) else np.array([])
    best = np.where(np.isfinite(best), best, np.nan)
    return Band(costs, attained, worst, median, best)


@dataclass(frozen=True)
class Dominance:
    """Method A's fronts against method B's, base by base."""

    a: str
    b: str
    cost: str  # what the cost axis is, in words
    reference: tuple[float, float]  # (accuracy, cost) that bounds the hypervolume
    box: float  # hypervolume of the whole box, from the reference to (accuracy 1, the least cost)
    hv_a: dict  # base seed -> hypervolume of A's front
    hv_b: dict
    difference: stats.Difference  # mean over bases of HV(A) − HV(B), as a share of the box

    @property
    def bases(self) -> int:
        return len(self.shared)

    @property
    def shared(self) -> list:
        return [s for s in self.hv_a if s in self.hv_b]


def dominance(a: str, b: str, fronts_a: dict, fronts_b: dict, reference: tuple[float, float], least_cost: float,
              cost: str = "gzip bytes") -> Dominance:
    """HV(A) − HV(B) per shared base (each given as {seed: (accuracy, cost)}), as a share of the
    box from `reference` to (accuracy 1, `least_cost`), with Student's t over the bases."""
    box = (1.0 - reference[0]) * max(math.log10(reference[1]) - math.log10(least_cost), 1e-12)
    hv_a = {s: hypervolume(fronts_a[s][0], fronts_a[s][1], reference) / box for s in sorted(fronts_a)}
    hv_b = {s: hypervolume(fronts_b[s][0], fronts_b[s][1], reference) / box for s in sorted(fronts_b)}
    shared = [s for s in hv_a if s in hv_b]
    d = np.array([hv_a[s] - hv_b[s] for s in shared], dtype=float)
    if len(d) < MIN_BASES:
        diff = stats.Difference(float(d.mean()) if len(d) else math.nan, math.nan, math.nan,
                                f"{len(d)} shared base(s): a dominance test needs at least {MIN_BASES}", n=len(d))
    else:
        diff = stats.Difference(float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))), len(d) - 1,
                                f"hypervolume difference per base, Student's t over {len(d)} bases ({len(d) - 1} df)",
                                n=len(d))
    return Dominance(a, b, cost, reference, box, hv_a, hv_b, diff)
