"""`study.results`: a sweep's trials in pandas, the same table as the report's runs.csv."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import TINY

import study
from study.config import load_sweep
from study.errors import StudyError
from study.report.build import build_report
from study.sweep import run_sweep


def test_results_is_runs_csv_with_plain_column_names(write_sweep, store, tmp_path):
    path = write_sweep("inpandas", TINY + "replicates: 2\n")
    run_sweep(load_sweep(path), store, trials=2)
    written = build_report(store, "inpandas", tmp_path / "reports", log_to_mlflow=False).path.parent / "runs.csv"
    table = study.results("inpandas", store=store)
    assert isinstance(table, pd.DataFrame) and len(table) == 2
    assert {"trial", "state", "model.width", "val/accuracy", "tags.study.state", "regime"} <= set(table.columns)
    header, *rows = written.read_text().splitlines()
    again, *same = table.to_csv(index=False).splitlines()
    assert rows == same, "the rows of runs.csv, value for value"
    assert again.split(",") == [c.removeprefix("params.").removeprefix("metrics.") for c in header.split(",")]
    by_file = study.results(path, store=store.root)  # a sweep file and a store folder name the same table
    pd.testing.assert_frame_equal(by_file, table)


def test_results_of_an_unknown_sweep_lists_the_known_ones(write_sweep, store):
    run_sweep(load_sweep(write_sweep("known", TINY)), store, trials=1)
    with pytest.raises(StudyError, match=r"no sweep 'unknown' in .* \(known sweeps: known\)"):
        study.results("unknown", store=store)
