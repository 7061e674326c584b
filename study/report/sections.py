"""What each section of a report says, computed from the loaded sweep (load.SweepRuns): pure
functions that return typed records of numbers, tables, texts and claims. Nothing here reads a
store or draws; render.py draws the records and fills the template.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import optuna
import pandas as pd

from study import measure, names
from study.ledger import Counts, count_trials, repeats
from study.listing import best_summary
from study.names import Attr, Tag, TrialState
from study.report import compressed, forgetting, regimes, seeds, stats, tables, verdicts
from study.report.load import MAX_PAIRED, OptunaTrials, SweepRuns

MAX_TABLE_ROWS = 60  # rows shown in the page's regimes table; runs.csv has them all
PARAMS, SIZE_BYTES = names.column("model/params"), names.column("model/size_bytes")
SPARSITY, BITS = names.column("model/sparsity"), names.column("artifact/bits")
REGIME_COLUMNS = ["train_error", "train_low", "train_high", "test_error", "test_low", "test_high", "gap", "gap_low",
                  "gap_high", "train_interval", "test_interval", "reference", "reference_source", "fit", "fit_limit",
                  "generalisation", "gap_limit", "interpolating", "regime"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- counts
@dataclass(frozen=True)
class TrialCounts:
    """The sweep's trials per state: Optuna's as `study.ledger.count_trials` counts them (None
    without the study) beside MLflow's runs per `study.state` tag and per run status."""

    optuna: Counts | None
    mlflow: dict[str, int]  # study.state -> trial runs
    statuses: dict[str, int]  # MLflow run status -> trial runs
    table: pd.DataFrame  # tables.state_counts

    @property
    def line(self) -> str:
        """'6 finished, 1 pruned' (Optuna's count; MLflow's states without the study)."""
        if self.optuna is not None:
            c = self.optuna
            parts = [(c.finished, "finished"), (c.pruned, "pruned"), (c.failed, "failed"),
                     (c.interrupted, "interrupted"), (c.running, "running"), (c.waiting, "waiting")]
            said = ", ".join(f"{n} {state}" for n, state in parts if n)
            return said or "no trials yet"
        if not self.mlflow:
            return "no trial runs yet"
        return ", ".join(f"{n} {state}" for state, n in self.mlflow.items())


def trial_counts(data: SweepRuns) -> TrialCounts:
    trials = data.optuna.trials if data.optuna is not None else None
    runs = data.runs
    mlflow = {str(k): int(n) for k, n in runs["state"].value_counts().items()} if not runs.empty else {}
    statuses = {str(k): int(n) for k, n in runs["status"].value_counts().items()} if not runs.empty else {}
    return TrialCounts(count_trials(trials) if trials is not None else None, mlflow, statuses,
                       tables.state_counts(runs, trials))


# ---------------------------------------------------------------------------- bias–variance
@dataclass(frozen=True)
class KnobView:
    """One searched numeric knob: 'panels' (a chart per setting of the other knobs), 'scatter' (the
    others take too many combinations) or 'two-level' (left to the effects chart)."""

    knob: str
    kind: str
    log_x: bool
    panels: list[tables.Panel] = field(default_factory=list)
    ncols: int = 1
    descents: list[dict] = field(default_factory=list)  # {knob, series, threshold, peak, double_descent, text}


@dataclass(frozen=True)
class LearningCurves:
    curves: dict[str, pd.DataFrame]  # label -> epoch, epoch/train_loss, epoch/val_loss
    best: dict[str, int]  # label -> best validation epoch
    stopped: dict[str, int]  # label -> early stopping's epoch (0: ran to the end)


@dataclass(frozen=True)
class Decomposition:
    replicated: bool  # whether any trial has two or more replicates
    table: pd.DataFrame  # tables.decomposition_rows; empty where no predictions were read
    finished: int  # finished trials, of which the first tables.MAX_DECOMPOSED are decomposed
    knob: str | None = None
    panels: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    log_x: bool = False
    shown: pd.DataFrame = field(default_factory=pd.DataFrame)  # the page's table

    @property
    def kind(self) -> str:
        return self.table["kind"].iloc[0]

    @property
    def holds(self) -> int:
        return int((self.table["identity"] == "holds").sum())


@dataclass(frozen=True)
class RegimeTable:
    counts: pd.DataFrame  # regime, trials, what the article recommends
    effects: pd.DataFrame  # verdicts.effects_table
    trials: pd.DataFrame  # the page's table: trial, run, knobs, errors with intervals, regimes
    total: int
    reference: str  # the reference error, in words


