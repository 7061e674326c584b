"""The compression claims, each a test under the page's rules. Pure functions of the file rows
(tables.compression_runs of load.SweepRuns.files: one row per compressed file, with its seed) and
the per-example correctness read from the trials' predictions (forgetting.Examples).

The seed is the unit of replication: replicate r of every setting compresses the base trained with
seed + r, so the files of one seed share a base and the seeds are independent. Each claim is
therefore a contrast per seed shared by both sides (the mean over one side's files at that seed
minus the other side's), tested with Student's t over the seeds; an accuracy contrast adds the
test set's own noise, paired per example where both sides' predictions were read (seeds.py), else
the unpaired binomial bound (a control's model logs no predictions). Verdicts come from
verdicts.judge, with Holm's correction over every test on the page and two one-sided tests against
the sweep's smallest effect of interest.

- "Pruning beats training the small model from scratch" (Liu et al. 2019): every channel-pruned
  file (a magnitude or norm criterion) against its own architecture trained from a fresh
  initialisation at the same seed, for as many epochs (Scratch-E) and for the same compute
  (Scratch-B); Liu et al. found scratch training matches or beats pruning.
- "Magnitude beats random": magnitude pruning against random pruning of the same structure and
  sparsity (Blalock et al. 2020's baseline), one claim per structure and sparsity.
- "A large sparse model beats a small dense one at equal bytes" (Zhu & Gupta 2017): each small
  dense file (a shrunk architecture, or an `architecture` trial) against the largest
  unstructured-pruned file of no more gzip bytes at the same seed, chosen by size alone.
- "int4 halves int8's bytes within a point": the 4-bit file of each scheme against the 8-bit one;
  contradicted outright unless at least ABOUT_HALF× smaller, then its accuracy drop tested against
  the smallest effect (two one-sided tests, like the 8-bit claim).
- "Compressed files are faster than the base": each kind of deployable file's latency against its
  own base's float32 file (the seed's `method: none` file), as a log ratio; changes under
  LATENCY_MARGIN are negligible. Where smaller is not faster, the page says so.
- "A distilled student beats the same student on hard labels", seed by seed.
- Dominance of fronts (fronts.py): for each pair of methods, whether one's accuracy–bytes (and
  accuracy–latency) fronts lie beyond the other's, by the hypervolume difference per base.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from study import names
from study.report import forgetting, fronts, seeds, stats, tables, verdicts

ABOUT_HALF = 1.75  # "halves": at least 1.75× smaller (as "about 4×" is at least 3.5×)
LATENCY_MARGIN = math.log(1.10)  # a latency change under 10% is negligible (timings on a shared machine)
SCRATCH = {"scratch_e": "Scratch-E (as many epochs)", "scratch_b": "Scratch-B (the same compute)"}
MAGNITUDE = ("l1", "l2")  # the criteria that rank by a norm, against `random`

STRUCTURE, CRITERION, SPARSITY_PARAM = "params.compress.structure", "params.compress.criterion", "params.compress.sparsity"
BITS, SCHEME = names.column("artifact/bits"), "params.compress.scheme"


def _column(rows: pd.DataFrame, name: str, default=None) -> pd.Series:
    return rows[name] if name in rows else pd.Series(default, index=rows.index, dtype=object)


def _numbers(rows: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(_column(rows, column), errors="coerce")


TestPart = Callable[[list], tuple[float, float, str]]


def contrast(a: pd.DataFrame, value_a: pd.Series, b: pd.DataFrame, value_b: pd.Series, test_part: TestPart | None = None,
             unit: str = "seeds") -> stats.Difference:
    """mean(value_a over A's files) − mean(value_b over B's files) at each seed both have, with
    Student's t over those seeds; `test_part(seeds)` adds the test set's noise (se, df, how)."""
    by_a = value_a.groupby(a["seed"]).mean().dropna()
    by_b = value_b.groupby(b["seed"]).mean().dropna()
    common = sorted(set(by_a.index) & set(by_b.index))
    if not common:
        effect = float(value_a.mean() - value_b.mean())
        return stats.Difference(effect, math.nan, math.nan, "the two sides share no seed")
    d = (by_a[common] - by_b[common]).to_numpy(float)
    effect = float(d.mean())
    if len(d) < 2:
        return stats.Difference(effect, math.nan, math.nan, "one seed: no noise estimate", n=1)
    seed_se, seed_df = float(d.std(ddof=1) / math.sqrt(len(d))), len(d) - 1
    source = f"paired over {len(d)} shared {unit} (Student's t, {seed_df} df)"
    if test_part is None:
        return stats.Difference(effect, seed_se, seed_df, source, n=len(d))
    test_se, test_df, how = test_part(common)
    if not math.isfinite(test_se):
        return stats.Difference(effect, seed_se, seed_df, source + "; the test set's noise unknown", n=len(d))
    se = math.hypot(seed_se, test_se)
    return stats.Difference(effect, se, seeds.welch_df([(seed_se, seed_df), (test_se, test_df)]),
                            f"{source}, plus the test set's noise ({how})", fixed_se=test_se, n=len(d))


def paired_examples(a: pd.DataFrame, b: pd.DataFrame, examples: forgetting.Examples, test_size: float) -> TestPart:
    """The test set's part of an accuracy contrast of two sets of files: paired per example where
    every file's predictions were read (c_i = the contrast of example i's correctness averaged over
    the seeds; se = sd(c)/√n), else two independent binomials (conservative)."""
    def part(common: list) -> tuple[float, float, str]:
        sides = []
        for rows in (a, b):
            rows = rows[rows["seed"].isin(common)]
            correct = examples.of(rows)
            if not len(rows) or any(c is None for c in correct):
                break
            by_seed: dict[int, list] = {}
            for seed, c in zip(rows["seed"], correct):
                by_seed.setdefault(int(seed), []).append(np.asarray(c, float))
            sides.append(np.mean([np.mean(v, axis=0) for v in by_seed.values()], axis=0))
        if len(sides) == 2 and sides[0].shape == sides[1].shape and len(sides[0]) > 1:
            c = sides[0] - sides[1]
            return float(c.std(ddof=1) / math.sqrt(len(c))), len(c) - 1, f"paired over {len(c)} test examples"
        return binomial_part(a, b, test_size)(common)
    return part


def binomial_part(a_rate: pd.DataFrame | float, b_rate: pd.DataFrame | float, test_size: float) -> TestPart:
    """The unpaired bound: two independent binomials on `test_size` examples."""
    def rate(x) -> float:
        return float(x) if not isinstance(x, pd.DataFrame) else float(_numbers(x, tables.ACCURACY).mean())

    def part(common: list) -> tuple[float, float, str]:
        if not (math.isfinite(test_size) and test_size > 0):
            return math.nan, math.nan, ""
        se = math.hypot(stats.binomial_se(rate(a_rate), test_size), stats.binomial_se(rate(b_rate), test_size))
        return se, math.inf, "unpaired binomial bound: no per-example predictions on one side"
    return part


@dataclass(frozen=True)
class Context:
    """What every compression claim reads."""

    files: pd.DataFrame  # tables.compression_runs of the file rows (seed, trial_run_id, label, method)
    examples: forgetting.Examples
    test_size: float
    margin: float  # the smallest effect of interest on accuracy

    @property
    def units(self) -> verdicts._Units:
        return verdicts._Units("classification")


def _points(x: float) -> str:
    return f"{100 * x:+.1f} points"


def _diff_points(d: stats.Difference) -> str:
    return d.text(1, 100, " points")


def _claim(claim: str, quantity: str, diff: stats.Difference, expected: str, evidence: str, ctx: Context, knob: str,
           margin: float | None = None, units: verdicts._Units | None = None) -> verdicts.Claim:
    return verdicts._claim(claim, quantity, diff, expected, evidence, max(1, diff.n), noise="seeds",
                           margin=ctx.margin if margin is None else margin, units=units or ctx.units, knob=knob)


def magnitude(rows: pd.DataFrame) -> pd.Series:
    criterion = _column(rows, CRITERION).fillna("l1").astype(str)
    return criterion.isin(MAGNITUDE)


def pruned(rows: pd.DataFrame) -> pd.Series:
    return rows["method"].isin(["prune", "prune_quantize"])


# --------------------------------------------------------------------------------- the claims
def scratch_claims(ctx: Context) -> list[verdicts.Claim]:
    """Channel pruning against its own architecture from scratch (Liu et al. 2019)."""
    files = ctx.files
    shrunk = files[pruned(files) & (_column(files, STRUCTURE) == "channels") & magnitude(files)]
    claims = []
    for group, name in SCRATCH.items():
        column = names.column(f"{group}/test/accuracy")
        rows = shrunk[_numbers(shrunk, column).notna()] if column in shrunk else shrunk.iloc[0:0]
        if rows.empty:
            continue
        file_acc, scratch_acc = _numbers(rows, tables.ACCURACY), _numbers(rows, column)
        diff = contrast(rows, file_acc - scratch_acc, rows, pd.Series(0.0, index=rows.index),
                        binomial_part(float(file_acc.mean()), float(scratch_acc.mean()), ctx.test_size))
        fractions = _numbers(rows, SPARSITY_PARAM)
        each = "; ".join(f"{f:g} removed: {100 * (file_acc[fractions == f] - scratch_acc[fractions == f]).mean():+.1f}"
                         for f in sorted(fractions.dropna().unique()))
        claims.append(_claim(
            f"pruning beats training the small model from scratch, {name.split(' ')[0]} (Liu et al. 2019)",
            f"test accuracy of the channel-pruned file minus its architecture's from scratch, {name}", diff, "higher",
            f"{len(rows)} channel-pruned files at {fractions.nunique()} fractions against the same architecture from a fresh "
            f"initialisation at the same seed: accuracy {file_acc.mean():.3f} against {scratch_acc.mean():.3f}, difference "
            f"{_diff_points(diff)}; per fraction (points): {each}", ctx, "scratch"))
    return claims


def magnitude_random_claims(ctx: Context) -> list[verdicts.Claim]:
    """Magnitude (or norm) pruning against random pruning of the same kind, at each sparsity."""
    files = ctx.files[pruned(ctx.files)]
    if files.empty or CRITERION not in files:
        return []
    kind = files["method"] + " (" + _column(files, STRUCTURE).fillna("unstructured").astype(str) + ")"
    sparsity = _numbers(files, SPARSITY_PARAM).round(4)
    at_random = _column(files, CRITERION).astype(str) == "random"
    claims = []
    for (k, s), rows in files.groupby([kind, sparsity], sort=True):
        chosen, baseline = rows[magnitude(rows)], rows[at_random.loc[rows.index]]
        if chosen.empty or baseline.empty:
            continue
        a, b = _numbers(chosen, tables.ACCURACY), _numbers(baseline, tables.ACCURACY)
        diff = contrast(chosen, a, baseline, b, paired_examples(chosen, baseline, ctx.examples, ctx.test_size))
        claims.append(_claim(
            f"magnitude beats random: {k} at sparsity {s:g}", "test accuracy, magnitude minus random pruning", diff,
            "higher", f"{k} at {s:g}: magnitude {a.mean():.3f}, random {b.mean():.3f} (means over {a.size} and {b.size} "
            f"files); difference {_diff_points(diff)}", ctx, "magnitude vs random"))
    return claims


def sparse_dense_claim(ctx: Context, gzip: str = tables.SIZE["gzip"]) -> verdicts.Claim | None:
    """Each small dense file against the largest unstructured magnitude-pruned file of no more gzip
    bytes at the same seed (chosen by size, each used once, smallest budgets first)."""
    files = ctx.files
    structure = _column(files, STRUCTURE).fillna("unstructured")
    is_pruned = pruned(files)
    dense_mask = (files["method"] == "architecture") | (is_pruned & (structure == "channels") & magnitude(files))
    sparse_mask = is_pruned & (structure == "unstructured") & magnitude(files)
    gains, dense_rows, sparse_rows = [], [], []
    for _, at_seed in files.groupby("seed", sort=True):
        sparse = at_seed[sparse_mask.loc[at_seed.index]].sort_values(gzip, ascending=False)
        used: set = set()
        for index, small in at_seed[dense_mask.loc[at_seed.index]].sort_values(gzip).iterrows():
            rivals = sparse[(sparse[gzip] <= small[gzip]) & ~sparse.index.isin(used)]
            if not rivals.empty:
                used.add(rivals.index[0])
                dense_rows.append(index)
                sparse_rows.append(rivals.index[0])
                gains.append(float(sparse.loc[rivals.index[0], tables.ACCURACY] - small[tables.ACCURACY]))
    if not gains:
        return None
    dense, sparse = files.loc[dense_rows], files.loc[sparse_rows]
    diff = contrast(dense, pd.Series(gains, index=dense.index), dense, pd.Series(0.0, index=dense.index),
                    paired_examples(sparse, dense, ctx.examples, ctx.test_size))
    wins = int(sum(g > 0 for g in gains))
    return _claim(
        "a large sparse model beats a small dense one at equal memory (Zhu & Gupta 2017)",
        "test accuracy of the largest pruned file of no more gzip bytes (same seed), minus the dense one's", diff, "higher",
        f"for {wins} of {len(gains)} small dense models that pruned file was more accurate; mean difference per seed "
        f"{_diff_points(diff)}", ctx, "sparse vs dense")


def int4_claims(ctx: Context) -> list[verdicts.Claim]:
    """'int4 halves int8's bytes within a point', per quantization scheme that wrote both."""
    files = ctx.files[ctx.files["method"] == "quantize"]
    bits = _numbers(files, BITS)
    scheme = _column(files, SCHEME).fillna("qat").astype(str)
    pairs = [(s, files[(bits == 4) & (scheme == s)], files[(bits == 8) & (scheme == s)]) for s in sorted(set(scheme))]
    pairs = [p for p in pairs if not p[1].empty and not p[2].empty]
    if not pairs and (bits == 4).any() and (bits == 8).any():
        pairs = [("any", files[bits == 4], files[bits == 8])]
    claims = []
    for name, four, eight in pairs:
        size = tables.SIZE["raw"]
        ratio = contrast(eight, np.log(_numbers(eight, size)), four, np.log(_numbers(four, size)))
        times = math.exp(ratio.effect)
        drop = contrast(eight, _numbers(eight, tables.ACCURACY), four, _numbers(four, tables.ACCURACY),
                        paired_examples(eight, four, ctx.examples, ctx.test_size))
        line = stats.Difference(drop.effect - ctx.margin, drop.se, drop.df,
                                f"one-sided test of the drop against the {100 * ctx.margin:g}-point line; {drop.source}",
                                one_sided=True, fixed_se=drop.fixed_se, n=drop.n)
        kinds = ", ".join(sorted(set(_column(four, names.tag_column(names.Tag.ARTIFACT)).dropna().astype(str))))
        evidence = (f"scheme {name} ({kinds or '4-bit file'}): 4-bit files {times:.2f}× smaller than the 8-bit ones (mean over "
                    f"{ratio.n or 1} seeds; halves means ≥ {ABOUT_HALF}×); accuracy {_numbers(eight, tables.ACCURACY).mean():.3f} "
                    f"at 8 bits, {_numbers(four, tables.ACCURACY).mean():.3f} at 4 bits: a drop of {_diff_points(drop)} (within "
                    f"a point means ≤ {100 * ctx.margin:g})")
        claim = f"int4 halves int8's bytes within a point ({name})"
        if times < ABOUT_HALF:
            claims.append(verdicts.Claim(claim, "how many times smaller", times - ABOUT_HALF, times - ABOUT_HALF,
                                         times - ABOUT_HALF, "higher", 0.0, 0.0, "exact (file sizes)", evidence,
                                         knob="int4 vs int8"))
            continue
        claims.append(_claim(claim, f"accuracy drop from 8 to 4 bits minus {100 * ctx.margin:g} point(s)", line, "lower",
                             evidence, ctx, "int4 vs int8"))
    return claims


