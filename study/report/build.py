"""`study report`: runs -> tables -> charts -> one self-contained HTML file per sweep.

Each sweep gets `reports/<sweep>/index.html` (figures embedded, also saved under `figures/`) and
`runs.csv`; the folder is logged to the sweep's parent run in MLflow under `report/`. With several
sweeps, `reports/index.html` links them. A sweep with failed, pruned or running trials, missing
metrics or no finished trial still gets a valid report that says what is missing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from study import measure
from study.report import figures, regimes, stats, tables, verdicts
from study.report.html import STYLE, Page, esc
from study.report.load import SweepRuns, load_sweep_runs
from study.store import Store
from study.listing import best_summary
from study.serve import ui_link

MAX_DECOMPOSED = 300  # trials whose predictions are downloaded for the bias–variance decomposition
MAX_TABLE_ROWS = 60  # rows shown in the page's runs table; runs.csv has them all


@dataclass
class Built:
    name: str
    path: Path
    seconds: float
    summary: str
    description: str = ""
    trials: str = ""  # trials by state
    best: str = ""  # the objective's best value, or the Pareto set's size
    claims: dict = field(default_factory=dict)  # verdict -> count


def _links(data: SweepRuns, mlflow_url: str | None, run_ids) -> dict[str, str]:
    if not mlflow_url:
        return {}
    return {rid: ui_link(mlflow_url, data.experiment_id, rid) for rid in run_ids}


def _counts_line(data: SweepRuns) -> str:
    if data.runs.empty:
        return "no trial runs yet"
    counts = data.runs["state"].value_counts()
    return ", ".join(f"{n} {state}" for state, n in counts.items())


# ---------------------------------------------------------------------------- bias–variance
@dataclass
class Conclusions:
    """What a report concludes, in machine-readable form (verdicts.json): the rules, each claim
    with its numbers, each trial's regime, interpolation thresholds and double-descent peaks."""

    rules: dict = field(default_factory=dict)
    claims: list = field(default_factory=list)
    trials: pd.DataFrame = field(default_factory=pd.DataFrame)
    descents: list = field(default_factory=list)
    decomposition: pd.DataFrame = field(default_factory=pd.DataFrame)


REGIME_COLUMNS = ["train_error", "train_low", "train_high", "test_error", "test_low", "test_high", "gap", "gap_low",
                  "gap_high", "train_interval", "test_interval", "reference", "reference_source", "fit", "fit_limit",
                  "generalisation", "gap_limit", "interpolating", "regime"]


