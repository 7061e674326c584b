"""The tables behind the report's charts: pure functions of the runs DataFrame (see load.py) and
of the per-trial errors and regimes (regimes.py). Nothing here reads storage or draws.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from study import measure, names
from study.ledger import count_trials
from study.names import STOPPED, Attr, Tag, TrialState
from study.report import decompose, regimes, stats

MAX_PANELS = 6  # per-knob charts with more panels than this give way to the effects chart
MAX_DECOMPOSED = 300  # trials whose predictions are read for the bias–variance decomposition


def varied_knobs(errs: pd.DataFrame, searched: list[str]) -> tuple[list[str], list[str]]:
    """(numeric, categorical) searched keys that take several values among finished trials;
    booleans count as numeric (0 and 1)."""
    numeric, categorical = [], []
    for key in searched:
        column = f"params.{key}"
        if column not in errs or errs[column].nunique() < 2:
            continue
        if pd.to_numeric(as_number(errs[column]), errors="coerce").notna().all():
            numeric.append(key)
        else:
            categorical.append(key)
    return numeric, categorical


def as_number(values: pd.Series) -> pd.Series:
    """Numbers as they are; 'True'/'False' as 1/0; anything else unchanged."""
    if not pd.api.types.is_numeric_dtype(values) and set(values.dropna().astype(str).unique()) <= {"True", "False"}:
        return values.map({"True": 1.0, "False": 0.0})
    return values


def numeric(values: pd.Series) -> pd.Series:
    """A knob's values as numbers (booleans as 1/0); NaN where a value is not a number."""
    return pd.to_numeric(as_number(values), errors="coerce")


def log_scale(values: pd.Series) -> bool:
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    return bool(len(numbers) and numbers.min() > 0 and numbers.max() / numbers.min() >= 20)


@dataclass(frozen=True)
class Panel:
    """One series of settings along a knob: every other varied knob held at one value."""

    title: str  # the held values, e.g. "model.kind = cnn, model.dropout = 0.5"
    rows: pd.DataFrame  # one row per trial, sorted by `value`, with the regimes.errors columns and regime columns
    sweet_spot: float  # the knob value with the lowest held-out error in this series
    descent: regimes.Descent | None  # along this series (capacity-like knobs only)


