"""A store that cannot be used is one line and exit 1, never a traceback or a long wait: a SQLite
file overwritten or cut short (Store.check_intact, and the CLI's handler for damage met later), the
two stores disagreeing about a sweep (Store.check_agree), a server that is down or does not answer
(Store.check_reachable). Real stores and real `study` processes; nothing is mocked."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import time

import pytest
from conftest import STUDY, TINY, run_env

from study.errors import StudyError
from study.store import Store

COMMANDS = [["run", "tiny.yaml", "--trials", "3", "--quiet"], ["init", "tiny.yaml"], ["list"],
            ["report", "tiny", "--out", "reports"], ["ui", "--port", "5999"]]


def study(cwd, *args, timeout=300):
    return subprocess.run([*STUDY, *args], cwd=cwd, env=run_env(cwd), capture_output=True, text=True, timeout=timeout)


def one_error_line(result) -> str:
    """The command failed with exit 1 and said why on exactly one line of stderr."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A folder with tiny.yaml and a store (`base/`) where two of its trials finished."""
    folder = tmp_path_factory.mktemp("finished")
    (folder / "tiny.yaml").write_text(TINY)
    done = study(folder, "run", "tiny.yaml", "--store", "base", "--trials", "2", "--quiet")
    assert done.returncode == 0, done.stderr
    return folder


def copy_of(finished, tmp_path):
    """A copy of the finished store in `tmp_path` (with the sweep file), to damage."""
    shutil.copy(finished / "tiny.yaml", tmp_path / "tiny.yaml")
    shutil.copytree(finished / "base", tmp_path / "base")
    return tmp_path / "base"


# ------------------------------------------------------------------------------ damaged files
@pytest.mark.slow
@pytest.mark.parametrize("db, label", [("mlflow.db", "MLflow"), ("optuna.db", "Optuna")])
@pytest.mark.parametrize("damage", ["garbage", "half"])
def test_a_damaged_database_is_one_line_for_every_command(finished, tmp_path, db, label, damage):
    path = copy_of(finished, tmp_path) / db
    if damage == "garbage":
        path.write_bytes(os.urandom(100_000))
    else:
        os.truncate(path, path.stat().st_size // 2)
    before = path.read_bytes()
    for command in COMMANDS:
        line = one_error_line(study(tmp_path, *command, "--store", "base"))
        assert f"the {label} database {path} is damaged" in line and "restore it from a backup" in line, (command, line)
        assert path.read_bytes() == before, f"{command[0]} wrote to the damaged file"


@pytest.mark.slow
def test_damage_inside_the_file_met_later_names_the_file(finished, tmp_path):
    """A page in the middle of mlflow.db overwritten: the quick check at the start passes (the schema
    reads), the command meets "malformed" later, and the CLI's handler names the file."""
    path = copy_of(finished, tmp_path) / "mlflow.db"
    with sqlite3.connect(path) as db:
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    with path.open("r+b") as handle:
        handle.seek((root - 1) * page_size)
        handle.write(os.urandom(page_size))
    Store.resolve(path.parent).check_intact()  # the cheap check cannot see it
    line = one_error_line(study(tmp_path, "report", "tiny", "--store", "base", "--out", "reports"))
    assert f"the MLflow database {path} is damaged" in line and "restore it from a backup" in line


def test_a_database_cut_short_past_its_schema_is_found(tmp_path):
    """Its schema's pages are whole, but the file is shorter than its header says."""
    path = tmp_path / "optuna.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x TEXT)")
        db.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 2000)
    os.truncate(path, path.stat().st_size - 8192)
    with pytest.raises(StudyError, match=r"Optuna database .* is damaged \(database disk image is malformed\)"):
        Store.resolve(tmp_path).check_intact()


def test_a_new_or_empty_store_is_not_damaged(tmp_path):
    Store.resolve(tmp_path / "none").check()  # nothing there yet
    fresh = Store.resolve(tmp_path / "fresh")
    fresh.init()
    fresh.check_intact(thorough=True)
    for name in ("mlflow.db", "optuna.db"):  # SQLite reads an empty file as a new database
        (tmp_path / "empty").mkdir(exist_ok=True)
        (tmp_path / "empty" / name).touch()
    Store.resolve(tmp_path / "empty").check_intact(thorough=True)
    listed = study(tmp_path, "list", "--store", "fresh")
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr


# -------------------------------------------------------------------------- stores that disagree
@pytest.mark.slow
def test_stores_that_disagree_about_a_sweep_are_named(finished, tmp_path):
    whole = Store.resolve(copy_of(finished, tmp_path))
    whole.check_agree("tiny")  # they agree
    whole.check_agree("another")  # a sweep neither has

    # each case in a folder of its own: MLflow keeps one store object per URI in a process
    for db, side in (("optuna.db", "Optuna"), ("mlflow.db", "MLflow")):
        root = tmp_path / f"without-{db}"
        shutil.copytree(finished / "base", root)
        (root / db).unlink()
        with pytest.raises(StudyError, match=f"stores disagree about sweep 'tiny'.*but {side}'s database .*{db} is missing; "
                                             f"restore the {side} database from a backup, or copy the sweep file"):
            Store.resolve(root).check_agree("tiny")
        assert not (root / db).exists(), "the check created nothing"

        root = tmp_path / f"new-{db}"
        shutil.copytree(finished / "base", root)
        (root / db).unlink()
        Store.resolve(root).init()  # a new, empty database in its place
        with pytest.raises(StudyError, match=f"but {side} has no (study|experiment) of that name; restore the {side} database"):
            Store.resolve(root).check_agree("tiny")


# ---------------------------------------------------------------------------- unreachable servers
@pytest.fixture
def silent_port():
    """A port on this machine that accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("option, url", [
    ("--storage", "postgresql://postgres@127.0.0.1:{port}/optuna"),
    ("--tracking-uri", "http://127.0.0.1:{port}"),
    ("--tracking-uri", "postgresql://postgres@127.0.0.1:{port}/mlflow"),
])
@pytest.mark.parametrize("answers", ["down", "silent"])
def test_a_server_that_is_down_or_silent_is_one_line_within_15_seconds(tmp_path, silent_port, option, url, answers):
    (tmp_path / "tiny.yaml").write_text(TINY)
    address = url.format(port=silent_port if answers == "silent" else closed_port())
    for command in ("init", "run"):
        start = time.monotonic()
        result = study(tmp_path, command, "tiny.yaml", option, address, timeout=120)
        seconds = time.monotonic() - start
        line = one_error_line(result)
        assert f"cannot reach the {'Optuna' if option == '--storage' else 'MLflow'} store {address}" in line, line
        assert seconds < 15, f"{command} took {seconds:.1f}s"
    assert not (tmp_path / "mlruns" / "mlflow.db").exists(), "nothing was created"
