"""Writer to reader: a trial logged by the tracker (study.tracking) into a real MLflow store is read
back by the report's loader (study.report.load) with every metric, param, tag, per-epoch curve and
artifact the report reads, as written. No training: the trial's results are made by hand."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
from conftest import TINY

from study import names
from study.config import load_sweep
from study.datasets import load_dataset
from study.names import Role, Tag, TrialState
from study.replicate import ReplicateResult, TrialResult, write_outputs
from study.report import regimes, sections, tables
from study.report.load import load_sweep_runs
from study.sweep import prepare

EPOCHS = 3
# Every final metric the report reads of a classification trial (regimes, tables, figures).
READ = ("train/accuracy", "val/accuracy", "test/accuracy", "train/loss", "val/loss", "test/loss", "gap/accuracy",
        "train/loss_se", "test/loss_se", "model/params", "model/size_bytes", "fit/best_epoch", "fit/stopped_epoch",
        "data/train_size", "data/test_size", "data/chance_error", "data/noise_floor")


def replicate(index: int, data, folder) -> ReplicateResult:
    rng = np.random.default_rng(index)
    history = [{names.EPOCH[key].short: float(rng.uniform(0.1, 2.0)) for key in ("train_loss", "val_loss", "train_accuracy",
                                                                              "val_accuracy")} for _ in range(EPOCHS)]
    metrics = {key: float(rng.uniform(0.05, 0.95)) for key in READ}
    metrics.update({"data/train_size": 240.0, "data/test_size": float(len(data.y_test)), "fit/best_epoch": 2.0,
                    "fit/stopped_epoch": 0.0, "model/params": 1234.0, "model/size_bytes": 5678.0 + index})
    model = folder / f"model-{index}.keras"
    model.write_bytes(b"a model's bytes")  # the report never opens the model file
    outputs = rng.normal(size=(len(data.y_test), 10)).astype(np.float32)
    return ReplicateResult(index, index, TrialState.FINISHED, "", history, metrics, outputs, model)


@pytest.fixture
def logged(write_sweep, store, tmp_path):
    """One finished trial with two replicates, logged through the tracker; (sweep, data, run, result)."""
    sweep = load_sweep(write_sweep("contract", TINY + "replicates: 2\n"))
    study, tracker, sweep_run_id = prepare(sweep, store)
    data = load_dataset(sweep.config.dataset, sweep.config.seed, sweep.path.parent)
    trial = study.ask()
    params = {"model.kind": trial.suggest_categorical("model.kind", ["mlp", "cnn"]),
              "model.width": trial.suggest_categorical("model.width", [4, 8, 16])}
    setup = {**params, "train.epochs": 2, "train.learning_rate": 0.01, "dataset.name": "mnist1d"}
    run = tracker.start_trial(trial.number, params, setup, data)
    trial.set_user_attr("mlflow_run_id", run.run_id)
    result = TrialResult(data.task, [replicate(i, data, tmp_path) for i in range(2)])
    for r in result.replicates:
        for epoch, row in enumerate(r.history, start=1):
            run.log_epoch(r.index, epoch, row)
        run.end_replicate(r)
    outputs = tmp_path / "outputs"
    write_outputs(result, data, outputs)
    run.finish(result, outputs)
    study.tell(trial, result.metrics["val/accuracy"])
    return sweep, data, run, result, setup, sweep_run_id


def test_the_loader_reads_every_metric_param_and_tag_the_tracker_wrote(logged, store):
    sweep, data, run, result, setup, sweep_run_id = logged
    loaded = load_sweep_runs(store, "contract")
    assert len(loaded.runs) == 1, "one trial run; its replicates' runs are not trials"
    row = loaded.runs.iloc[0]
    assert row["run_id"] == run.run_id and row["trial"] == 0 and row["status"] == "FINISHED"
    assert row["state"] == TrialState.FINISHED
    for key, value in result.metrics.items():  # means over the replicates, and their spreads (_std)
        assert row[names.column(key)] == pytest.approx(value), key
    assert {names.column(k) for k in READ} | {names.column(f"{k}_std") for k in ("train/accuracy", "test/accuracy")} <= set(
        loaded.runs.columns)
    for key, value in {**setup, "seed": sweep.config.seed, "replicates": 2}.items():
        assert str(row[f"params.{key}"]) == str(value), key
    tags = {Tag.ROLE: Role.TRIAL, Tag.TRIAL: "0", Tag.STATE: TrialState.FINISHED, Tag.NAME: "contract",
            Tag.SWEEP_RUN: sweep_run_id, Tag.SAMPLED: json.dumps(["model.kind", "model.width"]),
            Tag.SWEEP_HASH: sweep.file_hash}
    for tag, value in tags.items():
        assert row[names.tag_column(tag)] == value, tag
    assert loaded.searched == ["model.width", "model.kind"], "the searched keys, from the sweep run"
    assert loaded.sweep_run["run_id"] == sweep_run_id and loaded.sweep_text == sweep.text
    assert tables.objective_of(loaded.sweep_run) == {"val/accuracy": "maximize"}

    errs = regimes.errors(loaded.runs)  # what the report makes of them
    train = [r.metrics["train/accuracy"] for r in result.replicates]
    assert errs.loc[0, "train_error"] == pytest.approx(1 - np.mean(train))
    assert errs.loc[0, "train_std"] == pytest.approx(np.std(train)) and errs.loc[0, "replicates"] == 2


def test_the_loader_reads_the_curves_predictions_and_optuna_trials_the_tracker_wrote(logged, store):
    sweep, data, run, result, setup, sweep_run_id = logged
    loaded = load_sweep_runs(store, "contract")
    curves = loaded.histories[run.run_id]  # the trial's own curves: means over its replicates
    assert curves["epoch"].tolist() == list(range(1, EPOCHS + 1))
    for curve in (names.TRAIN_LOSS, names.VAL_LOSS):
        mean = [np.mean([r.history[e][curve.short] for r in result.replicates]) for e in range(EPOCHS)]
        assert curves[curve.key].tolist() == pytest.approx(mean), curve.key
    saved = loaded.predictions[run.run_id]
    assert np.array_equal(saved["outputs"], np.stack([r.test_outputs for r in result.replicates]))
    assert np.array_equal(saved["y_test"], data.y_test) and saved["seeds"].tolist() == [0, 1]
    assert loaded.optuna is not None and loaded.optuna.directions == [optuna.study.StudyDirection.MAXIMIZE]
    done = [t for t in loaded.optuna.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert [t.user_attrs["mlflow_run_id"] for t in done] == [run.run_id], "the other grid points wait in the queue"
    assert done[0].values == [pytest.approx(result.metrics["val/accuracy"])]

    report = sections.compute_report(loaded)  # and the sections read what was loaded, nothing else
    assert report.counts.optuna is not None and report.counts.optuna.finished == 1
    assert report.counts.mlflow == {TrialState.FINISHED: 1} and report.counts.statuses == {"FINISHED": 1}
    body = report.body
    assert isinstance(body, sections.BiasVariance) and body.learning is not None
    assert body.decomposition is not None and body.decomposition.table["run_id"].tolist() == [run.run_id]
    assert body.decomposition.kind == "0-1 loss (Domingos 2000)"


def test_a_flush_stopped_part_way_is_taken_up_where_it_stopped(write_sweep, store):
    """Buffered epochs go out one request (MAX_METRICS_PER_BATCH) at a time, each dropped once
    written: after a flush that stopped part way (here a bad row in its second request; a Ctrl+C
    does the same), the next sends only what was not written. Sent twice, MLflow met the rows with
    an IntegrityError and searched the run for them row by row: minutes on a long run."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import MAX_METRICS_PER_BATCH

    sweep = load_sweep(write_sweep("flush", TINY))
    study, tracker, _ = prepare(sweep, store)
    run = tracker.start_trial(0, {"model.width": 4}, {"model.width": 4}, load_dataset(sweep.config.dataset, sweep.config.seed,
                                                                                         sweep.path.parent))
    row = {"train_loss": 1.0, "val_loss": 2.0, "train_accuracy": 0.5, "val_accuracy": 0.25}
    first = MAX_METRICS_PER_BATCH // len(row)  # epochs that fill the first request
    for epoch in range(1, first + 11):
        run.log_epoch(0, epoch, row)
    run.log_epoch(0, first + 11, {"bad name!": 1.0})  # MLflow refuses the request that holds it
    with pytest.raises(MlflowException, match="bad name"):
        run.flush()
    history = lambda key: [m.step for m in tracker.client.get_metric_history(run.run_id, key)]  # noqa: E731
    assert history("epoch/train_loss") == list(range(1, first + 1)), "the first request was written"
    left = run.pending[run.run_id]
    assert len(left) == 10 * len(row) + 1 and left[0].step == first + 1, "and only it left the buffer"
    left.pop()  # the bad row
    run.flush()
    assert run.pending == {}
    for key in ("epoch/train_loss", "epoch/val_accuracy"):
        assert history(key) == list(range(1, first + 11)), "every epoch once"