def knob_panels(errs: pd.DataFrame, knob: str, others: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """The trials split by the values of the `other` varied knobs, so that no chart averages over
    them: (title, rows sorted by the knob's value) per combination."""
    frame = errs.assign(value=numeric(errs[f"params.{knob}"]))
    if not others:
        return [("all trials", frame.sort_values("value"))]
    panels = []
    for held, rows in frame.groupby([f"params.{o}" for o in others], sort=True, dropna=False):
        held = held if isinstance(held, tuple) else (held,)
        title = ", ".join(f"{o} = {plain(v)}" for o, v in zip(others, held))
        panels.append((title, rows.sort_values("value")))
    return panels


def sweet_spot(rows: pd.DataFrame):
    """The knob value with the lowest held-out error (mean over trials at that value)."""
    if rows.empty:
        return None
    return rows.groupby("value")["test_error"].mean().idxmin()


def series_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per knob value of a series (trials at one value are the same setting, so their
    numbers are averaged only when a sampler repeated it): the columns regimes.descent needs."""
    columns = ["test_error", "test_low", "test_high", "test_std", "train_error"]
    table = rows.groupby("value", sort=True).agg(
        {**{c: "mean" for c in columns}, "replicates": "min", "interpolating": "all", "run_id": list})
    return table.rename(columns={"run_id": "runs"}).reset_index()


@dataclass(frozen=True)
class Picked:
    label: str
    run_id: str
    trial: int


def learning_curve_runs(errs: pd.DataFrame) -> list[Picked]:
    """The most underfit (highest training error), the best (lowest validation error) and the
    most overfit (largest gap) finished trials."""
    if errs.empty:
        return []
    val = errs["val_error"] if errs["val_error"].notna().any() else errs["test_error"]
    picks = [("most underfit", errs["train_error"].idxmax()), ("best", val.idxmin()), ("most overfit", errs["gap"].idxmax())]
    return [Picked(label, errs.loc[i, "run_id"], int(errs.loc[i, "trial"])) for label, i in picks]


def decomposed_runs(errs: pd.DataFrame) -> list[str]:
    """The run ids whose predictions the decomposition splits: the first MAX_DECOMPOSED finished
    trials with two or more replicates."""
    if errs.empty:
        return []
    return errs.loc[errs["replicates"] > 1, "run_id"].head(MAX_DECOMPOSED).tolist()


def decomposition_rows(errs: pd.DataFrame, predictions: dict[str, dict]) -> pd.DataFrame:
    """Bias–variance decomposition per trial with two or more replicates (see decompose.py), with
    95% half-widths, and the check against the held-out error the trial's metrics measured."""
    rows = []
    for run_id, saved in predictions.items():
        outputs = saved.get("outputs")
        if outputs is None or len(outputs) < 2:
            continue
        measured = errs.loc[errs["run_id"] == run_id, "test_error"]
        measured = float(measured.iloc[0]) if len(measured) else np.nan
        if "f_test" in saved:
            d = decompose.squared_error(outputs[..., 0], saved["f_test"], saved["y_test"], float(saved["noise_std"]))
            rows.append({
                "run_id": run_id, "kind": "squared error", "replicates": len(outputs), "interval": d.interval,
                "bias²": d.bias2.value, "bias² ±": d.bias2.half_width, "variance": d.variance.value,
                "variance low": d.variance.low, "variance high": d.variance.high, "noise σ²": d.noise, "bias² + variance + σ²": d.predicted,
                "measured held-out error": d.measured, "difference": d.realised.value,
                "difference ±": d.realised.half_width,
                "identity": "holds" if d.identity_holds else "fails",
                "plug-in residual": d.residual,
            })
        elif outputs.ndim == 3 and outputs.shape[-1] > 1:
            z = decompose.zero_one(decompose.classes_from_outputs(outputs), saved["y_test"])
            agrees = np.isfinite(measured) and abs(z.loss - measured) < 5e-4
            rows.append({
                "run_id": run_id, "kind": "0-1 loss (Domingos 2000)", "replicates": len(outputs), "interval": z.interval,
                "bias": z.bias.value, "bias ±": z.bias.half_width, "net variance": z.net_variance,
                "disagreement": z.variance, "measured held-out error": measured, "loss of the predictions": z.loss,
                "identity": "holds" if agrees and abs(z.residual) < 1e-9 else "fails",
            })
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    keep = ["run_id", "trial"] + [c for c in errs.columns if c.startswith("params.")]
    return table.merge(errs[keep], on="run_id", how="left")


# ------------------------------------------------------------------------------- compression
SIZE = {"raw": names.column("artifact/size_bytes"), "gzip": names.column("artifact/gzip_bytes")}
ACCURACY = names.column("artifact/test_accuracy")


def compression_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Finished trials that wrote and measured a compressed file."""
    if runs.empty or SIZE["raw"] not in runs or ACCURACY not in runs:
        return pd.DataFrame()
    done = runs[(runs["state"] == TrialState.FINISHED) & runs[SIZE["raw"]].notna() & runs[ACCURACY].notna()].copy()
    done["method"] = done.get(names.tag_column(Tag.METHOD), pd.Series("?", index=done.index)).fillna("?")
    structure = done.get("params.compress.structure", pd.Series(None, index=done.index, dtype=object))
    pruning = done["method"].isin(["prune", "prune_quantize"])
    shaped = pruning & structure.isin(["channels", "2:4"])
    done["label"] = done["method"].where(~shaped, done["method"] + " (" + structure.fillna("") + ")")  # charts' legend
    criterion = done.get("params.compress.criterion", pd.Series(None, index=done.index, dtype=object))
    at_random = pruning & (criterion == "random")
    done.loc[at_random, "label"] = done.loc[at_random, "label"] + ", random"  # the baseline, apart from magnitude
    return done.reset_index(drop=True)


# A file's controls (names.CONTROL_GROUPS), as the page names them.
CONTROLS = {
    "control": "equal-training control",  # the base fine-tuned as long; for a distilled student, its hard-label twin
    "scratch_e": "Scratch-E",  # the shrunk architecture from scratch, as many epochs
    "scratch_b": "Scratch-B",  # the same, for the same compute (capped)
}


def control_table(files: pd.DataFrame) -> pd.DataFrame:
    """Each setting's files beside each of their controls, seed by seed: the mean test accuracy of
    the files and of the controls over the seeds, and the paired difference file − control with its
    95% interval (Student's t over the seeds; each seed compressed its own base, so the interval
    holds the base's variance as well as the fine-tuning's). `files`: tables.compression_runs of
    the report's file rows."""
    rows = []
    if files.empty:
        return pd.DataFrame()
    shown_by_label = ("params.compress.structure", "params.compress.criterion")  # the file's label says these
    columns = [c for c in varying_settings(files) if c not in shown_by_label]
    for trial, group in files.groupby("trial", sort=True):
        first = group.iloc[0]
        for group_name, name in CONTROLS.items():
            column = names.column(f"{group_name}/test/accuracy")
            if column not in group or group[column].isna().all():
                continue
            pair = group[[ACCURACY, column]].apply(pd.to_numeric, errors="coerce").dropna()
            diff = stats.paired_differences((pair[ACCURACY] - pair[column]).to_numpy())
            low, high = diff.interval()
            epochs = pd.to_numeric(group.get(names.column(f"{group_name}/fit/epochs"), pd.Series(dtype=float)), errors="coerce")
            if group_name == "control" and first["method"] == "distill":
                name = "hard-label student"  # a student's control: itself without the teacher
            rows.append({
                "trial": int(trial), "file": first["label"], "settings": settings_of(first, columns), "control": name,
                "control epochs": int(epochs.max()) if epochs.notna().any() else np.nan, "seeds": len(pair),
                "file accuracy": pair[ACCURACY].mean(), "control accuracy": pair[column].mean(),
                "file − control": diff.effect, "low": low, "high": high,
                "run": first.get("trial_run_id", first["run_id"]),
                "differences": (pair[ACCURACY] - pair[column]).tolist(),
            })
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).sort_values(["file", "settings", "trial"], kind="stable").reset_index(drop=True)


