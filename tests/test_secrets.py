"""No password in a store's URI is ever printed, logged or stored: `store.redact` hides it in error
lines, progress output, the commands we print, MLflow params and tags, Optuna attributes and
reports. The sweep runs on the PostgreSQL server with a user:password URI (its trust auth ignores
the password), so the secret goes through every real path."""

from __future__ import annotations

import socket
import subprocess

import pytest
from conftest import STUDY, TINY, postgres_databases, run_env

from study.cli import _given_store_options, build_parser
from study.store import Store, redact

SECRET = "s3cret-Pw"


def study(cwd, *args, timeout=600):
    return subprocess.run([*STUDY, *args], cwd=cwd, env=run_env(cwd), capture_output=True, text=True, timeout=timeout)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("text, shown", [
    ("API request to http://bob:pw@host:5000/api/2.0 failed", "API request to http://bob:***@host:5000/api/2.0 failed"),
    ("cannot open postgresql://alice:p@ss/w@db/optuna: refused", "cannot open postgresql://alice:***@db/optuna: refused"),
    ("host=db user=alice password=pw dbname=optuna", "host=db user=alice password=*** dbname=optuna"),
    ("mysql://root:@localhost/x and http://u:v@h", "mysql://root:***@localhost/x and http://u:***@h"),
    ("http://host:5000/path and mail@example.org", "http://host:5000/path and mail@example.org"),
])
def test_redaction_hides_every_password_in_a_text(text, shown):
    assert redact(text) == shown


def test_the_store_options_we_print_hide_the_password():
    args = build_parser().parse_args(["report", "x", "--tracking-uri", f"http://bob:{SECRET}@h:5000",
                                      "--storage", f"postgresql://alice@db/o?password={SECRET}"])
    shown = " ".join(_given_store_options(args))
    assert SECRET not in shown and "http://bob:***@h:5000" in shown


@pytest.mark.parametrize("option, url", [
    ("--tracking-uri", f"http://bob:{SECRET}@127.0.0.1:{{port}}"),
    ("--storage", f"postgresql://postgres:{SECRET}@127.0.0.1:{{port}}/optuna"),
    ("--storage", f"postgresql://postgres@127.0.0.1:{{port}}/optuna?password={SECRET}"),
])
def test_a_server_that_is_down_says_so_without_its_password(tmp_path, option, url):
    (tmp_path / "tiny.yaml").write_text(TINY)
    result = study(tmp_path, "init", "tiny.yaml", option, url.format(port=closed_port()), timeout=120)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert SECRET not in result.stdout + result.stderr and "***" in result.stderr


@pytest.fixture
def databases():
    """Two fresh databases on the PostgreSQL server, as URIs with a password in them."""
    with postgres_databases() as uris:
        yield [uri.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@") for uri in uris]


@pytest.mark.slow
def test_a_sweep_and_its_report_keep_no_password(write_sweep, tmp_path, databases):
    tracking, storage = databases
    assert SECRET in tracking and SECRET in storage
    path = write_sweep("secret", TINY)
    options = ["--tracking-uri", tracking, "--storage", storage, "--artifacts", str(tmp_path / "artifacts")]
    ran = study(tmp_path, "run", str(path), "--trials", "2", *options)  # with its progress bar
    assert ran.returncode == 0, ran.stderr
    assert "report:" in ran.stdout and "postgres:***@" in ran.stdout, "the printed commands hide it"
    report = study(tmp_path, "report", "secret", "--out", "reports", *options)
    assert report.returncode == 0, report.stderr
    printed = ran.stdout + ran.stderr + report.stdout + report.stderr
    assert SECRET not in printed

    store = Store.resolve(tmp_path / "unused", tracking_uri=tracking, storage=storage)
    client = store.mlflow()
    experiments = client.search_experiments()
    stored = [e.artifact_location for e in experiments] + [str(e.tags) for e in experiments]
    for run in client.search_runs([e.experiment_id for e in experiments]):
        stored += [run.info.artifact_uri, str(run.data.params), str(run.data.tags), str(run.inputs)]
    assert len(stored) > 10 and not [value for value in stored if SECRET in value]
    storage = store.optuna()
    study_id = storage.get_study_id_from_name("secret")
    attributes = [storage.get_study_user_attrs(study_id), storage.get_study_system_attrs(study_id)]
    attributes += [[t.user_attrs, t.system_attrs] for t in storage.get_all_trials(study_id)]
    assert len(attributes) > 3 and SECRET not in str(attributes)
    files = [f for folder in ("reports", "artifacts") for f in (tmp_path / folder).rglob("*") if f.is_file()]
    assert files and not [f for f in files if SECRET.encode() in f.read_bytes()], "no report or artifact file holds it"
