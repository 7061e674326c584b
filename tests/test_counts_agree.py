"""`study list`, the report and MLflow count a sweep's trials alike: one sweep in which trials
finish, diverge, fail and are interrupted (then retried), in real stores."""

from __future__ import annotations

import textwrap

import pytest

from study import objective
from study.config import load_sweep
from study.ledger import Counts
from study.listing import list_sweeps
from study.names import Role, Tag, TrialState
from study.report.build import build_report
from study.sweep import Interrupted, run_sweep

# A 2 × 2 grid: a huge learning rate diverges (Optuna PRUNED, MLflow KILLED), a training set larger
# than the data fails; one trial of each learning rate and size.
ROUGH = textwrap.dedent("""
    dataset: {name: polynomial, num_samples: 60}
    model: {depth: 1, width: 8}
    train: {optimizer: sgd, epochs: 2, batch_size: 8}
    search:
      train.learning_rate: [1.0e+6, 0.01]
      dataset.train_size: [20, 100000]
    sampler: grid
""")


def mlflow_runs(store, name: str, filter_string: str) -> int:
    client = store.mlflow()
    experiment = client.get_experiment_by_name(name)
    return len(client.search_runs([experiment.experiment_id], f"tags.`{Tag.ROLE}` = '{Role.TRIAL}' and {filter_string}"))


@pytest.mark.slow
def test_study_list_the_report_and_mlflow_agree_on_every_count(write_sweep, store, tmp_path, monkeypatch):
    path = write_sweep("rough", ROUGH)
    sweep = load_sweep(path, {"pack": 1})

    def interrupted(*args, **kwargs):  # Ctrl+C in the first trial: it is queued again
        raise KeyboardInterrupt

    monkeypatch.setattr(objective, "run_trials", interrupted)
    with pytest.raises(Interrupted):
        run_sweep(sweep, store)
    monkeypatch.undo()
    run_sweep(sweep, store)  # resumed: the retry and the rest of the grid

    expected = Counts(finished=1, pruned=1, failed=2, interrupted=1)
    listed = next(row for row in list_sweeps(store, path.parent) if row[0] == "rough")
    assert listed[2:7] == (1, 1, 2, 1, 0), "study list: finished, pruned, failed, interrupted, running"

    built = build_report(store, "rough", tmp_path / "reports", log_to_mlflow=False)
    assert "ran again as trial" in built.path.read_text(), "the interrupted trial's row says its settings ran again"
    assert built.counts == expected, "the report counts Optuna's trials as study list does"
    assert built.trials == "1 finished, 1 pruned, 2 failed, 1 interrupted"
    assert built.mlflow == {TrialState.FINISHED: 1, TrialState.DIVERGED: 1, TrialState.FAILED: 2,
                            TrialState.INTERRUPTED: 1}
    assert built.statuses == {"FINISHED": 1, "KILLED": 1, "FAILED": 3}

    by_state = {state: mlflow_runs(store, "rough", f"tags.`{Tag.STATE}` = '{state}'") for state in TrialState}
    by_status = {status: mlflow_runs(store, "rough", f"attributes.status = '{status}'")
                 for status in ("FINISHED", "KILLED", "FAILED", "RUNNING")}
    assert by_state[TrialState.FINISHED] == by_status["FINISHED"] == expected.finished
    assert by_state[TrialState.PRUNED] + by_state[TrialState.DIVERGED] == by_status["KILLED"] == expected.pruned
    assert by_state[TrialState.FAILED] == expected.failed and by_state[TrialState.INTERRUPTED] == expected.interrupted
    assert by_status["FAILED"] == expected.failed + expected.interrupted, "MLflow's FAILED: failed + interrupted"
    assert by_state[TrialState.RUNNING] == by_status["RUNNING"] == expected.running == 0

    page = built.path.read_text()
    for state, n, status in (("finished", 1, "FINISHED"), ("pruned or diverged", 1, "KILLED"), ("failed", 2, "FAILED"),
                             ("interrupted", 1, "FAILED")):
        row = f'<td>{state}</td><td class="num">{n}</td><td class="num">{n}</td><td>{status}</td>'
        assert row in page, f"the page's trial table: {row}"