def latency_table(ctx: Context) -> pd.DataFrame:
    """Each timed setting's latency against its own base's (the seed's `method: none` file): the
    ratio (geometric mean over seeds) with its 95% interval, and its bytes against the base's."""
    files = ctx.files
    latency = _numbers(files, tables.LATENCY)
    base = files[(files["method"] == "none") & latency.notna()]
    if base.empty:
        return pd.DataFrame()
    base_latency = np.log(_numbers(base, tables.LATENCY)).groupby(base["seed"]).mean()
    base_bytes = float(_numbers(base, tables.SIZE["raw"]).mean())
    rows = []
    timed = files[(files["method"] != "none") & latency.notna()]
    for trial, group in timed.groupby("trial", sort=True):
        log_ratio = np.log(_numbers(group, tables.LATENCY)) - group["seed"].map(base_latency)
        diff = stats.paired_differences(log_ratio.dropna().to_numpy())
        low, high = diff.interval() if math.isfinite(diff.se) else (math.nan, math.nan)
        first = group.iloc[0]
        rows.append({"trial": int(trial), "file": first["label"], "kind": _kind(first), "seeds": int(log_ratio.notna().sum()),
                     "latency ratio": math.exp(diff.effect), "latency low": math.exp(low), "latency high": math.exp(high),
                     "bytes ratio": float(_numbers(group, tables.SIZE["raw"]).mean()) / base_bytes,
                     "run": first.get("trial_run_id", first["run_id"])})
    return pd.DataFrame(rows)


