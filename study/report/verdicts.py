"""The article's claims as tests: each names the quantity it is judged on, measures an effect with
its interval, and comes out confirmed, contradicted, negligible or inconclusive after Holm's
correction over every test on the page. Pure functions of the tables (regimes.errors,
seeds.Seeds, tables.compression_runs).

- A remedy against overfitting is judged on held-out error (the gap is reported beside it): it
  must lower held-out error, not merely close the gap by raising training error.
- A remedy against underfitting is judged on training error (held-out error beside it).
- Effects compare a knob's lowest and highest setting, averaged over the other knobs (a main
  effect, when both settings meet the same values of the others, as in a grid; otherwise the
  claim is inconclusive). The unit of replication is the seed, shared by every setting: the
  effect is tested over the per-seed contrasts (seeds.py says why that is valid under common
  random numbers and a pooled within-setting spread is not), and a held-out error adds the test
  set's own noise from the paired per-example predictions.
- Practical significance: each claim has a smallest effect of interest (`smallest_effect` in the
  sweep file; else 1 point of error rate, or 10% of the noise variance σ² for squared error). Two
  one-sided tests show an effect negligible when its whole 90% interval lies within ± that.
- Compression claims about one file (8-bit quantization) use the test set's sampling error;
  the claims about compression methods (compressed.py) contrast files seed by seed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd

from study.report import seeds as seed_contrasts
from study.report import stats, tables

# The article's remedies, filed where they act (the article swaps its two lists).
REMEDIES = {
    "dataset.train_size": ("more training data", "overfitting"),
    "model.l1": ("L1 weight penalty", "overfitting"),
    "model.l2": ("L2 weight penalty", "overfitting"),
    "model.dropout": ("dropout", "overfitting"),
    "train.early_stopping.enabled": ("early stopping", "overfitting"),
    "model.width": ("more units per layer", "underfitting"),
    "model.depth": ("more layers", "underfitting"),
    "model.poly_degree": ("more features (polynomial)", "underfitting"),
    "train.epochs": ("more epochs", "underfitting"),
}
CLOSE_TO_FLOAT = 0.02  # "accuracy close to float": at most 2 points below the float32 base
ABOUT_4X = 3.5  # "about 4× smaller": at least 3.5×
SMALLEST_RATE_EFFECT = 0.01  # 1 point of error rate (or accuracy): smaller changes are not worth acting on
SMALLEST_SHARE_OF_NOISE = 0.10  # squared error: 10% of the noise variance σ²
SMALLEST_SHARE_OF_CHANCE = 0.01  # squared error without a known σ²: 1% of a constant guess's error
VERDICTS = ("confirmed", "contradicted", "negligible", "inconclusive")


@dataclass(frozen=True)
class Claim:
    claim: str  # what the article says
    quantity: str  # what the verdict is judged on
    effect: float  # the measured effect on that quantity (claim direction: `expected`)
    low: float  # its 95% interval
    high: float
    expected: str  # 'lower' or 'higher': the sign the claim predicts
    p_value: float  # two-sided, against no effect; NaN where no test is possible
    se: float  # the effect's standard error (NaN: no noise estimate)
    test: str  # how the p-value was computed
    evidence: str  # the numbers, in words
    replicates: int = 1  # the seeds (or pairs) the noise comes from
    noise: str = "seeds"  # 'seeds', 'test set' or 'pairs': what more of would decide an inconclusive claim
    verdict: str = "inconclusive"  # set by judge(): one of VERDICTS
    decide: str = ""  # for an inconclusive verdict: what would decide it
    needed: int | None = None  # for an inconclusive verdict: about how many seeds (or pairs) would decide it
    margin: float = math.nan  # the smallest effect of interest (NaN: no equivalence test)
    p_negligible: float = math.nan  # two one-sided tests of |effect| < margin
    fixed_se: float = 0.0  # the part of `se` more seeds would not shrink (the test set's)
    df: float = math.nan  # degrees of freedom of `se`
    scale: float = 1.0  # to print the quantity: 100 for error rates in points
    unit: str = ""  # ' points' for error rates
    knob: str = ""  # the swept setting the claim is about, where it is one

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}

    def difference(self) -> stats.Difference:
        return stats.Difference(self.effect, self.se, self.df, self.test, fixed_se=self.fixed_se, n=self.replicates)


def judge(claims: list[Claim], alpha: float = stats.ALPHA) -> list[Claim]:
    """Verdicts by Holm's procedure over every test on the page (family-wise level `alpha`): two
    per claim, against no effect and (where the claim has a margin) against an effect of at least
    the margin. Negligible wins over significant: a real effect smaller than matters is negligible."""
    p_values = [p for c in claims for p in (c.p_value, c.p_negligible)]
    rejected = stats.holm(p_values, alpha)
    judged = []
    for i, claim in enumerate(claims):
        significant, negligible = rejected[2 * i], rejected[2 * i + 1]
        if negligible:
            judged.append(replace(claim, verdict="negligible"))
        elif significant and claim.effect != 0:
            agrees = (claim.effect < 0) == (claim.expected == "lower")
            judged.append(replace(claim, verdict="confirmed" if agrees else "contradicted"))
        else:
            level = stats.holm_level(p_values, 2 * i, alpha)
            needed = stats.seeds_to_decide(claim.difference(), claim.replicates, level, claim.margin)[0] \
                if claim.noise != "test set" and math.isfinite(claim.p_value) else None
            judged.append(replace(claim, verdict="inconclusive", decide=_what_decides(claim, level), needed=needed))
    return judged


def _what_decides(claim: Claim, level: float) -> str:
    what = {"seeds": "seeds per setting", "pairs": "pairs", "test set": "times the test examples"}[claim.noise]
    if not math.isfinite(claim.p_value):
        if claim.noise == "pairs":
            return "no noise estimate from one pair: more pairs (settings or seeds)"
        if "unbalanced" in claim.test:
            return "a grid over the knobs, so that both settings meet the same values of the others"
        if "share no seed" in claim.test:
            return "the settings share no seed: run them with the same sweep seed and replicates"
        return "no noise estimate: add replicates (seeds) to the sweep"
    diff = claim.difference()
    if claim.noise == "test set":
        needed = stats.replicates_to_decide(diff, claim.replicates, level)
        if needed is None:
            return "no effect measured: no test set is likely to decide it"
        return f"about {needed / claim.replicates:.1f} {what} would decide it if the effect is as measured"
    few = ""
    if math.isfinite(claim.df) and claim.df < 3:
        q = stats.t_quantile(claim.df, 1 - level)
        few = (f"{claim.replicates} {claim.noise} leave the test {claim.df:.1f} degrees of freedom: at this claim's level "
               f"(p < {level:.2g}, Holm) the effect would have to exceed {q:.0f} standard errors. ")
    needed, why = stats.seeds_to_decide(diff, claim.replicates, level, claim.margin)
    if needed is None:
        return few + (f"no number of {what} up to 1000 would decide it" if why.startswith("more than") else why)
    shown = "significant" if why == "significant" else f"within ±{claim.margin * claim.scale:.3g}{claim.unit} (negligible)"
    return (few + f"about {needed} {what} would decide it (now {claim.replicates}), if the effect and the spread are as "
            f"measured: the effect would then be {shown}")


WHY = {
    "confirmed": "the change is significant in the claimed direction",
    "contradicted": "the change is significant, and the other way",
}


def sentence(c: Claim) -> str:
    """The claim, its verdict, the effect with its interval and why, as a person would say it."""
    def amount(x: float) -> str:
        return f"{x * c.scale:+.{1 if c.unit else 3}f}"

    if c.test.startswith("exact"):  # decided by file sizes, not by a test: the numbers say it
        return f"{c.claim[:1].upper()}{c.claim[1:]}: {c.verdict}. {c.evidence.split(';')[0][:1].upper()}{c.evidence.split(';')[0][1:]}."

    if math.isfinite(c.low):
        change = f"{c.quantity} changed by {amount(c.effect)}{c.unit} (95% interval {amount(c.low)} to {amount(c.high)})"
    else:
        change = f"{c.quantity} changed by {amount(c.effect)}{c.unit}, with no interval"
    if c.verdict == "negligible":
        why = (f"the whole interval of the equivalence test lies within ±{c.margin * c.scale:.3g}{c.unit}, the smallest "
               "change worth acting on")
    elif c.verdict in WHY:
        why = WHY[c.verdict]
    else:
        why = "too uncertain to call" + (f": about {c.needed} {'pairs' if c.noise == 'pairs' else 'seeds per setting'} "
                                         "would decide it" if c.needed else "")
    return f"{c.claim[:1].upper()}{c.claim[1:]}: {c.verdict}. The {change}; {why}."


def rules_text() -> str:
    return (
        "Each claim is tested on the quantity it names: the effect is the mean at the knob's highest setting minus the "
        "mean at its lowest (averaged over the other knobs, which must take the same values at both, as in a grid). "
        "The unit of replication is the seed: replicate r of every setting trains with the same seed, so the effect is "
        "measured seed by seed (the high settings' mean minus the low settings' mean at each shared seed) and tested with "
        "Student's t over those per-seed contrasts (R − 1 degrees of freedom for R seeds); a held-out error adds the test "
        "set's own noise, from the per-example predictions of both levels (paired). Each claim has a smallest effect of "
        "interest (the sweep file's smallest_effect; else 1 point of error rate or accuracy, or 10% of the noise "
        "variance σ² for a squared error). Two tests per claim, Holm's correction over every test on this page "
        "(family-wise 5%): confirmed when the effect is significant in the claimed direction, contradicted when "
        "significant the other way, negligible when two one-sided tests place it within ± the smallest effect of "
        "interest (its 90% interval lies inside that band), and inconclusive otherwise, with roughly how many seeds "
        "would decide it. Claims about one compressed file use the test set's sampling error (the 8-bit claim, whose "
        "'close to float' is a line at 2 points, is two one-sided tests at 5% with a 90% interval). Claims about "
        "compression methods contrast files seed by seed: each seed compressed its own base, so the mean over one side's "
        "files at a seed minus the other side's is one independent draw, tested with Student's t over the seeds (plus "
        "the test set's noise for accuracy: paired per example where both sides logged predictions, else the unpaired "
        "binomial bound); one seed gives no test."
    )


CALIBRATION = Path(__file__).with_name("calibration.json")  # written by benchmarks/calibration.py --save


def calibration_text(path: Path = CALIBRATION) -> str:
    """The engine's measured error rates, from the last calibration shipped with the package."""
    try:
        c = json.loads(path.read_text())
        share = lambda pair: f"{pair[0]} of {pair[1]} ({pair[0] / pair[1]:.0%})" if pair[1] else "none"  # noqa: E731
        coverage = "; ".join(f"{q} {share(v)}" for q, v in sorted(c["mean_coverage"].items()))
        return (
            f"How often these rules err, measured by `{c['command']}` on {c['date']} ({c['machine']}), with "
            f"{c['seeds']} seeds per setting: null grids (knobs that do nothing) carried a confirmed or contradicted claim "
            f"in {share(c['false_verdicts'])} (target at most 5%); 95% intervals of their differences held the true 0 in "
            f"{share(c['null_difference_coverage'])}; 95% intervals of a setting's mean error held its mean over all grids "
            f"in {coverage}; a planted effect of {100 * c['planted_effect']:+.1f} points of held-out error was confirmed in "
            f"{share(c['power'])} of grids (the power at that effect with {c['seeds']} seeds)."
        )
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return "No calibration of these rules ships with this version (benchmarks/calibration.py --save measures one)."


