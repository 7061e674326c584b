"""The tables behind the report's charts: pure functions of the runs DataFrame (see load.py).

Error is 1 − accuracy for classification and the mean squared error for regression; "held-out"
means the test split, the fixed data no trial trained or was selected on.

Regimes, by thresholds the report prints next to them:
- underfit: the training error alone is worse than the best held-out error in the sweep by more
  than UNDERFIT_MARGIN (5 points of error rate; 25% for squared error): the model cannot even fit
  the data it trains on;
- overfit: not underfit, and the held-out error exceeds the training error by more than
  OVERFIT_GAP (10 points; 50% of the best held-out error for squared error);
- good fit: neither.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from study import measure

UNDERFIT_MARGIN = {"classification": 0.05, "regression": 0.25}  # absolute / relative to the best
OVERFIT_GAP = {"classification": 0.10, "regression": 0.50}

# The article's remedies, filed where they act (the article swaps its two lists).
REMEDIES = {
    "dataset.train_size": ("more training data", "overfitting"),
    "model.l1": ("L1 weight penalty", "overfitting"),
    "model.l2": ("L2 weight penalty", "overfitting"),
    "model.dropout": ("dropout", "overfitting"),
    "train.early_stopping.enabled": ("early stopping", "overfitting"),
    "model.width": ("more units per layer", "underfitting"),
    "model.depth": ("more layers", "underfitting"),
    "model.poly_degree": ("more features (polynomial)", "underfitting"),
    "train.epochs": ("more epochs", "underfitting"),
}
ADVICE = {
    "underfit": "add capacity (layers, units), better features (e.g. polynomial), or train longer",
    "overfit": "add training data, L1/L2 penalties, dropout, or early stopping",
    "good fit": "keep it: this is the balance the article aims for",
}


def task_of(runs: pd.DataFrame) -> str:
    return "classification" if "metrics.test/accuracy" in runs.columns else "regression"


def error_name(task: str) -> str:
    return "error rate (1 − accuracy)" if task == "classification" else "mean squared error"


def errors(runs: pd.DataFrame) -> pd.DataFrame:
    """Finished trials with train/val/test error and the gap (test − train)."""
    if runs.empty or "state" not in runs:
        return pd.DataFrame()
    done = runs[runs["state"] == "finished"].copy()
    task = task_of(runs)
    for split in measure.SPLITS:
        if task == "classification":
            column = f"metrics.{split}/accuracy"
            done[f"{split}_error"] = 1.0 - done[column] if column in done else np.nan
        else:
            column = f"metrics.{split}/loss"
            done[f"{split}_error"] = done[column] if column in done else np.nan
    done["gap"] = done["test_error"] - done["train_error"]
    return done.dropna(subset=["train_error", "test_error"]).reset_index(drop=True)


def regimes(errs: pd.DataFrame, task: str) -> pd.Series:
    """'underfit', 'overfit' or 'good fit' for every row, by the thresholds in the module doc."""
    if errs.empty:
        return pd.Series(dtype=str)
    best = errs["test_error"].min()
    if task == "classification":
        underfit = errs["train_error"] > best + UNDERFIT_MARGIN[task]
        overfit = errs["gap"] > OVERFIT_GAP[task]
    else:
        underfit = errs["train_error"] > best * (1 + UNDERFIT_MARGIN[task])
        overfit = errs["gap"] > OVERFIT_GAP[task] * best
    return pd.Series(np.where(underfit, "underfit", np.where(overfit, "overfit", "good fit")), index=errs.index)


def thresholds_text(task: str) -> str:
    if task == "classification":
        return (
            f"underfit: training error more than {UNDERFIT_MARGIN[task]:.0%} (absolute) above the best held-out error in "
            f"the sweep; overfit: held-out error more than {OVERFIT_GAP[task]:.0%} (absolute) above the training error; "
            "good fit: neither"
        )
    return (
        f"underfit: training error more than {UNDERFIT_MARGIN[task]:.0%} above the best held-out error in the sweep; "
        f"overfit: held-out error above the training error by more than {OVERFIT_GAP[task]:.0%} of the best held-out "
        "error; good fit: neither"
    )


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


def knob_table(errs: pd.DataFrame, knob: str, labels: pd.Series) -> pd.DataFrame:
    """Per value of `knob`: mean errors (over other knobs and replicates), gap, runs, the most
    common regime; sorted by value."""
    column = f"params.{knob}"
    frame = errs.assign(value=as_number(errs[column]), regime=labels)
    grouped = frame.groupby("value", sort=True)
    table = grouped.agg(
        train_error=("train_error", "mean"), test_error=("test_error", "mean"), gap=("gap", "mean"),
        runs=("run_id", "count"),
    )
    table["regime"] = grouped["regime"].agg(lambda s: s.value_counts().index[0])
    return table.reset_index()


def knob_long(errs: pd.DataFrame, knob: str) -> pd.DataFrame:
    """Long form for drawing: value, split ('train' or 'held-out (test)'), error."""
    value = as_number(errs[f"params.{knob}"])
    return pd.concat([
        pd.DataFrame({"value": value, "split": "train", "error": errs["train_error"]}),
        pd.DataFrame({"value": value, "split": "held-out (test)", "error": errs["test_error"]}),
    ], ignore_index=True)


def sweet_spot(table: pd.DataFrame):
    """The knob value with the lowest mean held-out error."""
    return table.loc[table["test_error"].idxmin(), "value"] if not table.empty else None


def log_scale(values: pd.Series) -> bool:
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    return bool(len(numbers) and numbers.min() > 0 and numbers.max() / numbers.min() >= 20)


@dataclass(frozen=True)
class Picked:
    label: str
    run_id: str
    trial: int


def learning_curve_runs(errs: pd.DataFrame, labels: pd.Series) -> list[Picked]:
    """The most underfit (highest training error), the best (lowest validation error) and the
    most overfit (largest gap) finished trials."""
    if errs.empty:
        return []
    val = errs["val_error"] if errs["val_error"].notna().any() else errs["test_error"]
    picks = [("most underfit", errs["train_error"].idxmax()), ("best", val.idxmin()), ("most overfit", errs["gap"].idxmax())]
    return [Picked(label, errs.loc[i, "run_id"], int(errs.loc[i, "trial"])) for label, i in picks]


def remedy_effects(errs: pd.DataFrame, searched: list[str]) -> pd.DataFrame:
    """For each searched knob that is one of the article's remedies: the mean train error, held-out
    error and gap at its lowest and highest setting (main effects, averaged over the other knobs)."""
    rows = []
    for knob in searched:
        column = f"params.{knob}"
        if knob not in REMEDIES or column not in errs or errs[column].nunique() < 2:
            continue
        value = as_number(errs[column])
        low, high = value.min(), value.max()
        at_low, at_high = errs[value == low], errs[value == high]
        name, against = REMEDIES[knob]
        rows.append({
            "remedy": name, "knob": knob, "acts against": against, "from": low, "to": high,
            "train error from": at_low["train_error"].mean(), "train error to": at_high["train_error"].mean(),
            "held-out error from": at_low["test_error"].mean(), "held-out error to": at_high["test_error"].mean(),
            "gap from": at_low["gap"].mean(), "gap to": at_high["gap"].mean(),
            "runs": f"{len(at_low)} / {len(at_high)}",
        })
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Claim:
    claim: str  # what the article says
    verdict: str  # 'confirmed', 'partly confirmed', 'contradicted' or 'not seen'
    evidence: str  # what this sweep measured


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:.3g}"


def article_claims(effects: pd.DataFrame, errs: pd.DataFrame, searched: list[str], task: str = "classification") -> list[Claim]:
    """The article's claims this sweep can speak to, with verdicts from its own numbers."""
    claims = []
    for _, row in effects.iterrows():
        gap_change = row["gap to"] - row["gap from"]
        train_change = row["train error to"] - row["train error from"]
        span = f"{row['knob']} {_fmt(row['from'])} → {_fmt(row['to'])}"
        if row["acts against"] == "overfitting":
            verdict = "confirmed" if gap_change < 0 else "contradicted"
            claims.append(Claim(f"{row['remedy']} reduces overfitting", verdict,
                                f"{span}: gap {_fmt(row['gap from'])} → {_fmt(row['gap to'])}"))
        else:
            verdict = "confirmed" if train_change < 0 else "contradicted"
            claims.append(Claim(f"{row['remedy']} reduces underfitting", verdict,
                                f"{span}: training error {_fmt(row['train error from'])} → {_fmt(row['train error to'])}"))
        if row["knob"] == "dataset.train_size":
            verdict = "contradicted" if gap_change < 0 else "confirmed"
            claims.append(Claim("too much training data causes overfitting (the article's claim)", verdict,
                                f"{span}: gap {_fmt(row['gap from'])} → {_fmt(row['gap to'])}; held-out error "
                                f"{_fmt(row['held-out error from'])} → {_fmt(row['held-out error to'])}"))
    if "train.epochs" in searched and "params.train.epochs" in errs and errs["params.train.epochs"].nunique() > 2:
        table = errs.groupby("params.train.epochs")[["train_error", "test_error", "gap"]].mean().sort_index()
        best_epochs, last = table["test_error"].idxmin(), table.index.max()
        limit = OVERFIT_GAP[task] if task == "classification" else OVERFIT_GAP[task] * errs["test_error"].min()
        rise = table.loc[last, "test_error"] - table.loc[best_epochs, "test_error"]
        verdict = "confirmed" if table.loc[last, "gap"] > limit else "not seen"
        claims.append(Claim("too many epochs overfit", verdict,
                            f"at {_fmt(last)} epochs the gap is {_fmt(table.loc[last, 'gap'])} (overfit above {_fmt(limit)}); "
                            f"held-out error is lowest at {_fmt(best_epochs)} epochs ({_fmt(table.loc[best_epochs, 'test_error'])}) and "
                            f"{_fmt(table.loc[last, 'test_error'])} at {_fmt(last)}"
                            + (" (it rises)" if rise > 0.005 else " (it levels off rather than rising)")))
    return claims