def _kind(row: pd.Series) -> str:
    """A file's kind for the latency claims: its label, and its bit-width below 32."""
    bits = pd.to_numeric(row.get(BITS), errors="coerce")
    return str(row["label"]) + (f", {int(bits)}-bit" if pd.notna(bits) and bits < 32 else "")


def latency_claims(ctx: Context) -> list[verdicts.Claim]:
    """'Compressed files are faster than the base', per kind of timed file, as a log ratio."""
    files = ctx.files
    latency = _numbers(files, tables.LATENCY)
    base = files[(files["method"] == "none") & latency.notna()]
    timed = files[(files["method"] != "none") & latency.notna()]
    if base.empty or timed.empty:
        return []
    kinds = timed.apply(_kind, axis=1)
    units = verdicts._Units("regression")  # plain numbers: a log ratio
    claims = []
    for kind, rows in timed.groupby(kinds, sort=True):
        diff = contrast(rows, np.log(_numbers(rows, tables.LATENCY)), base, np.log(_numbers(base, tables.LATENCY)))
        low, high = diff.interval() if math.isfinite(diff.se) else (math.nan, math.nan)
        interval = f" [{math.exp(low):.2f}, {math.exp(high):.2f}]" if math.isfinite(low) else ""
        smaller = float(_numbers(rows, tables.SIZE["raw"]).mean()) < float(_numbers(base, tables.SIZE["raw"]).mean())
        note = "; smaller than the base but not faster" if smaller and diff.effect > 0 else ""
        claims.append(_claim(
            f"compressed files are faster than the base: {kind}",
            "log latency ratio to its own base (ln, same seed; +0.10 is 1.10×)", diff,
            "lower", f"{len(rows)} {kind} files: {math.exp(diff.effect):.2f}× the latency of their own base's float32 file "
            f"(geometric mean over seeds{interval}){note}; a change under {math.exp(LATENCY_MARGIN) - 1:.0%} counts as none",
            ctx, "latency", margin=LATENCY_MARGIN, units=units))
    return claims


