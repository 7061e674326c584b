"""`dataset.resplit`: each replicate re-draws its training/validation split from the pool with its
own seed, besides its initialisation (Bouthillier et al. 2021); the test split never moves."""

from __future__ import annotations

import numpy as np
import pytest

from study.datasets import load_dataset, resplit
from study.schema import DigitsSpec, PolynomialSpec

pytestmark = pytest.mark.unit  # pure logic: no TensorFlow, no store


def rows(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x}


def test_each_seed_draws_its_own_split_of_the_same_pool_and_the_test_set_stays():
    spec = DigitsSpec(name="digits", resplit=True)
    data = load_dataset(spec, 0)
    a, b = resplit(data, spec, 1), resplit(data, spec, 2)
    assert rows(a.x_val) != rows(b.x_val) and len(a.x_val) == len(b.x_val) == len(data.x_val)
    pool = rows(np.concatenate([data.x_train, data.x_val]))
    assert rows(np.concatenate([a.x_train, a.x_val])) == pool == rows(np.concatenate([b.x_train, b.x_val]))
    assert a.x_test is data.x_test and np.array_equal(np.bincount(a.y_val), np.bincount(data.y_val)), "stratified"
    again = resplit(data, spec, 1)
    assert np.array_equal(again.x_val, a.x_val), "a seed's split repeats"


def test_without_resplit_or_with_fresh_draws_the_data_is_untouched():
    spec = DigitsSpec(name="digits")
    data = load_dataset(spec, 0)
    assert resplit(data, spec, 1) is data
    poly = PolynomialSpec(name="polynomial", resplit=True)
    generated = load_dataset(poly, 0)
    assert resplit(generated, poly, 1) is generated, "polynomial data draws a fresh training set per replicate already"