def decomposition_rows(errs: pd.DataFrame, predictions: dict[str, dict]) -> pd.DataFrame:
    """Bias–variance decomposition per trial with replicates (see decompose.py)."""
    from study.report import decompose

    rows = []
    for run_id, saved in predictions.items():
        outputs = saved.get("outputs")
        if outputs is None or len(outputs) < 2:
            continue
        if "f_test" in saved:
            d = decompose.squared_error(outputs[..., 0], saved["f_test"], saved["y_test"], float(saved["noise_std"]))
            rows.append({"run_id": run_id, "kind": "squared error", "bias²": d.bias2, "variance": d.variance,
                         "noise": d.noise, "error": d.error_vs_truth, "error vs labels": d.error_vs_labels,
                         "residual": d.residual, "replicates": len(outputs)})
        elif outputs.ndim == 3 and outputs.shape[-1] > 1:
            d = decompose.zero_one(decompose.classes_from_outputs(outputs), saved["y_test"])
            rows.append({"run_id": run_id, "kind": "0-1 loss (Domingos 2000)", "bias": d.bias, "net variance": d.net_variance,
                         "disagreement": d.variance, "error": d.loss, "error vs labels": d.loss, "residual": d.residual,
                         "replicates": len(outputs)})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    keep = ["run_id", "trial"] + [c for c in errs.columns if c.startswith("params.")]
    return table.merge(errs[keep], on="run_id", how="left")