def distillation_claim(ctx: Context) -> verdicts.Claim | None:
    """Distilled students against the same students on hard labels, seed by seed."""
    column = names.column("control/test/accuracy")
    students = ctx.files[(ctx.files["method"] == "distill")]
    students = students[_numbers(students, column).notna()] if column in students else students.iloc[0:0]
    if students.empty:
        return None
    a, b = _numbers(students, tables.ACCURACY), _numbers(students, column)
    diff = contrast(students, a - b, students, pd.Series(0.0, index=students.index),
                    binomial_part(float(a.mean()), float(b.mean()), ctx.test_size))
    wins = int(((a - b) > 0).sum())
    return _claim("a distilled student beats the same student trained on hard labels", "test accuracy gain", diff, "higher",
                  f"{wins} of {len(students)} students beat their control (same student, budget and seed); mean gain "
                  f"{_diff_points(diff)}", ctx, "distillation")


# ------------------------------------------------------------------------------------ fronts
@dataclass(frozen=True)
class Fronts:
    """Each method's fronts per base on one cost, their attainment bands and the dominance tests."""

    cost: str  # the column
    name: str  # in words
    reference: tuple[float, float]
    least: float
    by_method: dict  # label -> {seed: (accuracy, cost)}
    bands: dict  # label -> fronts.Band
    tests: list  # fronts.Dominance


