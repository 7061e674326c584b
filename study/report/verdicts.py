"""The article's claims as tests: each names the quantity it is judged on, measures an effect with
its interval, and comes out confirmed, contradicted or inconclusive after Holm's correction for
the number of claims on the page. Pure functions of the tables (regimes.errors, tables.compression_runs).

- A remedy against overfitting is judged on held-out error (the gap is reported beside it): it
  must lower held-out error, not merely close the gap by raising training error.
- A remedy against underfitting is judged on training error (held-out error beside it).
- Effects compare a knob's lowest and highest setting, averaged over the other knobs (a main
  effect, when both settings meet the same values of the others, as in a grid; otherwise the
  claim is inconclusive); their noise is the pooled spread over seeds within settings, so one
  seed per setting leaves a claim inconclusive. Settings share the test set, whose noise cancels
  in a difference.
- Compression claims about one file (8-bit quantization) use the test set's sampling error;
  claims about a training method (distillation, sparse against dense) need several pairs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import pandas as pd

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
    replicates: int = 1  # per setting, where seeds are the noise; pairs, where pairs are
    noise: str = "seeds"  # 'seeds', 'test set' or 'pairs': what more of would decide an inconclusive claim
    verdict: str = "inconclusive"  # set by judge(): 'confirmed', 'contradicted' or 'inconclusive'
    decide: str = ""  # for an inconclusive verdict: what would decide it

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def judge(claims: list[Claim], alpha: float = stats.ALPHA) -> list[Claim]:
    """Verdicts by Holm's procedure over all `claims` (family-wise level `alpha`)."""
    p_values = [c.p_value for c in claims]
    rejected = stats.holm(p_values, alpha)
    judged = []
    for i, (claim, significant) in enumerate(zip(claims, rejected)):
        if significant and claim.effect != 0:
            agrees = (claim.effect < 0) == (claim.expected == "lower")
            judged.append(replace(claim, verdict="confirmed" if agrees else "contradicted"))
            continue
        judged.append(replace(claim, verdict="inconclusive", decide=_what_decides(claim, stats.holm_level(p_values, i, alpha))))
    return judged


def _what_decides(claim: Claim, level: float) -> str:
    if not math.isfinite(claim.p_value):
        if claim.noise == "pairs":
            return "no noise estimate from one pair: more pairs (settings or seeds)"
        if "unbalanced" in claim.test:
            return "a grid over the knobs, so that both settings meet the same values of the others"
        return "no noise estimate: add replicates (seeds) to the sweep"
    diff = stats.Difference(claim.effect, claim.se, math.inf, "")
    needed = stats.replicates_to_decide(diff, claim.replicates, level)
    what = {"seeds": "replicates per setting", "pairs": "pairs", "test set": "times the test examples"}[claim.noise]
    if needed is None:
        return f"no effect measured: no number of {what} is likely to decide it"
    if needed > 100 * claim.replicates:
        return f"the effect is far smaller than its noise: over 100× the {what} would be needed"
    if claim.noise == "test set":
        return f"about {needed / claim.replicates:.1f} {what} would decide it if the effect is as measured"
    return f"about {needed} {what} would decide it if the effect is as measured (now {claim.replicates})"


def rules_text() -> str:
    return (
        "Each claim is tested on the quantity it names: the effect is the mean at the knob's highest setting minus the "
        "mean at its lowest (averaged over the other knobs, which must take the same values at both, as in a grid); "
        "its 95% interval and two-sided p-value come from the "
        "spread over seeds within settings (Student's t, pooled). A claim is confirmed when the effect is significant "
        "in the claimed direction after Holm's correction for the number of claims on this page (family-wise 5%), "
        "contradicted when it is significant the other way, and inconclusive otherwise (one seed per setting gives no "
        "noise estimate). Claims about one compressed file use the test set's sampling error (the 8-bit claim, whose "
        "'close to float' is a line at 2 points, is two one-sided tests at 5% with a 90% interval); claims about a "
        "training method compare several pairs (Student's t over pairs), and one pair is inconclusive."
    )


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:.3g}"


def _groups(rows: pd.DataFrame, quantity: str) -> stats.Groups:
    std = rows[f"{quantity}_std"] if quantity != "gap" else rows["gap_std"]
    return stats.Groups.of(rows[quantity if quantity == "gap" else f"{quantity}_error"], std, rows["replicates"])