def looks_text(looks: int, rounds: list[dict]) -> str:
    """What `study run --until-decided` did, and why the page tests at α / looks."""
    said = (f"This study was run until its claims were decided (study run --until-decided) and may look at them up to "
            f"{looks} times: to keep the family-wise error rate with that optional stopping, every look, this page "
            f"included, tests at {stats.ALPHA:.0%} / {looks} = {stats.ALPHA / looks:.3g} (Bonferroni over looks).")
    if not rounds:
        return said + " No seeds were added: every claim was decided, or none could be within the budget."
    added = "; ".join(f"Round {r['round']}: seeds {r['first_seed']}–{r['first_seed'] + r['seeds'] - 1} added to each of "
                      f"{r['settings']} settings, because {', '.join(repr(c) for c in r['claims'])} "
                      f"{'was' if len(r['claims']) == 1 else 'were'} undecided" for r in rounds)
    return f"{said} {added}."


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:.3g}"


class _Units:
    def __init__(self, task: str):
        self.points = task == "classification"
        self.scale, self.unit = (100.0, " points") if self.points else (1.0, "")

    def diff(self, d: stats.Difference) -> str:
        return d.text(1, 100, " points") if self.points else d.text(3)

    def value(self, x: float) -> str:
        return f"{x:.3f}"


