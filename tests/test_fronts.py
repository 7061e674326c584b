"""Pareto fronts with uncertainty, dominance tests, forgotten examples and the compression claims,
on hand-made files whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from study.report import compressed, forgetting, fronts, tables, verdicts

pytestmark = pytest.mark.unit  # pure logic: no TensorFlow, no store


# ------------------------------------------------------------------------------------ fronts
def test_the_front_keeps_only_files_no_other_beats_on_both():
    points = fronts.front([0.9, 0.8, 0.95, 0.7, 0.9], [100, 50, 400, 60, 200])
    assert points.tolist() == [[0.8, 50], [0.9, 100], [0.95, 400]]


def test_hypervolume_is_the_area_of_the_steps_up_to_the_reference():
    # reference (accuracy 0.5, 1000 bytes): a file at 100 bytes saves one decade, at 10 bytes two
    assert fronts.hypervolume([0.9], [100], (0.5, 1000)) == pytest.approx(0.4 * 1)
    assert fronts.hypervolume([0.9, 0.7], [100, 10], (0.5, 1000)) == pytest.approx(0.4 * 1 + 0.2 * 1)
    assert fronts.hypervolume([0.9, 0.7, 0.6], [100, 10, 50], (0.5, 1000)) == pytest.approx(0.6), "a dominated file adds nothing"
    assert fronts.hypervolume([0.4, 0.9], [10, 2000], (0.5, 1000)) == 0.0, "below chance or beyond the reference: nothing"


def test_the_attainment_band_runs_from_the_worst_base_to_the_best():
    band = fronts.attainment([(np.array([0.8, 0.9]), np.array([10, 100])),
                              (np.array([0.7, 0.95]), np.array([10, 100])),
                              (np.array([0.6]), np.array([50]))])
    assert band.costs.tolist() == [10, 50, 100]
    assert np.isnan(band.worst[0]), "the third base has no file of 10 bytes: nothing is attained by every base there"
    assert band.worst[1:].tolist() == [0.6, 0.6]
    assert band.best.tolist() == [0.8, 0.8, 0.95]
    assert band.median.tolist() == [0.7, 0.7, 0.9]


def _fronts_of(rng, shift: float, seeds: int, base_effect=None) -> dict:
    """A method's files per base: accuracies on a concave curve of log bytes, plus the base's own
    offset (shared by every method at that seed) and noise."""
    found = {}
    for s in range(seeds):
        cost = np.array([2_000, 5_000, 10_000, 20_000, 40_000], float)
        offset = base_effect[s] if base_effect is not None else 0.0
        accuracy = 0.55 + 0.08 * np.log10(cost / 1_000) + shift + offset + rng.normal(0, 0.02, len(cost))
        found[s] = (np.clip(accuracy, 0, 1), cost)
    return found


def test_a_method_whose_front_lies_higher_at_every_base_dominates():
    rng = np.random.default_rng(0)
    bases = rng.normal(0, 0.03, 5)
    better, worse = _fronts_of(rng, 0.10, 5, bases), _fronts_of(rng, 0.0, 5, bases)
    test = fronts.dominance("A", "B", better, worse, (0.1, 50_000), 2_000)
    claim = verdicts.judge(compressed.dominance_claims([_as_fronts(test)], _ctx()))[0]
    assert test.difference.effect > 0 and claim.verdict == "confirmed"


def test_two_bases_give_no_dominance_test():
    rng = np.random.default_rng(1)
    test = fronts.dominance("A", "B", _fronts_of(rng, 0.2, 2), _fronts_of(rng, 0.0, 2), (0.1, 50_000), 2_000)
    assert not math.isfinite(test.difference.se) and "at least 3" in test.difference.source
    assert verdicts.judge(compressed.dominance_claims([_as_fronts(test)], _ctx()))[0].verdict == "inconclusive"


@pytest.mark.parametrize("bases", [3, 5])
def test_methods_that_do_not_differ_are_not_called_dominant(bases):
    """The null: A and B drawn alike at every base (the base's own offset shared). The larger mean is
    named A, so a test that ignored that choice would confirm half of them; Student's t over bases,
    two-sided, confirms at most about 5%."""
    rng = np.random.default_rng(2)
    confirmed = 0
    draws = 200
    for _ in range(draws):
        offsets = rng.normal(0, 0.03, bases)
        a, b = _fronts_of(rng, 0.0, bases, offsets), _fronts_of(rng, 0.0, bases, offsets)
        test = fronts.dominance("A", "B", a, b, (0.1, 50_000), 2_000)
        if test.difference.effect < 0:
            test = fronts.dominance("B", "A", b, a, (0.1, 50_000), 2_000)
        claim = verdicts.judge(compressed.dominance_claims([_as_fronts(test)], _ctx(margin=1e-9)))[0]
        confirmed += claim.verdict == "confirmed"
    assert confirmed / draws <= 0.08, f"{confirmed} of {draws} null comparisons confirmed"


def _as_fronts(test: fronts.Dominance) -> compressed.Fronts:
    return compressed.Fronts(tables.SIZE["gzip"], "gzip bytes", test.reference, 2_000, {}, {}, [test])


def _ctx(files: pd.DataFrame | None = None, examples: forgetting.Examples | None = None, margin: float = 0.01,
         test_size: float = 1000) -> compressed.Context:
    return compressed.Context(files if files is not None else pd.DataFrame(), examples or forgetting.Examples(), test_size,
                              margin)


# ------------------------------------------------------------------------------- forgetting
def _files(rows) -> pd.DataFrame:
    """File rows: (trial, seed, method, label, accuracy, extra columns)."""
    out = []
    for trial, seed, method, label, accuracy, extra in rows:
        out.append({"trial": trial, "seed": seed, "method": method, "label": label, "trial_run_id": f"t{trial}",
                    "run_id": f"t{trial}-{seed}", tables.ACCURACY: accuracy, **extra})
    return pd.DataFrame(out)


def test_a_file_forgets_the_examples_its_own_base_got_right_and_it_gets_wrong():
    truth = np.array([0, 1, 2, 0, 1, 2])
    onehot = np.eye(3)[None]  # (1, 3, 3)

    def outputs(labels):
        return np.eye(3)[np.asarray(labels)][None]

    base = {"outputs": np.concatenate([outputs([0, 1, 2, 0, 1, 0]), outputs([0, 1, 2, 1, 1, 2])]), "y_test": truth,
            "seeds": np.array([0, 1])}
    # seed 0: loses examples 1 and 2 (base right), learns 5; seed 1: loses 0, learns 3
    pruned = {"outputs": np.concatenate([outputs([0, 0, 0, 0, 1, 2]), outputs([1, 1, 2, 0, 1, 2])]), "y_test": truth,
              "seeds": np.array([0, 1])}
    assert onehot.shape == (1, 3, 3)
    examples = forgetting.from_predictions({"t0": base, "t1": pruned})
    files = _files([(0, 0, "none", "none", 5 / 6, {}), (0, 1, "none", "none", 5 / 6, {}),
                    (1, 0, "prune", "prune", 4 / 6, {}), (1, 1, "prune", "prune", 1.0, {})])
    table = forgetting.forgotten(files, examples)
    row = table.iloc[0]
    assert row["trial"] == 1 and row["seeds"] == 2 and row["of"] == 6
    assert row["forgotten"] == pytest.approx(1.5) and row["learned"] == pytest.approx(1.0)
    assert row["net"] == pytest.approx(-0.5)
    assert row["forgotten low"] >= 0, "a count's interval stops at zero"
    lost = forgetting.most_lost(files, examples)
    assert set(lost["test example"]) == {0, 1, 2}
    assert lost["true label"].tolist() == truth[lost["test example"]].tolist()
    assert (lost["lost by files"] == 1).all() and (lost["of files"] == 2).all() and (lost["of bases"] == 2).all()


def test_without_a_base_file_nothing_is_counted():
    truth = np.array([0, 1])
    examples = forgetting.from_predictions({"t1": {"outputs": np.eye(2)[[[0, 0]]], "y_test": truth, "seeds": np.array([0])}})
    files = _files([(1, 0, "prune", "prune", 0.5, {})])
    assert forgetting.forgotten(files, examples).empty and forgetting.most_lost(files, examples).empty


# ----------------------------------------------------------------------------- the claims
def _seeded(trial: int, method: str, label: str, accuracies, **extra) -> list:
    return [(trial, s, method, label, a, {k: (v[s] if isinstance(v, list) else v) for k, v in extra.items()})
            for s, a in enumerate(accuracies)]


def test_magnitude_against_random_is_one_claim_per_structure_and_sparsity_paired_by_seed():
    rows = (_seeded(0, "prune", "prune", [0.90, 0.88, 0.91, 0.89], **{"params.compress.criterion": "l1",
                                                                     "params.compress.sparsity": 0.8})
            + _seeded(1, "prune", "prune, random", [0.60, 0.57, 0.62, 0.58], **{"params.compress.criterion": "random",
                                                                              "params.compress.sparsity": 0.8})
            + _seeded(2, "prune", "prune", [0.900, 0.880, 0.910, 0.890], **{"params.compress.criterion": "l1",
                                                                           "params.compress.sparsity": 0.5})
            + _seeded(3, "prune", "prune, random", [0.901, 0.879, 0.911, 0.889], **{"params.compress.criterion": "random",
                                                                                   "params.compress.sparsity": 0.5}))
    claims = verdicts.judge(compressed.magnitude_random_claims(_ctx(_files(rows), test_size=100_000)))
    by = {c.claim: c for c in claims}
    assert by["magnitude beats random: prune (unstructured) at sparsity 0.8"].verdict == "confirmed"
    assert by["magnitude beats random: prune (unstructured) at sparsity 0.8"].effect == pytest.approx(0.3025)
    assert by["magnitude beats random: prune (unstructured) at sparsity 0.5"].verdict == "negligible"
    assert all(c.replicates == 4 for c in claims), "the seeds are the replicates"


def test_one_seed_leaves_a_compression_claim_inconclusive():
    rows = (_seeded(0, "prune", "prune", [0.9], **{"params.compress.criterion": "l1", "params.compress.sparsity": 0.8})
            + _seeded(1, "prune", "prune, random", [0.5], **{"params.compress.criterion": "random", "params.compress.sparsity": 0.8}))
    claim = verdicts.judge(compressed.magnitude_random_claims(_ctx(_files(rows))))[0]
    assert claim.verdict == "inconclusive" and "one seed" in claim.test


def test_pruning_against_scratch_uses_each_files_own_seed_and_fraction():
    scratch = [0.95, 0.93, 0.96]
    rows = _seeded(0, "prune", "prune (channels)", [0.80, 0.79, 0.82], **{
        "params.compress.structure": "channels", "params.compress.criterion": "l1", "params.compress.sparsity": 0.5,
        "metrics.scratch_e/test/accuracy": scratch, "metrics.scratch_b/test/accuracy": scratch})
    claims = verdicts.judge(compressed.scratch_claims(_ctx(_files(rows), test_size=1_000_000)))
    assert [c.verdict for c in claims] == ["contradicted", "contradicted"], "scratch training beats this pruning (Liu 2019)"
    assert claims[0].effect == pytest.approx(-0.1433, abs=1e-4)


def test_int4_that_does_not_halve_int8s_bytes_is_contradicted_by_the_files():
    rows = (_seeded(0, "quantize", "quantize", [0.88, 0.87, 0.89], **{"metrics.artifact/bits": 4, "params.compress.scheme": "qat",
                                                                     tables.SIZE["raw"]: 15_000})
            + _seeded(1, "quantize", "quantize", [0.88, 0.87, 0.89], **{"metrics.artifact/bits": 8,
                                                                       "params.compress.scheme": "qat", tables.SIZE["raw"]: 20_000}))
    claim = verdicts.judge(compressed.int4_claims(_ctx(_files(rows))))[0]
    assert claim.verdict == "contradicted" and "1.33× smaller" in claim.evidence
    halved = _files(rows).assign(**{tables.SIZE["raw"]: lambda f: np.where(f["metrics.artifact/bits"] == 4, 9_000, 20_000)})
    claim = verdicts.judge(compressed.int4_claims(_ctx(halved, test_size=1_000_000)))[0]
    assert claim.verdict == "confirmed", "2.2× smaller, no accuracy lost at any seed"


def test_latency_is_judged_against_each_files_own_base_and_slower_files_are_named():
    base = _seeded(0, "none", "none", [0.9, 0.9, 0.9], **{tables.LATENCY: [0.010, 0.011, 0.009], tables.SIZE["raw"]: 180_000})
    slow = _seeded(1, "quantize", "quantize", [0.9, 0.9, 0.9], **{tables.LATENCY: [0.0184, 0.0203, 0.0165],
                                                                  "metrics.artifact/bits": 4, tables.SIZE["raw"]: 30_000})
    fast = _seeded(2, "prune", "prune (channels)", [0.9, 0.9, 0.9], **{tables.LATENCY: [0.0035, 0.0038, 0.0032],
                                                                      tables.SIZE["raw"]: 52_000})
    ctx = _ctx(_files(base + slow + fast))
    claims = {c.claim: c for c in verdicts.judge(compressed.latency_claims(ctx))}
    int4 = claims["compressed files are faster than the base: quantize, 4-bit"]
    assert int4.verdict == "contradicted" and "1.84×" in int4.evidence and "smaller than the base but not faster" in int4.evidence
    assert claims["compressed files are faster than the base: prune (channels)"].verdict == "confirmed"
    table = compressed.latency_table(ctx)
    slower = table[(table["bytes ratio"] < 1) & (table["latency ratio"] >= 1)]
    assert slower["trial"].tolist() == [1]


def test_sparse_against_dense_pairs_files_within_a_seed():
    rows = []
    for s, (dense, sparse) in enumerate([(0.70, 0.80), (0.72, 0.83), (0.69, 0.79)]):
        rows += [(0, s, "prune", "prune (channels)", dense, {"params.compress.structure": "channels", tables.SIZE["gzip"]: 15_000}),
                 (1, s, "prune", "prune", sparse, {"params.compress.structure": "unstructured", tables.SIZE["gzip"]: 14_000}),
                 (2, s, "prune", "prune", 0.95, {"params.compress.structure": "unstructured", tables.SIZE["gzip"]: 60_000})]
    claim = compressed.sparse_dense_claim(_ctx(_files(rows)))
    assert claim is not None and claim.replicates == 3
    assert claim.effect == pytest.approx(0.1033, abs=1e-4), "the 60,000-byte file is never chosen: it is bigger"
    assert "for 3 of 3 small dense models" in claim.evidence


def test_a_distilled_student_is_judged_seed_by_seed_against_its_hard_label_twin():
    control = "metrics.control/test/accuracy"
    one = _files(_seeded(0, "distill", "distill", [0.60], **{control: 0.55}))
    assert verdicts.judge([compressed.distillation_claim(_ctx(one))])[0].verdict == "inconclusive"
    many = _files(_seeded(0, "distill", "distill", [0.80, 0.82, 0.79, 0.85, 0.81, 0.83],
                          **{control: [0.75, 0.78, 0.74, 0.80, 0.77, 0.79]}))
    claim = verdicts.judge([compressed.distillation_claim(_ctx(many, test_size=1_000_000))])[0]
    assert claim.verdict == "confirmed" and claim.replicates == 6


def test_each_methods_fronts_are_kept_per_base_with_the_base_file_and_chance_as_reference():
    rows = []
    for s in range(3):
        rows += [(0, s, "none", "none", 0.90, {tables.SIZE["gzip"]: 40_000}),
                 (1, s, "quantize", "quantize", 0.89 + 0.01 * s, {tables.SIZE["gzip"]: 10_000}),
                 (2, s, "quantize", "quantize", 0.85, {tables.SIZE["gzip"]: 6_000}),
                 (3, s, "prune", "prune", 0.80 - 0.01 * s, {tables.SIZE["gzip"]: 20_000})]
    examples = forgetting.Examples(classes=10)
    found = compressed.method_fronts(_ctx(_files(rows), examples), tables.SIZE["gzip"], "gzip bytes", 40_000)
    assert found is not None and found.reference == (0.1, 40_000)
    assert sorted(found.by_method) == ["prune", "quantize"], "the base is the reference, not a method"
    assert found.bands["quantize"].attained.shape == (3, 2), "a front per base"
    (test,) = found.tests
    assert (test.a, test.b, test.bases) == ("quantize", "prune", 3), "the larger hypervolume is named first"
