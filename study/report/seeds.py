"""Effects measured seed by seed: the seed is the unit of replication. Pure NumPy and pandas.

Why. Replicate r of every setting trains with seed + r, so the settings of a sweep share their
seeds (common random numbers): at one seed, two settings that barely differ give near-copies of
one model. The models of a sweep are therefore not independent draws, and a test that pools the
spread within settings as if they were (8 settings × R seeds at each level of a knob counted as
8·R independent models) has a standard error several times too small; a blocked ANOVA with the
residual as error is worse (identical settings make the residuals zero). What is independent is
the seed: seed s draws its initialisations, batch orders, dropout masks (and, with train_size or
label_noise, its training set) once for every setting.

So an effect is a per-seed contrast. For each shared seed s,
    d_s = mean over the settings at the high level of (error at seed s)
        − mean over the settings at the low level of (error at seed s),
and the d_s of different seeds are independent and identically distributed whatever the other
knobs do: the knob × seed interaction is the error term. Their mean is the effect; Student's t
over the R values (R − 1 degrees of freedom) tests it. That is the paired t-test, valid under
common random numbers exactly because the pairing is by seed, and it needs no assumption about
how alike the settings are: near-copies give near-equal d_s and a small but honest spread.

A held-out error is also measured on a finite test set that every setting shares. The seeds'
spread says how much another seed would move the contrast on *this* test set; how much another
test set would move it comes from the per-example predictions every replicate logs: with
c_i = the contrast of the example-i errors (averaged over the seeds), its standard error is
sd(c_i)/√n. The two add in quadrature (Welch–Satterthwaite degrees of freedom); that counts the
seed × example interaction twice, a little, on the conservative side. Without predictions (a
sweep too large to read them all) the test set's part is the unpaired bound of two binomials,
more conservative still, and the test says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from study.report import stats

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Seeds:
    """Every replicate's errors: `rows` has run_id (the trial's run), seed, train_error,
    val_error, test_error; `examples` maps a trial's run id to (seeds (R,), per-example test
    errors (R, n)) where its predictions were read."""

    rows: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["run_id", "seed", *[f"{s}_error" for s in SPLITS]]))
    examples: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    test_size: float = float("nan")  # examples in the test split (for the unpaired bound)
    classification: bool = True  # error rates (a binomial bound exists) or squared errors

    wide: dict[str, pd.DataFrame] = field(default_factory=dict, compare=False, repr=False)  # quantity -> run × seed

    def errors(self, run_ids, quantity: str, settings=None) -> pd.DataFrame:
        """A (run, seed) table of `quantity` ('train', 'test', 'val' or 'gap') for these runs; with
        `settings` (a key per run), one row per setting, its runs' seeds together (rounds of
        added seeds are runs of their own)."""
        if quantity not in self.wide:
            rows = self.rows
            value = rows["test_error"] - rows["train_error"] if quantity == "gap" else rows[f"{quantity}_error"]
            self.wide[quantity] = rows.assign(value=value).groupby(["run_id", "seed"])["value"].mean().unstack("seed")
        table = self.wide[quantity]
        run_ids = list(run_ids)
        wanted = [r for r in dict.fromkeys(run_ids) if r in table.index]
        if settings is None:
            return table.loc[wanted]
        key = dict(zip(run_ids, settings))
        return table.loc[wanted].groupby([key[r] for r in wanted], sort=False).mean()


def example_errors(outputs: np.ndarray, y_test: np.ndarray) -> np.ndarray:
    """Per-example test errors (R, n) of R replicates' outputs (R, n, k): 0/1 misclassification
    for classification (k > 1), squared error for regression (k = 1)."""
    outputs = np.asarray(outputs)
    if outputs.ndim == 3 and outputs.shape[-1] > 1:
        return (outputs.argmax(axis=-1) != np.asarray(y_test).reshape(1, -1)).astype(np.float32)
    return ((outputs.reshape(outputs.shape[0], -1) - np.asarray(y_test, dtype=float).reshape(1, -1)) ** 2).astype(np.float32)


def shared_seeds(low: pd.DataFrame, high: pd.DataFrame) -> list:
    """The seeds every run at both levels was measured with."""
    both = pd.concat([low, high])
    return [s for s in both.columns if both[s].notna().all()]


def contrast(seeds: Seeds, low_runs, high_runs, quantity: str, low_settings=None, high_settings=None) -> stats.Difference:
    """mean(high) − mean(low) of `quantity`, tested over the shared seeds (see the module's
    docstring); held-out quantities add the test set's noise. With settings (a key per run), the
    runs of one setting count as one, their seeds together."""
    low, high = seeds.errors(low_runs, quantity, low_settings), seeds.errors(high_runs, quantity, high_settings)
    if low.empty or high.empty:
        return stats.Difference(math.nan, math.nan, math.nan, "no replicate measured")
    common = shared_seeds(low, high)
    if not common:
        effect = float(high.stack().mean() - low.stack().mean())
        return stats.Difference(effect, math.nan, math.nan, "the two levels share no seed")
    d = (high[common].mean(axis=0) - low[common].mean(axis=0)).to_numpy(float)
    effect = float(d.mean())
    if len(d) < 2:
        return stats.Difference(effect, math.nan, math.nan, "one seed: no noise estimate", n=len(d))
    seed_se, seed_df = float(d.std(ddof=1) / math.sqrt(len(d))), len(d) - 1
    source = f"paired over {len(d)} shared seeds (Student's t, {seed_df} df)"
    if quantity not in ("test", "gap"):
        return stats.Difference(effect, seed_se, seed_df, source, n=len(d))
    test_se, test_df, how = _test_set_se(seeds, list(low_runs), list(high_runs), common, low_settings, high_settings)
    if not math.isfinite(test_se):
        return stats.Difference(effect, seed_se, seed_df, source + "; the test set's noise unknown", n=len(d))
    se = math.hypot(seed_se, test_se)
    df = welch_df([(seed_se, seed_df), (test_se, test_df)])
    return stats.Difference(effect, se, df, f"{source}, plus the test set's noise ({how})", fixed_se=test_se, n=len(d))


def welch_df(parts: list[tuple[float, float]]) -> float:
    """Welch–Satterthwaite degrees of freedom of a sum of independent variance estimates."""
    total = sum(se**2 for se, _ in parts)
    denominator = sum(se**4 / df for se, df in parts if se > 0 and df > 0)
    return total**2 / denominator if denominator > 0 else math.inf


def _test_set_se(seeds: Seeds, low_runs: list, high_runs: list, common: list, low_settings=None, high_settings=None
                 ) -> tuple[float, float, str]:
    """The contrast's standard error from the test set's examples: paired per example where every
    run's predictions are at hand, else two independent binomials (or NaN for squared error)."""
    level_means = []
    for runs, settings in ((low_runs, low_settings), (high_runs, high_settings)):
        by_setting: dict = {}
        for run_id, key in zip(runs, settings if settings is not None else runs):
            saved = seeds.examples.get(run_id)
            if saved is None:
                break
            rows = by_setting.setdefault(key, {})
            rows.update({int(seed): errors for seed, errors in zip(saved[0], saved[1])})
        else:
            if all(all(int(seed) in rows for seed in common) for rows in by_setting.values()) and by_setting:
                level_means.append(np.mean([np.mean([rows[int(seed)] for seed in common], axis=0)
                                            for rows in by_setting.values()], axis=0))
                continue
        break
    if len(level_means) == 2 and level_means[0].shape == level_means[1].shape and len(level_means[0]) > 1:
        c = level_means[1] - level_means[0]
        return float(c.std(ddof=1) / math.sqrt(len(c))), len(c) - 1, f"paired over {len(c)} test examples"
    n = seeds.test_size
    rows = seeds.rows
    rates = [rows.loc[rows["run_id"].isin(runs), "test_error"].mean() for runs in (low_runs, high_runs)]
    if not (seeds.classification and math.isfinite(n) and n > 0):
        return math.nan, math.nan, ""
    se = math.hypot(stats.binomial_se(rates[0], n), stats.binomial_se(rates[1], n))
    return se, math.inf, "unpaired binomial bound: predictions not read"


