"""`study run --until-decided`: rounds of new seeds, shared by every setting, and the looks the
report then tests at (decide.py). Real sweeps on real stores, tiny models."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
from conftest import ROOT, run_env

from study.config import load_sweep
from study.decide import add_round, check, run_until_decided
from study.errors import BadInput
from study.names import Attr
from study.report.load import load_sweep_runs
from study.report.render import render_report
from study.report.sections import compute_report
from study.sweep import run_sweep

GRID = """
    description: two settings that share their seeds
    dataset: {name: digits}
    model: {kind: mlp, width: 8, depth: 1}
    train: {epochs: 2}
    search:
      model.l2: [0.0, 1e-12]
    objective: {val/accuracy: maximize}
    sampler: grid
    replicates: 2
    seed: 5
"""


def test_a_round_trains_new_seeds_for_every_setting_and_the_report_pairs_them(write_sweep, store):
    sweep = load_sweep(write_sweep("grid", GRID))
    run_sweep(sweep, store)
    study = optuna.load_study(study_name="grid", storage=store.optuna())
    added = add_round(study, sweep, ["L2 weight penalty reduces overfitting"])
    assert added["round"] == 1 and added["first_seed"] == 7 and added["settings"] == 2
    summary = run_sweep(sweep, store)  # a plain resume completes the queued round too
    assert summary.counts.finished == 4 and summary.counts.done == 4, "a round's trial is not a repeat of its setting"
    data = load_sweep_runs(store, "grid")
    by_run = data.seeds.rows.groupby("run_id")["seed"].apply(sorted).tolist()
    assert sorted(by_run) == [[5, 6], [5, 6], [7, 8], [7, 8]], "round 1 trains seeds seed + R + r"
    claim = compute_report(data).claims[0]
    assert claim.replicates == 4 and "4 shared seeds" in claim.test


def test_the_report_tests_at_alpha_over_the_looks_and_says_which_seeds_were_added(write_sweep, store, tmp_path):
    sweep = load_sweep(write_sweep("grid", GRID))
    decided = run_until_decided(sweep, store, 4, lambda trials: run_sweep(sweep, store, trials=trials))
    assert decided.looks == 2
    study = optuna.load_study(study_name="grid", storage=store.optuna())
    assert study.user_attrs[Attr.LOOKS] == 2
    report = compute_report(load_sweep_runs(store, "grid"))
    assert report.conclusions.looks == 2 and report.conclusions.rounds == decided.rounds
    page = render_report(report, tmp_path / "out")
    assert "5% / 2 = 0.025" in page
    if decided.rounds:
        assert "seeds 7–8 added to each of 2 settings" in page


@pytest.mark.parametrize("change, problem", [
    ("sampler: tpe\n    budget: {trials: 2}", "need a grid"),
    ("replicates: 5", "below the sweep's 5 replicates"),
])
def test_until_decided_refuses_what_it_cannot_do(write_sweep, change, problem):
    text = GRID.replace("sampler: grid", change) if change.startswith("sampler") else GRID.replace("replicates: 2", change)
    with pytest.raises(BadInput, match=problem):
        check(load_sweep(write_sweep("grid", text)), 4)


def test_until_decided_on_a_tpe_sweep_is_one_line_and_exit_2(write_sweep, tmp_path):
    path = write_sweep("grid", GRID.replace("sampler: grid", "sampler: tpe\n    budget: {trials: 2}"))
    done = subprocess.run([sys.executable, "-m", "study", "run", str(path), "--until-decided", "--store", str(tmp_path / "s")],
                          cwd=ROOT, env=run_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "grid" in done.stderr
    assert not (tmp_path / "s").exists(), "nothing written"