@dataclass(frozen=True)
class BiasVariance:
    errs: pd.DataFrame  # finished trials with errors, intervals and regimes
    task: str
    error_name: str
    rules: str
    views: list[KnobView] = field(default_factory=list)
    two_level: list[str] = field(default_factory=list)
    params_facet: str | None = None
    show_params: bool = False
    sized: pd.DataFrame | None = None  # trials with a model size, for the accuracy–size chart
    front: pd.Series | None = None
    learning: LearningCurves | None = None
    decomposition: Decomposition | None = None
    regimes: RegimeTable | None = None
    claims: list[verdicts.Claim] = field(default_factory=list)
    grid: TwoKnobs | None = None  # held-out error over a two-knob grid


@dataclass(frozen=True)
class TwoKnobs:
    """A grid over exactly two knobs: held-out error per cell with its interval (a heatmap)."""

    row: str
    column: str
    cells: pd.DataFrame  # tables.two_knob_grid


def two_knobs(errs: pd.DataFrame, replicates: seeds.Seeds, searched: list[str]) -> TwoKnobs | None:
    """The two-knob view, where exactly two searched knobs vary and every pair of their values ran."""
    varied = [k for k in searched if f"params.{k}" in errs and errs[f"params.{k}"].nunique() > 1]
    if len(varied) != 2:
        return None
    cells = tables.two_knob_grid(errs, replicates, *varied)
    if len(cells) != errs[f"params.{varied[0]}"].nunique() * errs[f"params.{varied[1]}"].nunique():
        return None
    return TwoKnobs(varied[0], varied[1], cells)