def split_errors(frame: pd.DataFrame, classification: bool) -> pd.DataFrame:
    """Each split's error of MLflow rows: 1 − accuracy (classification) or the mean squared error."""
    out = pd.DataFrame(index=frame.index)
    for split in SPLITS:
        column = f"metrics.{split}/accuracy" if classification else f"metrics.{split}/loss"
        values = pd.to_numeric(frame[column], errors="coerce") if column in frame else pd.Series(np.nan, index=frame.index)
        out[f"{split}_error"] = 1.0 - values if classification else values
    return out


def seed_rows(trials: pd.DataFrame, replicates: pd.DataFrame, classification: bool) -> pd.DataFrame:
    """One row per finished replicate of every finished trial: run_id (the trial's run), seed and
    each split's error. A trial with one replicate is its own replicate (seed: its `seed` param,
    plus its `round` of added seeds); with several, its replicate runs (nested under it) carry
    `replicate_seed`."""
    columns = ["run_id", "seed", *[f"{s}_error" for s in SPLITS]]
    if trials.empty or "state" not in trials:
        return pd.DataFrame(columns=columns)
    done = trials[trials["state"] == "finished"]
    count = pd.to_numeric(done.get("params.replicates", pd.Series(1, index=done.index)), errors="coerce").fillna(1)
    single = done[count <= 1]
    round_ = pd.to_numeric(single.get("params.round", pd.Series(0, index=single.index)), errors="coerce").fillna(0)
    parts = [pd.concat([pd.DataFrame({"run_id": single["run_id"],
                                      "seed": pd.to_numeric(single.get("params.seed"), errors="coerce") + round_}),
                        split_errors(single, classification)], axis=1)]
    several = set(done.loc[count > 1, "run_id"])
    parent = "tags.mlflow.parentRunId"
    if not replicates.empty and parent in replicates:
        finished = replicates[(replicates[parent].isin(several)) &
                              (replicates.get("tags.study.state", pd.Series("finished", index=replicates.index)) == "finished")]
        parts.append(pd.concat([pd.DataFrame({"run_id": finished[parent],
                                              "seed": pd.to_numeric(finished.get("params.replicate_seed"), errors="coerce")}),
                                split_errors(finished, classification)], axis=1))
    rows = pd.concat(parts, ignore_index=True)
    return rows.dropna(subset=["seed", "train_error", "test_error"]).astype({"seed": int})[columns].reset_index(drop=True)