class _Units:
    def __init__(self, task: str):
        self.points = task == "classification"

    def diff(self, d: stats.Difference) -> str:
        return d.text(1, 100, " points") if self.points else d.text(3)

    def value(self, x: float) -> str:
        return f"{x:.3f}"


def main_effect(errs: pd.DataFrame, knob: str, quantity: str, low=None, high=None) -> tuple[stats.Difference, pd.DataFrame, pd.DataFrame]:
    """Mean of `quantity` ('train', 'test' or 'gap') at the knob's `high` minus at its `low`
    setting (default: its extremes), with the seeds' noise; and the rows at each."""
    value = tables.numeric(errs[f"params.{knob}"])
    low = value.min() if low is None else low
    high = value.max() if high is None else high
    at_low, at_high = errs[value == low], errs[value == high]
    diff = stats.seed_difference(_groups(at_low, quantity), _groups(at_high, quantity))
    if not _balanced(errs, knob, at_low, at_high):
        diff = stats.Difference(diff.effect, math.nan, math.nan,
                                "unbalanced design: the other knobs differ between the two settings (not a grid)")
    return diff, at_low, at_high


def _balanced(errs: pd.DataFrame, knob: str, at_low: pd.DataFrame, at_high: pd.DataFrame) -> bool:
    """Whether both settings meet the same values of every other varied setting (a grid does):
    only then is the difference the knob's own effect, averaged over the others."""
    others = [c for c in errs.columns if c.startswith("params.") and c != f"params.{knob}"
              and c not in ("params.seed", "params.replicates") and errs[c].nunique(dropna=False) > 1]
    if not others:
        return True
    combos = lambda rows: sorted(map(tuple, rows[others].astype(str).to_numpy()))  # noqa: E731
    return combos(at_low) == combos(at_high)


def _claim(claim: str, quantity: str, diff: stats.Difference, expected: str, evidence: str, replicates: int,
           noise: str = "seeds") -> Claim:
    # a one-sided test at 5% goes with a 90% interval: it is confirmed exactly when the interval clears the line
    level = 1 - 2 * stats.ALPHA if diff.one_sided else stats.LEVEL
    low, high = diff.interval(level) if math.isfinite(diff.se) else (math.nan, math.nan)
    return Claim(claim, quantity, diff.effect, low, high, expected, diff.p_value, diff.se, diff.source, evidence,
                 replicates, noise)


def remedy_claims(errs: pd.DataFrame, searched: list[str], task: str) -> list[Claim]:
    """The article's remedies this sweep varies, the data-size claim and the epochs warning (unjudged)."""
    units = _Units(task)
    claims = []
    replicates = int(errs["replicates"].min()) if not errs.empty else 1
    for knob in searched:
        column = f"params.{knob}"
        if knob not in REMEDIES or column not in errs or errs[column].nunique() < 2:
            continue
        name, against = REMEDIES[knob]
        test, at_low, at_high = main_effect(errs, knob, "test")
        train, _, _ = main_effect(errs, knob, "train")
        gap, _, _ = main_effect(errs, knob, "gap")
        value = tables.numeric(errs[column])
        span = f"{knob} {_fmt(value.min())} → {_fmt(value.max())} ({len(at_low)} and {len(at_high)} settings)"
        if against == "overfitting":
            claims.append(_claim(
                f"{name} reduces overfitting", "held-out error", test, "lower",
                f"{span}: held-out error {units.value(at_low['test_error'].mean())} → {units.value(at_high['test_error'].mean())}, "
                f"change {units.diff(test)}; the gap changed by {units.diff(gap)} and training error by {units.diff(train)}",
                replicates))
        else:
            claims.append(_claim(
                f"{name} reduces underfitting", "training error", train, "lower",
                f"{span}: training error {units.value(at_low['train_error'].mean())} → {units.value(at_high['train_error'].mean())}, "
                f"change {units.diff(train)}; held-out error changed by {units.diff(test)}",
                replicates))
        if knob == "dataset.train_size":
            claims.append(_claim(
                "too much training data causes overfitting (the article's claim)", "gap (held-out − training error)", gap,
                "higher",
                f"{span}: gap {units.value(at_low['gap'].mean())} → {units.value(at_high['gap'].mean())}, change "
                f"{units.diff(gap)}; held-out error changed by {units.diff(test)}", replicates))
    if "train.epochs" in searched and "params.train.epochs" in errs and errs["params.train.epochs"].nunique() > 2:
        claims.append(epochs_claim(errs, units, replicates))
    return claims