LATENCY = names.column("artifact/latency_ms")
LATENCY_IQR = names.column("artifact/latency_iqr_ms")


def latency_runs(comp: pd.DataFrame) -> pd.DataFrame:
    """The files whose latency was measured (those a runtime runs), with their Pareto mask
    (`front`: no other file is both faster and more accurate)."""
    if comp.empty or LATENCY not in comp:
        return pd.DataFrame()
    timed = comp[pd.to_numeric(comp[LATENCY], errors="coerce").notna()].copy()
    if timed.empty:
        return timed
    timed["front"] = pareto_front(timed, LATENCY)
    return timed.reset_index(drop=True)


def frontier(comp: pd.DataFrame, size: str) -> pd.Series:
    """Pareto-optimal rows: no other row is both smaller (in `size`) and more accurate."""
    return pareto_front(comp, SIZE[size])


def pareto_front(comp: pd.DataFrame, cost: str) -> pd.Series:
    """Rows no other row beats on both accuracy (higher) and `cost` (lower: bytes, latency)."""
    if comp.empty:
        return pd.Series(dtype=bool)
    values = comp[[ACCURACY, cost]].to_numpy(dtype=float)
    return pd.Series(measure.pareto_mask(values, ["maximize", "minimize"]), index=comp.index)


def varying_settings(comp: pd.DataFrame) -> list[str]:
    """The compress.* and model.* params that take more than one value across these trials."""
    return [
        c for c in comp.columns
        if c.startswith(("params.compress.", "params.model.")) and c != "params.compress.method" and comp[c].nunique() > 1
    ]


