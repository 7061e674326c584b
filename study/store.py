"""Where a sweep keeps its state: Optuna's studies, MLflow's runs and their artifacts.

By default all three live in one folder (`mlruns/`): `optuna.db`, `mlflow.db` and `artifacts/`.
To spread a sweep over several machines, point every machine at shared services instead:
`--storage postgresql://host/optuna` for Optuna and `--tracking-uri` for MLflow (a database URL
with a shared `--artifacts` folder, or an `http://` MLflow server that stores artifacts itself).
Each flag can also come from the environment: STUDY_STORE, STUDY_STORAGE, STUDY_TRACKING_URI,
STUDY_ARTIFACTS.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.errors import StudyError

HEARTBEAT_SECONDS = int(os.environ.get("STUDY_HEARTBEAT_SECONDS", 10))  # a running trial proves it is alive this often
GRACE_SECONDS = int(os.environ.get("STUDY_GRACE_SECONDS", 40))  # without a heartbeat this long, its worker is dead
LOCK_SECONDS = 600  # how long a process waits for another to finish setting up a local store
SQLITE_TIMEOUT = 60  # seconds a writer waits for another process's lock before giving up
CONNECT_SECONDS = int(os.environ.get("STUDY_CONNECT_SECONDS", 5))  # a server that has not answered by then is down
DAMAGED = "restore it from a backup, or move the folder {folder} away to start over"


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}?timeout={SQLITE_TIMEOUT}"


def _sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for a database server."""
    return Path(url.removeprefix("sqlite:///").split("?")[0]) if url.startswith("sqlite:///") else None