def effects_table(errs: pd.DataFrame, searched: list[str]) -> pd.DataFrame:
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
            diff, at_low, at_high = main_effect(errs, knob, quantity)
            low, high = diff.interval() if math.isfinite(diff.se) else (math.nan, math.nan)
            rows.append({"remedy": remedy, "knob": knob, "quantity": name, "effect": diff.effect, "low": low, "high": high,
                         "settings": f"{len(at_low)} / {len(at_high)}"})
    return pd.DataFrame(rows)


def epochs_claim(errs: pd.DataFrame, units: _Units, replicates: int) -> Claim:
    """'Too many epochs overfit', judged on held-out error: from the epoch count with the lowest
    mean validation error (chosen on validation data, so the test is not biased by the choice) to
    the most epochs."""
    epochs = tables.numeric(errs["params.train.epochs"])
    frame = errs.assign(epochs=epochs)
    means = frame.groupby("epochs")["test_error"].mean()
    chooser = frame.groupby("epochs")["val_error"].mean() if frame["val_error"].notna().all() else means
    best, last = float(chooser.idxmin()), float(means.index.max())  # chosen on validation, tested on held-out
    test, _, at_last = main_effect(errs, "train.epochs", "test", low=best, high=last)
    gap, _, _ = main_effect(errs, "train.epochs", "gap", low=best, high=last)
    evidence = (f"validation error is lowest at {_fmt(best)} epochs (held-out error {units.value(means[best])}); held-out error is "
                f"{units.value(means[last])} at {_fmt(last)}: change {units.diff(test)}; the gap changed by {units.diff(gap)} "
                f"and is {units.value(at_last['gap'].mean())} at {_fmt(last)} epochs")
    if best == last:
        evidence = f"validation error is lowest at the most epochs ({_fmt(last)}): no rise to detect"
    return _claim("too many epochs overfit", "held-out error", test, "higher", evidence, replicates)


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


def paired_claim(claim: str, quantity: str, gains: list[float], evidence: str) -> Claim:
    """A training method against its control over several pairs: mean gain with Student's t over
    pairs; one pair gives no estimate of the noise (seeds, settings) and stays inconclusive."""
    diff = stats.paired_differences(gains)
    return _claim(claim, quantity, diff, "higher", evidence, max(1, len(gains)), noise="pairs")


def distillation_claim(pairs: pd.DataFrame) -> Claim | None:
    if pairs.empty:
        return None
    gains = (pairs["distilled"] - pairs["hard labels only"]).tolist()
    wins = int(sum(g > 0 for g in gains))
    diff = stats.paired_differences(gains)
    return paired_claim("a distilled student beats the same student trained on hard labels", "test accuracy gain", gains,
                        f"{wins} of {len(gains)} students beat their control; mean gain {diff.text(1, 100, ' points')}")


def sparse_dense_claim(comp: pd.DataFrame, accuracy: str, gzip: str) -> Claim | None:
    """Each small dense model (a smaller architecture trained from scratch, or one that structured
    pruning shrank) against the largest unstructured-pruned file of no more gzip bytes (chosen by
    size, never by accuracy, and each pruned file used once, smallest budgets first)."""
    structure = comp.get("params.compress.structure", pd.Series("", index=comp.index)).fillna("")
    pruned = comp["method"].isin(["prune", "prune_quantize"])
    shrunk = pruned & (structure == "channels")
    sparse = comp[pruned & ~shrunk].sort_values(gzip, ascending=False)
    dense = comp[(comp["method"] == "architecture") | shrunk].sort_values(gzip)
    gains: list[float] = []
    used: set = set()
    for _, small in dense.iterrows():
        rivals = sparse[(sparse[gzip] <= small[gzip]) & ~sparse.index.isin(used)]
        if not rivals.empty:
            rival = rivals.index[0]
            used.add(rival)
            gains.append(float(sparse.loc[rival, accuracy] - small[accuracy]))
    if not gains:
        return None
    wins = int(sum(g > 0 for g in gains))
    diff = stats.paired_differences(gains)
    return paired_claim("a large sparse model beats a small dense one at equal memory (Zhu & Gupta 2017)",
                        "test accuracy of the largest pruned file of no more gzip bytes, minus the dense one's", gains,
                        f"for {wins} of {len(gains)} small dense models that pruned file was more accurate; mean "
                        f"difference {diff.text(1, 100, ' points')}")