# ------------------------------------------------------------------------------- compression
SIZE = {"raw": "metrics.artifact/size_bytes", "gzip": "metrics.artifact/gzip_bytes"}
ACCURACY = "metrics.artifact/test_accuracy"


def compression_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Finished trials that wrote and measured a compressed file."""
    if runs.empty or SIZE["raw"] not in runs or ACCURACY not in runs:
        return pd.DataFrame()
    done = runs[(runs["state"] == "finished") & runs[SIZE["raw"]].notna() & runs[ACCURACY].notna()].copy()
    done["method"] = done.get("tags.study.method", pd.Series("?", index=done.index)).fillna("?")
    return done.reset_index(drop=True)


def frontier(comp: pd.DataFrame, size: str) -> pd.Series:
    """Pareto-optimal rows: no other row is both smaller (in `size`) and more accurate."""
    if comp.empty:
        return pd.Series(dtype=bool)
    values = comp[[ACCURACY, SIZE[size]]].to_numpy(dtype=float)
    return pd.Series(measure.pareto_mask(values, ["maximize", "minimize"]), index=comp.index)


def varying_settings(comp: pd.DataFrame) -> list[str]:
    """The compress.* and model.* params that take more than one value across these trials."""
    return [
        c for c in comp.columns
        if c.startswith(("params.compress.", "params.model.")) and c != "params.compress.method" and comp[c].nunique() > 1
    ]


def _plain(value) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def settings_of(row: pd.Series, columns: list[str]) -> str:
    """A trial's values of `columns` (those it has), as one short string."""
    return ", ".join(f"{c.split('.', 2)[2]}={_plain(row[c])}" for c in columns if pd.notna(row.get(c)))


