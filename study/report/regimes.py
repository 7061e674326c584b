"""Each trial's regime from its own numbers, with their uncertainty; the interpolation threshold
and double descent along a knob. Pure functions of the runs DataFrame (see load.py).

Error is 1 − accuracy (classification) or the mean squared error (regression); held-out means the
fixed test split. Two questions are asked of every finished trial, each with a 95% interval
(stats.estimate: over seeds with replicates, over the test set's examples without):

1. Does it fit its training data? Its training error is compared with a reference, the error a
   model should reach on this data: the sweep file's `reference_error` if given, else the data's
   noise floor where its making says it (the fraction of flipped training labels, 0 for exact
   labels; the known noise variance of generated regression data). underfit: the whole interval
   lies above reference + FIT_MARGIN; fits: the whole interval lies at or below it; borderline:
   the interval straddles it. With no reference (a user's CSV), a training error within the margin
   of chance (a constant guess) is underfit, and otherwise the question stays unanswered.
2. Does it generalise? The gap, held-out − training error: overfit when the whole interval lies
   above GAP_LIMIT, generalises when it lies below, borderline otherwise.

Both can fail at once ('underfit and overfit'). A trial whose training error is within
INTERPOLATION of zero interpolates its training data. The label: underfit / overfit / both when a
question fails; good fit when it fits and generalises; inconclusive otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from study.report import seeds as seed_contrasts
from study.report import stats

FIT_MARGIN = {"classification": 0.05, "regression": 0.25}  # absolute error rate / share of the reference
GAP_LIMIT = {"classification": 0.10, "regression": 0.50}  # absolute error rate / share of the reference
INTERPOLATION = {"classification": 0.01, "regression": 0.01}  # absolute error rate / share of the reference
NOISELESS_MARGIN = 0.05  # regression on noiseless data (reference 0): underfit above 5% of chance

ADVICE = {
    "underfit": "more capacity (layers, units), better features (e.g. polynomial), or longer training",
    "overfit": "more training data, L1/L2 penalties, dropout, or early stopping",
    "underfit and overfit": "it neither fits its training data nor carries what it learns over: a model that "
                            "suits the data better, and more data",
    "good fit": "keep it: this is the balance the article aims for",
    "inconclusive": "its intervals straddle a threshold: more replicates (or a larger test set) would decide",
}
# Knobs whose growth moves a model towards interpolating its training data, and those that move it away.
TOWARDS_INTERPOLATION = ("model.width", "model.depth", "model.poly_degree", "model.width_multiplier", "train.epochs",
                         "model/params")
AWAY_FROM_INTERPOLATION = ("dataset.train_size", "dataset.label_noise", "model.l1", "model.l2", "model.dropout")


def task_of(runs: pd.DataFrame) -> str:
    return "classification" if "metrics.test/accuracy" in runs.columns else "regression"


def error_name(task: str) -> str:
    return "error rate (1 − accuracy)" if task == "classification" else "mean squared error"


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(frame[name], errors="coerce") if name in frame else pd.Series(np.nan, index=frame.index)


def errors(runs: pd.DataFrame) -> pd.DataFrame:
    """Finished trials with each split's error, the gap, their 95% intervals, the reference and
    replicates: columns train_error, train_low, train_high (and test_, gap_, val_error), replicates,
    reference, reference_source, chance."""
    if runs.empty or "state" not in runs:
        return pd.DataFrame()
    done = runs[runs["state"] == "finished"].copy()
    task = task_of(runs)
    classification = task == "classification"
    done[[f"{split}_error" for split in seed_contrasts.SPLITS]] = seed_contrasts.split_errors(done, classification)
    for split in seed_contrasts.SPLITS:
        done[f"{split}_std"] = _column(done, f"metrics.{split}/{'accuracy' if classification else 'loss'}_std")
    done["gap"] = done["test_error"] - done["train_error"]
    done["gap_std"] = _column(done, "metrics.gap/accuracy_std" if classification else "metrics.gap/loss_std")
    done["replicates"] = _column(done, "params.replicates").fillna(1).astype(int)
    done = done.dropna(subset=["train_error", "test_error"]).reset_index(drop=True)
    if done.empty:
        return done
    sizes = {split: _column(done, f"metrics.data/{split}_size") for split in ("train", "test")}
    loss_se = {split: _column(done, f"metrics.{split}/loss_se") for split in ("train", "test")}
    for split in ("train", "test"):
        _put(done, split, [
            _estimate(error, std, r, count, se, classification)
            for error, std, r, count, se in zip(done[f"{split}_error"], done[f"{split}_std"], done["replicates"],
                                                 sizes[split], loss_se[split])
        ])
    gaps = []
    for gap, gap_std, r, test_error, count, se in zip(done["gap"], done["gap_std"], done["replicates"], done["test_error"],
                                                       sizes["test"], loss_se["test"]):
        test_se = stats.binomial_se(test_error, count) if classification else se
        gaps.append(stats.estimate(gap, gap_std, r, test_se))
    _put(done, "gap", gaps)
    done["reference"], done["reference_source"] = _references(done)
    done["chance"] = _column(done, "metrics.data/chance_error")
    return done


def _estimate(mean, std, replicates, examples, loss_se, classification) -> stats.Estimate:
    if classification:  # an error rate: Wilson's interval with one replicate, kept within [0, 1]
        se = stats.binomial_se(mean, examples)
        e = stats.estimate(mean, std, replicates, se if np.isfinite(se) else None,
                           examples if replicates < 2 and np.isfinite(se) else None)
        return stats.Estimate(e.value, max(0.0, e.low), min(1.0, e.high), e.source) if np.isfinite(e.low) else e
    e = stats.estimate(mean, std, replicates, loss_se if np.isfinite(loss_se) else None)
    return stats.Estimate(e.value, max(0.0, e.low), e.high, e.source) if np.isfinite(e.low) else e  # a mean square


def _put(frame: pd.DataFrame, name: str, estimates: list[stats.Estimate]) -> None:
    frame[f"{name}_low"] = [e.low for e in estimates]
    frame[f"{name}_high"] = [e.high for e in estimates]
    frame[f"{name}_interval"] = [e.source for e in estimates]


def _references(done: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    given = _column(done, "params.reference_error")
    floor = _column(done, "metrics.data/noise_floor")
    reference = given.where(given.notna(), floor)
    source = pd.Series(np.where(given.notna(), "the sweep file's reference_error",
                                np.where(floor.notna(), "the data's noise floor", "none")), index=done.index)
    return reference, source


# ---------------------------------------------------------------------------------- regimes
@dataclass(frozen=True)
class Rules:
    """The thresholds of one task, as numbers and as the sentence the page prints."""

    task: str

    def fit_limit(self, reference: float, chance: float) -> float:
        if self.task == "classification":
            return reference + FIT_MARGIN[self.task]
        if reference > 0:
            return reference * (1 + FIT_MARGIN[self.task])
        return NOISELESS_MARGIN * chance  # noiseless data: a share of a constant guess's error

    def gap_limit(self, reference: float, train_error: float) -> float:
        if self.task == "classification":
            return GAP_LIMIT[self.task]
        scale = reference if np.isfinite(reference) and reference > 0 else train_error
        return GAP_LIMIT[self.task] * scale

    def interpolation_limit(self, reference: float, chance: float) -> float:
        if self.task == "classification":
            return INTERPOLATION[self.task]
        scale = reference if np.isfinite(reference) and reference > 0 else chance
        return INTERPOLATION[self.task] * scale

    def text(self) -> str:
        c = self.task == "classification"
        margin = f"{FIT_MARGIN[self.task]:.0%} (absolute)" if c else \
            f"{FIT_MARGIN[self.task]:.0%} of the reference (with a reference of 0, {NOISELESS_MARGIN:.0%} of chance)"
        gap = f"{GAP_LIMIT[self.task]:.0%} (absolute)" if c else \
            f"{GAP_LIMIT[self.task]:.0%} of the reference (of the training error where there is none)"
        interp = f"{INTERPOLATION[self.task]:.0%}" if c else \
            f"{INTERPOLATION[self.task]:.0%} of the reference (of chance where the reference is 0 or unknown)"
        return (
            "Every interval is 95%: with replicates, the seeds' and the test set's standard errors combined (Student's t at "
            "Welch–Satterthwaite's degrees of freedom); over the test set's examples alone with one replicate. "
            f"Fit: a trial is underfit when its whole training-error interval lies more than {margin} above the "
            "reference error (the sweep file's reference_error, else the data's noise floor: the share of flipped "
            "training labels, 0 for exact labels, or the known noise variance); it fits when the whole interval lies "
            "at or below that line, and is borderline otherwise; with no reference, a training error within the "
            "margin of chance (a constant guess) is underfit. "
            f"Generalisation: overfit when the whole interval of the gap (held-out − training error) lies above "
            f"{gap}, generalises when it lies below, borderline otherwise. "
            "Label: underfit, overfit, or 'underfit and overfit' when a question fails; good fit when it fits and "
            f"generalises; inconclusive otherwise. Interpolating: training error within {interp} of zero."
        )


def regimes(errs: pd.DataFrame, task: str) -> pd.DataFrame:
    """Per trial: fit ('underfit', 'fits', 'borderline', 'unknown'), generalisation ('overfit',
    'generalises', 'borderline'), interpolating (bool), regime (the label) and the limits used."""
    if errs.empty:
        return pd.DataFrame(columns=["fit", "generalisation", "interpolating", "regime", "fit_limit", "gap_limit"])
    rules = Rules(task)
    rows = []
    for _, r in errs.iterrows():
        reference, chance = r["reference"], r["chance"]
        low, high = _bounds(r, "train")
        if np.isfinite(reference):
            limit = rules.fit_limit(reference, chance)
            fit = "underfit" if low > limit else "fits" if high <= limit else "borderline"
        elif np.isfinite(chance):
            limit = chance - FIT_MARGIN[task] if task == "classification" else chance * (1 - FIT_MARGIN[task])
            fit = "underfit" if low > limit else "unknown"
        else:
            limit, fit = np.nan, "unknown"
        gap_limit = rules.gap_limit(reference, r["train_error"])
        g_low, g_high = _bounds(r, "gap")
        generalisation = "overfit" if g_low > gap_limit else "generalises" if g_high <= gap_limit else "borderline"
        interpolating = bool(r["train_error"] <= rules.interpolation_limit(reference, chance))
        rows.append({"fit": fit, "generalisation": generalisation, "interpolating": interpolating,
                     "regime": label(fit, generalisation), "fit_limit": limit, "gap_limit": gap_limit})
    return pd.DataFrame(rows, index=errs.index)


def _bounds(row: pd.Series, name: str) -> tuple[float, float]:
    """The interval of `name`, or the point itself where no interval could be formed."""
    value, low, high = row[f"{name}_error" if name != "gap" else "gap"], row[f"{name}_low"], row[f"{name}_high"]
    return (low, high) if np.isfinite(low) and np.isfinite(high) else (value, value)


def label(fit: str, generalisation: str) -> str:
    underfit, overfit = fit == "underfit", generalisation == "overfit"
    if underfit and overfit:
        return "underfit and overfit"
    if underfit:
        return "underfit"
    if overfit:
        return "overfit"
    if fit == "fits" and generalisation == "generalises":
        return "good fit"
    return "inconclusive"


# ------------------------------------------------------------------ interpolation and descent
@dataclass(frozen=True)
class Descent:
    """Along one knob (one series of settings): where training error reaches zero, and whether
    held-out error peaks near there beyond its intervals (double descent)."""

    knob: str
    threshold: float | None  # the first knob value, in the direction of interpolation, that interpolates
    peak: float | None  # the knob value of a significant held-out error peak, if any
    text: str  # what the page says

    @property
    def double_descent(self) -> bool:
        return self.peak is not None


def descent(table: pd.DataFrame, knob: str, seeds: seed_contrasts.Seeds | None = None) -> Descent:
    """`table`: one row per knob value, with columns value, interpolating, test_error, test_low,
    test_high, test_std (population, over seeds) and replicates. The threshold is where
    interpolation starts when moving in the knob's direction towards interpolation (growing
    capacity or epochs, shrinking data). A peak is the value with the highest held-out error within
    two values of the threshold that is significantly above the best value on each side of it
    (error rises, then falls): by the paired test over shared seeds (seeds.contrast, with the test
    set's noise) where `seeds` holds the runs' replicates (column `runs`), by non-overlapping
    test-set intervals without."""
    if table.empty or len(table) < 2:
        return Descent(knob, None, None, "")
    ordered = table.sort_values("value", ascending=knob not in AWAY_FROM_INTERPOLATION).reset_index(drop=True)
    interpolates = ordered["interpolating"].to_numpy(dtype=bool)
    if not interpolates.any():
        return Descent(knob, None, None, f"No setting along {knob} interpolates its training data (training error ≈ 0).")
    if interpolates.all():
        return Descent(knob, None, None, f"Every setting along {knob} interpolates its training data.")
    first = int(np.argmax(interpolates))
    if first == 0:
        return Descent(knob, None, None, f"Interpolation along {knob} does not set in at one point.")
    threshold = float(ordered.loc[first, "value"])
    text = f"Interpolation threshold: training error reaches ≈ 0 from {knob} = {threshold:g}."
    window = ordered.iloc[max(0, first - 2): first + 3]
    candidate = int(window["test_error"].idxmax())
    before, after = ordered.iloc[:candidate], ordered.iloc[candidate + 1:]
    if before.empty or after.empty:
        return Descent(knob, threshold, None, text + " Held-out error shows no peak near it (its maximum is at an end).")
    peak = ordered.loc[candidate]
    sides = [before.loc[before["test_error"].idxmin()], after.loc[after["test_error"].idxmin()]]
    rises = [_significantly_above(peak, side, seeds) for side in sides]
    numbers = "; ".join(f"{knob} = {row['value']:g}: {row['test_error']:.3f}" for row in (sides[0], peak, sides[1]))
    if all(ok for ok, _ in rises):
        how = rises[0][1]
        return Descent(knob, threshold, float(peak["value"]),
                       text + f" Double descent: held-out error falls, peaks at {knob} = {peak['value']:g} near the "
                       f"threshold and falls again ({numbers}); the peak is above both sides ({how}).")
    return Descent(knob, threshold, None,
                   text + f" Held-out error has no significant peak near it ({numbers}; {rises[0][1]}).")


def _significantly_above(peak: pd.Series, side: pd.Series, seeds: seed_contrasts.Seeds | None) -> tuple[bool, str]:
    """Whether `peak`'s held-out error is significantly above `side`'s, and the test used."""
    if seeds is not None and "runs" in peak and peak["replicates"] >= 2 and side["replicates"] >= 2:
        diff = seed_contrasts.contrast(seeds, side["runs"], peak["runs"], "test",
                                       ["side"] * len(side["runs"]), ["peak"] * len(peak["runs"]))
        if np.isfinite(diff.se):
            return diff.p_value < stats.ALPHA and diff.effect > 0, f"{diff.source}, 5% level"
    return bool(peak["test_low"] > side["test_high"]), "95% test-set intervals that do not overlap"