def smallest_effect(errs: pd.DataFrame, task: str) -> float:
    """The smallest effect of interest on an error: the sweep file's `smallest_effect`, else 1 point
    of error rate, or for squared error a share of the noise variance σ² (of chance without it)."""
    given = tables.numeric(errs["params.smallest_effect"]).dropna() if "params.smallest_effect" in errs else pd.Series()
    if len(given):
        return float(given.iloc[0])
    if task == "classification":
        return SMALLEST_RATE_EFFECT
    reference = pd.to_numeric(errs.get("reference", pd.Series(dtype=float)), errors="coerce").dropna()
    reference = reference[reference > 0]
    if len(reference):
        return SMALLEST_SHARE_OF_NOISE * float(reference.iloc[0])
    chance = pd.to_numeric(errs.get("chance", pd.Series(dtype=float)), errors="coerce").dropna()
    return SMALLEST_SHARE_OF_CHANCE * float(chance.iloc[0]) if len(chance) else math.nan


def main_effect(errs: pd.DataFrame, seeds: seed_contrasts.Seeds, knob: str, quantity: str, low=None, high=None
                ) -> tuple[stats.Difference, pd.DataFrame, pd.DataFrame]:
    """Mean of `quantity` ('train', 'test' or 'gap') at the knob's `high` minus at its `low`
    setting (default: its extremes), tested over the shared seeds; and the rows at each."""
    value = tables.numeric(errs[f"params.{knob}"])
    low = value.min() if low is None else low
    high = value.max() if high is None else high
    at_low, at_high = errs[value == low], errs[value == high]
    keys = settings(errs)
    diff = seed_contrasts.contrast(seeds, at_low["run_id"], at_high["run_id"], quantity, keys[at_low.index], keys[at_high.index])
    if not _balanced(errs, knob, at_low, at_high):
        diff = stats.Difference(diff.effect, math.nan, math.nan,
                                "unbalanced design: the other knobs differ between the two settings (not a grid)")
    return diff, at_low, at_high