class CtrlCWhenRead(float):
    """A metric value whose reading raises KeyboardInterrupt, as a Ctrl+C's handler does wherever
    the signal lands: here inside MLflow's write of a request."""

    def __float__(self):
        raise KeyboardInterrupt


def test_a_request_a_ctrl_c_stopped_is_not_sent_again(write_sweep, store):
    """A Ctrl+C can land after MLflow committed a request and before it returned: that request
    leaves the buffer (its run is closed as interrupted), never sent twice; the rest stays."""
    from mlflow.utils.validation import MAX_METRICS_PER_BATCH

    sweep = load_sweep(write_sweep("flush", TINY))
    study, tracker, _ = prepare(sweep, store)
    run = tracker.start_trial(0, {"model.width": 4}, {"model.width": 4}, load_dataset(sweep.config.dataset, sweep.config.seed,
                                                                                         sweep.path.parent))
    first = MAX_METRICS_PER_BATCH // 4
    for epoch in range(1, first + 1):
        run.log_epoch(0, epoch, {"train_loss": 1.0, "val_loss": 2.0, "train_accuracy": 0.5, "val_accuracy": 0.25})
    run.log_epoch(0, first + 1, {"train_loss": CtrlCWhenRead(1.0)})  # the second request
    with pytest.raises(KeyboardInterrupt):
        run.flush()
    assert not any(run.pending.values()), "the first request written, the second dropped"
    assert [m.step for m in tracker.client.get_metric_history(run.run_id, "epoch/train_loss")] == list(range(1, first + 1))