def analyse_trials(runs: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Finished trials with their errors, intervals and regimes (regimes.py), and the task."""
    task = regimes.task_of(runs)
    errs = regimes.errors(runs)
    if errs.empty:
        return errs, task
    return pd.concat([errs, regimes.regimes(errs, task)], axis=1), task


def _knob_views(errs: pd.DataFrame, knobs: list[str], categorical: list[str]) -> list[tuple[str, list, bool]]:
    """Per numeric knob: its panels (tables.Panel, one per combination of the other varied knobs)
    and whether the x axis is logarithmic; no panels when there are too many combinations."""
    views = []
    for knob in knobs:
        others = [k for k in [*categorical, *knobs] if k != knob]
        split = tables.knob_panels(errs, knob, others)
        log_x = tables.log_scale(tables.numeric(errs[f"params.{knob}"]))
        if len(split) > tables.MAX_PANELS or all(rows["value"].nunique() < 2 for _, rows in split):
            views.append((knob, [], log_x))
            continue
        panels = []
        for title, rows in split:
            descent = regimes.descent(tables.series_table(rows), knob) if _capacity_like(knob) else None
            panels.append(tables.Panel(title, rows, tables.sweet_spot(rows), descent))
        views.append((knob, panels, log_x))
    return views


def _capacity_like(knob: str) -> bool:
    return knob in regimes.TOWARDS_INTERPOLATION or knob in ("dataset.train_size",)


def bias_variance_section(page: Page, data: SweepRuns, mlflow_url: str | None, conclusions: Conclusions) -> None:
    errs, task = analyse_trials(data.runs)
    page.h2("Overfitting and underfitting", "bias-variance")
    if errs.empty:
        page.note("No trial has finished yet, so there are no errors to chart: " + _counts_line(data) + ".")
        return
    name = regimes.error_name(task)
    rules = regimes.Rules(task)
    page.p(f"Error is the {name}. Training error is measured on each trial's own training set, held-out error "
           "on the fixed test split, in inference mode once training has ended. The shaded gap between them is "
           "what the article calls overfitting; both high is underfitting.")
    page.p("How this page labels a trial: " + rules.text())
    knobs, categorical = tables.varied_knobs(errs, data.searched)
    two_level = []
    for knob, panels, log_x in _knob_views(errs, knobs, categorical):
        if not panels and errs[f"params.{knob}"].nunique() <= 2:
            two_level.append(knob)
            continue
        if not panels:
            page.figure(figures.error_scatter(errs, knob, name, log_x), f"trials-vs-{knob.replace('.', '-')}",
                        f"Every finished trial's training and held-out {name} against {knob}, with 95% intervals "
                        "(see the rules above). Other knobs vary between these trials, so the points are not averaged "
                        "and no line joins them.")
            continue
        ncols = errs[f"params.{categorical[0]}"].nunique() if categorical and len(panels) > 1 else min(len(panels), 2)
        spots = "; ".join(f"{p.title}: {knob} = {p.sweet_spot:g}" for p in panels)
        page.figure(
            figures.error_vs_knob(panels, knob, name, log_x, ncols), f"error-vs-{knob.replace('.', '-')}",
            f"Training and held-out {name} against {knob}, one panel per setting of the other knobs (never averaged "
            f"over them). Each point is one trial: the mean over its replicates with a 95% interval (seeds and test "
            f"set; the test set alone with one replicate). Bands: each trial's regime by the rules above. Lowest "
            f"held-out error: {spots}.",
        )
        for panel in panels:
            if panel.descent is not None and panel.descent.text:
                conclusions.descents.append({"knob": knob, "series": panel.title, "threshold": panel.descent.threshold,
                                             "peak": panel.descent.peak, "double_descent": panel.descent.double_descent,
                                             "text": panel.descent.text})
        descents = [d for d in conclusions.descents if d["knob"] == knob]
        if descents:
            page.h3(f"Interpolation and double descent along {knob}")
            page.items([f"{d['series']}: {d['text']}" for d in descents])
    if two_level:
        page.p(f"{', '.join(two_level)}: two settings each, crossed with the other knobs in too many combinations to "
               "chart one by one; each one's effect, with its interval, is in the effects chart below.")
    if "metrics.model/params" in errs and errs["metrics.model/params"].nunique() > 2:
        facet = categorical[0] if categorical else None
        page.figure(figures.error_vs_params(errs, name, f"params.{facet}" if facet else None), "capacity",
                    "Every finished trial's training and held-out error against its parameter count.")
    if "metrics.model/size_bytes" in errs and errs["metrics.model/size_bytes"].nunique() > 2:
        sized = errs.dropna(subset=["metrics.model/size_bytes", "test_error"])
        front = pd.Series(measure.pareto_mask(sized[["test_error", "metrics.model/size_bytes"]].to_numpy(float),
                                              ["minimize", "minimize"]), index=sized.index)
        facet = categorical[0] if categorical else None
        page.figure(figures.error_vs_size(sized, front, name, f"params.{facet}" if facet else None), "accuracy-size",
                    f"Every finished trial's held-out {name} (95% interval) against the bytes of its saved Keras model; "
                    f"the line joins the {int(front.sum())} trials that no other trial beats on both.")
    learning_curves(page, data, errs)
    decomposition_section(page, data, errs, knobs, categorical, conclusions)
    regimes_and_remedies(page, data, errs, task, mlflow_url, conclusions)


def learning_curves(page: Page, data: SweepRuns, errs: pd.DataFrame) -> None:
    picked = tables.learning_curve_runs(errs)
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
                    "underfit, the best and the most overfit trials (averaged over replicates); dashed: the best "
                    "validation epoch, the one early stopping restores when it is on; dotted: where early stopping "
                    "stopped training.")


def decomposition_section(page: Page, data: SweepRuns, errs: pd.DataFrame, knobs: list[str], categorical: list[str],
                          conclusions: Conclusions) -> None:
    page.h3("Bias and variance")
    if not (errs["replicates"] > 1).any():
        page.p("This sweep trains one model per setting; set replicates: 3 or more to split the held-out error "
               "into bias and variance with intervals.")
        return
    chosen = errs[errs["replicates"] > 1].head(MAX_DECOMPOSED)
    predictions = {rid: p for rid in chosen["run_id"] if (p := data.predictions(rid)) is not None}
    table = tables.decomposition_rows(errs, predictions)
    if table.empty:
        page.note("The trials' predictions could not be read, so no decomposition.")
        return
    conclusions.decomposition = table
    if len(errs) > MAX_DECOMPOSED:
        page.note(f"Decomposed the first {MAX_DECOMPOSED} of {len(errs)} trials.")
    kind = table["kind"].iloc[0]
    holds = (table["identity"] == "holds").sum()
    if kind == "squared error":
        page.p("Squared error against the known noiseless truth splits into bias² (how far the average replicate is "
               "from the truth) and variance (how much replicates, each trained on a fresh training set, disagree). "
               "Both are unbiased: the plain (mean − truth)² carries variance/R with it, which is subtracted, so "
               "bias² does not rise with variance when replicates are few. Against the noisy test labels the expected "
               "error adds the known noise variance σ². The check: the measured held-out error (the trials' own "
               "test loss) against bias² + variance + σ²; their difference is the test set's realised noise, and the "
               f"identity holds when it is within three of its standard errors: it holds for {holds} of {len(table)} "
               "trials. Intervals: 95%, " + table["interval"].iloc[0] + ".")
    else:
        page.p("The 0-1 loss is split by Domingos' unified decomposition (Domingos 2000): bias is the share of test "
               "examples whose main prediction (the replicates' vote) is wrong; disagreement, the variance, is how often "
               "a replicate departs from that vote; net variance is the part of it that adds to the loss (disagreement "
               "on correctly voted examples) minus the part that removes loss (right replicates on wrongly voted ones), "
               "so the two can cancel; loss = bias + net variance. The vote of a few replicates is itself noisy and no "
               "unbiased correction exists for it: bias here is the plain vote's, which overstates bias where "
               "replicates disagree (more replicates shrink that). "
               f"The check: the predictions' loss equals the trials' measured held-out error for {holds} of "
               f"{len(table)} trials. Intervals: 95%, over test points.")
    knob = next((k for k in knobs if pd.to_numeric(table.get(f"params.{k}"), errors="coerce").notna().all()), None) if knobs else None
    if knob:
        others = [k for k in [*categorical, *knobs] if k != knob]
        split = tables.knob_panels(table.assign(**{f"params.{knob}": table[f"params.{knob}"]}), knob, others)
        log_x = tables.log_scale(tables.numeric(errs[f"params.{knob}"]))
        if len(split) <= tables.MAX_PANELS:
            page.figure(figures.decomposition(split, knob, kind, log_x), "bias-variance",
                        f"Held-out error and its {kind} decomposition against {knob}, one panel per setting of the other "
                        "knobs; bars: 95% intervals.")
    columns = ["trial", *[f"params.{k}" for k in [*categorical, *knobs]]] + [
        c for c in table.columns if c not in ("run_id", "trial", "kind") and not c.startswith("params.")]
    page.table(table[[c for c in columns if c in table]].sort_values("trial"), labels=_readable)


def regimes_and_remedies(page: Page, data: SweepRuns, errs: pd.DataFrame, task: str, mlflow_url, conclusions: Conclusions) -> None:
    page.h3("Regimes, remedies and the article's claims")
    counts = errs["regime"].value_counts()
    page.table(pd.DataFrame({
        "regime": counts.index, "trials": counts.values,
        "what the article recommends": [regimes.ADVICE[r] for r in counts.index],
    }), classes={"regime": "regime"})
    page.p("The article lists the remedies under swapped headings (its overfitting remedies sit under "
           "underfitting); this report files each where it acts.")
    effects = verdicts.effects_table(errs, data.searched)
    if not effects.empty and effects["low"].notna().any():
        page.figure(figures.effects(effects), "effects",
                    "Each remedy's main effect: the mean at its highest setting minus at its lowest, averaged over the "
                    "other knobs, on training error, held-out error and the gap; bars: 95% intervals from the spread "
                    "over seeds within settings.")
    claims = verdicts.remedy_claims(errs, data.searched, task)
    conclusions.claims.extend(claims)
    shown = errs.sort_values("trial").head(MAX_TABLE_ROWS)
    frame = pd.DataFrame({"trial": shown["trial"], "run": shown["run_id"]})
    for k in data.searched:
        if f"params.{k}" in shown:
            frame[k] = shown[f"params.{k}"]
    for split, label in (("train", "training error"), ("test", "held-out error"), ("gap", "gap")):
        value = shown["gap"] if split == "gap" else shown[f"{split}_error"]
        frame[label] = [_interval(v, lo, hi) for v, lo, hi in zip(value, shown[f"{split}_low"], shown[f"{split}_high"])]
    frame["fit"] = shown["fit"]
    frame["generalisation"] = shown["generalisation"]
    frame["interpolating"] = shown["interpolating"].map({True: "yes", False: ""})
    frame["regime"] = shown["regime"]
    reference = shown["reference"].dropna()
    page.p(f"Every finished trial's regime ({min(len(errs), MAX_TABLE_ROWS)} of {len(errs)} shown; runs.csv has all, "
           "verdicts.json the numbers). Reference error: "
           + (f"{reference.iloc[0]:.4g} ({shown['reference_source'].iloc[0]})" if len(reference) else
              "none known (give reference_error in the sweep file); chance is the fallback") + ".")
    page.table(frame, links=_links(data, mlflow_url, frame["run"]), classes={"regime": "regime"})
    conclusions.trials = errs


def _interval(value: float, low: float, high: float) -> str:
    if not np.isfinite(low):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def _readable(column: str) -> str:
    return column[len("params."):] if column.startswith("params.") else column


def claims_section(page: Page, conclusions: Conclusions) -> None:
    """Every claim on the page, judged together (Holm)."""
    if not conclusions.claims:
        return
    conclusions.claims = verdicts.judge(conclusions.claims)
    page.h3("The article's claims, tested", "claims")
    page.p(verdicts.rules_text())
    page.claims(conclusions.claims)


# ------------------------------------------------------------------------------ compression
def compression_claims(comp: pd.DataFrame, references: pd.DataFrame) -> list:
    """The compression claims this sweep's trials can speak to (verdicts.py)."""
    if comp.empty:
        return []
    base = tables.base_point(comp, references)
    sizes = pd.to_numeric(comp.get("metrics.data/test_size", pd.Series(dtype=float)), errors="coerce").dropna()
    test_size = float(sizes.iloc[0]) if len(sizes) else float("nan")
    found = [
        verdicts.quantization_claim(comp, float(base["accuracy"]), test_size, tables.ACCURACY),
        verdicts.distillation_claim(tables.distillation_pairs(comp)),
        verdicts.sparse_dense_claim(comp, tables.ACCURACY, tables.SIZE["gzip"]),
    ]
    return [c for c in found if c is not None]


def compression_section(page: Page, data: SweepRuns, comp: pd.DataFrame, mlflow_url: str | None, conclusions: Conclusions) -> None:
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
    if len(pruned) > 1 and "metrics.model/sparsity" in comp and pruned["metrics.model/sparsity"].round(3).nunique() > 1:
        hue = "method" if pruned["method"].nunique() > 1 else None
        if "params.compress.schedule" in pruned and pruned["params.compress.schedule"].nunique() > 1:
            pruned = pruned.assign(variant=pruned["method"] + ", " + pruned["params.compress.schedule"].fillna("") + ", " + pruned.get("params.compress.structure", "").fillna(""))
            hue = "variant"
        page.figure(figures.accuracy_against(pruned, "metrics.model/sparsity", "measured sparsity", tables.ACCURACY, hue),
                    "accuracy-vs-sparsity", "Test accuracy of the file against the measured fraction of zero weights.")
    quantized = comp[(comp["method"] == "quantize") & comp.get("metrics.artifact/bits", pd.Series(dtype=float)).notna()]
    if quantized["metrics.artifact/bits"].nunique() > 1 if not quantized.empty else False:
        quantized = quantized.assign(kind=quantized.get("tags.study.artifact", "").str.split(" \\(").str[0])
        page.figure(figures.accuracy_against(quantized, "metrics.artifact/bits", "bits per weight", tables.ACCURACY, None, log_x=True,
                                             reference=("float32 base", base.get("accuracy"))),
                    "accuracy-vs-bits", "Test accuracy of the file against its bit-width (several 8-bit schemes share x = 8); "
                    "dashed: the uncompressed float32 base.")
    pairs = tables.distillation_pairs(comp)
    if not pairs.empty:
        page.figure(figures.distillation(pairs), "distillation",
                    "Each distilled student against its control: the same student trained on hard labels alone, with the "
                    "same budget and seed.")
        page.table(pairs)
    conclusions.claims.extend(compression_claims(comp, data.references))
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
    histories = {metric: tables.optimization_history(data.runs, metric, direction) for metric, direction in objective.items()}
    histories = {metric: hist for metric, hist in histories.items() if len(hist) >= 2}
    if histories:
        page.figure(figures.history(histories), "history",
                    "Each objective of every finished trial, and the best so far (each objective on its own).")
    importances = {metric: values for metric in objective if (values := _importances(data, objective, metric))}
    if importances:
        page.figure(figures.importances(importances), "importances",
                    "How much of each objective's variation each searched parameter explains (Optuna's fANOVA).")
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


def _importances(data: SweepRuns, objective: dict, metric: str) -> dict[str, float]:
    """fANOVA importances for one objective `metric`; {} where they cannot be computed."""
    study = data.study
    if study is None:
        return {}
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2 or not any(t.distributions for t in complete):
        return {}
    index = list(objective).index(metric)
    target = (lambda t: t.values[index]) if len(study.directions) > 1 else None
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
    for old in [*(folder / "figures").glob("*.png"), *(folder / "figures").glob("*.svg")]:
        old.unlink()
    page = Page(folder)
    if data.description:
        page.p(data.description)
    page.p(f"Trials: {_counts_line(data)}. Store: {store.describe()}.")
    if mlflow_url:
        page.p(f"MLflow: {ui_link(mlflow_url, data.experiment_id)}")
    compression = tables.compression_runs(data.runs)
    is_compression = not compression.empty or (data.runs.get("tags.study.method") is not None and not data.references.empty)
    conclusions = Conclusions()
    if data.runs.empty:
        page.note("This sweep has no trial runs yet. Run it with: study run <its sweep file>.")
    elif is_compression:
        compression_section(page, data, compression, mlflow_url, conclusions)
    else:
        bias_variance_section(page, data, mlflow_url, conclusions)
    claims_section(page, conclusions)
    study_section(page, data)
    runs = data.runs
    if not conclusions.trials.empty:
        runs = runs.merge(conclusions.trials[["run_id", *REGIME_COLUMNS]], on="run_id", how="left")
    runs.to_csv(folder / "runs.csv", index=False)
    (folder / "verdicts.json").write_text(json.dumps(verdicts_json(name, data, conclusions), indent=2, allow_nan=False) + "\n",
                                          encoding="utf-8")
    index = folder / "index.html"
    index.write_text(page.render(f"Sweep report: {name}", f"{len(data.runs)} trial runs"), encoding="utf-8")
    if log_to_mlflow and data.sweep_run:
        data.client.log_artifacts(data.sweep_run["run_id"], str(folder), "report")
    verdict_counts = pd.Series([c.verdict for c in conclusions.claims], dtype=object).value_counts()
    claims = ", ".join(f"{n} {v}" for v, n in verdict_counts.items())
    return Built(name, index, time.perf_counter() - start,
                 _counts_line(data) + (f"; claims: {claims}" if claims else ""),
                 data.description, _counts_line(data), best_summary(data.study) if data.study is not None else "", {v: int(n) for v, n in verdict_counts.items()})


def _clean(value):
    """JSON-safe: NaN and infinities as null, NumPy scalars as Python numbers."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def verdicts_json(name: str, data: SweepRuns, conclusions: Conclusions) -> dict:
    """verdicts.json: the page's conclusions with the numbers behind each."""
    task = regimes.task_of(data.runs) if not data.runs.empty else None
    trials = []
    if not conclusions.trials.empty:
        for _, row in conclusions.trials.iterrows():
            trials.append({"trial": int(row["trial"]), "run_id": row["run_id"], "replicates": int(row["replicates"]),
                           **{c: row[c] for c in REGIME_COLUMNS},
                           "params": {k: row[f"params.{k}"] for k in data.searched if f"params.{k}" in row}})
    decomposition = conclusions.decomposition.drop(columns=[c for c in conclusions.decomposition.columns
                                                            if c.startswith("params.")], errors="ignore")
    return _clean({
        "sweep": name,
        "task": task,
        "rules": {"regimes": regimes.Rules(task).text() if task else None, "claims": verdicts.rules_text(),
                  "level": stats.LEVEL, "family_wise_alpha": stats.ALPHA},
        "claims": [c.to_dict() for c in conclusions.claims],
        "descents": conclusions.descents,
        "decomposition": decomposition.to_dict(orient="records"),
        "trials": trials,
    })


def build_index(out: Path, built: list[Built]) -> Path:
    """reports/index.html: one row per sweep, linking its report, with what it found."""
    rows = []
    for b in built:
        claims = " ".join(f'<span class="verdict {esc(v.replace(" ", "-"))}">{n} {esc(v)}</span>' for v, n in b.claims.items())
        about = b.description.split(". ")[0].rstrip(".") + "." if b.description else ""
        rows.append(
            f'<tr><td><a href="{esc(b.path.parent.name)}/index.html">{esc(b.name)}</a></td><td>{esc(about)}</td>'
            f"<td>{esc(b.trials)}</td><td>{esc(b.best)}</td><td>{claims or 'none'}</td></tr>"
        )
    head = "<tr><th>sweep</th><th>what it studies</th><th>trials</th><th>best</th><th>claims</th></tr>"
    path = out / "index.html"
    path.write_text(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sweep reports</title>"
        f"<style>{STYLE}</style></head><body><h1>Sweep reports</h1>"
        f'<div class="wide"><table><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table></div></body></html>\n',
        encoding="utf-8",
    )
    return path