NOT_KNOBS = ("params.seed", "params.replicates", "params.round")  # a trial's seeds, not its setting


def settings(errs: pd.DataFrame) -> pd.Series:
    """Each trial's setting, as a key: its varied params other than its seeds (a setting's rounds
    of added seeds are trials of their own)."""
    varied = [c for c in errs.columns if c.startswith("params.") and c not in NOT_KNOBS and errs[c].nunique(dropna=False) > 1]
    if not varied:
        return pd.Series("all", index=errs.index)
    return errs[varied].astype(str).agg("|".join, axis=1)


def _balanced(errs: pd.DataFrame, knob: str, at_low: pd.DataFrame, at_high: pd.DataFrame) -> bool:
    """Whether both settings meet the same values of every other varied setting (a grid does):
    only then is the difference the knob's own effect, averaged over the others."""
    others = [c for c in errs.columns if c.startswith("params.") and c != f"params.{knob}"
              and c not in NOT_KNOBS and errs[c].nunique(dropna=False) > 1]
    if not others:
        return True
    combos = lambda rows: sorted(set(map(tuple, rows[others].astype(str).to_numpy())))  # noqa: E731
    return combos(at_low) == combos(at_high)


def _claim(claim: str, quantity: str, diff: stats.Difference, expected: str, evidence: str, replicates: int,
           noise: str = "seeds", margin: float = math.nan, units: _Units | None = None, knob: str = "") -> Claim:
    # a one-sided test at 5% goes with a 90% interval: it is confirmed exactly when the interval clears the line
    level = 1 - 2 * stats.ALPHA if diff.one_sided else stats.LEVEL
    low, high = diff.interval(level) if math.isfinite(diff.se) else (math.nan, math.nan)
    margin = math.nan if diff.one_sided else margin
    scale, unit = (units.scale, units.unit) if units else (1.0, "")
    return Claim(claim, quantity, diff.effect, low, high, expected, diff.p_value, diff.se, diff.source, evidence,
                 diff.n or replicates, noise, margin=margin, p_negligible=stats.equivalence_p(diff, margin),
                 fixed_se=diff.fixed_se, df=diff.df, scale=scale, unit=unit, knob=knob)


