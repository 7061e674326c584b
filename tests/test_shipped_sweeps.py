"""Every sweep file we ship loads, and runs on a tiny budget: one epoch, little data, two trials."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT, assert_legible_at_phone_and_desktop_widths, chromium_driver

from study.config import load_sweep
from study.report.build import build_report
from study.search import grid_size
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


# What each shipped sweep searches, and its size as the README's tables state it: distinct settings
# (each method's own knobs only, in compression grids) and replicates. compression samples with NSGA-II.
STUDIES = {
    "demo": ({"model.kind", "model.width", "model.dropout"}, 12, 4),
    "capacity": ({"model.kind", "model.depth", "model.width"}, 24, 1),
    "regularization": ({"model.l1", "model.l2", "model.dropout", "train.early_stopping.enabled"}, 16, 6),
    "epochs": ({"train.epochs"}, 6, 5),
    "data_size": ({"dataset.train_size"}, 8, 5),
    "features": ({"model.poly_degree"}, 10, 5),
    "double_descent": ({"model.width"}, 7, 3),
    "double_descent_notebook": ({"model.width", "dataset.label_noise"}, 38, 3),
    "demo_compression": ({"compress.method", "compress.sparsity", "compress.criterion", "compress.bits"}, 14, 3),
    "pruning": ({"compress.method", "compress.sparsity", "compress.criterion", "compress.structure"}, 23, 3),
    "quantization": ({"compress.bits", "compress.scheme"}, 12, 1),
    "structured_pruning": ({"compress.method", "compress.structure", "compress.criterion", "compress.sparsity"}, 21, 3),
    "distillation": ({"model.width", "compress.temperature", "compress.alpha"}, 12, 1),
    "architecture": ({"model.conv", "model.width_multiplier"}, 8, 1),
    "compression": ({"compress.method", "compress.sparsity", "compress.structure", "compress.bits", "compress.scheme",
                     "compress.clusters", "compress.temperature", "compress.alpha", "model.width", "model.conv"}, None, 1),
}


def test_the_expected_sweeps_are_shipped():
    assert {p.stem for p in SHIPPED} == set(STUDIES)


@pytest.mark.parametrize("name", STUDIES)
def test_each_shipped_sweep_searches_what_it_studies_at_the_size_the_readme_states(name):
    searched, settings, replicates = STUDIES[name]
    sweep = load_sweep(ROOT / "sweeps" / f"{name}.yaml")
    assert set(sweep.searched) == searched
    assert grid_size(sweep) == settings
    assert sweep.config.replicates == replicates


@pytest.mark.parametrize("name", ["demo_compression", "pruning", "structured_pruning"])
def test_the_pruning_sweeps_carry_their_baseline_at_five_operating_points_on_three_bases(name):
    """Random pruning beside magnitude at every sparsity, at five or more of them, each on three or
    more bases (a base per replicate); the equal-training and scratch controls come with the method."""
    sweep = load_sweep(ROOT / "sweeps" / f"{name}.yaml")
    assert set(sweep.config.search["compress.criterion"].choices) == {"l1", "random"}
    assert len(sweep.config.search["compress.sparsity"].choices) >= 5
    assert sweep.config.replicates >= 3 and sweep.config.base is not None and sweep.config.base.model is not None
    assert all(metric.startswith(("val/", "artifact/val_", "artifact/gzip", "artifact/size", "artifact/latency"))
               for metric in sweep.config.objective), "chosen on validation metrics and costs, never on the test split"


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
@pytest.mark.slow
def test_shipped_sweep_runs_on_a_tiny_budget(path, store, tmp_path):
    sweep = load_sweep(path, tiny(path))
    assert sweep.config.description, "every shipped sweep says what it studies"
    summary = run_sweep(sweep, store, trials=2)
    # a sweep whose only searched key is shrunk to one value is a grid of one point
    assert summary.counts.done == summary.target >= 1 and summary.counts.failed == 0
    built = build_report(store, sweep.name, tmp_path / "reports")
    driver = chromium_driver(tmp_path)
    try:  # its report reads on a phone and a desktop, its summary first
        assert_legible_at_phone_and_desktop_widths(driver, built.path)
    finally:
        driver.quit()
