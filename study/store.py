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
from dataclasses import dataclass
from pathlib import Path

from study.errors import StudyError

HEARTBEAT_SECONDS = int(os.environ.get("STUDY_HEARTBEAT_SECONDS", 10))  # a running trial proves it is alive this often
GRACE_SECONDS = int(os.environ.get("STUDY_GRACE_SECONDS", 40))  # without a heartbeat this long, its worker is dead
LOCK_SECONDS = 600  # how long a process waits for another to finish setting up a local store
SQLITE_TIMEOUT = 60  # seconds a writer waits for another process's lock before giving up


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}?timeout={SQLITE_TIMEOUT}"


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
        return f"MLflow {_redact(self.tracking_uri)}, Optuna {_redact(self.storage_url)}"

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
                    if url.startswith("sqlite:///"):
                        _create_sqlite_once(Path(url.removeprefix("sqlite:///").split("?")[0]), create)
            self.mlflow().search_experiments(max_results=1)
            self.optuna()
        except StudyError:
            raise
        except ModuleNotFoundError as exc:
            raise StudyError(
                f"the store ({self.describe()}) needs the database driver {exc.name!r}: pip install 'study[postgres]'"
            ) from None
        except Exception as exc:  # a connection problem: say which store and why
            raise StudyError(f"cannot open the store ({self.describe()}): {storage_error(exc)}") from None

    def lock(self):
        """An exclusive lock on a local store's set-up (a no-op for database servers, where
        `study init` runs once before the workers)."""
        return self._file_lock(".setup.lock")

    def ask_lock(self):
        """An exclusive lock around asking Optuna for a trial, for the processes of a local store:
        on SQLite, Optuna's pop of a queued trial (a grid point, a retry) is a read then a write
        without a row lock, so two workers asking at the same moment can both get the same one.
        A database server locks the row itself (a no-op there)."""
        return self._file_lock(".ask.lock")

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
            raise StudyError(f"the Optuna storage {_redact(url)} needs a driver: {exc}; pip install 'study[postgres]'") from None


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
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _redact(url: str) -> str:
    """Hide a password in a database URL before printing it: in its user part (SQLAlchemy's own
    rendering, which also handles an empty user name) and in a `password=` query parameter."""
    import re

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not a URL SQLAlchemy reads (a file path): only the query is left
        url = re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)