def remedy_claims(errs: pd.DataFrame, seeds: seed_contrasts.Seeds, searched: list[str], task: str) -> list[Claim]:
    """The article's remedies this sweep varies, the data-size claim and the epochs warning (unjudged)."""
    units = _Units(task)
    margin = smallest_effect(errs, task)
    claims: list[Claim] = []
    replicates = int(errs["replicates"].min()) if not errs.empty else 1
    resplit = "params.dataset.resplit" in errs and errs["params.dataset.resplit"].astype(str).eq("True").all()
    for knob in searched:
        column = f"params.{knob}"
        if knob not in REMEDIES or column not in errs or errs[column].nunique() < 2:
            continue
        name, against = REMEDIES[knob]
        test, at_low, at_high = main_effect(errs, seeds, knob, "test")
        train, _, _ = main_effect(errs, seeds, knob, "train")
        gap, _, _ = main_effect(errs, seeds, knob, "gap")
        value = tables.numeric(errs[column])
        span = f"{knob} {_fmt(value.min())} → {_fmt(value.max())} ({len(at_low)} and {len(at_high)} settings)"
        if against == "overfitting":
            claims.append(_claim(
                f"{name} reduces overfitting", "held-out error", test, "lower",
                f"{span}: held-out error {units.value(at_low['test_error'].mean())} → {units.value(at_high['test_error'].mean())}, "
                f"change {units.diff(test)}; the gap changed by {units.diff(gap)} and training error by {units.diff(train)}",
                replicates, margin=margin, units=units, knob=knob))
        else:
            claims.append(_claim(
                f"{name} reduces underfitting", "training error", train, "lower",
                f"{span}: training error {units.value(at_low['train_error'].mean())} → {units.value(at_high['train_error'].mean())}, "
                f"change {units.diff(train)}; held-out error changed by {units.diff(test)}",
                replicates, margin=margin, units=units, knob=knob))
        if knob == "dataset.train_size":
            claims.append(_claim(
                "too much training data causes overfitting (the article's claim)", "gap (held-out − training error)", gap,
                "higher",
                f"{span}: gap {units.value(at_low['gap'].mean())} → {units.value(at_high['gap'].mean())}, change "
                f"{units.diff(gap)}; held-out error changed by {units.diff(test)}", replicates, margin=margin, units=units,
                knob=knob))
    if "train.epochs" in searched and "params.train.epochs" in errs and errs["params.train.epochs"].nunique() > 2:
        claims.append(epochs_claim(errs, seeds, units, replicates, margin))
    if resplit:  # the seed drew the split too: the effect is averaged over splits as well as initialisations
        claims = [replace(c, test=c.test + "; each seed also re-drew the training/validation split") for c in claims]
    return claims


def effects_table(errs: pd.DataFrame, seeds: seed_contrasts.Seeds, searched: list[str]) -> pd.DataFrame:
    """Each remedy knob's main effect (highest minus lowest setting) on training error, held-out
    error and the gap, with 95% intervals over seeds: rows remedy, knob, quantity, effect, low, high."""
    rows = []
    for knob in searched:
        column = f"params.{knob}"
        if knob not in REMEDIES or column not in errs or errs[column].nunique() < 2:
            continue
        value = tables.numeric(errs[column])
        remedy = f"{REMEDIES[knob][0]} ({knob} {_fmt(value.min())} → {_fmt(value.max())})"
        for quantity, name in (("train", "training error"), ("test", "held-out error"), ("gap", "gap")):
            diff, at_low, at_high = main_effect(errs, seeds, knob, quantity)
            low, high = diff.interval() if math.isfinite(diff.se) else (math.nan, math.nan)
            rows.append({"remedy": remedy, "knob": knob, "quantity": name, "effect": diff.effect, "low": low, "high": high,
                         "settings": f"{len(at_low)} / {len(at_high)}"})
    return pd.DataFrame(rows)