@dataclass(frozen=True)
class Store:
    root: Path  # the local folder (sqlite files, default artifacts)
    tracking_uri: str  # MLflow
    storage_url: str  # Optuna
    artifact_root: str | None  # where new experiments keep artifacts; None: the MLflow server decides

    @classmethod
    def resolve(
        cls,
        store: str | Path | None = None,
        tracking_uri: str | None = None,
        storage: str | None = None,
        artifacts: str | None = None,
    ) -> Store:
        """Flags win over environment variables, which win over the `mlruns/` default."""
        root = Path(store or os.environ.get("STUDY_STORE") or "mlruns").expanduser().resolve()
        tracking_uri = tracking_uri or os.environ.get("STUDY_TRACKING_URI") or _sqlite_url(root / "mlflow.db")
        storage = storage or os.environ.get("STUDY_STORAGE") or _sqlite_url(root / "optuna.db")
        artifacts = artifacts or os.environ.get("STUDY_ARTIFACTS")
        if artifacts is None and not tracking_uri.startswith(("http://", "https://", "databricks")):
            artifacts = str(root / "artifacts")
        return cls(root=root, tracking_uri=tracking_uri, storage_url=storage, artifact_root=artifacts)

    @property
    def is_local(self) -> bool:
        return self.tracking_uri.startswith("sqlite:") and self.storage_url.startswith("sqlite:")

    def describe(self) -> str:
        if self.is_local:
            return str(self.root)
        return f"MLflow {redact(self.tracking_uri)}, Optuna {redact(self.storage_url)}"

    def _databases(self):
        """(what, URL) of MLflow's and Optuna's databases."""
        return (("MLflow", self.tracking_uri), ("Optuna", self.storage_url))

    def check(self) -> None:
        """What every command does before it opens the store: a StudyError, one line with the fix,
        for a damaged SQLite file or a server that does not answer (check_intact, check_reachable)."""
        self.check_intact()
        self.check_reachable()

    def check_intact(self, thorough: bool = False) -> None:
        """A StudyError naming a SQLite database of the store that is damaged (overwritten, cut
        short) and the fix. Milliseconds whatever the file's size; `thorough` also reads every page
        (SQLite's quick_check), to name the file behind a "malformed" error met later."""
        for what, url in self._databases():
            path = _sqlite_path(url)
            if path is not None and (why := _damage(path, thorough)):
                raise StudyError(f"the {what} database {path} is damaged ({why}); {DAMAGED.format(folder=path.parent)}")

    def check_reachable(self) -> None:
        """A StudyError within seconds for a database server or MLflow tracking server that is down
        or does not answer: one try with a CONNECT_SECONDS timeout, where the drivers and MLflow's
        client would wait minutes and log every retry (MLflow retries a database for ~100 s)."""
        for what, url in self._databases():
            if url.startswith(("http://", "https://")):
                problem = _http_problem(url)
            elif "://" in url and not url.startswith(("sqlite:", "file:", "databricks")):
                problem = _database_problem(url)
            else:
                continue
            if problem:
                raise StudyError(f"cannot reach the {what} store {redact(url)}: {problem}; check the address, and that "
                                 f"the server runs and answers from this machine (STUDY_CONNECT_SECONDS={CONNECT_SECONDS})")

    def explain(self, exc: BaseException) -> str | None:
        """One line for an error of this store that the user can act on: a full disk, a damaged
        database (named by a thorough check_intact); None for anything else."""
        if disk_full(exc):
            return DISK_FULL
        if not _corrupt(exc):
            return None
        try:
            self.check_intact(thorough=True)
        except StudyError as found:
            return str(found)
        return f"a database of the store ({self.describe()}) is damaged ({_first_line(exc)}); restore it from a backup"

    def check_agree(self, study_name: str) -> None:
        """A StudyError when MLflow and Optuna disagree about sweep `study_name`: MLflow holds its
        trial runs but Optuna has no such study (optuna.db lost or replaced), or Optuna holds its
        finished trials but MLflow has no such experiment (mlflow.db lost or replaced). Going on
        would start the sweep over on one side only. Reads only: a missing local file stays missing."""
        runs, trials = self._has_trial_runs(study_name), self._trial_states(study_name)
        finished = any(state in ("COMPLETE", "PRUNED") for state in trials)  # these always have a run
        if (runs and trials) or (not runs and not finished):  # a trial killed or failed before its run: fine
            return
        held, side, url = ("MLflow holds trial runs", "Optuna", self.storage_url) if runs else \
            ("Optuna holds finished trials", "MLflow", self.tracking_uri)
        path = _sqlite_path(url)
        lost = f"{side}'s database {path} is missing" if path is not None and not path.exists() else \
            f"{side} has no {'study' if side == 'Optuna' else 'experiment'} of that name"
        raise StudyError(
            f"the stores disagree about sweep {study_name!r} in {self.describe()}: {held} of it, but {lost}; "
            f"restore the {side} database from a backup, or copy the sweep file to a new name to start a new study"
        )

    def _has_trial_runs(self, name: str) -> bool:
        """Whether MLflow holds trial runs of experiment `name`."""
        from study.names import Role, Tag

        path = _sqlite_path(self.tracking_uri)
        if path is not None and not path.exists():
            return False
        client = self.mlflow()
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            return False
        if experiment.lifecycle_stage == "deleted":  # held, but deleted: the tracker says how to restore it
            return True
        runs = client.search_runs([experiment.experiment_id], f"tags.`{Tag.ROLE}` = '{Role.TRIAL}'", max_results=1)
        return bool(runs)

    def _trial_states(self, name: str) -> list[str]:
        """The states of Optuna's trials of study `name` ('COMPLETE', 'RUNNING', ...; none: no study)."""
        path = _sqlite_path(self.storage_url)
        if path is not None and not path.exists():
            return []
        storage = self.optuna()
        try:
            study_id = storage.get_study_id_from_name(name)
        except KeyError:
            return []
        return [t.state.name for t in storage.get_all_trials(study_id, deepcopy=False)]

    def init(self) -> None:
        """Create both databases' tables once, before any worker starts. A local store is created
        under a file lock, each SQLite file built under a temporary name and moved into place
        whole, so that no interleaving of processes and signals leaves a half-made database."""
        quiet_libraries()
        try:
            with self.lock():
                artifacts = self.artifact_root or str(self.root / "artifacts")
                for url, create in ((self.tracking_uri, lambda u: _create_mlflow_db(u, artifacts)),
                                    (self.storage_url, _create_optuna_db)):
                    if (path := _sqlite_path(url)) is not None:
                        _create_sqlite_once(path, create)
            self.mlflow().search_experiments(max_results=1)
            self.optuna()
        except StudyError:
            raise
        except ModuleNotFoundError as exc:
            raise StudyError(
                f"the store ({self.describe()}) needs the database driver {exc.name!r}: pip install 'study[postgres]'"
            ) from None
        except Exception as exc:  # a connection problem: say which store and why
            raise StudyError(self.explain(exc) or f"cannot open the store ({self.describe()}): {_first_line(exc)}") from None

    def lock(self):
        """An exclusive lock on a local store's set-up (a no-op for database servers, where
        `study init` runs once before the workers)."""
        return self._file_lock(".setup.lock")

    def ask_lock(self):
        """An exclusive lock around settling dead workers' trials and asking Optuna for a trial
        (`ledger.ask`), for every worker of the study: on SQLite, Optuna's pop of a queued trial
        (a grid point, a retry) is a read then a write without a row lock, so two workers asking
        at the same moment can both get the same one; and two workers settling the same dead
        worker's trial would queue it twice. SQLite: a lock file beside optuna.db; PostgreSQL: a
        session advisory lock, which the server drops if the worker dies; other servers: none."""
        if self.storage_url.startswith("sqlite"):
            from filelock import FileLock

            self.root.mkdir(parents=True, exist_ok=True)
            return FileLock(str(self.root / ".ask.lock"), timeout=LOCK_SECONDS)
        if self.storage_url.startswith("postgresql"):
            return _advisory_lock(self.storage_url)
        return contextlib.nullcontext()

    def _file_lock(self, name: str):
        """A lock file in a local store's folder; nothing for a database server."""
        if not self.is_local:
            return contextlib.nullcontext()
        from filelock import FileLock

        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / name), timeout=LOCK_SECONDS)

    def mlflow(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def optuna(self):
        """Optuna's RDB storage with heartbeats, so trials of a dead worker are noticed (recovery.py)."""
        import optuna

        engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT}} if self.storage_url.startswith("sqlite") else {}
        url = self.storage_url.split("?")[0] if self.storage_url.startswith("sqlite") else self.storage_url
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS,
            )
        except ImportError as exc:
            raise StudyError(f"the Optuna storage {redact(url)} needs a driver: {exc}; pip install 'study[postgres]'") from None