def method_fronts(ctx: Context, cost: str, name: str, reference_cost: float) -> Fronts | None:
    """Per method (label), each base's files on accuracy and `cost`; the reference point is
    (chance accuracy, `reference_cost`: the base's own); a pair of methods is tested when both
    have files at every one of at least MIN_BASES shared seeds."""
    files = ctx.files[ctx.files["method"] != "none"]
    value = _numbers(files, cost)
    files = files[value.notna() & (value > 0)]
    if files.empty or not (math.isfinite(reference_cost) and reference_cost > 0):
        return None
    chance = 1.0 / ctx.examples.classes if ctx.examples.classes else 0.0
    reference = (chance, reference_cost)
    least = float(_numbers(files, cost).min())
    by_method: dict = {}
    for label, rows in files.groupby("label", sort=True):
        by_method[label] = {int(s): (_numbers(r, tables.ACCURACY).to_numpy(), _numbers(r, cost).to_numpy())
                            for s, r in rows.groupby("seed", sort=True)}
    bands = {label: fronts.attainment(list(seeds_.values())) for label, seeds_ in by_method.items()}
    tests = []
    for a, b in itertools.combinations(sorted(by_method), 2):
        test = fronts.dominance(a, b, by_method[a], by_method[b], reference, least, name)
        if test.difference.effect < 0:  # name the larger first: "A's fronts lie beyond B's" (the test is two-sided)
            test = fronts.dominance(b, a, by_method[b], by_method[a], reference, least, name)
        tests.append(test)
    return Fronts(cost, name, reference, least, by_method, bands, tests)


