"""Where a sweep keeps its state (study/store.py): flags over environment over the `mlruns/` default,
the local folder's layout, passwords kept out of what is printed, and full disks named as such.
Nothing here connects to a database server or creates MLflow's tables."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import pytest

from study import store as store_module
from study.store import SQLITE_TIMEOUT, Store

pytestmark = pytest.mark.unit  # pure logic: no TensorFlow, no store

ENV = ("STUDY_STORE", "STUDY_STORAGE", "STUDY_TRACKING_URI", "STUDY_ARTIFACTS")
PG = "postgresql://alice:s3cret-pw@db.example.org:5432/optuna"
PG_MLFLOW = "postgresql+psycopg2://bob:hunter2@db.example.org/mlflow"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No STUDY_* variable from the caller's shell, and a working directory of our own."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def sqlite(path: Path) -> str:
    return f"sqlite:///{path}?timeout={SQLITE_TIMEOUT}"


# --------------------------------------------------------------------------------- resolution
def test_the_default_is_one_mlruns_folder_in_the_working_directory(tmp_path):
    s = Store.resolve()
    root = tmp_path.resolve() / "mlruns"
    assert s.root == root
    assert s.tracking_uri == sqlite(root / "mlflow.db")
    assert s.storage_url == sqlite(root / "optuna.db")
    assert s.artifact_root == str(root / "artifacts")
    assert s.is_local and s.describe() == str(root)
    assert not root.exists(), "resolving creates nothing"


def test_a_relative_or_home_store_becomes_an_absolute_path(tmp_path, monkeypatch):
    assert Store.resolve("runs/a").root == tmp_path.resolve() / "runs" / "a"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    s = Store.resolve("~/stores/x")
    assert s.root == (tmp_path / "home" / "stores" / "x").resolve()
    assert s.storage_url == sqlite(s.root / "optuna.db")


def test_environment_variables_replace_the_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_STORE", str(tmp_path / "envstore"))
    s = Store.resolve()
    assert s.root == tmp_path.resolve() / "envstore" and s.storage_url == sqlite(s.root / "optuna.db")
    monkeypatch.setenv("STUDY_STORAGE", PG)
    monkeypatch.setenv("STUDY_TRACKING_URI", PG_MLFLOW)
    monkeypatch.setenv("STUDY_ARTIFACTS", "/shared/artifacts")
    s = Store.resolve()
    assert (s.storage_url, s.tracking_uri, s.artifact_root) == (PG, PG_MLFLOW, "/shared/artifacts")
    assert not s.is_local


def test_flags_win_over_environment_variables(tmp_path, monkeypatch):
    for name in ENV:
        monkeypatch.setenv(name, f"env-{name.lower()}")
    s = Store.resolve(tmp_path / "flag", tracking_uri="http://mlflow:5000", storage=PG, artifacts="s3://bucket/a")
    assert s.root == (tmp_path / "flag").resolve()
    assert (s.tracking_uri, s.storage_url, s.artifact_root) == ("http://mlflow:5000", PG, "s3://bucket/a")


def test_empty_values_count_as_not_given(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_STORAGE", "")
    s = Store.resolve(tmp_path / "s", storage="")
    assert s.storage_url == sqlite(s.root / "optuna.db")


@pytest.mark.parametrize("tracking", ["http://mlflow:5000", "https://mlflow.example.org", "databricks"])
def test_an_mlflow_server_keeps_artifacts_itself(tmp_path, tracking):
    s = Store.resolve(tmp_path / "s", tracking_uri=tracking)
    assert s.artifact_root is None
    assert Store.resolve(tmp_path / "s", tracking_uri=tracking, artifacts="/shared/a").artifact_root == "/shared/a"


def test_a_tracking_database_keeps_artifacts_in_the_store_folder_unless_told(tmp_path):
    s = Store.resolve(tmp_path / "s", tracking_uri=PG_MLFLOW, storage=PG)
    assert s.artifact_root == str((tmp_path / "s").resolve() / "artifacts")


@pytest.mark.parametrize("tracking, storage, local", [
    (None, None, True),
    (PG_MLFLOW, None, False),
    (None, PG, False),
    ("http://mlflow:5000", None, False),
])
def test_a_store_is_local_only_when_both_databases_are_sqlite(tmp_path, tracking, storage, local):
    s = Store.resolve(tmp_path / "s", tracking_uri=tracking, storage=storage)
    assert s.is_local is local
    assert (s.describe() == str(s.root)) is local


# ---------------------------------------------------------------------------------- redaction
def test_passwords_are_hidden_in_the_description(tmp_path):
    s = Store.resolve(tmp_path / "s", tracking_uri=PG_MLFLOW, storage=PG)
    text = s.describe()
    assert "s3cret-pw" not in text and "hunter2" not in text
    assert text == ("MLflow postgresql+psycopg2://bob:***@db.example.org/mlflow, "
                    "Optuna postgresql://alice:***@db.example.org:5432/optuna")


@pytest.mark.parametrize("url, shown", [
    ("postgresql://alice:pw@host/db", "postgresql://alice:***@host/db"),
    ("postgresql://alice:p:w/x@host:5432/db?sslmode=require", "postgresql://alice:***@host:5432/db?sslmode=require"),
    ("http://user:token@mlflow.example.org:5000", "http://user:***@mlflow.example.org:5000"),
    ("mysql+pymysql://root:@localhost/optuna", "mysql+pymysql://root:***@localhost/optuna"),
    # nothing to hide: left as it is
    ("postgresql://alice@host/db", "postgresql://alice@host/db"),
    ("postgresql://host:5432/db", "postgresql://host:5432/db"),
    ("http://mlflow:5000", "http://mlflow:5000"),
    ("sqlite:////tmp/x/optuna.db?timeout=60", "sqlite:////tmp/x/optuna.db?timeout=60"),
])
def test_redaction_hides_exactly_the_password(url, shown):
    assert store_module.redact(url) == shown


def test_a_password_without_a_user_name_is_hidden_too():
    assert "s3cret" not in store_module.redact("postgresql://:s3cret@host/db")


def test_a_password_given_as_a_query_parameter_is_hidden_too():
    assert "s3cret" not in store_module.redact("postgresql://alice@host/db?password=s3cret")


# ------------------------------------------------------------------------------ local layout
def test_a_local_store_is_set_up_under_a_lock_file_in_its_folder(tmp_path):
    s = Store.resolve(tmp_path / "new" / "store")
    with s.lock():
        assert (s.root / ".setup.lock").exists()
    assert s.root.is_dir()


def test_a_database_server_needs_no_lock(tmp_path):
    s = Store.resolve(tmp_path / "s", storage=PG, tracking_uri=PG_MLFLOW)
    with s.lock():
        pass
    assert not s.root.exists(), "no local folder is made for a server's store"


def sqlite_create(url: str) -> None:
    """A database builder: one table, as the real ones build MLflow's or Optuna's."""
    connection = sqlite3.connect(url.removeprefix("sqlite:///"))
    connection.execute("create table made (x)")
    connection.commit()
    connection.close()


def test_a_sqlite_database_is_built_aside_and_moved_into_place_whole(tmp_path):
    path = tmp_path / "deep" / "optuna.db"
    seen = []

    def create(url):
        seen.append(url)
        assert not path.exists(), "the final name appears only when the database is complete"
        sqlite_create(url)

    store_module._create_sqlite_once(path, create)
    assert seen == [f"sqlite:///{path}.creating"]
    assert path.exists() and not Path(f"{path}.creating").exists()
    assert sqlite3.connect(path).execute("select name from sqlite_master").fetchall() == [("made",)]


def test_an_existing_database_is_left_alone_and_a_half_made_one_is_built_again(tmp_path):
    path = tmp_path / "mlflow.db"
    path.write_bytes(b"already here")
    store_module._create_sqlite_once(path, lambda url: pytest.fail("must not rebuild an existing database"))
    assert path.read_bytes() == b"already here"

    other = tmp_path / "optuna.db"
    Path(f"{other}.creating").write_bytes(b"left by an interrupted attempt: not a database")
    store_module._create_sqlite_once(other, sqlite_create)
    assert sqlite3.connect(other).execute("select name from sqlite_master").fetchall() == [("made",)]


# --------------------------------------------------------------------------------- full disks
def test_a_full_disk_is_found_through_the_chain_of_causes():
    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            raise RuntimeError("could not write the run") from exc
    except RuntimeError as wrapped:
        assert store_module.disk_full(wrapped)
        assert store_module.storage_error(wrapped) == store_module.DISK_FULL
    assert store_module.disk_full(sqlite3.OperationalError("database or disk is full"))
    assert not store_module.disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not store_module.disk_full(None)


def test_a_cycle_of_causes_ends():
    a, b = ValueError("a"), ValueError("b")
    a.__cause__, b.__cause__ = b, a
    assert not store_module.disk_full(a)


def test_other_storage_errors_are_one_line():
    assert store_module.storage_error(ValueError("connection refused\n  detail\n  more")) == "connection refused"
    assert store_module.storage_error(ValueError("")) == "ValueError"