def plain(value) -> str:
    """A setting's value as the sweep file writes it (whole floats as integers)."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def settings_of(row: pd.Series, columns: list[str]) -> str:
    """A trial's values of `columns` (those it has), as one short string."""
    return ", ".join(f"{c.split('.', 2)[2]}={plain(row[c])}" for c in columns if pd.notna(row.get(c)))


def distillation_pairs(comp: pd.DataFrame) -> pd.DataFrame:
    """Each distilled student beside its hard-label control (same student, budget and seed)."""
    if comp.empty or "metrics.control/test/accuracy" not in comp:
        return pd.DataFrame()
    students = comp[(comp["method"] == "distill") & comp["metrics.control/test/accuracy"].notna()]
    columns = varying_settings(students)
    several = "seed" in students and bool(students.groupby("trial")["seed"].nunique().gt(1).any())  # a row per file

    def name(trial, row) -> str:
        seed = f", seed {int(row['seed'])}" if several and pd.notna(row.get("seed")) else ""
        return f"trial {int(trial)}{seed}" + (f": {settings_of(row, columns)}" if columns else "")

    return pd.DataFrame({
        "trial": students["trial"],
        "student": [name(t, r) for t, (_, r) in zip(students["trial"], students.iterrows())],
        "distilled": students["metrics.test/accuracy"],
        "hard labels only": students["metrics.control/test/accuracy"],
    }).reset_index(drop=True)


def base_point(comp: pd.DataFrame, references: pd.DataFrame) -> dict[str, float]:
    """The uncompressed base: its float32 file's bytes ('raw', 'gzip') and test 'accuracy'. From
    the sweep's `method: none` trials where it has them, else from the compression ratios every
    trial logs and the base's own run; NaN where neither says."""
    none = comp[comp["method"] == "none"]
    if not none.empty:
        return {"raw": none[SIZE["raw"]].iloc[0], "gzip": none[SIZE["gzip"]].iloc[0], "accuracy": none[ACCURACY].mean()}
    first = comp.iloc[0]
    bases = references[references["tags.study.role"] == "base"] if "tags.study.role" in references else pd.DataFrame()
    return {
        "raw": first[SIZE["raw"]] * first.get("metrics.artifact/compression_ratio", np.nan),
        "gzip": first[SIZE["gzip"]] * first.get("metrics.artifact/gzip_compression_ratio", np.nan),
        "accuracy": bases["metrics.test/accuracy"].mean() if "metrics.test/accuracy" in bases else np.nan,
    }


# -------------------------------------------------------------------------------- the study
# Each row of the report's trial table: the state, and the MLflow `study.state` values and run
# status that go with it (Optuna's PRUNED covers pruned and diverged trials, MLflow's KILLED too).
STATE_ROWS = (
    ("finished", (TrialState.FINISHED,), "FINISHED"),
    ("pruned or diverged", STOPPED, "KILLED"),
    ("failed", (TrialState.FAILED,), "FAILED"),
    ("interrupted", (TrialState.INTERRUPTED,), "FAILED"),
    ("running", (TrialState.RUNNING,), "RUNNING"),
)