def analyse_trials(runs: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Finished trials with their errors, intervals and regimes (regimes.py), and the task."""
    task = regimes.task_of(runs)
    errs = regimes.errors(runs)
    if errs.empty:
        return errs, task
    return pd.concat([errs, regimes.regimes(errs, task)], axis=1), task


def _capacity_like(knob: str) -> bool:
    return knob in regimes.TOWARDS_INTERPOLATION or knob in ("dataset.train_size",)


def knob_views(errs: pd.DataFrame, knobs: list[str], categorical: list[str], replicates: seeds.Seeds | None = None) -> list[KnobView]:
    """Per numeric knob: its panels (one per combination of the other varied knobs), or why none."""
    views = []
    for knob in knobs:
        others = [k for k in [*categorical, *knobs] if k != knob]
        split = tables.knob_panels(errs, knob, others)
        log_x = tables.log_scale(tables.numeric(errs[f"params.{knob}"]))
        if len(split) > tables.MAX_PANELS or all(rows["value"].nunique() < 2 for _, rows in split):
            kind = "two-level" if errs[f"params.{knob}"].nunique() <= 2 else "scatter"
            views.append(KnobView(knob, kind, log_x))
            continue
        panels = []
        for title, rows in split:
            descent = regimes.descent(tables.series_table(rows), knob, replicates) if _capacity_like(knob) else None
            panels.append(tables.Panel(title, rows, tables.sweet_spot(rows), descent))
        ncols = errs[f"params.{categorical[0]}"].nunique() if categorical and len(panels) > 1 else min(len(panels), 2)
        descents = [{"knob": knob, "series": p.title, "threshold": p.descent.threshold, "peak": p.descent.peak,
                     "double_descent": p.descent.double_descent, "text": p.descent.text}
                    for p in panels if p.descent is not None and p.descent.text]
        views.append(KnobView(knob, "panels", log_x, panels, ncols, descents))
    return views


def learning_curves(data: SweepRuns, errs: pd.DataFrame) -> LearningCurves | None:
    """The most underfit, the best and the most overfit trials' curves, as loaded."""
    curves, best, stopped = {}, {}, {}
    for pick in tables.learning_curve_runs(errs):
        frame = data.histories.get(pick.run_id)
        if frame is None or frame.empty:
            continue
        label = f"{pick.label} (trial {pick.trial})"
        curves[label] = frame
        row = errs[errs["run_id"] == pick.run_id].iloc[0]
        best[label] = int(row.get(names.column("fit/best_epoch"), 0) or 0)
        stopped[label] = int(row.get(names.column("fit/stopped_epoch"), 0) or 0)
    return LearningCurves(curves, best, stopped) if curves else None


def decomposition(data: SweepRuns, errs: pd.DataFrame, knobs: list[str], categorical: list[str]) -> Decomposition:
    replicated = bool((errs["replicates"] > 1).any())
    chosen = {rid: data.predictions[rid] for rid in tables.decomposed_runs(errs) if rid in data.predictions}
    table = tables.decomposition_rows(errs, chosen) if replicated else pd.DataFrame()
    if table.empty:
        return Decomposition(replicated, table, len(errs))
    knob = next((k for k in knobs if pd.to_numeric(table.get(f"params.{k}"), errors="coerce").notna().all()), None)
    panels, log_x = [], False
    if knob:
        others = [k for k in [*categorical, *knobs] if k != knob]
        split = tables.knob_panels(table, knob, others)
        log_x = tables.log_scale(tables.numeric(errs[f"params.{knob}"]))
        panels = split if len(split) <= tables.MAX_PANELS else []
    columns = ["trial", *[f"params.{k}" for k in [*categorical, *knobs]]] + [
        c for c in table.columns if c not in ("run_id", "trial", "kind") and not c.startswith("params.")]
    shown = table[[c for c in columns if c in table]].sort_values("trial")
    return Decomposition(replicated, table, len(errs), knob, panels, log_x, shown)


def advice(regime: str, descents: list[dict]) -> str:
    """The article's remedy for a regime, unless this sweep found double descent: past the
    interpolation threshold more capacity lowered held-out error, so an overfit model there is
    not advised to be regularized as the article would have it."""
    found = [d for d in descents if d.get("double_descent")]
    if not found or regime not in ("overfit", "underfit and overfit"):
        return regimes.ADVICE[regime]
    where = "; ".join(f"{d['knob']} past {d['peak']:g} ({d['series']})" for d in found)
    return (f"{regimes.ADVICE[regime]}; but not past the interpolation threshold, where this sweep found double descent "
            f"({where}): there held-out error fell again as capacity grew, so more capacity, not regularization, is what "
            "it measured lowering held-out error")


def _interval(value: float, low: float, high: float) -> str:
    if not pd.notna(low):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def regime_table(errs: pd.DataFrame, replicates: seeds.Seeds, searched: list[str], descents: list[dict] | None = None
                 ) -> RegimeTable:
    counts = errs["regime"].value_counts()
    summary = pd.DataFrame({"regime": counts.index, "trials": counts.values,
                            "what the article recommends": [advice(r, descents or []) for r in counts.index]})
    shown = errs.sort_values("trial").head(MAX_TABLE_ROWS)
    frame = pd.DataFrame({"trial": shown["trial"], "run": shown["run_id"]})
    for k in searched:
        if f"params.{k}" in shown:
            frame[k] = shown[f"params.{k}"]
    for split, label in (("train", "training error"), ("test", "held-out error"), ("gap", "gap")):
        value = shown["gap"] if split == "gap" else shown[f"{split}_error"]
        frame[label] = [_interval(v, lo, hi) for v, lo, hi in zip(value, shown[f"{split}_low"], shown[f"{split}_high"])]
    frame["fit"] = shown["fit"]
    frame["generalisation"] = shown["generalisation"]
    frame["interpolating"] = shown["interpolating"].map({True: "yes", False: ""})
    frame["regime"] = shown["regime"]
    known = shown["reference"].dropna()
    reference = (f"{known.iloc[0]:.4g} ({shown['reference_source'].iloc[0]})" if len(known) else
                 "none known (give reference_error in the sweep file); chance is the fallback")
    return RegimeTable(summary, verdicts.effects_table(errs, replicates, searched), frame, len(errs), reference)


def bias_variance(data: SweepRuns) -> BiasVariance:
    """Errors, regimes, knob charts, curves, decomposition and the remedies' claims (unjudged)."""
    errs, task = analyse_trials(data.runs)
    name = regimes.error_name(task)
    if errs.empty:
        return BiasVariance(errs, task, name, "")
    knobs, categorical = tables.varied_knobs(errs, data.searched)
    facet = f"params.{categorical[0]}" if categorical else None
    sized, front = None, None
    if SIZE_BYTES in errs and errs[SIZE_BYTES].nunique() > 2:
        sized = errs.dropna(subset=[SIZE_BYTES, "test_error"])
        front = pd.Series(measure.pareto_mask(sized[["test_error", SIZE_BYTES]].to_numpy(float), ["minimize", "minimize"]),
                          index=sized.index)
    views = knob_views(errs, knobs, categorical, data.seeds)
    return BiasVariance(
        errs, task, name, regimes.Rules(task).text(), views=views,
        two_level=[v.knob for v in views if v.kind == "two-level"], params_facet=facet,
        show_params=PARAMS in errs and errs[PARAMS].nunique() > 2, sized=sized, front=front,
        learning=learning_curves(data, errs), decomposition=decomposition(data, errs, knobs, categorical),
        regimes=regime_table(errs, data.seeds, data.searched, [d for view in views for d in view.descents]),
        claims=verdicts.remedy_claims(errs, data.seeds, data.searched, task),
        grid=two_knobs(errs, data.seeds, data.searched),
    )


# ------------------------------------------------------------------------------ compression
@dataclass(frozen=True)
class Compression:
    comp: pd.DataFrame  # finished compression trials (tables.compression_runs)
    fronts: dict[str, pd.Series] = field(default_factory=dict)  # 'raw'/'gzip' -> Pareto mask
    base: dict = field(default_factory=dict)  # tables.base_point
    pruned: pd.DataFrame | None = None  # for the accuracy–sparsity chart
    pruned_hue: str | None = None
    quantized: pd.DataFrame | None = None  # for the accuracy–bits chart
    pairs: pd.DataFrame = field(default_factory=pd.DataFrame)  # tables.distillation_pairs
    frontier: pd.DataFrame = field(default_factory=pd.DataFrame)  # the page's frontier table
    claims: list[verdicts.Claim] = field(default_factory=list)
    timed: pd.DataFrame = field(default_factory=pd.DataFrame)  # tables.latency_runs: files a runtime runs
    files: pd.DataFrame = field(default_factory=pd.DataFrame)  # every file (a replicate's): what the charts draw
    file_fronts: dict[str, pd.Series] = field(default_factory=dict)  # 'raw'/'gzip' -> Pareto mask over files
    controls: pd.DataFrame = field(default_factory=pd.DataFrame)  # tables.control_table
    bases: int = 1  # distinct bases the files were compressed from (one per seed)
    method_fronts: list[compressed.Fronts] = field(default_factory=list)  # per cost: each method's fronts per base, bands, tests
    latencies: pd.DataFrame = field(default_factory=pd.DataFrame)  # compressed.latency_table
    forgotten: pd.DataFrame = field(default_factory=pd.DataFrame)  # forgetting.forgotten
    lost: pd.DataFrame = field(default_factory=pd.DataFrame)  # forgetting.most_lost
    examples: forgetting.Examples = field(default_factory=forgetting.Examples)

    @property
    def not_faster(self) -> pd.DataFrame:
        """Settings smaller than the base whose latency is not below it (mean over seeds)."""
        t = self.latencies
        return t[(t["bytes ratio"] < 1) & (t["latency ratio"] >= 1)] if not t.empty else t


def compression_claims(comp: pd.DataFrame, references: pd.DataFrame, ctx: compressed.Context | None = None,
                       fronts: list[compressed.Fronts] | None = None) -> list[verdicts.Claim]:
    """The compression claims this sweep's files can speak to (compressed.py, and the 8-bit claim
    of verdicts.py), each seed by seed."""
    if comp.empty:
        return []
    base = tables.base_point(comp, references)
    found: list[verdicts.Claim | None] = [verdicts.quantization_claim(comp, float(base["accuracy"]), _test_size(comp), tables.ACCURACY)]
    if ctx is not None:
        found += [*compressed.scratch_claims(ctx), *compressed.magnitude_random_claims(ctx), compressed.sparse_dense_claim(ctx),
                  *compressed.int4_claims(ctx), *compressed.latency_claims(ctx), compressed.distillation_claim(ctx),
                  *compressed.dominance_claims(fronts or [], ctx)]
    return [c for c in found if c is not None]


def _test_size(comp: pd.DataFrame) -> float:
    sizes = pd.to_numeric(comp.get(names.column("data/test_size"), pd.Series(dtype=float)), errors="coerce").dropna()
    return float(sizes.iloc[0]) if len(sizes) else float("nan")


def compression_fronts(ctx: compressed.Context, base: dict) -> list[compressed.Fronts]:
    """Each method's fronts per base on gzip bytes (reference: the base's float32 file) and on
    latency (reference: the base's own latency, else the slowest file's)."""
    found = [compressed.method_fronts(ctx, tables.SIZE["gzip"], "gzip bytes", float(base.get("gzip", np.nan)))]
    latency = pd.to_numeric(ctx.files.get(tables.LATENCY, pd.Series(dtype=float)), errors="coerce")
    if latency.notna().any():
        own = latency[ctx.files["method"] == "none"].dropna()
        reference = float(np.exp(np.log(own).mean())) if len(own) else float(latency.max()) * 1.0001
        found.append(compressed.method_fronts(ctx, tables.LATENCY, "latency", reference))
    return [f for f in found if f is not None]


def _pruned(comp: pd.DataFrame) -> tuple[pd.DataFrame | None, str | None]:
    """Pruned files for the accuracy–sparsity chart; a structurally pruned (shrunk, dense) file's
    sparsity is the fraction of units it removed, not its zero weights (it has none)."""
    if "params.compress.structure" in comp and SPARSITY in comp:
        channels = comp["params.compress.structure"] == "channels"
        removed = pd.to_numeric(comp.get("params.compress.sparsity", pd.Series(index=comp.index, dtype=float)), errors="coerce")
        comp = comp.assign(**{SPARSITY: comp[SPARSITY].where(~channels, removed)})
    pruned = comp[comp["method"].isin(["prune", "prune_quantize"]) & comp.get(SPARSITY, pd.Series(dtype=float)).notna()]
    if not (len(pruned) > 1 and SPARSITY in comp and pruned[SPARSITY].round(3).nunique() > 1):
        return None, None
    hue = "label" if pruned["label"].nunique() > 1 else None  # method, structure, and random apart from magnitude
    if "params.compress.schedule" in pruned and pruned["params.compress.schedule"].nunique() > 1:
        pruned = pruned.assign(variant=pruned["label"] + ", " + pruned["params.compress.schedule"].fillna(""))
        hue = "variant"
    return pruned, hue


def _quantized(comp: pd.DataFrame) -> pd.DataFrame | None:
    quantized = comp[(comp["method"] == "quantize") & comp.get(BITS, pd.Series(dtype=float)).notna()]
    if quantized.empty or quantized[BITS].nunique() <= 1:
        return None
    return quantized.assign(kind=quantized.get(names.tag_column(Tag.ARTIFACT), "").str.split(" \\(").str[0])


def _microseconds(milliseconds):
    """A latency column in µs, the unit of the latency chart (None stays None)."""
    return None if milliseconds is None else pd.to_numeric(milliseconds, errors="coerce") * 1000


def compression(data: SweepRuns) -> Compression:
    comp = tables.compression_runs(data.runs)
    if comp.empty:
        return Compression(comp)
    fronts = {which: tables.frontier(comp, which) for which in tables.SIZE}
    files = tables.compression_runs(data.files) if not data.files.empty else comp.assign(trial_run_id=comp["run_id"])
    if "seed" not in files:
        files["seed"] = pd.to_numeric(files.get("params.seed", pd.Series(0, index=files.index)), errors="coerce")
    finished = set(comp["run_id"])
    examples = forgetting.from_predictions({r: p for r, p in data.predictions.items() if r in finished}, len(finished), MAX_PAIRED)
    ctx = compressed.Context(files, examples, _test_size(comp), verdicts.smallest_effect(comp, "classification"))
    base = tables.base_point(comp, data.references)
    method_fronts = compression_fronts(ctx, base)
    pruned, hue = _pruned(files)  # every file its own point: replicates are not averaged on a chart
    front = comp[fronts["gzip"] | fronts["raw"]].sort_values(tables.SIZE["gzip"])
    columns = tables.varying_settings(comp)
    frontier = pd.DataFrame({
        "trial": front["trial"], "method": front["method"], "settings": front.apply(tables.settings_of, axis=1, columns=columns),
        "file": front.get(names.tag_column(Tag.ARTIFACT), ""), "test accuracy": front[tables.ACCURACY],
        "bytes": front[tables.SIZE["raw"]], "gzip bytes": front[tables.SIZE["gzip"]],
        "ratio": front.get(names.column("artifact/compression_ratio")),
        "latency µs": _microseconds(front.get(tables.LATENCY)), "latency IQR µs": _microseconds(front.get(tables.LATENCY_IQR)),
        "run": front["run_id"],
    })
    base_column = names.tag_column(Tag.BASE_RUN_ID)
    bases = int(files[base_column].replace("", np.nan).nunique()) if base_column in files else 1
    setting = lambda row: tables.settings_of(row, [c for c in columns if c not in ("params.compress.criterion", "params.compress.structure")])  # noqa: E731
    return Compression(comp, fronts, base, pruned, hue, _quantized(files),
                       tables.distillation_pairs(files), frontier, compression_claims(comp, data.references, ctx, method_fronts),
                       tables.latency_runs(files), files, {which: tables.frontier(files, which) for which in tables.SIZE},
                       tables.control_table(files), max(bases, 1), method_fronts, compressed.latency_table(ctx),
                       forgetting.forgotten(files, examples, setting), forgetting.most_lost(files, examples), examples)


def is_compression(data: SweepRuns) -> bool:
    comp = tables.compression_runs(data.runs)
    return not comp.empty or (data.runs.get(names.tag_column(Tag.METHOD)) is not None and not data.references.empty)


# ------------------------------------------------------------------------------------ study
@dataclass(frozen=True)
class StudyInfo:
    objective: dict[str, str]  # metric -> direction
    sampler: str
    pruner: str
    counts: TrialCounts
    found: bool  # whether the Optuna study was found
    histories: dict[str, pd.DataFrame] = field(default_factory=dict)  # objective -> tables.optimization_history
    importances: dict[str, dict[str, float]] = field(default_factory=dict)  # objective -> param -> fANOVA importance
    durations: pd.DataFrame = field(default_factory=pd.DataFrame)
    unfinished: pd.DataFrame = field(default_factory=pd.DataFrame)  # trial, state, reason
    sweep_text: str | None = None


def memory_study(found: OptunaTrials) -> optuna.Study:
    """An in-memory Optuna study of the loaded finished trials, for Optuna's own summaries
    (best values, the Pareto set, fANOVA) without going back to the store."""
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), directions=found.directions)
    for key, value in found.user_attrs.items():
        study.set_user_attr(key, value)
    study.add_trials([t for t in found.trials if t.state == optuna.trial.TrialState.COMPLETE])
    return study


