"""The `study` command as a user runs it: exit codes, one-line errors, Ctrl+C, workers, the UI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest
from conftest import ROOT, STUDY, TINY, chromium_driver, run_env
from optuna.trial import TrialState

from study import serve
from study.store import Store


def study(tmp_path, *args, timeout=300, **kwargs):
    return subprocess.run(
        [*STUDY, *args], cwd=tmp_path, env=run_env(tmp_path), capture_output=True, text=True, timeout=timeout, **kwargs
    )


def test_validate_accepts_good_files_and_describes_them(write_sweep, tmp_path):
    path = write_sweep("good", TINY)
    result = study(tmp_path, "validate", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ok: {path}: good on mnist1d; searches model.width, model.kind; sampler grid (6 points)")


def test_validate_warns_when_an_objective_is_measured_on_the_test_set(write_sweep, tmp_path):
    path = write_sweep("peeks", TINY.replace("objective: {val/accuracy: maximize}", "objective: {test/accuracy: maximize}"))
    assert "test/accuracy" in path.read_text()
    result = study(tmp_path, "validate", str(path))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "test/accuracy is measured on the test split" in warnings[0]
    assert "optimize val/accuracy" in warnings[0]
    fair = study(tmp_path, "validate", str(write_sweep("fair", TINY)))
    assert "warning" not in fair.stderr


def test_the_shipped_sweeps_choose_on_validation_metrics(tmp_path):
    shipped = sorted((ROOT / "sweeps").glob("*.yaml"))
    result = study(tmp_path, "validate", *map(str, shipped))
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr, result.stderr


def test_validate_rejects_a_bad_file_with_one_line_and_exit_2(write_sweep, tmp_path):
    path = write_sweep("bad", TINY.replace("width: 8", "widht: 8"))
    result = study(tmp_path, "validate", str(path))
    assert result.returncode == 2
    assert result.stderr == f"error: {path}: model.widht: unknown key; did you mean 'width'?\n"


def test_validate_checks_every_file_given(write_sweep, tmp_path):
    good, bad = write_sweep("good", TINY), write_sweep("bad", TINY.replace("width: 8", "widht: 8"))
    result = study(tmp_path, "validate", str(bad), str(good), str(bad))
    assert result.returncode == 2 and result.stderr.count("error:") == 2 and result.stdout.startswith(f"ok: {good}")


def test_validate_lists_every_problem_of_a_file_one_line_each(write_sweep, tmp_path):
    path = write_sweep("bad", TINY.replace("width: 8", "widht: 8").replace("epochs: 2", "epochs: 0"))
    result = study(tmp_path, "validate", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: {path}: model.widht: unknown key; did you mean 'width'?",
        f"error: {path}: train.epochs: should be greater than or equal to 1, got 0 (int)",
    ]
    run = study(tmp_path, "run", str(path), "--store", "store")
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "(and 1 more problem)" in run.stderr


def test_a_typo_in_set_is_blamed_on_set_not_on_the_file(write_sweep, tmp_path):
    path = write_sweep("typo", TINY)
    result = study(tmp_path, "run", str(path), "--store", "store", "--set", "model.widht=3")
    assert result.returncode == 2
    assert result.stderr == "error: --set model.widht: unknown key; did you mean 'width'?\n"
    result = study(tmp_path, "run", str(path), "--store", "store", "--set", "train.epochs=0")
    assert result.returncode == 2 and result.stderr.startswith("error: --set train.epochs: should be greater than")
    assert not (tmp_path / "store").exists()


def test_timeout_takes_the_durations_a_sweep_file_takes():
    from study.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["run", "x.yaml", "--timeout", "10m"]).timeout == 600
    assert parser.parse_args(["run", "x.yaml", "--timeout", "1.5h"]).timeout == 5400
    assert parser.parse_args(["run", "x.yaml", "--timeout", "90"]).timeout == 90
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(["run", "x.yaml", "--timeout", "soon"])
    assert stopped.value.code == 2


def test_a_zero_timeout_and_max_seeds_without_until_decided_are_refused(write_sweep, tmp_path, capsys):
    from study.cli import build_parser, main

    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "x.yaml", "--timeout", "0"])
    assert "'0': a timeout must be more than 0" in capsys.readouterr().err
    assert main(["run", str(write_sweep("good", TINY)), "--store", str(tmp_path / "store"), "--max-seeds", "3"]) == 2
    assert capsys.readouterr().err == ("error: --max-seeds is read only with --until-decided; add --until-decided or "
                                       "drop --max-seeds\n")
    assert not (tmp_path / "store").exists()


def test_run_with_a_bad_file_writes_nothing(write_sweep, tmp_path):
    path = write_sweep("bad", TINY.replace("[4, 8, 16]", "[4, -8]"))
    result = study(tmp_path, "run", str(path), "--store", "store")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "search.model.width.choices[1]" in result.stderr
    assert not (tmp_path / "store").exists(), "nothing is created for a sweep that cannot run"


def test_run_with_unreadable_data_writes_nothing(write_sweep, tmp_path):
    path = write_sweep("csvbad", "dataset: {name: csv, path: missing.csv, target: y}\nbudget: {trials: 1}\n")
    result = study(tmp_path, "run", str(path), "--store", "store")
    assert result.returncode == 2 and "dataset.path: no such file 'missing.csv'" in result.stderr
    assert not (tmp_path / "store").exists()


def test_a_training_set_larger_than_the_data_is_refused_before_any_trial(write_sweep, tmp_path):
    # mnist1d's 400 samples leave 256 to train on: every trial would fail
    path = write_sweep("toomany", TINY.replace("num_samples: 400}", "num_samples: 400, train_size: 5000}"))
    message = "error: {}dataset.train_size: 5000 exceeds the 256 training examples available; lower it or make the dataset larger\n"
    checked = study(tmp_path, "validate", str(path))
    assert checked.returncode == 2 and checked.stderr == message.format(f"{path}: ")
    ran = study(tmp_path, "run", str(path), "--store", "store")
    assert ran.returncode == 2 and ran.stderr == message.format("")
    assert not (tmp_path / "store").exists(), "nothing is created for a sweep that cannot run"
    # searched: only the trials that ask too many fail, so validate warns and run goes on
    searched = write_sweep("some", TINY.replace("model.kind: [mlp, cnn]", "dataset.train_size: [50, 5000]"))
    checked = study(tmp_path, "validate", str(searched))
    assert checked.returncode == 0 and checked.stderr.count("\n") == 1
    assert checked.stderr.startswith(f"warning: {searched}: dataset.train_size: 5000 (searched) exceeds the 256 ")


def test_a_reader_that_leaves_early_gets_no_traceback(write_sweep, tmp_path):
    read, write = os.pipe()
    os.close(read)  # `study validate ... | head -0`: every write finds the pipe closed
    try:
        result = subprocess.run([*STUDY, "validate", str(write_sweep("good", TINY))], cwd=tmp_path, env=run_env(tmp_path),
                                stdout=write, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write)
    assert result.returncode == 1 and result.stderr == ""


def test_report_into_a_file_is_refused_in_one_line(tmp_path):
    (tmp_path / "taken").write_text("mine")
    result = study(tmp_path, "report", "demo", "--store", "store", "--out", "taken")
    assert result.returncode == 2 and result.stderr == "error: --out taken: a file, not a folder; give a folder for the reports\n"
    assert (tmp_path / "taken").read_text() == "mine"


def test_validate_reads_a_csv_dataset_and_checks_its_target(write_sweep, tmp_path):
    missing = write_sweep("csvmissing", "dataset: {name: csv, path: missing.csv, target: y}\nbudget: {trials: 1}\n")
    result = study(tmp_path, "validate", str(missing))
    assert result.returncode == 2 and "dataset.path: no such file 'missing.csv'" in result.stderr
    (missing.parent / "table.csv").write_text("a,b\n1,2\n3,4\n5,6\n7,8\n")
    no_target = write_sweep("csvtarget", "dataset: {name: csv, path: table.csv, target: y}\nbudget: {trials: 1}\n")
    result = study(tmp_path, "validate", str(no_target))
    assert result.returncode == 2 and "y" in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_validate_shows_a_csv_sweeps_features_target_and_types(write_sweep, tmp_path):
    rows = ["a,b,n,label"] + [f"{i / 7:.3f},{i % 5 - 2.5},{i % 4},{'cat' if i % 2 else 'dog'}" for i in range(30)]
    (tmp_path / "table.csv").write_text("\n".join(rows) + "\n")
    path = write_sweep("fromcsv", "dataset: {name: csv, path: table.csv, target: label}\nbudget: {trials: 1}\n")
    result = study(tmp_path, "validate", str(path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"ok: {path}: fromcsv on csv;")
    assert lines[1:] == ["  features (3): a (float), b (float), n (int)", "  target: label (text): classification, 2 classes (cat, dog)"]
    other = study(tmp_path, "validate", str(write_sweep("good", TINY)))
    assert other.returncode == 0 and len(other.stdout.splitlines()) == 1, "other datasets keep their one line"


def test_validate_refuses_a_csv_saved_with_its_pandas_index(write_sweep, tmp_path):
    rows = [",a,label"] + [f"{i},{i / 3:.3f},{'cat' if i % 2 else 'dog'}" for i in range(20)]
    (tmp_path / "indexed.csv").write_text("\n".join(rows) + "\n")
    path = write_sweep("indexed", "dataset: {name: csv, path: indexed.csv, target: label}\nbudget: {trials: 1}\n")
    result = study(tmp_path, "validate", str(path))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "column 'Unnamed: 0' of indexed.csv holds the row numbers 0..19" in result.stderr
    assert "write the file with index=False, or list the columns to use in dataset.features" in result.stderr
    listed = write_sweep("listed", "dataset: {name: csv, path: indexed.csv, target: label, features: [a]}\nbudget: {trials: 1}\n")
    assert study(tmp_path, "validate", str(listed)).returncode == 0, "a column left out of features is not read"


def test_version_prints_the_installed_package_version(tmp_path):
    from importlib.metadata import version

    result = study(tmp_path, "--version")
    assert result.returncode == 0 and result.stdout == f"study {version('study')}\n"


def test_ui_runs_one_server_worker_unless_told():
    from study.cli import build_parser

    command = serve.server_command(Store.resolve("x"), "127.0.0.1", 5000)
    assert command[command.index("--workers") + 1] == "1"
    assert build_parser().parse_args(["ui"]).workers == 1 and build_parser().parse_args(["ui", "--workers", "3"]).workers == 3
    command = serve.server_command(Store.resolve("x"), "127.0.0.1", 5000, workers=3)
    assert command[command.index("--workers") + 1] == "3"


def test_bad_command_line_values_exit_2(tmp_path):
    assert study(tmp_path, "run", "x.yaml", "--trials", "0").returncode == 2
    assert study(tmp_path, "ui", "--workers", "0").returncode == 2
    assert study(tmp_path, "nonsense").returncode == 2


@pytest.mark.slow
def test_run_prints_the_summary_and_where_to_look(write_sweep, tmp_path):
    path = write_sweep("cli", TINY)
    result = study(tmp_path, "run", str(path), "--store", "store", "--trials", "2", "--set", "train.epochs=1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("cli: complete — 2 trials done (2 finished, 0 pruned, 0 failed) in ")
    assert lines[1].startswith("best: trial ")
    browse = next(line for line in lines if line.startswith("browse:  "))
    assert f"{sys.executable} -m study ui --store" in browse, "a command that works from this shell"
    assert browse.endswith("/runs?workflowType=machine_learning"), "a link to the runs, in the Model training view"

    assert "cli: 2/2 trials" in result.stderr, "the progress bar counts trials"

    listed = study(tmp_path, "list", "--store", "store", "--sweeps", str(tmp_path))
    assert listed.returncode == 0
    row = next(line for line in listed.stdout.splitlines() if line.startswith("cli "))
    assert row.split()[2:7] == ["2", "0", "0", "0", "0"] and "val/accuracy" in row


@pytest.mark.slow
def test_ctrl_c_fails_the_running_trial_exits_130_and_resume_completes(write_sweep, tmp_path):
    path = write_sweep("sigint", TINY.replace("epochs: 2", "epochs: 100000"))  # a trial far longer than the wait below
    args = [*STUDY, "run", str(path), "--store", "store", "--trials", "3", "--quiet"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=run_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = Store.resolve(tmp_path / "store")
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the first trial is training (earlier moments: test_torture.py)
        time.sleep(0.5)
        if (tmp_path / "store" / "optuna.db").exists():
            try:
                trials = optuna.load_study(study_name="sigint", storage=store.optuna()).trials
            except KeyError:
                continue
            running = [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get("mlflow_run_id")]
            # training is under way once its first epochs reach MLflow (written every few seconds)
            if running and store.mlflow().get_run(running[0].user_attrs["mlflow_run_id"]).data.metrics:
                break
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()  # a lost Ctrl+C: leave no sweep running behind the suite
        proc.communicate()
        raise
    assert proc.returncode == 130, err
    assert "interrupted: sigint stopped; the trials that were running were marked failed and queued to run again" in err
    assert f"Resume with:\n  {sys.executable} -m study run" in err and "--trials 3" in err, "a command that works from this shell"
    trials = optuna.load_study(study_name="sigint", storage=store.optuna()).trials
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 3, "the three trials trained as one pack"
    for trial in failed:
        assert trial.user_attrs["study_state"] == "interrupted"
        assert store.mlflow().get_run(trial.user_attrs["mlflow_run_id"]).info.status == "FAILED"

    resumed = study(tmp_path, "run", str(path), "--store", "store", "--trials", "3", "--quiet", "--set", "train.epochs=1", "--allow-changed")
    assert resumed.returncode == 0, resumed.stderr
    trials = optuna.load_study(study_name="sigint", storage=store.optuna()).trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    listed = study(tmp_path, "list", "--store", "store", "--sweeps", str(tmp_path))
    row = next(line for line in listed.stdout.splitlines() if line.startswith("sigint "))
    assert row.split()[2:7] == ["3", "0", "0", "3", "0"], "finished, pruned, failed, interrupted, running"
    client = store.mlflow()
    experiment = client.get_experiment_by_name("sigint")
    failed_runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FAILED'")
    assert len(failed_runs) == 0 + 3, "MLflow's FAILED runs are the failed plus the interrupted trials"


@pytest.mark.slow
def test_two_workers_share_the_budget_exactly(write_sweep, tmp_path):
    path = write_sweep("pair", TINY)
    result = study(tmp_path, "run", str(path), "--store", "store", "--trials", "5", "--workers", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    store = Store.resolve(tmp_path / "store")
    trials = optuna.load_study(study_name="pair", storage=store.optuna()).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 5
    assert all(t.user_attrs.get("study_skipped") for t in trials if t.state != TrialState.COMPLETE)
    assert {t.user_attrs["study_skipped"] for t in trials if t.state != TrialState.COMPLETE} <= {"budget"}
    experiment = store.mlflow().get_experiment_by_name("pair")
    runs = store.mlflow().search_runs([experiment.experiment_id], filter_string="tags.`study.role` = 'trial'")
    assert len(runs) == 5 and all(r.info.status == "FINISHED" for r in runs)


def test_the_command_to_run_again_works_without_activating_the_venv(tmp_path, monkeypatch):
    from study.cli import _self_command

    script = tmp_path / ".venv" / "bin" / "study"
    script.parent.mkdir(parents=True)
    script.write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script)])
    monkeypatch.setenv("PATH", "/nonexistent")
    assert _self_command() == ".venv/bin/study"
    monkeypatch.setenv("PATH", str(script.parent))
    script.chmod(0o755)
    assert _self_command() == "study"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ui_serves_the_store_on_localhost_and_stops_with_sigterm(write_sweep, tmp_path):
    path = write_sweep("seen", TINY)
    assert study(tmp_path, "run", str(path), "--store", "store", "--trials", "1", "--quiet").returncode == 0
    port = free_port()
    proc = subprocess.Popen(
        [*STUDY, "ui", "--store", "store", "--port", str(port)], cwd=tmp_path, env=run_env(tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        first = proc.stdout.readline()
        assert first.startswith("starting the MLflow UI"), first
        line = first
        while f"MLflow UI at http://127.0.0.1:{port}" not in line:  # the server's own log lines come between
            line = proc.stdout.readline()
            assert line, "the address was printed"
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=10"
        with urllib.request.urlopen(url, timeout=10) as response:  # it answers as soon as the address is printed
            body = json.load(response)
        assert "seen" in [e["name"] for e in body["experiments"]]
    finally:
        proc.terminate()  # a plain kill (SIGTERM) stops the server too
        proc.wait(timeout=60)
    assert proc.returncode == 0
    deadline = time.time() + 20
    while not serve.port_free("127.0.0.1", port) and time.time() < deadline:
        time.sleep(0.5)
    assert serve.port_free("127.0.0.1", port), "no server is left listening"


@pytest.mark.slow
@pytest.mark.parametrize("workers", [None, 2])
def test_ui_ends_its_startup_output_with_the_address_and_runs_the_workers_asked(write_sweep, tmp_path, workers):
    import select

    from conftest import _descendants

    path = write_sweep("seen", TINY)
    assert study(tmp_path, "run", str(path), "--store", "store", "--trials", "1", "--quiet").returncode == 0
    port = free_port()
    asked = ["--workers", str(workers)] if workers else []
    proc = subprocess.Popen(
        [*STUDY, "ui", "--store", "store", "--port", str(port), *asked], cwd=tmp_path, env=run_env(tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0,
    )
    try:
        lines = []
        while not lines or b"MLflow UI at" not in lines[-1]:
            line = proc.stdout.readline()
            assert line, f"the address was printed: {lines}"
            lines.append(line)
        assert lines[-1].decode().startswith(f"MLflow UI at http://127.0.0.1:{port}/")
        if workers is None:  # one server process: nothing follows the address (more workers may start late)
            ready, _, _ = select.select([proc.stdout], [], [], 5)
            assert not ready, f"the address is the last line of the startup output, not {proc.stdout.read(4096)!r}"
        tree = [command for _, command in _descendants(proc.pid)]
        served = [c for c in tree if "spawn_main" in c]  # uvicorn's worker processes; a single worker serves in its own
        assert len(served) == (workers if workers else 0), tree
        assert sum("uvicorn" in c for c in tree) == 1, tree
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert proc.returncode == 0


@pytest.mark.slow
def test_the_mlflow_ui_opens_a_sweep_on_its_trial_runs(write_sweep, tmp_path):
    path = write_sweep("seen", TINY)
    done = study(tmp_path, "run", str(path), "--store", "store", "--trials", "2", "--quiet")
    assert done.returncode == 0, done.stderr
    browse = next(line for line in done.stdout.splitlines() if line.startswith("browse:  "))
    port = free_port()
    proc = subprocess.Popen(
        [*STUDY, "ui", "--store", "store", "--port", str(port)], cwd=tmp_path, env=run_env(tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    driver = None
    try:
        line = proc.stdout.readline()
        while "MLflow UI at" not in line:
            assert line, "the address was printed"
            line = proc.stdout.readline()
        printed = line.split("MLflow UI at ")[1].split()[0]
        driver = chromium_driver(tmp_path)

        def shows(url: str, *texts: str) -> str:
            driver.get(url)
            deadline = time.time() + 90
            text = ""
            while time.time() < deadline:
                text = driver.execute_script("return document.body.innerText")
                if all(t in text for t in texts):
                    return text
                time.sleep(1)
            driver.save_screenshot(str(tmp_path / "ui.png"))
            raise AssertionError(f"{url} does not show {texts}: {text[:500]!r}")

        shows(printed, "seen")  # `study ui`'s address lists the experiments
        runs = browse.split("then open ")[1].replace("127.0.0.1:5000", f"127.0.0.1:{port}")
        text = shows(runs, "trial-0000", "trial-0001")  # the link `study run` printed opens on the trials
        assert "Token Usage" not in text and "Traces\n0" not in text, "not the GenAI view"
        report = study(tmp_path, "report", "seen", "--store", "store", "--out", "reports", "--mlflow-url", f"http://127.0.0.1:{port}")
        assert report.returncode == 0, report.stderr
        driver.get((tmp_path / "reports" / "seen" / "index.html").as_uri())
        link = driver.execute_script("return Array.from(document.querySelectorAll('td a')).map(a => a.href)[0]")
        assert "/runs/" in link
        shows(link, "trial-000", "Parameters")  # the report's run link opens that run's page
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        proc.wait(timeout=60)


@pytest.mark.slow
def test_ui_on_a_busy_port_says_so_and_fails(write_sweep, tmp_path):
    path = write_sweep("busy", TINY)
    assert study(tmp_path, "run", str(path), "--store", "store", "--trials", "1", "--quiet").returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = study(tmp_path, "ui", "--store", "store", "--port", str(taken.getsockname()[1]))
    assert result.returncode == 1 and "is in use" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_ui_and_report_without_a_store_or_sweep_say_how_to_make_one(tmp_path):
    result = study(tmp_path, "ui", "--store", "nothing-here")
    assert result.returncode == 2 and "run a sweep first" in result.stderr, "a --store to fix: bad input"
    result = study(tmp_path, "report", "demo", "--store", "nothing-here")
    assert result.returncode == 2 and result.stderr.startswith("error: no store in ") and "run a sweep first" in result.stderr
    assert not (tmp_path / "nothing-here").exists()


def test_a_full_disk_is_one_line_not_a_traceback(write_sweep, tmp_path, monkeypatch, capsys):
    """The errors a full disk raises (SQLite's, wrapped by SQLAlchemy; the OS's ENOSPC), wherever
    they surface, end the command with one line that says what to do."""
    import errno

    import sqlalchemy

    from study import cli
    from study import sweep as sweep_module

    path = write_sweep("full", TINY)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # cmd_run's SIGTERM handler stays out of pytest
    for error in (sqlalchemy.exc.OperationalError("INSERT ...", {}, Exception("database or disk is full")),
                  RuntimeError("could not log"), OSError(errno.ENOSPC, "No space left on device")):
        def fail(*args, error=error, **kwargs):
            if isinstance(error, RuntimeError):
                raise error from OSError(errno.ENOSPC, "No space left on device")
            raise error

        monkeypatch.setattr(sweep_module, "run_sweep", fail)
        assert cli.main(["run", str(path), "--store", str(tmp_path / "store"), "--quiet"]) == 1
        err = capsys.readouterr().err
        assert err == "error: the disk is full (free some space, then run the same command again: finished work is kept)\n"


def test_validate_warns_of_a_compress_knob_that_no_trial_reads(write_sweep, tmp_path):
    # a warning, not an error: the method may come later, with --set compress.method=...
    path = write_sweep("unread", "dataset: {name: mnist1d}\nbudget: {trials: 1}\ncompress: {method: none, finetune_epochs: 3}\n")
    checked = study(tmp_path, "validate", str(path))
    assert checked.returncode == 0 and checked.stderr.count("\n") == 1
    assert checked.stderr.startswith(f"warning: {path}: compress.finetune_epochs: set, but no trial of this sweep reads it ")
    assert "--set compress.method=" in checked.stderr
