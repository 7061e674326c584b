"""Where a sweep keeps its state: Optuna's studies, MLflow's runs and their artifacts.

By default all three live in one folder (`mlruns/`): `optuna.db`, `mlflow.db` and `artifacts/`.
To spread a sweep over several machines, point every machine at shared services instead:
`--storage postgresql://host/optuna` for Optuna and `--tracking-uri` for MLflow (a database URL
with a shared `--artifacts` folder, or an `http://` MLflow server that stores artifacts itself).
Each flag can also come from the environment: STUDY_STORE, STUDY_STORAGE, STUDY_TRACKING_URI,
STUDY_ARTIFACTS.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from study.errors import StudyError

HEARTBEAT_SECONDS = 10  # a running trial proves it is alive this often
GRACE_SECONDS = 40  # after this long without a heartbeat its worker is presumed dead
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
    ) -> "Store":
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
        """Create both databases' tables once, before any worker starts: several processes
        creating a fresh SQLite store at the same moment corrupt it."""
        for url in (self.tracking_uri, self.storage_url):
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///").split("?")[0]).parent.mkdir(parents=True, exist_ok=True)
        quiet_libraries()
        try:
            self.mlflow().search_experiments(max_results=1)
            self.optuna()
        except StudyError:
            raise
        except ModuleNotFoundError as exc:
            raise StudyError(
                f"the store ({self.describe()}) needs the database driver {exc.name!r}: pip install 'study[postgres]'"
            ) from None
        except Exception as exc:  # a connection problem: say which store and why
            raise StudyError(f"cannot open the store ({self.describe()}): {_first_line(exc)}") from None

    def mlflow(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def optuna(self, stale_trial_callback=None):
        """Optuna's RDB storage with heartbeats, so trials of a dead worker are noticed and retried."""
        import optuna

        engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT}} if self.storage_url.startswith("sqlite") else {}
        url = self.storage_url.split("?")[0] if self.storage_url.startswith("sqlite") else self.storage_url
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS,
                heartbeat_stale_trial_callback=stale_trial_callback,
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


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _redact(url: str) -> str:
    """Hide a password in a database URL before printing it."""
    import re

    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)
