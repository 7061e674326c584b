"""Read what a sweep logged: its MLflow runs (paged), a few metric histories and prediction files,
and its Optuna study. The report reads nothing else, so it works on any sweep, finished or not."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from study.errors import StudyError, did_you_mean
from study.store import Store, quiet_libraries

PAGE = 1000  # runs per MLflow search request


@dataclass
class SweepRuns:
    name: str
    experiment_id: str
    description: str
    runs: pd.DataFrame  # one row per trial run: run_id, trial, state, status, params.*, metrics.*, tags.*
    references: pd.DataFrame  # base and control runs of a compression sweep
    sweep_run: dict = field(default_factory=dict)  # the parent run's params, metrics and tags
    sweep_text: str | None = None
    study: object = None  # the Optuna study, when the storage has it
    client: object = None

    @property
    def searched(self) -> list[str]:
        """The keys the sweep searches, from the sweep run (else from the trials' tags)."""
        import json

        search = self.sweep_run.get("params", {}).get("search")
        if search:
            return [k for k, v in json.loads(search).items() if v.get("type") != "fixed"]
        keys: list[str] = []
        for tag in self.runs.get("tags.study.sampled", pd.Series(dtype=str)).dropna():
            keys.extend(k for k in json.loads(tag) if k not in keys)
        return keys

    def history(self, run_id: str, keys: tuple[str, ...]) -> pd.DataFrame:
        """Per-epoch metrics of one run: columns epoch and one per key that exists."""
        frames = []
        for key in keys:
            points = self.client.get_metric_history(run_id, key)
            if points:
                frames.append(pd.DataFrame({"epoch": [p.step for p in points], key: [p.value for p in points]}).drop_duplicates("epoch", keep="last"))
        if not frames:
            return pd.DataFrame(columns=["epoch"])
        merged = frames[0]
        for frame in frames[1:]:
            merged = merged.merge(frame, on="epoch", how="outer")
        return merged.sort_values("epoch")

    def predictions(self, run_id: str) -> dict[str, np.ndarray] | None:
        """The trial's predictions.npz (outputs of every replicate, labels, truth), or None."""
        with tempfile.TemporaryDirectory() as folder:
            try:
                path = self.client.download_artifacts(run_id, "predictions.npz", folder)
            except Exception:
                return None
            with np.load(path) as saved:
                return {k: saved[k] for k in saved.files}


def _pages(client, experiment_id: str, filter_string: str):
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=PAGE, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _row(run) -> dict:
    row = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "status": run.info.status,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
    }
    row.update({f"params.{k}": v for k, v in run.data.params.items()})
    row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
    row.update({f"tags.{k}": v for k, v in run.data.tags.items()})
    return row


def _frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for column in frame.columns:
        if column.startswith("params."):
            converted = pd.to_numeric(frame[column], errors="coerce")
            if converted.notna().sum() == frame[column].notna().sum():  # every value is a number
                frame[column] = converted
    return frame


def known_sweeps(client) -> list[str]:
    return sorted(e.name for e in client.search_experiments() if e.tags.get("study.name") or e.name != "Default")


def load_sweep_runs(store: Store, name: str) -> SweepRuns:
    """Everything the report needs of sweep `name`; a StudyError names the known sweeps if absent."""
    quiet_libraries()
    if store.is_local and not (store.root / "mlflow.db").exists():
        raise StudyError(f"no store in {store.root}; run a sweep first (study run sweeps/demo.yaml)")
    client = store.mlflow()
    experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        known = known_sweeps(client)
        listing = ", ".join(known) if known else "none yet"
        raise StudyError(f"no sweep {name!r} in {store.describe()}{did_you_mean(name, known)} (known sweeps: {listing})")
    trials, references, sweep_run = [], [], {}
    for run in _pages(client, experiment.experiment_id, "tags.`study.role` != 'replicate'"):
        role = run.data.tags.get("study.role")
        if role == "trial":
            trials.append(_row(run))
        elif role in ("base", "control"):
            references.append(_row(run))
        elif role == "sweep":
            sweep_run = {"run_id": run.info.run_id, "params": run.data.params, "metrics": run.data.metrics,
                         "tags": run.data.tags, "status": run.info.status}
    # A base trained by another sweep (compression sweeps share it) is logged in that sweep's experiment.
    present = {row["run_id"] for row in references}
    for base_id in {row.get("tags.study.base_run_id") for row in trials} - present - {None, ""}:
        try:
            references.append(_row(client.get_run(base_id)))
        except Exception:  # deleted since: the report goes without the base's own numbers
            pass
    runs = _frame(trials)
    if not runs.empty:
        runs["trial"] = pd.to_numeric(runs["tags.study.trial"], errors="coerce")
        runs["state"] = runs["tags.study.state"].fillna("running")
        runs = runs.sort_values("trial").reset_index(drop=True)
    sweep_text = None
    if sweep_run:
        with tempfile.TemporaryDirectory() as folder:
            try:
                sweep_text = Path(client.download_artifacts(sweep_run["run_id"], "sweep.yaml", folder)).read_text()
            except Exception:
                sweep_text = None
    study = None
    try:
        import optuna

        study = optuna.load_study(study_name=name, storage=store.optuna())
    except Exception:  # the Optuna side may be elsewhere or gone; the report says so
        study = None
    return SweepRuns(
        name=name, experiment_id=experiment.experiment_id, description=experiment.tags.get("mlflow.note.content", ""),
        runs=runs, references=_frame(references), sweep_run=sweep_run, sweep_text=sweep_text, study=study, client=client,
    )
