"""Pure measurements on small hand-made inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from study import measure, names

pytestmark = pytest.mark.unit  # pure logic: no TensorFlow, no store


def test_cross_entropy_matches_the_definition():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    y = np.array([0, 2])
    p0 = math.exp(2) / (math.exp(2) + 1 + math.exp(-1))
    expected = -(math.log(p0) + math.log(1 / 3)) / 2
    assert measure.cross_entropy(y, logits) == pytest.approx(expected)


def test_cross_entropy_is_stable_for_huge_logits():
    assert measure.cross_entropy(np.array([0]), np.array([[1000.0, -1000.0]])) == pytest.approx(0.0, abs=1e-9)


def test_accuracy_counts_argmax_hits():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert measure.accuracy(np.array([1, 0, 0, 0]), logits) == pytest.approx(0.75)


def test_regression_errors():
    y, pred = np.array([1.0, 2.0, 3.0]), np.array([[1.0], [2.5], [5.0]])
    assert measure.mean_squared_error(y, pred) == pytest.approx((0 + 0.25 + 4) / 3)
    assert measure.mean_absolute_error(y, pred) == pytest.approx((0 + 0.5 + 2) / 3)


def test_final_metrics_and_gaps():
    labels = {"train": np.array([0, 1]), "test": np.array([0, 1])}
    outputs = {"train": np.array([[5.0, 0.0], [0.0, 5.0]]), "test": np.array([[5.0, 0.0], [5.0, 0.0]])}
    m = measure.final_metrics("classification", labels, outputs)
    assert m["train/accuracy"] == 1.0 and m["test/accuracy"] == 0.5
    assert m["gap/accuracy"] == pytest.approx(0.5)
    assert m["gap/loss"] == pytest.approx(m["test/loss"] - m["train/loss"])
    assert set(m) <= set(names.FINAL)


def test_summarize_replicates_gives_means_and_population_std():
    s = measure.summarize_replicates([{"a": 1.0, "b": 5.0}, {"a": 3.0}])
    assert s == {"a": 2.0, "a_std": 1.0}, "keys missing from a replicate are left out"
    assert measure.summarize_replicates([{"a": 1.0}]) == {"a": 1.0}


def test_all_finite():
    assert measure.all_finite({"a": 1.0, "b": -2.0})
    assert not measure.all_finite({"a": float("nan")})
    assert not measure.all_finite([1.0, float("inf")])


def test_parameter_counts():
    weights = [np.zeros((3, 4)), np.array([0.0, 1.0, 2.0])]
    assert measure.count_params(weights) == 15
    assert measure.count_nonzero(weights) == 2


def test_pareto_mask_with_mixed_directions():
    # (accuracy up, bytes down): the third row is dominated by the first.
    values = np.array([[0.9, 100], [0.8, 50], [0.85, 200], [np.nan, 1]])
    assert measure.pareto_mask(values, ["maximize", "minimize"]).tolist() == [True, True, False, False]


def test_pareto_mask_single_objective_keeps_ties():
    assert measure.pareto_mask(np.array([3.0, 1.0, 2.0, 1.0]), ["minimize"]).tolist() == [False, True, False, True]