def state_counts(runs: pd.DataFrame, trials) -> pd.DataFrame:
    """Trials per state as `study.ledger.count_trials` counts the Optuna trials (None: the study
    was not found), beside the MLflow runs with those `study.state` tags and their run status;
    waiting and skipped trials (over the budget, or repeating settings that ran) have no run.
    `trials` is the loaded list of frozen trials: nothing here reads a store."""
    counts = count_trials(list(trials)) if trials is not None else None
    by_tag = runs["state"].value_counts().to_dict() if not runs.empty else {}
    rows = []
    for label, states, status in STATE_ROWS:
        optuna_count = getattr(counts, states[0].value) if counts is not None else 0
        rows.append((label, optuna_count, sum(by_tag.pop(s.value, 0) for s in states), status))
    rows.append(("waiting", counts.waiting if counts is not None else 0, 0, "no run yet"))
    skipped: dict[str, int] = {}
    for trial in trials or []:
        if trial.user_attrs.get(Attr.SKIPPED):  # why: 'budget' or 'repeat' (settings that already ran)
            key = f"skipped ({trial.user_attrs[Attr.SKIPPED]})"
            skipped[key] = skipped.get(key, 0) + 1
    rows.extend((label, n, 0, "no run") for label, n in skipped.items())
    rows.extend((state, 0, n, "?") for state, n in by_tag.items())  # a state this version does not know
    table = pd.DataFrame(rows, columns=["state", "Optuna trials", "MLflow runs", "MLflow status"])
    if counts is None:
        table = table.drop(columns="Optuna trials")
    numbers = table.drop(columns=["state", "MLflow status"])
    return table[numbers.sum(axis=1) > 0].reset_index(drop=True)


def optimization_history(runs: pd.DataFrame, metric: str, direction: str) -> pd.DataFrame:
    """Trial number, objective value and best so far, over finished trials."""
    column = f"metrics.{metric}"
    if runs.empty or column not in runs:
        return pd.DataFrame()
    done = runs[runs["state"] == "finished"][["trial", column]].dropna().sort_values("trial")
    best = done[column].cummax() if direction == "maximize" else done[column].cummin()
    return pd.DataFrame({"trial": done["trial"], "value": done[column], "best so far": best}).reset_index(drop=True)


def durations(runs: pd.DataFrame) -> pd.DataFrame:
    if runs.empty:
        return pd.DataFrame()
    ended = runs.dropna(subset=["end_time"])
    return pd.DataFrame({"trial": ended["trial"], "state": ended["state"],
                         "seconds": (ended["end_time"] - ended["start_time"]) / 1000.0}).reset_index(drop=True)


def objective_of(sweep_run: dict) -> dict[str, str]:
    raw = sweep_run.get("params", {}).get("objective")
    return json.loads(raw) if raw else {}


def two_knob_grid(errs: pd.DataFrame, seeds, row: str, column: str) -> pd.DataFrame:
    """Held-out error over a two-knob grid: one row per (row value, column value) with the mean over
    every seed of that setting (its rounds of added seeds together) and its 95% interval (seeds and
    the test set, as every setting's), columns row, column, error, low, high, seeds."""
    out = []
    for (r, c), rows in errs.groupby([f"params.{row}", f"params.{column}"], sort=True):
        values = seeds.rows.loc[seeds.rows["run_id"].isin(rows["run_id"]), "test_error"].to_numpy(float)
        if not len(values):
            values = rows["test_error"].to_numpy(float)
        mean, n = float(values.mean()), len(values)
        size = pd.to_numeric(rows.get("metrics.data/test_size", pd.Series(dtype=float)), errors="coerce").dropna()
        classification = "metrics.test/accuracy" in rows
        test_se = stats.binomial_se(mean, float(size.iloc[0])) if classification and len(size) else \
            float(pd.to_numeric(rows.get("metrics.test/loss_se"), errors="coerce").mean())
        e = stats.estimate(mean, float(values.std()) if n > 1 else None, n, test_se if np.isfinite(test_se) else None,
                           float(size.iloc[0]) if classification and len(size) and n < 2 else None)
        out.append({"row": r, "column": c, "error": mean, "low": e.low, "high": e.high, "seeds": n})
    return pd.DataFrame(out)

