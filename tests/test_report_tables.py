"""The tables behind the report's charts, on hand-made runs: no drawing, no stores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from study.report import decompose, tables


def runs_frame(rows: list[dict]) -> pd.DataFrame:
    """Trial runs as load.py makes them, from (knob values, train/test accuracy) rows."""
    records = []
    for i, row in enumerate(rows):
        record = {"run_id": f"r{i}", "trial": i, "state": row.get("state", "finished"),
                  "metrics.train/accuracy": row["train"], "metrics.val/accuracy": row.get("val", row["test"]),
                  "metrics.test/accuracy": row["test"]}
        record.update({f"params.{k}": v for k, v in row.items() if "." in k})
        records.append(record)
    return pd.DataFrame(records)


def test_errors_are_one_minus_accuracy_and_the_gap_is_test_minus_train():
    errs = tables.errors(runs_frame([{"train": 0.9, "test": 0.7}, {"train": 0.5, "test": 0.4, "state": "failed"}]))
    assert len(errs) == 1, "only finished trials"
    assert errs.loc[0, "train_error"] == pytest.approx(0.1) and errs.loc[0, "test_error"] == pytest.approx(0.3)
    assert errs.loc[0, "gap"] == pytest.approx(0.2)


def test_regression_errors_are_the_squared_error():
    frame = pd.DataFrame({"run_id": ["a"], "trial": [0], "state": ["finished"], "metrics.train/loss": [0.1], "metrics.test/loss": [0.5]})
    assert tables.task_of(frame) == "regression"
    errs = tables.errors(frame)
    assert errs.loc[0, "gap"] == pytest.approx(0.4)


def test_regimes_follow_the_documented_thresholds():
    errs = tables.errors(runs_frame([
        {"train": 0.95, "test": 0.90},  # best held-out error 0.10: good fit
        {"train": 0.70, "test": 0.68},  # training error 0.30 > 0.10 + 0.05: underfit
        {"train": 1.00, "test": 0.85},  # gap 0.15 > 0.10: overfit
        {"train": 0.88, "test": 0.80},  # training error 0.12 (within 0.05), gap 0.08: good fit
    ]))
    assert tables.regimes(errs, "classification").tolist() == ["good fit", "underfit", "overfit", "good fit"]
    assert "5%" in tables.thresholds_text("classification") and "10%" in tables.thresholds_text("classification")


def test_regression_regimes_are_relative_to_the_best_error():
    frame = pd.DataFrame({
        "run_id": list("abc"), "trial": [0, 1, 2], "state": ["finished"] * 3,
        "metrics.train/loss": [0.10, 0.30, 0.02], "metrics.test/loss": [0.12, 0.31, 0.20],
    })
    assert tables.regimes(tables.errors(frame), "regression").tolist() == ["good fit", "underfit", "overfit"]


def width_sweep() -> pd.DataFrame:
    return runs_frame([
        {"model.width": 4, "model.kind": "mlp", "train": 0.60, "test": 0.58},
        {"model.width": 4, "model.kind": "mlp", "train": 0.62, "test": 0.60},
        {"model.width": 64, "model.kind": "mlp", "train": 0.90, "test": 0.85},
        {"model.width": 512, "model.kind": "mlp", "train": 1.00, "test": 0.80},
    ])


def test_knob_table_averages_each_value_and_finds_the_sweet_spot():
    errs = tables.errors(width_sweep())
    table = tables.knob_table(errs, "model.width", tables.regimes(errs, "classification"))
    assert table["value"].tolist() == [4, 64, 512]
    assert table.loc[0, "train_error"] == pytest.approx(0.39) and table.loc[0, "runs"] == 2
    assert table["regime"].tolist() == ["underfit", "good fit", "overfit"]
    assert tables.sweet_spot(table) == 64
    long = tables.knob_long(errs, "model.width")
    assert set(long["split"]) == {"train", "held-out (test)"} and len(long) == 8


def test_numeric_and_categorical_knobs_are_told_apart():
    errs = tables.errors(width_sweep().assign(**{"params.train.early_stopping.enabled": ["True", "False", "True", "False"]}))
    numeric, categorical = tables.varied_knobs(errs, ["model.width", "model.kind", "train.early_stopping.enabled"])
    assert numeric == ["model.width", "train.early_stopping.enabled"] and categorical == []
    assert tables.log_scale(pd.Series([4, 64, 512])) and not tables.log_scale(pd.Series([0.0, 0.5]))


def test_learning_curve_picks():
    errs = tables.errors(width_sweep())
    picks = {p.label: p.trial for p in tables.learning_curve_runs(errs, tables.regimes(errs, "classification"))}
    assert picks == {"most underfit": 0, "best": 2, "most overfit": 3}


def test_remedy_effects_and_the_data_size_claim():
    errs = tables.errors(runs_frame([
        {"dataset.train_size": 250, "train": 1.00, "test": 0.55},
        {"dataset.train_size": 4000, "train": 0.95, "test": 0.80},
        {"dataset.train_size": 32000, "train": 0.90, "test": 0.88},
    ]))
    effects = tables.remedy_effects(errs, ["dataset.train_size"])
    row = effects.iloc[0]
    assert row["acts against"] == "overfitting" and row["from"] == 250 and row["to"] == 32000
    assert row["gap from"] == pytest.approx(0.45) and row["gap to"] == pytest.approx(0.02)
    claims = {c.claim: c for c in tables.article_claims(effects, errs, ["dataset.train_size"])}
    assert claims["more training data reduces overfitting"].verdict == "confirmed"
    too_much = claims["too much training data causes overfitting (the article's claim)"]
    assert too_much.verdict == "contradicted" and "gap 0.45 → 0.02" in too_much.evidence


def test_too_many_epochs_overfit_when_the_gap_opens_past_the_threshold():
    rows = [{"train.epochs": e, "train": tr, "test": te} for e, tr, te in [(1, 0.5, 0.5), (10, 0.9, 0.80), (100, 1.0, 0.70)]]
    errs = tables.errors(runs_frame(rows))
    claims = tables.article_claims(tables.remedy_effects(errs, ["train.epochs"]), errs, ["train.epochs"])
    epochs = next(c for c in claims if c.claim == "too many epochs overfit")
    assert epochs.verdict == "confirmed" and "gap is 0.3" in epochs.evidence and "lowest at 10 epochs" in epochs.evidence
    assert "(it rises)" in epochs.evidence


def test_epochs_that_close_no_gap_do_not_overfit():
    rows = [{"train.epochs": e, "train": tr, "test": te} for e, tr, te in [(1, 0.5, 0.5), (10, 0.8, 0.78), (100, 0.85, 0.80)]]
    errs = tables.errors(runs_frame(rows))
    claims = tables.article_claims(tables.remedy_effects(errs, ["train.epochs"]), errs, ["train.epochs"])
    assert next(c for c in claims if c.claim == "too many epochs overfit").verdict == "not seen"


# --------------------------------------------------------------------------- decompositions
def test_squared_error_decomposition_identity_with_known_noise():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=2000)
    noise = 0.3
    labels = truth + rng.normal(scale=noise, size=truth.size)
    predictions = truth + 0.2 + rng.normal(scale=0.5, size=(8, truth.size))  # biased and noisy replicates
    d = decompose.squared_error(predictions, truth, labels, noise)
    assert abs(d.residual) < 1e-12, "error vs truth = bias² + variance, exactly"
    assert d.bias2 == pytest.approx(0.2**2 + 0.25 / 8, rel=0.1)
    assert d.variance == pytest.approx(0.25 * 7 / 8, rel=0.1)
    assert d.error_vs_labels == pytest.approx(d.bias2 + d.variance + d.noise, rel=0.05), "noise adds σ² in expectation"


def test_zero_one_decomposition_identity():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=500)
    votes = np.where(rng.random((7, 500)) < 0.6, labels, rng.integers(0, 4, size=(7, 500)))
    d = decompose.zero_one(votes, labels)
    assert abs(d.residual) < 1e-12, "Domingos: loss = bias + net variance"
    assert 0 <= d.bias <= 1 and 0 <= d.variance <= 1


def test_zero_one_decomposition_of_unanimous_replicates_has_no_variance():
    labels = np.array([0, 1, 2, 3])
    votes = np.array([[0, 1, 0, 0], [0, 1, 0, 0]])
    d = decompose.zero_one(votes, labels)
    assert d.variance == 0 and d.bias == pytest.approx(0.5) and d.loss == pytest.approx(0.5)


def test_decomposition_rows_pick_the_right_decomposition():
    errs = tables.errors(width_sweep())
    rng = np.random.default_rng(2)
    regression = {"outputs": rng.normal(size=(3, 50, 1)), "f_test": np.zeros(50), "y_test": np.zeros(50), "noise_std": np.float32(0.1)}
    classification = {"outputs": rng.normal(size=(3, 50, 4)), "y_test": rng.integers(0, 4, size=50)}
    rows = tables.decomposition_rows(errs, {"r0": regression, "r1": classification, "r2": {"outputs": rng.normal(size=(1, 50, 4))}})
    assert rows["kind"].tolist() == ["squared error", "0-1 loss (Domingos 2000)"], "a single replicate is skipped"
    assert (rows["residual"].abs() < 1e-9).all() and rows.loc[0, "noise"] == pytest.approx(0.01)
    assert rows.loc[1, "disagreement"] >= abs(rows.loc[1, "net variance"]), "net variance is disagreement, signed"


# ------------------------------------------------------------------------------ compression
def compression_frame() -> pd.DataFrame:
    rows = [
        ("none", 0.93, 180_000, 170_000, 32, None),
        ("quantize", 0.95, 55_000, 44_000, 8, None),
        ("quantize", 0.94, 28_000, 20_000, 4, None),
        ("prune", 0.92, 180_000, 50_000, 32, None),
        ("prune", 0.50, 180_000, 12_000, 32, None),
        ("architecture", 0.80, 20_000, 15_000, 32, None),
        ("distill", 0.85, 8_000, 7_000, 32, 0.80),
        ("distill", 0.82, 9_000, 8_000, 32, 0.84),
    ]
    return pd.DataFrame([{
        "run_id": f"r{i}", "trial": i, "state": "finished", "tags.study.method": m, "metrics.artifact/test_accuracy": a,
        "metrics.test/accuracy": a, "metrics.artifact/size_bytes": raw, "metrics.artifact/gzip_bytes": gz,
        "metrics.artifact/bits": bits, "metrics.artifact/compression_ratio": 180_000 / raw,
        "metrics.control/test/accuracy": control, "params.model.width": 8 if m == "distill" else None,
    } for i, (m, a, raw, gz, bits, control) in enumerate(rows)])


def test_pareto_frontier_keeps_files_no_other_file_beats_on_both():
    comp = tables.compression_runs(compression_frame())
    raw = comp[tables.frontier(comp, "raw")]["trial"].tolist()
    gzip = comp[tables.frontier(comp, "gzip")]["trial"].tolist()
    assert raw == [1, 2, 6], "smaller and more accurate files dominate the rest"
    assert gzip == [1, 2, 6]
    assert 4 not in gzip and 0 not in gzip


def test_distillation_pairs_and_compression_claims():
    comp = tables.compression_runs(compression_frame())
    pairs = tables.distillation_pairs(comp)
    assert pairs["distilled"].tolist() == [0.85, 0.82] and pairs["hard labels only"].tolist() == [0.80, 0.84]
    assert pairs["student"].tolist() == ["trial 6", "trial 7"], "both students share their settings"
    claims = {c.claim: c for c in tables.compression_claims(comp, pd.DataFrame())}
    quantized = claims["8-bit quantization: about 4× smaller with accuracy close to float"]
    assert quantized.verdict == "partly confirmed" and "3.27× smaller" in quantized.evidence, "close, but not 3.5×"
    assert claims["a distilled student beats the same student trained on hard labels"].evidence.startswith("1 of 2")
    sparse = claims["a large sparse model beats a small dense one at equal memory (Zhu & Gupta 2017)"]
    assert sparse.verdict == "contradicted" and "0 of 1" in sparse.evidence


def test_settings_show_only_what_varies_with_whole_numbers_plain():
    comp = pd.DataFrame({"params.compress.bits": [4.0, 8.0, np.nan], "params.model.kernel_size": [5.0, 5.0, 5.0],
                         "params.compress.method": ["quantize", "quantize", "none"]})
    columns = tables.varying_settings(comp)
    assert columns == ["params.compress.bits"]
    assert [tables.settings_of(row, columns) for _, row in comp.iterrows()] == ["bits=4", "bits=8", ""]