def dominance_claims(fronts_: list[Fronts], ctx: Context) -> list[verdicts.Claim]:
    """A claim per pair of methods and cost: A's fronts lie beyond B's (larger hypervolume)."""
    claims = []
    for f in fronts_:
        for t in f.tests:
            # the smallest effect: a front lying `margin` higher over the whole range, as a share of the box
            margin = ctx.margin / (1.0 - f.reference[0])
            shared = t.shared
            evidence = (f"hypervolume per base as a share of the box from (accuracy {f.reference[0]:.3g}, "
                        f"{_cost_text(f.reference[1], f.cost)}) to (accuracy 1, {_cost_text(f.least, f.cost)}), cost on a log "
                        f"scale: {t.a} {np.mean([t.hv_a[s] for s in shared]) if shared else math.nan:.3f}, {t.b} "
                        f"{np.mean([t.hv_b[s] for s in shared]) if shared else math.nan:.3f} (means over {len(shared)} bases); "
                        f"difference {t.difference.text(3)}")
            claims.append(_claim(f"{t.a} dominates {t.b} on accuracy and {f.name}",
                                 f"hypervolume of the fronts (share of the box), {t.a} minus {t.b}", t.difference, "higher",
                                 evidence, ctx, f"fronts ({f.name})", margin=margin, units=verdicts._Units("regression")))
    return claims


def _cost_text(value: float, cost: str) -> str:
    return f"{value * 1000:.3g} µs" if cost == tables.LATENCY else f"{value:,.0f} bytes"