def _numeric(choices) -> bool:
    return all(isinstance(c, int | float) and not isinstance(c, bool) and np.isfinite(c) for c in choices)


def ordered_study(study: optuna.Study) -> optuna.Study:
    """The study's finished trials with every numeric list of choices (a grid's `model.width: [2,
    4, ..., 300]`) as the ordered range it is: on a log scale when its choices are positive and
    span a factor of 10 or more. Optuna's fANOVA one-hot encodes a categorical parameter and
    integrates over every combination of its columns: 2^19 of them for 19 widths, which took the
    notebook sweep's report nearly 4 minutes (3.5 s as a range), and splits respect the order."""
    trials = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        params, distributions = dict(trial.params), dict(trial.distributions)
        for name, dist in trial.distributions.items():
            if isinstance(dist, optuna.distributions.CategoricalDistribution) and _numeric(dist.choices) \
                    and len(set(dist.choices)) > 1:
                numbers = [float(c) for c in dist.choices]  # type: ignore[arg-type]  # _numeric: all numbers
                low, high = min(numbers), max(numbers)
                distributions[name] = optuna.distributions.FloatDistribution(low, high, log=low > 0 and high >= 10 * low)
                params[name] = float(params[name])
        trials.append(optuna.trial.create_trial(params=params, distributions=distributions, values=trial.values))
    ordered = optuna.create_study(storage=optuna.storages.InMemoryStorage(), directions=study.directions)
    ordered.add_trials(trials)
    return ordered


