"""Everything a report needs of one sweep, read up front: its MLflow runs (paged), the sweep file,
the per-epoch curves the learning-curve chart draws, the predictions the bias–variance
decomposition splits, and its Optuna trials. This is the only module of the report that touches
MLflow or Optuna storage (it also logs the finished report to the sweep's run); everything after
it is pure, so the report works on any sweep, finished or not, and nothing reads a store while
drawing.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from study import names
from study.errors import BadInput, did_you_mean
from study.names import REFERENCE_ROLES, Attr, Role, Tag
from study.report import regimes, seeds, tables
from study.store import Store, quiet_libraries, redact

log = logging.getLogger(__name__)

PAGE = 1000  # runs per MLflow search request
CURVES = (names.TRAIN_LOSS.key, names.VAL_LOSS.key)  # the per-epoch curves the learning-curve chart draws
SWEEP_FILE = "sweep.yaml"  # the sweep run's copy of its sweep file
PREDICTIONS = "predictions.npz"  # each trial's test-set outputs of every replicate, labels and truth
# Per-example predictions pair the test set's noise in a claim's contrast; beyond this many
# finished trials the report reads none (a conservative unpaired bound replaces them).
MAX_PAIRED = 400


@dataclass(frozen=True)
class OptunaTrials:
    """The Optuna study as it was read: its trials, directions and user attributes."""

    trials: list[optuna.trial.FrozenTrial]
    directions: list[optuna.study.StudyDirection]
    user_attrs: dict = field(default_factory=dict)


@dataclass
class SweepRuns:
    """One sweep as the report reads it. Nothing downstream touches a store."""

    name: str
    experiment_id: str
    description: str
    runs: pd.DataFrame  # one row per trial run: run_id, trial, state, status, params.*, metrics.*, tags.*
    references: pd.DataFrame  # base and control runs of a compression sweep
    sweep_run: dict = field(default_factory=dict)  # the parent run's run_id, params, metrics, tags and status
    sweep_text: str | None = None
    optuna: OptunaTrials | None = None  # None when the storage has no such study
    histories: dict[str, pd.DataFrame] = field(default_factory=dict)  # run id -> epoch and CURVES columns
    predictions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # run id -> predictions.npz
    seeds: seeds.Seeds = field(default_factory=seeds.Seeds)  # every replicate's errors: the unit of replication
    # compression sweeps: one row per compressed file (a replicate's run, or the trial's own with
    # one replicate), with its trial's number, its seed and `trial_run_id`; charts draw these
    files: pd.DataFrame = field(default_factory=pd.DataFrame)
    store: str = ""  # where it was read from, in words
    left_out: str = ""  # trials the page leaves out, and why (they ran on an earlier version of the data)

    @property
    def searched(self) -> list[str]:
        """The keys the sweep searches, from the sweep run (else from the trials' tags)."""
        search = self.sweep_run.get("params", {}).get("search")
        if search:
            return [k for k, v in json.loads(search).items() if v.get("type") != "fixed"]
        keys: list[str] = []
        for tag in self.runs.get(names.tag_column(Tag.SAMPLED), pd.Series(dtype=str)).dropna():
            keys.extend(k for k in json.loads(tag) if k not in keys)
        return keys


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
    row.update({names.column(k): v for k, v in run.data.metrics.items()})
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
    return sorted(e.name for e in client.search_experiments() if e.tags.get(Tag.NAME) or e.name != "Default")


def history(client, run_id: str, keys: tuple[str, ...] = CURVES) -> pd.DataFrame:
    """Per-epoch metrics of one run: columns epoch and one per key that exists."""
    frames = []
    for key in keys:
        points = client.get_metric_history(run_id, key)
        if points:
            frame = pd.DataFrame({"epoch": [p.step for p in points], key: [p.value for p in points]})
            frames.append(frame.drop_duplicates("epoch", keep="last"))
    if not frames:
        return pd.DataFrame(columns=["epoch"])
    merged = frames[0]
    for frame in frames[1:]:
        merged = merged.merge(frame, on="epoch", how="outer")
    return merged.sort_values("epoch").reset_index(drop=True)


def predictions(client, run_id: str) -> dict[str, np.ndarray] | None:
    """The trial's predictions.npz (outputs of every replicate, labels, truth), or None."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = client.download_artifacts(run_id, PREDICTIONS, folder)
        except Exception as exc:  # never logged (a failed trial) or gone: the page says what is missing
            log.debug("run %s: no predictions.npz (%s)", run_id, exc)
            return None
        with np.load(path) as saved:
            return {k: saved[k] for k in saved.files}


def _sweep_text(client, sweep_run: dict) -> str | None:
    if not sweep_run:
        return None
    with tempfile.TemporaryDirectory() as folder:
        try:
            return Path(client.download_artifacts(sweep_run["run_id"], SWEEP_FILE, folder)).read_text()
        except Exception as exc:  # logged by a version that did not keep it: the page goes without
            log.debug("the sweep run has no sweep.yaml (%s)", exc)
            return None


def _optuna_trials(store: Store, name: str) -> OptunaTrials | None:
    try:
        study = optuna.load_study(study_name=name, storage=store.optuna())
    except Exception as exc:  # the Optuna side may be elsewhere or gone; the report says so
        log.warning("study %s: its Optuna trials could not be read (%s); the report goes on without them", name, redact(str(exc)))
        return None
    return OptunaTrials(study.get_trials(deepcopy=False), list(study.directions), dict(study.user_attrs))


def _experiment(client, store: Store, name: str):
    experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        known = known_sweeps(client)
        listing = ", ".join(known) if known else "none yet"
        raise BadInput(f"no sweep {name!r} in {store.describe()}{did_you_mean(name, known)} (known sweeps: {listing})")
    return experiment


def _runs(client, experiment_id: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(trial runs, reference runs, the sweep run) of one experiment, replicates left out."""
    trials, references, sweep_run = [], [], {}
    for run in _pages(client, experiment_id, f"tags.`{Tag.ROLE}` != '{Role.REPLICATE}'"):
        role = run.data.tags.get(Tag.ROLE)
        if role == Role.TRIAL:
            trials.append(_row(run))
        elif role in REFERENCE_ROLES:
            references.append(_row(run))
        elif role == Role.SWEEP:
            sweep_run = {"run_id": run.info.run_id, "params": run.data.params, "metrics": run.data.metrics,
                         "tags": run.data.tags, "status": run.info.status}
    # A base trained by another sweep (compression sweeps share it) is logged in that sweep's experiment.
    present = {row["run_id"] for row in references}
    for base_id in {row.get(names.tag_column(Tag.BASE_RUN_ID)) for row in trials} - present - {None, ""}:
        try:
            references.append(_row(client.get_run(base_id)))
        except Exception as exc:  # deleted since: the report goes without the base's own numbers
            log.debug("a reference run could not be read (%s)", exc)
    runs = _frame(trials)
    if not runs.empty:
        runs["trial"] = pd.to_numeric(runs[names.tag_column(Tag.TRIAL)], errors="coerce")
        runs["state"] = runs[names.tag_column(Tag.STATE)].fillna(names.TrialState.RUNNING.value)
        runs = runs.sort_values("trial").reset_index(drop=True)
    return runs, _frame(references), sweep_run


def _with_bases(client, references: pd.DataFrame, files: pd.DataFrame) -> pd.DataFrame:
    """The reference runs, with every base a file was compressed from (another sweep may have
    trained it: compression sweeps share bases)."""
    column = names.tag_column(Tag.BASE_RUN_ID)
    if files.empty or column not in files:
        return references
    present = set(references["run_id"]) if "run_id" in references else set()
    rows = []
    for base_id in set(files[column].dropna()) - present - {""}:
        try:
            rows.append(_row(client.get_run(base_id)))
        except Exception as exc:  # deleted since: the report goes without the base's own numbers
            log.debug("a reference run could not be read (%s)", exc)
    return pd.concat([references, _frame(rows)], ignore_index=True) if rows else references


def _replicate_runs(client, experiment_id: str) -> pd.DataFrame:
    """The replicate runs of one experiment (nested under their trial runs)."""
    return _frame([_row(run) for run in _pages(client, experiment_id, f"tags.`{Tag.ROLE}` = '{Role.REPLICATE}'")])


def compression_files(runs: pd.DataFrame, replicates: pd.DataFrame) -> pd.DataFrame:
    """One row per compressed file: a trial with several replicates wrote one per replicate (each
    from its own base), logged on the replicate's run; a trial with one, on its own run."""
    if runs.empty or names.tag_column(Tag.METHOD) not in runs:
        return pd.DataFrame()
    parent = "tags.mlflow.parentRunId"
    several = set()
    parts = []
    if not replicates.empty and parent in replicates:
        trials = runs.set_index("run_id")
        mine = replicates[replicates[parent].isin(trials.index)].copy()
        if not mine.empty:
            several = set(mine[parent])
            mine["trial_run_id"] = mine[parent]
            mine["trial"] = trials.loc[mine[parent], "trial"].to_numpy()
            mine["state"] = mine.get(names.tag_column(Tag.STATE), pd.Series(index=mine.index, dtype=object)).fillna(
                names.TrialState.RUNNING.value)
            mine["seed"] = pd.to_numeric(mine.get("params.replicate_seed"), errors="coerce")
            parts.append(mine)
    single = runs[~runs["run_id"].isin(several)].copy()
    single["trial_run_id"] = single["run_id"]
    single["seed"] = pd.to_numeric(single.get("params.seed", pd.Series(index=single.index, dtype=float)), errors="coerce")
    parts.append(single)
    return pd.concat(parts, ignore_index=True).sort_values(["trial", "seed"]).reset_index(drop=True)


def _seeds(client, experiment_id: str, runs: pd.DataFrame, errs: pd.DataFrame, saved: dict) -> seeds.Seeds:
    """Every finished replicate's errors, and the per-example test errors of the trials a claim
    compares (all finished trials, up to MAX_PAIRED), from their predictions."""
    if errs.empty:
        return seeds.Seeds()
    classification = regimes.task_of(runs) == "classification"
    several = bool((errs["replicates"] > 1).any())
    rows = seeds.seed_rows(runs, _replicate_runs(client, experiment_id) if several else pd.DataFrame(), classification)
    examples = {}
    if len(errs) <= MAX_PAIRED and tables.compression_runs(runs).empty:  # compression claims pair files, not seeds
        for run_id in errs["run_id"]:
            p = saved.get(run_id) or predictions(client, run_id)
            if p is not None and "outputs" in p and "seeds" in p:
                examples[run_id] = (np.asarray(p["seeds"]), seeds.example_errors(p["outputs"], p["y_test"]))
    test_size = pd.to_numeric(errs.get("metrics.data/test_size", pd.Series(dtype=float)), errors="coerce").dropna()
    return seeds.Seeds(rows, examples, float(test_size.iloc[0]) if len(test_size) else float("nan"), classification)


def _compression_predictions(client, runs: pd.DataFrame, saved: dict) -> dict[str, dict[str, np.ndarray]]:
    """The predictions of a compression sweep's finished trials (every file's outputs per seed),
    up to MAX_PAIRED trials: the claims pair them per example, and the page counts what each file
    forgot against its base's."""
    done = tables.compression_runs(runs)
    found = {}
    for run_id in done["run_id"].head(MAX_PAIRED) if not done.empty else []:
        p = saved.get(run_id) or predictions(client, run_id)
        if p is not None:
            found[run_id] = p
    return found


def load_sweep_runs(store: Store, name: str) -> SweepRuns:
    """Everything the report needs of sweep `name`; a StudyError names the known sweeps if absent."""
    quiet_libraries()
    if store.is_local and not (store.root / "mlflow.db").exists():
        raise BadInput(f"no store in {store.root}; run a sweep first (study run sweeps/demo.yaml), or give --store")
    client = store.mlflow()
    experiment = _experiment(client, store, name)
    runs, references, sweep_run = _runs(client, experiment.experiment_id)
    study = _optuna_trials(store, name)
    runs, left_out = current_data(runs, study)
    errs = regimes.errors(runs)  # which runs' curves and predictions the sections will need
    curves = {pick.run_id: history(client, pick.run_id) for pick in tables.learning_curve_runs(errs)}
    saved = {rid: p for rid in tables.decomposed_runs(errs) if (p := predictions(client, rid)) is not None}
    replicates = _seeds(client, experiment.experiment_id, runs, errs, saved)
    files = pd.DataFrame()
    if not runs.empty and names.tag_column(Tag.METHOD) in runs:  # a compression sweep: every file, every base
        several = pd.to_numeric(runs.get("params.replicates", pd.Series(1, index=runs.index)), errors="coerce").fillna(1)
        files = compression_files(runs, _replicate_runs(client, experiment.experiment_id) if (several > 1).any() else pd.DataFrame())
        references = _with_bases(client, references, files)
        saved.update(_compression_predictions(client, runs, saved))
    return SweepRuns(
        name=name, experiment_id=experiment.experiment_id, description=experiment.tags.get("mlflow.note.content", ""),
        runs=runs, references=references, sweep_run=sweep_run, sweep_text=_sweep_text(client, sweep_run),
        optuna=study, histories=curves, predictions=saved, store=store.describe(),
        seeds=replicates, left_out=left_out, files=files,
    )


def current_data(runs: pd.DataFrame, study: OptunaTrials | None) -> tuple[pd.DataFrame, str]:
    """The trial runs of the data the study holds now, and a sentence on those left out: a study
    continued with --allow-changed after its dataset changed keeps its earlier trials in the
    stores, but a page comparing trials across two datasets would compare the data, not the knobs."""
    if study is None or runs.empty or Attr.DATA_DIGEST not in study.user_attrs:
        return runs, ""
    now = study.user_attrs[Attr.DATA_DIGEST]
    ran_on = {t.number: t.user_attrs.get(Attr.DATA_DIGEST) for t in study.trials}
    earlier = runs["trial"].map(lambda n: ran_on.get(n) not in (None, now))
    if not earlier.any():
        return runs, ""
    digests = sorted({str(ran_on[n]) for n in runs.loc[earlier, "trial"]})
    note = (f"{int(earlier.sum())} trial run(s) ran on an earlier version of the dataset (content digest "
            f"{', '.join(digests)}) and are left out of this page; they stay in MLflow. The trials here ran on {now}.")
    return runs[~earlier].reset_index(drop=True), note


def log_report(store: Store, data: SweepRuns, folder: Path) -> None:
    """Log the report's folder to the sweep's run under report/ (the MLflow UI shows it there)."""
    if data.sweep_run:
        store.mlflow().log_artifacts(data.sweep_run["run_id"], str(folder), "report")
