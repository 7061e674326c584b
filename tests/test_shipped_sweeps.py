"""Every sweep file we ship loads, and runs on a tiny budget: one epoch, little data, two trials."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT
from study.config import load_sweep
from study.sweep import run_sweep

SHIPPED = sorted((ROOT / "sweeps").glob("*.yaml"))

# Shrink each dataset; a sweep that searches a size gets a size that fits.
SMALL = {
    "mnist1d": {"dataset.num_samples": 300},
    "digits": {},
    "polynomial": {"dataset.test_samples": 50},
    "csv": {},
}
EXTRA = {"data_size": {"dataset.train_size": 50}}


def tiny(path: Path) -> dict:
    sweep = load_sweep(path)
    overrides = {"train.epochs": 1, "replicates": 1, **SMALL[sweep.config.dataset.name], **EXTRA.get(path.stem, {})}
    return overrides


def test_the_expected_sweeps_are_shipped():
    assert {p.stem for p in SHIPPED} >= {"capacity", "regularization", "epochs", "data_size", "features", "demo"}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_sweep_runs_on_a_tiny_budget(path, store):
    sweep = load_sweep(path, tiny(path))
    assert sweep.config.description, "every shipped sweep says what it studies"
    summary = run_sweep(sweep, store, trials=2)
    # a sweep whose only searched key is shrunk to one value is a grid of one point
    assert summary.counts.done == summary.target >= 1 and summary.counts.failed == 0