def importances(study: optuna.Study, objective: dict[str, str], metric: str) -> dict[str, float]:
    """fANOVA importances for one objective `metric` of an `ordered_study` (numeric choices as
    ordered ranges); {} where they cannot be computed."""
    complete = study.get_trials(deepcopy=False)
    if len(complete) < 2 or not any(t.distributions for t in complete):
        return {}
    index = list(objective).index(metric)
    target = (lambda t: t.values[index]) if len(study.directions) > 1 else None
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # variance explained, either direction
        return optuna.importance.get_param_importances(study, evaluator=evaluator, target=target)
    except Exception as exc:  # too few distinct values for fANOVA: the page says importances are missing
        log.debug("no fANOVA importances for %s: %s", metric, exc)
        return {}


def retried(trials: list, numbers) -> list[str]:
    """What came of each trial number's settings after it stopped: the trial that ran them again
    (`ledger.repeats`) and how it ended, or that it waits in the queue."""
    retries = {repeats(t): t for t in trials if repeats(t) is not None}
    said = []
    for number in numbers:
        retry = retries.get(int(number)) if pd.notna(number) else None
        if retry is None:
            said.append("")
        elif retry.state == optuna.trial.TrialState.WAITING:
            said.append("queued to run again")
        elif retry.state == optuna.trial.TrialState.RUNNING:
            said.append(f"running again as trial {retry.number}")
        else:
            said.append(f"ran again as trial {retry.number} ({retry.user_attrs.get(Attr.STATE) or retry.state.name.lower()})")
    return said


