"""The tables behind the report's charts, on hand-made runs: no drawing, no stores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from study.report import decompose, regimes, tables

pytestmark = pytest.mark.unit  # pure logic: no TensorFlow, no store


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
    errs = regimes.errors(runs_frame([{"train": 0.9, "test": 0.7}, {"train": 0.5, "test": 0.4, "state": "failed"}]))
    assert len(errs) == 1, "only finished trials"
    assert errs.loc[0, "train_error"] == pytest.approx(0.1) and errs.loc[0, "test_error"] == pytest.approx(0.3)
    assert errs.loc[0, "gap"] == pytest.approx(0.2)


def test_regression_errors_are_the_squared_error():
    frame = pd.DataFrame({"run_id": ["a"], "trial": [0], "state": ["finished"], "metrics.train/loss": [0.1], "metrics.test/loss": [0.5]})
    assert regimes.task_of(frame) == "regression"
    errs = regimes.errors(frame)
    assert errs.loc[0, "gap"] == pytest.approx(0.4)


def width_sweep() -> pd.DataFrame:
    return runs_frame([
        {"model.width": 4, "model.kind": "mlp", "train": 0.60, "test": 0.58},
        {"model.width": 4, "model.kind": "cnn", "train": 0.62, "test": 0.60},
        {"model.width": 64, "model.kind": "mlp", "train": 0.90, "test": 0.85},
        {"model.width": 512, "model.kind": "mlp", "train": 1.00, "test": 0.80},
    ])


def test_knob_panels_hold_every_other_knob_fixed_and_find_the_sweet_spot():
    errs = regimes.errors(width_sweep())
    panels = dict(tables.knob_panels(errs, "model.width", ["model.kind"]))
    assert list(panels) == ["model.kind = cnn", "model.kind = mlp"], "one panel per value of the other knob"
    assert panels["model.kind = mlp"]["value"].tolist() == [4, 64, 512]
    assert tables.sweet_spot(panels["model.kind = mlp"]) == 64


def test_numeric_and_categorical_knobs_are_told_apart():
    errs = regimes.errors(width_sweep().assign(**{"params.train.early_stopping.enabled": ["True", "False", "True", "False"]}))
    numeric, categorical = tables.varied_knobs(errs, ["model.width", "model.kind", "train.early_stopping.enabled"])
    assert numeric == ["model.width", "train.early_stopping.enabled"] and categorical == ["model.kind"]
    assert tables.log_scale(pd.Series([4, 64, 512])) and not tables.log_scale(pd.Series([0.0, 0.5]))


def test_learning_curve_picks():
    errs = regimes.errors(width_sweep())
    picks = {p.label: p.trial for p in tables.learning_curve_runs(errs)}
    assert picks == {"most underfit": 0, "best": 2, "most overfit": 3}


# --------------------------------------------------------------------------- decompositions
def test_zero_one_decomposition_of_unanimous_replicates_has_no_variance():
    labels = np.array([0, 1, 2, 3])
    votes = np.array([[0, 1, 0, 0], [0, 1, 0, 0]])
    d = decompose.zero_one(votes, labels)
    assert d.variance == 0 and d.bias.value == pytest.approx(0.5) and d.loss == pytest.approx(0.5)


def test_decomposition_rows_pick_the_right_decomposition():
    errs = regimes.errors(width_sweep())
    rng = np.random.default_rng(2)
    regression = {"outputs": rng.normal(size=(3, 50, 1)), "f_test": np.zeros(50), "y_test": np.zeros(50), "noise_std": np.float32(0.1)}
    classification = {"outputs": rng.normal(size=(3, 50, 4)), "y_test": rng.integers(0, 4, size=50)}
    rows = tables.decomposition_rows(errs, {"r0": regression, "r1": classification, "r2": {"outputs": rng.normal(size=(1, 50, 4))}})
    assert rows["kind"].tolist() == ["squared error", "0-1 loss (Domingos 2000)"], "a single replicate is skipped"
    assert rows.loc[0, "noise σ²"] == pytest.approx(0.01) and abs(rows.loc[0, "plug-in residual"]) < 1e-9
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


def test_distillation_pairs():
    comp = tables.compression_runs(compression_frame())
    pairs = tables.distillation_pairs(comp)
    assert pairs["distilled"].tolist() == [0.85, 0.82] and pairs["hard labels only"].tolist() == [0.80, 0.84]
    assert pairs["student"].tolist() == ["trial 6", "trial 7"], "both students share their settings"


def test_settings_show_only_what_varies_with_whole_numbers_plain():
    comp = pd.DataFrame({"params.compress.bits": [4.0, 8.0, np.nan], "params.model.kernel_size": [5.0, 5.0, 5.0],
                         "params.compress.method": ["quantize", "quantize", "none"]})
    columns = tables.varying_settings(comp)
    assert columns == ["params.compress.bits"]
    assert [tables.settings_of(row, columns) for _, row in comp.iterrows()] == ["bits=4", "bits=8", ""]


def _grid_study(widths, noises):
    """A finished grid study: val accuracy set by width (more is better), noise a small effect."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    width_dist = optuna.distributions.CategoricalDistribution(widths)
    noise_dist = optuna.distributions.CategoricalDistribution(noises)
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), direction="maximize")
    for width in widths:
        for noise in noises:
            study.add_trial(optuna.trial.create_trial(
                params={"model.width": width, "dataset.label_noise": noise},
                distributions={"model.width": width_dist, "dataset.label_noise": noise_dist},
                value=float(np.log(width)) - 0.1 * noise))
    return study


def test_numeric_choices_are_ordered_ranges_for_importances():
    import optuna

    from study.report.sections import importances, ordered_study

    widths = [2, 4, 8, 12, 16, 20, 24, 32, 40, 47, 56, 64, 80, 96, 128, 160, 200, 256, 300]
    study = _grid_study(widths, [0.0, 0.15])
    ordered = ordered_study(study)
    width, noise = (ordered.trials[0].distributions[k] for k in ("model.width", "dataset.label_noise"))
    assert isinstance(width, optuna.distributions.FloatDistribution) and width.log and (width.low, width.high) == (2, 300)
    assert isinstance(noise, optuna.distributions.FloatDistribution) and not noise.log
    assert [t.params["model.width"] for t in ordered.trials][:2] == [2.0, 2.0]
    assert [t.values for t in ordered.trials] == [t.values for t in study.trials]
    # one-hot, these 19 widths made fANOVA integrate over 2^19 corners; as a range it is immediate
    found = importances(ordered, {"val/accuracy": "maximize"}, "val/accuracy")
    assert found["model.width"] > 0.9 > found["dataset.label_noise"]


def test_text_choices_stay_categorical_for_importances():
    import optuna

    from study.report.sections import ordered_study

    dist = optuna.distributions.CategoricalDistribution(["mlp", "cnn"])
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    for kind, value in (("mlp", 1.0), ("cnn", 0.5)):
        study.add_trial(optuna.trial.create_trial(params={"model.kind": kind}, distributions={"model.kind": dist}, value=value))
    assert ordered_study(study).trials[0].distributions["model.kind"] == dist
