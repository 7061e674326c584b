"""The many-machines path: Optuna and MLflow on a PostgreSQL server, artifacts in a shared folder,
and independent `study run` processes (standing in for machines) sharing one budget."""

from __future__ import annotations

import subprocess

import optuna
import pytest
from conftest import STUDY, TINY, postgres_databases, run_env
from optuna.trial import TrialState

from study.store import Store


@pytest.fixture
def databases():
    """Two fresh databases (MLflow's and Optuna's schemas both own an alembic_version table)."""
    with postgres_databases() as uris:
        yield uris


@pytest.mark.slow
def test_machines_share_one_budget_through_postgres(write_sweep, tmp_path, databases):
    tracking, storage = databases
    shared = tmp_path / "shared-artifacts"
    path = write_sweep("spread", TINY)
    options = ["--tracking-uri", tracking, "--storage", storage, "--artifacts", str(shared)]
    env = run_env(tmp_path)

    init = subprocess.run([*STUDY, "init", str(path), *options], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    assert "ready: study 'spread'" in init.stdout

    machines = [
        subprocess.Popen(
            [*STUDY, "run", str(path), *options, "--trials", "5", "--quiet", "--store", str(tmp_path / f"machine{i}")],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    for machine in machines:
        out, err = machine.communicate(timeout=600)
        assert machine.returncode == 0, err

    store = Store.resolve(tmp_path / "unused", tracking_uri=tracking, storage=storage, artifacts=str(shared))
    trials = optuna.load_study(study_name="spread", storage=store.optuna()).trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 5
    assert all(t.user_attrs.get("study_skipped") for t in trials if t.state != TrialState.COMPLETE)
    client = store.mlflow()
    experiment = client.get_experiment_by_name("spread")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`study.role` = 'trial'")
    assert len(runs) == 5 and all(r.info.status == "FINISHED" for r in runs)
    assert all(str(shared) in r.info.artifact_uri for r in runs), "artifacts land in the shared folder"
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id)} >= {"model", "predictions.npz"}


@pytest.mark.slow
def test_four_machines_started_together_draw_their_own_settings(write_sweep, tmp_path, databases):
    """Each process seeds its sampler on its own: four that start alike (worker 0, an empty study)
    must not train the same settings."""
    tracking, storage = databases
    text = TINY.replace("model.width: [4, 8, 16]", "model.width: {type: int, low: 2, high: 64}").replace(
        "model.kind: [mlp, cnn]", "train.learning_rate: {type: float, low: 1e-4, high: 1e-1, log: true}")
    assert "learning_rate" in text
    text = text.replace("sampler: grid", "sampler: tpe\nbudget: {trials: 8}").replace("epochs: 2", "epochs: 1")
    path = write_sweep("alike", text)
    options = ["--tracking-uri", tracking, "--storage", storage, "--artifacts", str(tmp_path / "shared")]
    env = run_env(tmp_path)
    init = subprocess.run([*STUDY, "init", str(path), *options], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    machines = [subprocess.Popen([*STUDY, "run", str(path), *options, "--quiet", "--store", str(tmp_path / f"m{i}")],
                                 cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for i in range(4)]
    for machine in machines:
        _, err = machine.communicate(timeout=600)
        assert machine.returncode == 0, err
    store = Store.resolve(tmp_path / "unused", tracking_uri=tracking, storage=storage)
    complete = [t for t in optuna.load_study(study_name="alike", storage=store.optuna()).trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 8
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 8, "no two machines trained the same settings"


def test_the_ask_lock_on_postgres_lets_one_worker_in_at_a_time(databases, tmp_path):
    """Settling dead workers' trials and asking happen under one lock on a database server too:
    PostgreSQL's advisory lock, held by one process (here: thread with its own connection) at a time."""
    import threading
    import time

    store = Store.resolve(tmp_path / "store", tracking_uri=databases[0], storage=databases[1])
    events: list[str] = []

    def worker(name: str) -> None:
        lock = store.ask_lock()  # a worker makes its lock once and takes it before every ask
        for _ in range(2):
            with lock:
                events.append(f"{name} in")
                time.sleep(0.3)
                events.append(f"{name} out")

    threads = [threading.Thread(target=worker, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(events) == 8 and all(events[i][0] == events[i + 1][0] and events[i].endswith("in")
                                    for i in range(0, 8, 2)), events