def epochs_claim(errs: pd.DataFrame, seeds: seed_contrasts.Seeds, units: _Units, replicates: int, margin: float) -> Claim:
    """'Too many epochs overfit', judged on held-out error: from the epoch count with the lowest
    mean validation error (chosen on validation data, so the test is not biased by the choice) to
    the most epochs."""
    epochs = tables.numeric(errs["params.train.epochs"])
    frame = errs.assign(epochs=epochs)
    means = frame.groupby("epochs")["test_error"].mean()
    chooser = frame.groupby("epochs")["val_error"].mean() if frame["val_error"].notna().all() else means
    best, last = float(chooser.idxmin()), float(means.index.max())  # chosen on validation, tested on held-out
    test, _, at_last = main_effect(errs, seeds, "train.epochs", "test", low=best, high=last)
    gap, _, _ = main_effect(errs, seeds, "train.epochs", "gap", low=best, high=last)
    evidence = (f"validation error is lowest at {_fmt(best)} epochs (held-out error {units.value(means[best])}); held-out error is "
                f"{units.value(means[last])} at {_fmt(last)}: change {units.diff(test)}; the gap changed by {units.diff(gap)} "
                f"and is {units.value(at_last['gap'].mean())} at {_fmt(last)} epochs")
    if best == last:
        evidence = f"validation error is lowest at the most epochs ({_fmt(last)}): no rise to detect"
    return _claim("too many epochs overfit", "held-out error", test, "higher", evidence, replicates, margin=margin, units=units,
                  knob="train.epochs")


# ------------------------------------------------------------------------------ compression
def quantization_claim(comp: pd.DataFrame, base_accuracy: float, test_size: float, accuracy: str) -> Claim | None:
    """'8-bit: about 4× smaller, accuracy close to float', on the smallest 8-bit file (chosen by
    size, never by accuracy): contradicted outright if it is under ABOUT_4X smaller; else its
    accuracy drop is tested against CLOSE_TO_FLOAT with the test set's sampling error, one-sided
    either way (within the line: confirmed; beyond it: contradicted)."""
    int8 = comp[(comp["method"] == "quantize") & (comp.get("metrics.artifact/bits") == 8)]
    if int8.empty or not math.isfinite(base_accuracy):
        return None
    smallest = int8.loc[pd.to_numeric(int8["metrics.artifact/size_bytes"]).idxmin()]
    ratio = float(smallest["metrics.artifact/compression_ratio"])
    drop = base_accuracy - float(smallest[accuracy])
    se = math.hypot(stats.binomial_se(base_accuracy, test_size), stats.binomial_se(float(smallest[accuracy]), test_size))
    # Two one-sided tests (TOST, an equivalence claim), each at 5%: "the drop is under 2 points"
    # (confirmed) against "it is over" (contradicted); with the 90% interval they agree with.
    diff = stats.Difference(drop - CLOSE_TO_FLOAT, se, math.inf,
                            "one-sided z-test against the 2-point line; test-set binomial errors of both files, "
                            "taken as independent (conservative: both run on the same examples)", one_sided=True)
    name = smallest.get("tags.study.artifact", "") or "8-bit file"
    evidence = (f"smallest 8-bit file ({name}): {ratio:.2f}× smaller than the float32 base (about 4× means ≥ {ABOUT_4X}×); "
                f"accuracy {float(smallest[accuracy]):.3f} against {base_accuracy:.3f}, a drop of {100 * drop:.1f} points "
                f"(close means ≤ {100 * CLOSE_TO_FLOAT:.0f}); drop − {100 * CLOSE_TO_FLOAT:.0f} points = "
                f"{100 * diff.effect:+.1f} points, 90% interval [{100 * diff.interval(0.90)[0]:+.1f}, "
                f"{100 * diff.interval(0.90)[1]:+.1f}]")
    if ratio < ABOUT_4X:
        return Claim("8-bit quantization: about 4× smaller with accuracy close to float", "compression ratio", ratio - ABOUT_4X,
                     ratio - ABOUT_4X, ratio - ABOUT_4X, "higher", 0.0, 0.0, "exact (file sizes)", evidence)
    return _claim("8-bit quantization: about 4× smaller with accuracy close to float",
                  "accuracy drop minus 2 points", diff, "lower", evidence, 1, noise="test set")
