"""The page's first screen: the summary's findings, verdicts in plain sentences and the two-knob
grid, computed from hand-made tables (no store, no drawing)."""

from __future__ import annotations

import pandas as pd
import pytest

from study.report import sections, tables, verdicts
from study.report.seeds import Seeds

pytestmark = pytest.mark.unit  # pure logic: no TensorFlow, no store


def claim(verdict: str, **changes) -> verdicts.Claim:
    base = verdicts.Claim("dropout reduces overfitting", "held-out error", -0.036, -0.051, -0.021, "lower", 0.001, 0.007,
                          "paired over 6 shared seeds", "", 6, verdict=verdict, margin=0.01, scale=100.0, unit=" points",
                          knob="model.dropout", df=5.0)
    return verdicts.replace(base, **changes) if changes else base


def test_a_verdict_reads_as_one_plain_sentence_with_its_interval_and_why():
    said = verdicts.sentence(claim("confirmed"))
    assert said.startswith("Dropout reduces overfitting: confirmed.")
    assert "-3.6 points (95% interval -5.1 to -2.1)" in said and "significant in the claimed direction" in said
    assert "±1 points" in verdicts.sentence(claim("negligible", effect=0.001, low=-0.002, high=0.004))
    assert "about 14 seeds per setting would decide it" in verdicts.sentence(claim("inconclusive", needed=14))


def errs_grid() -> tuple[pd.DataFrame, Seeds]:
    rows, per_seed = [], []
    for i, (l2, dropout, test) in enumerate([(0, 0, 0.30), (0, 0.5, 0.26), (1e-3, 0, 0.29), (1e-3, 0.5, 0.25)]):
        rows.append({"run_id": f"r{i}", "trial": i, "params.model.l2": l2, "params.model.dropout": dropout,
                     "test_error": test, "val_error": test + 0.01, "train_error": 0.05, "test_low": test - 0.02,
                     "test_high": test + 0.02, "regime": "overfit", "metrics.test/accuracy": 1 - test,
                     "metrics.data/test_size": 1000.0})
        per_seed += [{"run_id": f"r{i}", "seed": s, "train_error": 0.05, "val_error": test, "test_error": test + d}
                     for s, d in enumerate((-0.01, 0.0, 0.01))]
    return pd.DataFrame(rows), Seeds(pd.DataFrame(per_seed))


def test_a_two_knob_grid_gives_every_cell_its_mean_over_seeds_and_an_interval():
    errs, seeds = errs_grid()
    cells = tables.two_knob_grid(errs, seeds, "model.l2", "model.dropout")
    assert len(cells) == 4 and (cells["seeds"] == 3).all()
    cell = cells[(cells["row"] == 0) & (cells["column"] == 0.5)].iloc[0]
    assert cell["error"] == pytest.approx(0.26) and cell["low"] < 0.26 < cell["high"]
    assert sections.two_knobs(errs, seeds, ["model.l2", "model.dropout"]) is not None
    assert sections.two_knobs(errs, seeds, ["model.l2"]) is None, "one knob: no grid"


def test_the_summary_names_the_best_setting_chosen_on_validation_each_claim_and_what_to_run_next():
    errs, seeds = errs_grid()
    body = sections.BiasVariance(errs, "classification", "error rate", "")
    found = sections.summarize(body, [claim("confirmed"), claim("inconclusive", needed=14, claim="L1 reduces overfitting")],
                               "regularization", ["model.l2", "model.dropout"])
    best = found[0]
    assert best.label == "Best setting" and "model.l2 = 0.001, model.dropout = 0.5" in best.text and best.run_id == "r3"
    assert "test accuracy 0.750 [0.730, 0.770]" in best.text and "chosen on validation accuracy 0.740" in best.text
    assert [f.verdict for f in found[1:3]] == ["confirmed", "inconclusive"] and found[1].anchor == "claims"
    assert any(f.label == "Regimes" and "4 overfit" in f.text for f in found)
    assert found[-1].label == "Next" and "--until-decided --max-seeds 14" in found[-1].text


def test_a_one_seed_compression_finding_says_it_has_no_interval_and_names_no_empty_settings():
    forgotten = pd.DataFrame([{"trial": 1, "file": "prune", "settings": "", "seeds": 1, "forgotten": 29.0,
                               "forgotten low": float("nan"), "forgotten high": float("nan"), "of": 1000, "learned": 4.0,
                               "run": "r1"}])
    found = sections.summarize(sections.Compression(pd.DataFrame(), forgotten=forgotten), [], "mycomp", [])
    said = next(f.text for f in found if f.label == "Forgotten examples")
    assert said.startswith("trial 1 (prune) lost the most: 29 (one seed: no interval) of 1000 test examples"), said


def test_the_latency_section_claims_smaller_is_faster_only_where_a_setting_is_smaller(tmp_path):
    from study.report.page import Page
    from study.report.render import render_latencies

    def said(bytes_ratio: float, latency_ratio: float) -> str:
        latencies = pd.DataFrame([{"trial": 1, "file": "prune", "kind": "pruned", "bytes ratio": bytes_ratio,
                                   "latency ratio": latency_ratio, "latency low": latency_ratio - 0.01,
                                   "latency high": latency_ratio + 0.01, "run": "r1"}])
        page = Page(tmp_path)
        render_latencies(page, sections.Compression(pd.DataFrame(), latencies=latencies), lambda runs: None)
        return page.blocks[0].text

    assert said(1.0, 1.04).startswith("No timed setting's files are smaller than its base's"), "pruned, not smaller"
    assert said(0.5, 0.8).startswith("Every timed setting smaller than the base ran faster")
    assert said(0.5, 1.1).startswith("Smaller is not faster here: 1 setting(s)")


def test_a_stopped_trial_says_what_came_of_its_settings():
    import optuna
    from optuna.trial import TrialState, create_trial

    study = optuna.create_study()  # in memory; Optuna's retry records the trial it repeats as `failed_trial`
    for state in ("interrupted", "interrupted", "failed"):
        study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"study_state": state}))
    study.add_trial(create_trial(value=0.5, system_attrs={"failed_trial": 0}, user_attrs={"study_state": "finished"}))
    study.add_trial(create_trial(state=TrialState.WAITING, system_attrs={"failed_trial": 1}))
    said = sections.retried(study.get_trials(deepcopy=False), [0, 1, 2])
    assert said == ["ran again as trial 3 (finished)", "queued to run again", ""]