def study_info(data: SweepRuns, counts: TrialCounts, study: optuna.Study | None) -> StudyInfo:
    objective = tables.objective_of(data.sweep_run)
    params = data.sweep_run.get("params", {})
    histories = {metric: tables.optimization_history(data.runs, metric, direction) for metric, direction in objective.items()}
    found = {}
    if study is not None:
        ordered = ordered_study(study)  # once for every objective
        found = {metric: values for metric in objective if (values := importances(ordered, objective, metric))}
    runs = data.runs
    unfinished = pd.DataFrame()
    if not runs.empty:
        stopped = runs[runs["state"].isin([TrialState.FAILED, TrialState.INTERRUPTED, TrialState.DIVERGED, TrialState.PRUNED])]
        reasons = stopped.get(names.tag_column(Tag.REASON), pd.Series("", index=stopped.index)).fillna("")
        unfinished = pd.DataFrame({"trial": stopped["trial"], "state": stopped["state"], "reason": reasons})
        if study is not None:  # a reason logged at the time ("queued again") is followed by what came of it
            unfinished["then"] = retried(study.get_trials(deepcopy=False), unfinished["trial"])
    return StudyInfo(
        objective, params.get("sampler", "?"), params.get("pruner", "?"), counts, study is not None,
        {m: h for m, h in histories.items() if len(h) >= 2}, found, tables.durations(runs), unfinished, data.sweep_text,
    )