def quiet_libraries() -> None:
    """MLflow and Alembic log every migration step; Optuna logs every trial. We print our own."""
    for name in ("alembic", "mlflow", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # downloads of base models
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # heartbeats, fail_stale_trials and TPE's constant_liar are "experimental" in Optuna; we rely on them knowingly
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _create_sqlite_once(path: Path, create) -> None:
    """Create the SQLite database at `path` if it is missing: built at a temporary name (left
    over from an interrupted attempt, it is built again) and renamed into place when complete."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".creating")
    partial.unlink(missing_ok=True)
    create(f"sqlite:///{partial}")
    os.replace(partial, path)


def _create_mlflow_db(url: str, artifacts: str) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(url, default_artifact_root=artifacts)  # every table, the schema version, "Default"
    store.engine.dispose()


def _create_optuna_db(url: str) -> None:
    import optuna

    storage = optuna.storages.RDBStorage(url)
    storage.engine.dispose()


DISK_FULL = "the disk is full (free some space, then run the same command again: finished work is kept)"


def disk_full(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception it was raised from, is a full disk (OS or SQLite)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc)
        if isinstance(exc, OSError) and exc.errno == 28 or "disk is full" in text or "No space left" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def storage_error(exc: BaseException) -> str:
    """One line for a storage or OS error, naming a full disk as such."""
    return DISK_FULL if disk_full(exc) else _first_line(exc)


def _first_line(exc: BaseException) -> str:
    """The first line of an error's message, passwords hidden (it may quote a store's URL)."""
    text = str(exc).strip().splitlines()
    return redact(text[0]) if text else type(exc).__name__


def redact(text: str) -> str:
    """`text` with every password hidden: in the user part of any URL in it (`scheme://user:pw@`,
    also with an empty user name, and up to the last `@`, in case the password holds one) and in
    `password=` (a URL's query, a connection string). The one function for anything we print, log
    or store that may hold a store's URL."""
    text = re.sub(r"(://[^\s:/@]*:)\S*@", r"\1***@", text)
    return re.sub(r"(\bpassword=)[^&\s]*", r"\1***", text)


def _corrupt(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception it was raised from, is SQLite finding a damaged file."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if "file is not a database" in str(exc) or "database disk image is malformed" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _damage(path: Path, thorough: bool = False) -> str | None:
    """Why the SQLite file `path` is not a whole database, or None (also for a missing or empty
    file: SQLite reads that as a new database). Reading its schema finds a file overwritten or
    shorter than its header says; `thorough` adds quick_check, which reads every page. Other errors
    (a lock held too long) are not damage: the command meets them as it would have."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_TIMEOUT)) as db:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            if thorough and (found := db.execute("PRAGMA quick_check(1)").fetchone()[0]) != "ok":
                return " ".join(found.replace("*** in database main ***", "").split())  # one line
    except sqlite3.DatabaseError as exc:
        return str(exc) if _corrupt(exc) else None
    return None


def _database_problem(url: str) -> str | None:
    """Why a database server's URL cannot be connected to within CONNECT_SECONDS, or None."""
    import sqlalchemy
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    try:
        parsed = make_url(url)
        timeout = {"connect_timeout": CONNECT_SECONDS} if parsed.get_backend_name() in ("postgresql", "mysql") else {}
        engine = sqlalchemy.create_engine(parsed, connect_args=timeout, poolclass=NullPool)
        try:
            engine.connect().close()
        finally:
            engine.dispose()
    except ModuleNotFoundError as exc:
        return f"it needs the database driver {exc.name!r}: pip install 'study[postgres]'"
    except Exception as exc:
        return _reason(getattr(exc, "orig", None) or exc)
    return None


def _http_problem(url: str) -> str | None:
    """Why MLflow's tracking server at `url` does not answer one request within CONNECT_SECONDS,
    or None: MLflow's own client (its credentials, its TLS settings), with no retries for this one."""
    from mlflow import MlflowClient

    saved = {name: os.environ.get(name) for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT=str(CONNECT_SECONDS))
    try:
        MlflowClient(tracking_uri=url).search_experiments(max_results=1)
    except Exception as exc:
        return _reason(exc)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return None


def _reason(exc: BaseException) -> str:
    """The gist of a connection error: "connection refused", "no answer within 5s", else its first line."""
    text = str(exc)
    if "timed out" in text.lower() or "timeout expired" in text.lower():
        return f"no answer within {CONNECT_SECONDS}s"
    if found := re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text):
        return found.group(1).strip().lower()
    return _first_line(exc)[:300]


ASK_LOCK_KEY = 0x5757_0001  # the advisory lock's number: one per Optuna database (any study in it)
_engines: dict[str, object] = {}


class _advisory_lock:
    """PostgreSQL's session advisory lock ASK_LOCK_KEY, held on a connection of its own while in
    the block (one engine per URL and process); reusable, like the lock file it stands in for."""

    def __init__(self, url: str):
        import sqlalchemy

        engine: Any = _engines.get(url)
        if engine is None:
            engine = _engines[url] = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        self.engine, self.text = engine, sqlalchemy.text
        self.connection: Any = None

    def __enter__(self):
        self.connection = self.engine.connect()
        self.connection.execute(self.text("SELECT pg_advisory_lock(:key)"), {"key": ASK_LOCK_KEY})
        return self

    def __exit__(self, *exc):
        connection, self.connection = self.connection, None
        try:
            connection.execute(self.text("SELECT pg_advisory_unlock(:key)"), {"key": ASK_LOCK_KEY})
        finally:
            connection.close()  # the server drops a session's locks with it in any case
