"""`study report`: runs -> tables -> charts -> one self-contained HTML file per sweep.

Each sweep gets `reports/<sweep>/index.html` (figures embedded, also saved under `figures/`) and
`runs.csv`; the folder is logged to the sweep's parent run in MLflow under `report/`. With several
sweeps, `reports/index.html` links them. A sweep with failed, pruned or running trials, missing
metrics or no finished trial still gets a valid report that says what is missing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from study.report import figures, tables
from study.report.html import Page, esc
from study.report.load import SweepRuns, load_sweep_runs
from study.store import Store

MAX_DECOMPOSED = 300  # trials whose predictions are downloaded for the bias–variance decomposition
MAX_TABLE_ROWS = 60  # rows shown in the page's runs table; runs.csv has them all


@dataclass
class Built:
    name: str
    path: Path
    seconds: float
    summary: str


def _links(data: SweepRuns, mlflow_url: str | None, run_ids) -> dict[str, str]:
    if not mlflow_url:
        return {}
    base = mlflow_url.rstrip("/")
    return {rid: f"{base}/#/experiments/{data.experiment_id}/runs/{rid}" for rid in run_ids}


def _counts_line(data: SweepRuns) -> str:
    if data.runs.empty:
        return "no trial runs yet"
    counts = data.runs["state"].value_counts()
    return ", ".join(f"{n} {state}" for state, n in counts.items())


# ---------------------------------------------------------------------------- bias–variance
def bias_variance_section(page: Page, data: SweepRuns, mlflow_url: str | None) -> None:
    errs = tables.errors(data.runs)
    task = tables.task_of(data.runs)
    page.h2("Overfitting and underfitting", "bias-variance")
    if errs.empty:
        page.note("No trial has finished yet, so there are no errors to chart: " + _counts_line(data) + ".")
        return
    name = tables.error_name(task)
    labels = tables.regimes(errs, task)
    errs = errs.assign(regime=labels)
    page.p(f"Error is the {name}. Training error is measured on each trial's own training set, held-out error "
           "on the fixed test split, in inference mode once training has ended. The shaded gap between them is "
           "what the article calls overfitting; both high is underfitting.")
    page.p("Regimes: " + tables.thresholds_text(task) + ".")
    searched = data.searched
    knobs, categorical = tables.varied_knobs(errs, searched)
    facet = next((k for k in categorical if errs[f"params.{k}"].nunique() <= 4), None)
    for knob in knobs:
        groups = [(f"{facet} = {v}", errs[errs[f"params.{facet}"] == v]) for v in sorted(errs[f"params.{facet}"].unique())] if facet else [("all trials", errs)]
        panels = []
        for title, subset in groups:
            table = tables.knob_table(subset, knob, labels[subset.index])
            table = table.assign(value=pd.to_numeric(table["value"]))
            long = tables.knob_long(subset, knob).assign(value=lambda f: pd.to_numeric(f["value"]))
            panels.append((title, long, table, tables.sweet_spot(table)))
        log_x = tables.log_scale(pd.to_numeric(tables.as_number(errs[f"params.{knob}"])))
        spots = "; ".join(f"{title}: {knob} = {sweet:g}" for title, _, _, sweet in panels)
        page.figure(
            figures.error_vs_knob(panels, knob, name, log_x), f"error-vs-{knob.replace('.', '-')}",
            f"Training and held-out {name} against {knob}: mean and 95% interval over the trials at each value (other "
            f"knobs and replicates averaged){', one panel per ' + facet if facet else ''}. Bands: each value's most "
            f"common regime. Lowest held-out error: {spots}.",
        )
        summary = pd.concat([t.assign(**{facet: title.split(' = ')[1]}) if facet else t for title, _, t, _ in panels])
        columns = ([facet] if facet else []) + ["value", "train_error", "test_error", "gap", "runs", "regime"]
        page.table(summary[columns].rename(columns={"value": knob, "train_error": "train error", "test_error": "held-out error"}),
                   classes={"regime": "regime"})
    if "metrics.model/params" in errs and errs["metrics.model/params"].nunique() > 2:
        page.figure(figures.error_vs_params(errs, name, f"params.{facet}" if facet else None), "capacity",
                    "Every finished trial's training and held-out error against its parameter count.")
    learning_curves(page, data, errs, labels)
    decomposition_section(page, data, errs, knobs)
    regimes_and_remedies(page, data, errs, labels, task, mlflow_url)


def learning_curves(page: Page, data: SweepRuns, errs: pd.DataFrame, labels: pd.Series) -> None:
    picked = tables.learning_curve_runs(errs, labels)
    curves, best, stopped = {}, {}, {}
    for pick in picked:
        frame = data.history(pick.run_id, ("epoch/train_loss", "epoch/val_loss"))
        if frame.empty:
            continue
        label = f"{pick.label} (trial {pick.trial})"
        curves[label] = frame
        row = errs[errs["run_id"] == pick.run_id].iloc[0]
        best[label] = int(row.get("metrics.fit/best_epoch", 0) or 0)
        stopped[label] = int(row.get("metrics.fit/stopped_epoch", 0) or 0)
    if curves:
        page.figure(figures.learning_curves(curves, best, stopped), "learning-curves",
                    "Per-epoch training loss (running mean over the epoch, dropout on) and validation loss of the most "
                    "underfit, the best and the most overfit trials; dashed: the best validation epoch, the one early "
                    "stopping restores when it is on; dotted: where early stopping stopped training.")


def decomposition_section(page: Page, data: SweepRuns, errs: pd.DataFrame, knobs: list[str]) -> None:
    if "params.replicates" not in errs or not (errs["params.replicates"] > 1).any():
        page.h3("Bias and variance")
        page.p("This sweep trains one model per setting; set replicates: 2 or more to split the held-out error "
               "into bias and variance.")
        return
    chosen = errs.head(MAX_DECOMPOSED)
    predictions = {rid: p for rid in chosen["run_id"] if (p := data.predictions(rid)) is not None}
    table = tables.decomposition_rows(errs, predictions)
    page.h3("Bias and variance")
    if table.empty:
        page.note("The trials' predictions could not be read, so no decomposition.")
        return
    if len(errs) > MAX_DECOMPOSED:
        page.note(f"Decomposed the first {MAX_DECOMPOSED} of {len(errs)} trials.")
    kind = table["kind"].iloc[0]
    if kind == "squared error":
        page.p("Squared error against the known noiseless truth splits exactly into bias² (how far the average "
               "replicate is from the truth) and variance (how much replicates, each trained on a fresh training "
               "set, disagree); the expected error against noisy labels adds the known noise variance. The identity "
               f"holds here to {table['residual'].abs().max():.1e} (largest residual).")
    else:
        page.p("The 0-1 loss is split by Domingos' unified decomposition (Domingos 2000): bias is the share of test "
               "examples whose main prediction (the replicates' vote) is wrong; disagreement, the variance, is how often "
               "a replicate departs from that vote; net variance is the part of it that adds to the loss (disagreement "
               "on correctly voted examples) minus the part that removes loss (on wrongly voted ones), so the two can "
               f"cancel. loss = bias + net variance, here to {table['residual'].abs().max():.1e}. Replicates differ in "
               "initialization, batch order and, with train_size, the training sample; with two replicates a tied "
               "vote goes to the lower class.")
    knob = next((k for k in knobs if pd.to_numeric(table.get(f"params.{k}"), errors="coerce").notna().all()), None) if knobs else None
    page.figure(figures.decomposition(table, knob, kind), "bias-variance",
                f"Held-out error and its {kind} decomposition" + (f" against {knob}" if knob else " per trial") + ".")
    columns = ["trial", *[f"params.{k}" for k in [*categorical_of(table), *knobs]], "bias²", "variance", "noise", "bias",
               "net variance", "disagreement", "error", "error vs labels", "residual"]
    page.table(table[[c for c in columns if c in table]].sort_values("trial"))


def categorical_of(table: pd.DataFrame) -> list[str]:
    return [
        c.split(".", 1)[1] for c in table.columns
        if c.startswith("params.") and not pd.api.types.is_numeric_dtype(table[c]) and table[c].nunique() > 1
    ]


def regimes_and_remedies(page: Page, data: SweepRuns, errs: pd.DataFrame, labels: pd.Series, task: str, mlflow_url) -> None:
    page.h3("Regimes, remedies and the article's claims")
    counts = labels.value_counts()
    rows = pd.DataFrame({
        "regime": counts.index, "runs": counts.values,
        "what the article recommends": [tables.ADVICE[r] for r in counts.index],
    })
    page.table(rows, classes={"regime": "regime"})
    page.p("The article lists the remedies under swapped headings (its overfitting remedies sit under "
           "underfitting); this report files each where it acts.")
    effects = tables.remedy_effects(errs, data.searched)
    if not effects.empty:
        page.p("What this sweep measured of each remedy it varies: mean errors at its lowest and highest setting, "
               "averaged over every other knob (a main effect).")
        page.table(effects)
    claims = tables.article_claims(effects, errs, data.searched, task)
    if claims:
        page.claims(claims)
    shown = errs.sort_values("trial").head(MAX_TABLE_ROWS)
    columns = ["trial", "run_id", *[f"params.{k}" for k in data.searched if f"params.{k}" in shown], "train_error", "test_error", "gap", "regime"]
    page.p(f"Every finished trial's regime ({min(len(errs), MAX_TABLE_ROWS)} of {len(errs)} shown; runs.csv has all):")
    page.table(shown[columns], links=_links(data, mlflow_url, shown["run_id"]), classes={"regime": "regime"})


# ------------------------------------------------------------------------------ compression
def compression_section(page: Page, data: SweepRuns, comp: pd.DataFrame, mlflow_url: str | None) -> None:
    """`comp`: the finished compression trials (tables.compression_runs)."""
    page.h2("Accuracy against size", "compression")
    if comp.empty:
        page.note("No compression trial has finished yet: " + _counts_line(data) + ".")
        return
    page.p("Every point is a file that exists: its size is the file's bytes (raw, and gzip-compressed, which is "
           "where pruned and clustered weights shrink) and its accuracy the file's own on the fixed test split "
           "(LiteRT runs .tflite files; our loader runs packed 2-7-bit .qpack files, which no device runtime reads). "
           "Fine-tuned methods train a few epochs more than the base, at a lower learning rate.")
    fronts = {which: tables.frontier(comp, which) for which in tables.SIZE}
    base = tables.base_point(comp, data.references)
    page.figure(figures.pareto(comp, fronts, tables.SIZE, tables.ACCURACY, base), "pareto",
                "Test accuracy of every compressed file against its size, coloured by method; black steps: the Pareto "
                "frontier (no other file is both smaller and more accurate); star: the uncompressed float32 base.")
    pruned = comp[comp["method"].isin(["prune", "prune_quantize"]) & comp.get("metrics.model/sparsity", pd.Series(dtype=float)).notna()]
    if len(pruned) > 1 and "metrics.model/sparsity" in comp:
        hue = "method" if pruned["method"].nunique() > 1 else None
        if "params.compress.schedule" in pruned and pruned["params.compress.schedule"].nunique() > 1:
            pruned = pruned.assign(variant=pruned["method"] + ", " + pruned["params.compress.schedule"].fillna("") + ", " + pruned.get("params.compress.structure", "").fillna(""))
            hue = "variant"
        page.figure(figures.accuracy_against(pruned, "metrics.model/sparsity", "measured sparsity", tables.ACCURACY, hue),
                    "accuracy-vs-sparsity", "Test accuracy of the file against the measured fraction of zero weights.")
    quantized = comp[(comp["method"] == "quantize") & comp.get("metrics.artifact/bits", pd.Series(dtype=float)).notna()]
    if quantized["metrics.artifact/bits"].nunique() > 1 if not quantized.empty else False:
        quantized = quantized.assign(kind=quantized.get("tags.study.artifact", "").str.split(" \\(").str[0])
        page.figure(figures.accuracy_against(quantized, "metrics.artifact/bits", "bits per weight", tables.ACCURACY, None, log_x=True),
                    "accuracy-vs-bits", "Test accuracy of the file against its bit-width (several 8-bit schemes share x = 8).")
    pairs = tables.distillation_pairs(comp)
    if not pairs.empty:
        page.figure(figures.distillation(pairs), "distillation",
                    "Each distilled student against its control: the same student trained on hard labels alone, with the "
                    "same budget and seed.")
        page.table(pairs)
    claims = tables.compression_claims(comp, data.references)
    if claims:
        page.h3("The article's compression claims, measured")
        page.claims(claims)
    page.h3("The frontier")
    front = comp[fronts["gzip"] | fronts["raw"]].sort_values(tables.SIZE["gzip"])
    columns = tables.varying_settings(comp)
    frame = pd.DataFrame({
        "trial": front["trial"], "method": front["method"], "settings": front.apply(tables.settings_of, axis=1, columns=columns),
        "file": front.get("tags.study.artifact", ""), "test accuracy": front[tables.ACCURACY],
        "bytes": front[tables.SIZE["raw"]], "gzip bytes": front[tables.SIZE["gzip"]],
        "ratio": front.get("metrics.artifact/compression_ratio"), "latency ms": front.get("metrics.artifact/latency_ms"),
        "run": front["run_id"],
    })
    page.table(frame, links=_links(data, mlflow_url, frame["run"]))


# ------------------------------------------------------------------------------------ study
def study_section(page: Page, data: SweepRuns) -> None:
    page.h2("The study", "study")
    objective = tables.objective_of(data.sweep_run)
    page.p("Objective: " + (", ".join(f"{m} ({d})" for m, d in objective.items()) or "unknown") + ". "
           f"Sampler {data.sweep_run.get('params', {}).get('sampler', '?')}, pruner {data.sweep_run.get('params', {}).get('pruner', '?')}.")
    counts = tables.state_counts(data.runs, data.study)
    if data.study is None:
        page.note("The Optuna study was not found in this store; counts come from MLflow alone.")
    page.table(counts)
    if objective:
        metric, direction = next(iter(objective.items()))
        hist = tables.optimization_history(data.runs, metric, direction)
        if len(hist) >= 2:
            page.figure(figures.history(hist, metric), "history", f"{metric} of every finished trial, and the best so far.")
    importances = _importances(data, objective)
    if importances:
        page.figure(figures.importances(importances), "importances",
                    "How much of the first objective's variation each searched parameter explains (Optuna's fANOVA).")
    elif data.study is not None:
        page.p("Parameter importances need at least two finished trials that differ in their settings.")
    durations = tables.durations(data.runs)
    if len(durations) >= 1:
        page.figure(figures.durations(durations), "durations", "Wall time of every trial run, by state.")
    failed = data.runs[data.runs["state"].isin(["failed", "interrupted", "diverged", "pruned"])] if not data.runs.empty else pd.DataFrame()
    if not failed.empty:
        page.h3("Trials that did not finish")
        page.table(pd.DataFrame({"trial": failed["trial"], "state": failed["state"],
                                 "reason": failed.get("tags.study.reason", pd.Series("", index=failed.index)).fillna("")}))
    if data.sweep_text:
        page.h3("The sweep file")
        page.pre(data.sweep_text)


def _importances(data: SweepRuns, objective: dict) -> dict[str, float]:
    study = data.study
    if study is None:
        return {}
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2 or not any(t.distributions for t in complete):
        return {}
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # variance explained, either direction
        return optuna.importance.get_param_importances(study, evaluator=evaluator, target=target)
    except Exception:  # too few distinct values for fANOVA: the page says importances are missing
        return {}


# -------------------------------------------------------------------------------- the report
def build_report(store: Store, name: str, out: Path, mlflow_url: str | None = None, log_to_mlflow: bool = True) -> Built:
    """Write `out/<name>/index.html` (and figures, runs.csv) for sweep `name`."""
    start = time.perf_counter()
    data = load_sweep_runs(store, name)
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    for old in (folder / "figures").glob("*.png"):
        old.unlink()
    page = Page(folder)
    if data.description:
        page.p(data.description)
    page.p(f"Trials: {_counts_line(data)}. Store: {store.describe()}.")
    if mlflow_url:
        page.p(f"MLflow: {mlflow_url.rstrip('/')}/#/experiments/{data.experiment_id}")
    compression = tables.compression_runs(data.runs)
    is_compression = not compression.empty or (data.runs.get("tags.study.method") is not None and not data.references.empty)
    if data.runs.empty:
        page.note("This sweep has no trial runs yet. Run it with: study run <its sweep file>.")
    elif is_compression:
        compression_section(page, data, compression, mlflow_url)
    else:
        bias_variance_section(page, data, mlflow_url)
    study_section(page, data)
    runs_csv = folder / "runs.csv"
    data.runs.to_csv(runs_csv, index=False)
    index = folder / "index.html"
    index.write_text(page.render(f"Sweep report: {name}", f"{len(data.runs)} trial runs"), encoding="utf-8")
    if log_to_mlflow and data.sweep_run:
        data.client.log_artifacts(data.sweep_run["run_id"], str(folder), "report")
    return Built(name, index, time.perf_counter() - start, _counts_line(data))


def build_index(out: Path, built: list[Built]) -> Path:
    """reports/index.html linking each sweep's report."""
    rows = "".join(
        f'<li><a href="{esc(b.path.parent.name)}/index.html">{esc(b.name)}</a>: {esc(b.summary)}</li>' for b in built
    )
    path = out / "index.html"
    path.write_text(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sweep reports</title></head>"
        f"<body><h1>Sweep reports</h1><ul>{rows}</ul></body></html>\n",
        encoding="utf-8",
    )
    return path