# ------------------------------------------------------------------------------- the summary
@dataclass(frozen=True)
class Finding:
    """One line of the summary at the top of the page."""

    label: str
    text: str
    anchor: str = ""  # the section it comes from
    run_id: str = ""  # a run it names (linked to the MLflow UI)
    verdict: str = ""  # a claim's verdict, styled as in the claims list


def _setting(row: pd.Series, knobs: list[str]) -> str:
    return ", ".join(f"{k} = {tables.plain(row[f'params.{k}'])}" for k in knobs if f"params.{k}" in row) \
        or "the sweep's one setting"


def _best(errs: pd.DataFrame, task: str, searched: list[str]) -> Finding:
    """The trial with the lowest validation error (chosen on validation, never on test)."""
    chooser = errs["val_error"] if errs["val_error"].notna().any() else errs["test_error"]
    row = errs.loc[chooser.idxmin()]
    if task == "classification":
        held = f"test accuracy {1 - row['test_error']:.3f} [{1 - row['test_high']:.3f}, {1 - row['test_low']:.3f}]"
        chosen = f"validation accuracy {1 - row['val_error']:.3f}" if pd.notna(row["val_error"]) else ""
    else:
        held = f"test MSE {row['test_error']:.4g} [{row['test_low']:.4g}, {row['test_high']:.4g}]"
        chosen = f"validation MSE {row['val_error']:.4g}" if pd.notna(row["val_error"]) else ""
    text = f"{_setting(row, searched)}: {held}" + (f" (chosen on {chosen})" if chosen else "") + \
        f"; trial {int(row['trial'])}, regime {row['regime']}"
    return Finding("Best setting", text, "regimes", str(row["run_id"]))


def summarize(body: BiasVariance | Compression | None, claims: list[verdicts.Claim], sweep: str,
              searched: list[str]) -> list[Finding]:
    """What the page found, first: the best setting, each claim in a sentence, the regimes, the
    phenomena and what to run next. Every line names the section (and run) it comes from."""
    found: list[Finding] = []
    if isinstance(body, BiasVariance) and not body.errs.empty:
        found.append(_best(body.errs, body.task, searched))
    fronts = [c for c in claims if c.knob.startswith("fronts")]  # a compression sweep's dominance tests: one line per cost
    for c in claims:
        if c not in fronts:
            found.append(Finding(c.knob or "Claim", verdicts.sentence(c), "claims", verdict=c.verdict))
    for knob in dict.fromkeys(c.knob for c in fronts):
        tests = [c for c in fronts if c.knob == knob]
        decided = [c for c in tests if c.verdict in ("confirmed", "contradicted")]
        said = "; ".join(c.claim for c in decided) if decided else "none decided"
        found.append(Finding(knob[0].upper() + knob[1:], f"{len(decided)} of {len(tests)} dominance tests decided: {said} "
                             "(hypervolume per base, Student's t over the bases)", "fronts",
                             verdict="confirmed" if decided else "inconclusive"))
    if isinstance(body, Compression) and not body.frontier.empty:
        for _, f in body.frontier.head(4).iterrows():
            ratio = f"{f['ratio']:.1f}× smaller, " if pd.notna(f.get("ratio")) else ""
            latency = f", {f['latency µs']:.1f} µs an example" if pd.notna(f.get("latency µs")) else ""
            found.append(Finding("On the frontier", f"{f['method']} ({f['settings'] or f['file']}): {ratio}test accuracy "
                                 f"{f['test accuracy']:.3f}, {int(f['gzip bytes'])} gzip bytes{latency}", "compression",
                                 str(f["run"])))
    if isinstance(body, Compression) and not body.not_faster.empty:
        slow = body.not_faster
        found.append(Finding("Smaller, not faster", "; ".join(
            f"trial {r['trial']} ({r['kind']}): {r['bytes ratio']:.2f}× the base's bytes, {r['latency ratio']:.2f}× its "
            f"latency [{r['latency low']:.2f}, {r['latency high']:.2f}]" for _, r in slow.iterrows()), "accuracy-vs-latency"))
    if isinstance(body, Compression) and not body.forgotten.empty:
        worst = body.forgotten.sort_values("forgotten", ascending=False).iloc[0]
        what = ", ".join(str(part) for part in (worst["file"], worst["settings"]) if part)  # a file may have no settings
        low, high = worst["forgotten low"], worst["forgotten high"]
        interval = f"[{low:.0f}, {high:.0f}]" if pd.notna(low) and pd.notna(high) else "(one seed: no interval)"
        found.append(Finding("Forgotten examples", f"trial {worst['trial']} ({what}) lost the most: {worst['forgotten']:.0f} "
                             f"{interval} of {worst['of']} test examples its own base got right, and learned "
                             f"{worst['learned']:.0f}", "forgets", str(worst["run"])))
    if isinstance(body, BiasVariance) and not body.errs.empty:
        counts = body.errs["regime"].value_counts()
        found.append(Finding("Regimes", ", ".join(f"{n} {r}" for r, n in counts.items()) + " (of "
                             f"{len(body.errs)} finished trials, by the rules printed with them)", "regimes"))
        for view in body.views:
            for d in view.descents:
                if d["double_descent"] or d["threshold"] is not None:
                    where = "" if d["series"] == "all trials" else f"{d['series']}: "
                    found.append(Finding("Double descent" if d["double_descent"] else "Interpolation", where + d["text"],
                                         f"descent-{view.knob.replace('.', '-')}"))
    undecided = [c for c in claims if c.verdict == "inconclusive"]
    if undecided:
        needed = [c.needed for c in undecided if c.needed]
        more = (f": about {max(needed)} seeds per setting would decide {'it' if len(undecided) == 1 else 'them'} "
                f"(study run sweeps/{sweep}.yaml --until-decided --max-seeds {max(needed)})") if needed else \
            ": see what each one needs below"
        found.append(Finding("Next", f"{len(undecided)} claim{'s' if len(undecided) > 1 else ''} undecided{more}", "claims"))
    if not found:
        found.append(Finding("Nothing to conclude yet", "no trial of this sweep has finished with measurements to compare; "
                             "the study section below says what ran and why the others did not finish", "study"))
    return found