def distillation_pairs(comp: pd.DataFrame) -> pd.DataFrame:
    """Each distilled student beside its hard-label control (same student, budget and seed)."""
    if comp.empty or "metrics.control/test/accuracy" not in comp:
        return pd.DataFrame()
    students = comp[(comp["method"] == "distill") & comp["metrics.control/test/accuracy"].notna()]
    columns = varying_settings(students)
    return pd.DataFrame({
        "trial": students["trial"],
        "student": [f"trial {int(t)}" + (f": {settings_of(r, columns)}" if columns else "") for t, (_, r) in zip(students["trial"], students.iterrows())],
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


def compression_claims(comp: pd.DataFrame, references: pd.DataFrame) -> list[Claim]:
    """Verdicts on the compression claims this sweep's trials can speak to."""
    claims = []
    if comp.empty:
        return claims
    base_acc = base_point(comp, references)["accuracy"]
    int8 = comp[(comp["method"] == "quantize") & (comp.get("metrics.artifact/bits") == 8)]
    if not int8.empty and pd.notna(base_acc):
        best = int8.loc[int8[ACCURACY].idxmax()]
        drop = base_acc - best[ACCURACY]
        ratio = best["metrics.artifact/compression_ratio"]
        small, close = ratio >= 3.5, drop <= 0.02  # "about 4x", "close to float": within 2 points
        verdict = "confirmed" if small and close else "partly confirmed" if small or close else "contradicted"
        claims.append(Claim("8-bit quantization: about 4× smaller with accuracy close to float", verdict,
                            f"best 8-bit file ({best.get('tags.study.artifact', '')}): {ratio:.2f}× smaller than the float32 base, "
                            f"accuracy {best[ACCURACY]:.3f} against {base_acc:.3f}"))
    pairs = distillation_pairs(comp)
    if not pairs.empty:
        wins = int((pairs["distilled"] > pairs["hard labels only"]).sum())
        verdict = "confirmed" if wins > len(pairs) / 2 else "contradicted"
        mean_gain = (pairs["distilled"] - pairs["hard labels only"]).mean()
        claims.append(Claim("a distilled student beats the same student trained on hard labels", verdict,
                            f"{wins} of {len(pairs)} students beat their control; mean accuracy gain {mean_gain:+.3f}"))
    sparse = comp[comp["method"].isin(["prune", "prune_quantize"])]
    dense = comp[comp["method"] == "architecture"]
    if not sparse.empty and not dense.empty:
        better, compared = 0, 0
        for _, small in dense.iterrows():
            rivals = sparse[sparse[SIZE["gzip"]] <= small[SIZE["gzip"]]]
            if not rivals.empty:
                compared += 1
                better += int(rivals[ACCURACY].max() > small[ACCURACY])
        if compared:
            verdict = "confirmed" if better > compared / 2 else "contradicted"
            claims.append(Claim("a large sparse model beats a small dense one at equal memory (Zhu & Gupta 2017)", verdict,
                                f"for {better} of {compared} small dense models, a pruned model of no more gzip bytes was more accurate"))
    return claims


# -------------------------------------------------------------------------------- the study
def state_counts(runs: pd.DataFrame, study) -> pd.DataFrame:
    """Trials per state: from Optuna (all states, waiting included) and from MLflow."""
    rows = {}
    if not runs.empty:
        for state, count in runs["state"].value_counts().items():
            rows.setdefault(state, {})["MLflow runs"] = int(count)
    if study is not None:
        for trial in study.get_trials(deepcopy=False):
            state = trial.user_attrs.get("study_state") or trial.state.name.lower()
            if trial.user_attrs.get("study_skipped"):  # why: 'budget' or 'repeat' (settings that already ran)
                state = f"skipped ({trial.user_attrs['study_skipped']})"
            rows.setdefault(state, {}).setdefault("Optuna trials", 0)
            rows[state]["Optuna trials"] += 1
    return pd.DataFrame.from_dict(rows, orient="index").fillna(0).astype(int).rename_axis("state").reset_index()


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