# ------------------------------------------------------------------------------- the report
@dataclass
class Conclusions:
    """What a report concludes, in machine-readable form (verdicts.json): the rules, each claim
    with its numbers, each trial's regime, interpolation thresholds and double-descent peaks."""

    claims: list = field(default_factory=list)
    looks: int = 1  # the looks at the claims the study may take (--until-decided): each tests at α / looks
    rounds: list = field(default_factory=list)  # rounds of added seeds: round, seeds, settings, claims
    trials: pd.DataFrame = field(default_factory=pd.DataFrame)
    descents: list = field(default_factory=list)
    decomposition: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass(frozen=True)
class Report:
    """Everything one sweep's report says, before it is drawn."""

    name: str
    task: str | None  # classification or regression (None: no trial runs yet)
    description: str
    store: str
    experiment_id: str
    trial_runs: int
    counts: TrialCounts
    body: BiasVariance | Compression | None  # None: no trial runs yet
    claims: list[verdicts.Claim]  # every claim on the page, judged together (Holm)
    study: StudyInfo
    conclusions: Conclusions
    best: str  # listing.best_summary of the Optuna study ('' without it)
    summary: list[Finding] = field(default_factory=list)  # what the page found, first
    left_out: str = ""  # trials left out (an earlier version of the data): said under the counts


def compute_report(data: SweepRuns) -> Report:
    """The report's sections from the loaded sweep: no I/O."""
    counts = trial_counts(data)
    body: BiasVariance | Compression | None = None
    if not data.runs.empty:
        body = compression(data) if is_compression(data) else bias_variance(data)
    attrs = data.optuna.user_attrs if data.optuna is not None else {}
    looks = max(1, int(attrs.get(Attr.LOOKS, 1)))
    claims = verdicts.judge(body.claims, stats.ALPHA / looks) if body is not None and body.claims else []
    conclusions = Conclusions(claims=claims, looks=looks, rounds=list(attrs.get(Attr.ROUNDS, [])))
    if isinstance(body, BiasVariance) and not body.errs.empty:
        conclusions.trials = body.errs
        conclusions.descents = [d for view in body.views for d in view.descents]
        if body.decomposition is not None:
            conclusions.decomposition = body.decomposition.table
    study = memory_study(data.optuna) if data.optuna is not None else None
    return Report(
        data.name, regimes.task_of(data.runs) if not data.runs.empty else None, data.description, data.store, data.experiment_id, len(data.runs), counts, body, claims,
        study_info(data, counts, study), conclusions, best_summary(study) if study is not None else "",
        summarize(body, claims, data.name, data.searched), data.left_out,
    )
