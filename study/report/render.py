"""Draw a computed report (sections.Report) and lay it out as a page: figures from figures.py,
texts and captions here, markup in templates/. Reads no store.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from study.report import figures, sections, tables, verdicts
from study.report.page import Page, SummaryLine, code
from study.serve import StoreUI, ui_link


def _readable(column: str) -> str:
    return column[len("params."):] if column.startswith("params.") else column


class Links:
    """Run ids to their pages in the MLflow UI that shows this store (none without a UI address),
    and the page's header line saying which UI that is. Local stores all number their first
    experiment 1 and `study ui` serves each at the same address, so where `study ui` serves it the
    header gives the command that serves THIS store: another store's UI would answer the links
    with "Run ID ... does not exist"."""

    def __init__(self, ui: StoreUI | str | None, experiment_id: str):
        self.ui = StoreUI(ui) if isinstance(ui, str) else ui  # an address alone: no command comes with it
        self.url, self.experiment_id = (self.ui.url if self.ui else None), experiment_id

    def __call__(self, run_ids) -> dict[str, str]:
        if not self.url:
            return {}
        return {rid: ui_link(self.url, self.experiment_id, rid) for rid in run_ids}

    def header(self, store: str) -> list:
        """The header's pieces (text, code, a link to this sweep's runs); none without a UI address."""
        from study.report.page import code, link

        if self.ui is None or not self.url:
            return []
        runs, eid = link(ui_link(self.url, self.experiment_id)), self.experiment_id
        if self.ui.command:
            hidden = " (with the password in place of ***)" if "***" in self.ui.command else ""
            return ["MLflow UI for this store: run ", code(self.ui.command), f"{hidden}, then open ", runs,
                    f". Run ids below link to experiment {eid} of this store ({store}); every store numbers its "
                    "experiments from 1, so ", code("study ui"), " serving another store answers them with "
                    "\"Run ID ... does not exist\"."]
        if self.ui.server:
            return ["MLflow UI: this store's tracking server, ", runs, f"; run ids below link to its experiment {eid}."]
        return ["MLflow UI (the address given to study report): ", runs,
                f"; run ids below link to experiment {eid} there, which must be this store's ({store})."]


# ---------------------------------------------------------------------------- bias–variance
def render_bias_variance(page: Page, section: sections.BiasVariance, counts: sections.TrialCounts, links: Links) -> None:
    page.h2("Overfitting and underfitting", "bias-variance")
    if section.errs.empty:
        page.note("No trial has finished yet, so there are no errors to chart: " + counts.line + ".")
        return
    errs, name = section.errs, section.error_name
    page.p(f"Error is the {name}. Training error is measured on each trial's own training set, held-out error "
           "on the fixed test split, in inference mode once training has ended. The shaded gap between them is "
           "what the article calls overfitting; both high is underfitting.")
    page.p("How this page labels a trial: " + section.rules)
    for view in section.views:
        slug = view.knob.replace(".", "-")
        if view.kind == "scatter":
            page.figure(figures.error_scatter(errs, view.knob, name, view.log_x), f"trials-vs-{slug}",
                        f"Every finished trial's training and held-out {name} against {view.knob}, with 95% intervals "
                        "(see the rules above). Other knobs vary between these trials, so the points are not averaged "
                        "and no line joins them.")
        elif view.kind == "panels":
            spots = "; ".join(f"{p.title}: {view.knob} = {p.sweet_spot:g}" for p in view.panels)
            page.figure(
                figures.error_vs_knob(view.panels, view.knob, name, view.log_x, view.ncols), f"error-vs-{slug}",
                f"Training and held-out {name} against {view.knob}, one panel per setting of the other knobs (never "
                f"averaged over them). Each point is one trial: the mean over its replicates with a 95% interval (seeds "
                f"and test set; the test set alone with one replicate). Bands: each trial's regime by the rules above. "
                f"Lowest held-out error: {spots}.",
            )
            if view.descents:
                page.h3(f"Interpolation and double descent along {view.knob}", f"descent-{slug}")
                page.items([f"{d['series']}: {d['text']}" for d in view.descents])
    if section.two_level:
        page.p(f"{', '.join(section.two_level)}: two settings each, crossed with the other knobs in too many "
               "combinations to chart one by one; each one's effect, with its interval, is in the effects chart below.")
    if section.grid is not None:
        render_grid(page, section.grid, name)
    if section.show_params:
        page.figure(figures.error_vs_params(errs, name, section.params_facet), "capacity",
                    "Every finished trial's training and held-out error against its parameter count.")
    if section.sized is not None and section.front is not None:
        page.figure(figures.error_vs_size(section.sized, section.front, name, section.params_facet), "accuracy-size",
                    f"Every finished trial's held-out {name} (95% interval) against the bytes of its saved Keras model; "
                    f"the line joins the {int(section.front.sum())} trials that no other trial beats on both.")
    if section.learning is not None:
        curves = section.learning
        page.figure(figures.learning_curves(curves.curves, curves.best, curves.stopped), "learning-curves",
                    "Per-epoch training loss (running mean over the epoch, dropout on) and validation loss of the most "
                    "underfit, the best and the most overfit trials (averaged over replicates); dashed: the best "
                    "validation epoch, the one early stopping restores when it is on; dotted: where early stopping "
                    "stopped training.")
    if section.decomposition is not None:
        render_decomposition(page, section.decomposition)
    if section.regimes is not None:
        render_regimes(page, section.regimes, links)


def render_grid(page: Page, grid: sections.TwoKnobs, name: str) -> None:
    """Held-out error over the two knobs: rows one knob, columns the other, each cell its mean over
    seeds with a 95% interval, shaded from the lowest (light) to the highest (dark)."""
    cells = grid.cells
    columns = list(dict.fromkeys(cells["column"]))
    rows = []
    for value, line in cells.groupby("row", sort=True):
        by = {c: r for c, r in zip(line["column"], line.itertuples())}
        rows.append([(f"{grid.row} = {tables.plain(value)}", float("nan"))]
                    + [(f"{by[c].error:.3f} [{by[c].low:.3f}, {by[c].high:.3f}]", float(by[c].error)) if c in by else ("", float("nan"))
                       for c in columns])
    page.h3("Held-out error over both knobs", "two-knobs")
    page.p(f"Held-out {name} of every setting of the grid: the mean over all its seeds with a 95% interval (seeds and "
           "test set); darker is higher. Cells whose intervals overlap are not told apart by this table; the claims below "
           "test each knob's effect seed by seed.")
    page.heat([f"{grid.row} \\ {grid.column}", *[f"{grid.column} = {c}" for c in columns]], rows)


def render_decomposition(page: Page, d: sections.Decomposition) -> None:
    page.h3("Bias and variance")
    if not d.replicated:
        page.p("This sweep trains one model per setting; set replicates: 3 or more to split the held-out error "
               "into bias and variance with intervals.")
        return
    if d.table.empty:
        page.note("The trials' predictions could not be read, so no decomposition.")
        return
    if d.finished > tables.MAX_DECOMPOSED:
        page.note(f"Decomposed the first {tables.MAX_DECOMPOSED} of {d.finished} trials.")
    if d.kind == "squared error":
        page.p("Squared error against the known noiseless truth splits into bias² (how far the average replicate is "
               "from the truth) and variance (how much replicates, each trained on a fresh training set, disagree). "
               "Both are unbiased: the plain (mean − truth)² carries variance/R with it, which is subtracted, so "
               "bias² does not rise with variance when replicates are few. Against the noisy test labels the expected "
               "error adds the known noise variance σ². The check: the measured held-out error (the trials' own "
               "test loss) against bias² + variance + σ²; their difference is the test set's realised noise, and the "
               f"identity holds when it is within three of its standard errors: it holds for {d.holds} of {len(d.table)} "
               "trials. Intervals: 95%, " + d.table["interval"].iloc[0] + ".")
    else:
        page.p("The 0-1 loss is split by Domingos' unified decomposition (Domingos 2000): bias is the share of test "
               "examples whose main prediction (the replicates' vote) is wrong; disagreement, the variance, is how often "
               "a replicate departs from that vote; net variance is the part of it that adds to the loss (disagreement "
               "on correctly voted examples) minus the part that removes loss (right replicates on wrongly voted ones), "
               "so the two can cancel; loss = bias + net variance. The vote of a few replicates is itself noisy and no "
               "unbiased correction exists for it: bias here is the plain vote's, which overstates bias where "
               "replicates disagree (more replicates shrink that). "
               f"The check: the predictions' loss equals the trials' measured held-out error for {d.holds} of "
               f"{len(d.table)} trials. Intervals: 95%, over test points.")
    if d.knob and d.panels:
        page.figure(figures.decomposition(d.panels, d.knob, d.kind, d.log_x), "bias-variance",
                    f"Held-out error and its {d.kind} decomposition against {d.knob}, one panel per setting of the other "
                    "knobs; bars: 95% intervals.")
    page.table(d.shown, labels=_readable)


def render_regimes(page: Page, r: sections.RegimeTable, links: Links) -> None:
    page.h3("Regimes, remedies and the article's claims", "regimes")
    page.table(r.counts, classes={"regime": "regime"})
    page.p("The article lists the remedies under swapped headings (its overfitting remedies sit under "
           "underfitting); this report files each where it acts.")
    if not r.effects.empty and r.effects["low"].notna().any():
        page.figure(figures.effects(r.effects), "effects",
                    "Each remedy's main effect: the mean at its highest setting minus at its lowest, averaged over the "
                    "other knobs, on training error, held-out error and the gap; bars: 95% intervals over the per-seed "
                    "contrasts (every setting shares its seeds), the held-out ones with the test set's noise too.")
    page.p(f"Every finished trial's regime ({len(r.trials)} of {r.total} shown; runs.csv has all, "
           f"verdicts.json the numbers). Reference error: {r.reference}.")
    page.table(r.trials, links=links(r.trials["run"]), classes={"regime": "regime"})


# ------------------------------------------------------------------------------ compression
def render_compression(page: Page, c: sections.Compression, counts: sections.TrialCounts, links: Links,
                       claims: list | None = None) -> None:
    page.h2("Accuracy against size", "compression")
    if c.comp.empty:
        page.note("No compression trial has finished yet: " + counts.line + ".")
        return
    seeds = (f"Each of the {c.bases} seeds compressed its own base (trained with that seed), so every file is one "
             f"seed's and every interval over seeds below holds the base's variance as well as the fine-tuning's; "
             f"no chart averages files: {len(c.files)} files, {len(c.files)} points on each chart that shows them all."
             if c.bases > 1 else
             "Every setting compressed one base: intervals over seeds hold the fine-tuning's variance only, not "
             "the base's (give the sweep `replicates: 3` or more to train a base per seed).")
    page.p("Every point is a file that exists: its size is the file's bytes (raw, and gzip-compressed, which is "
           "where pruned and clustered weights shrink) and its accuracy the file's own on the fixed test split "
           "(LiteRT runs .tflite files; our loader runs packed 2-7-bit .qpack files, which no device runtime reads). "
           "Fine-tuned methods train a few epochs more than the base, at a lower learning rate: each is compared "
           "below with the base fine-tuned for as many epochs (its equal-training control). " + seeds)
    page.figure(figures.pareto(c.files, c.file_fronts, tables.SIZE, tables.ACCURACY, c.base), "pareto",
                "Test accuracy of every compressed file against its size, coloured by method (a file per seed); black "
                "steps: the Pareto frontier (no other file is both smaller and more accurate); star: the uncompressed "
                "float32 base.")
    if not c.controls.empty:
        page.h3("Each method beside its controls", "controls")
        page.p("A fine-tuned file trains the base's weights for more epochs than the base had, so its accuracy is "
               "compared with the base fine-tuned for the same epochs, with the same settings, seed and data (the "
               "equal-training control); a shrunk architecture (structured pruning) also with itself trained from a "
               "fresh initialisation for the base's epochs plus the fine-tuning's (Scratch-E) and for the same "
               "compute, the base's epochs scaled by the ratio of multiply-accumulates (Scratch-B, capped at twice "
               "Scratch-E's epochs: the table gives the epochs each trained; Liu et al. 2019); a distilled student "
               "with the same student on hard labels. Differences are paired by seed; intervals: 95%, Student's t "
               "over the seeds.")
        page.figure(figures.controls(c.controls), "controls",
                    "Each file's test accuracy minus its own seed's control's: a marker per file, the mean difference "
                    "(tick) with its 95% interval over the seeds (bar); right of the dashed line, the file beats its control.")
        shown = c.controls.drop(columns=["differences"])
        page.table(shown, links=links(shown["run"]))
    if not c.timed.empty:
        page.figure(figures.latency(c.timed, tables.ACCURACY, tables.LATENCY, tables.LATENCY_IQR), "accuracy-vs-latency",
                    "Test accuracy of every file a runtime runs against its median latency for one example on LiteRT "
                    "(µs, one thread, after warm-up invokes; bars: the interquartile range of the timed "
                    "invokes); black steps: the Pareto frontier. Packed .qpack files have no runtime, so no latency. "
                    "Latency is measured on the machine that ran the trial, in the same process as its training.")
        render_latencies(page, c, links)
    if c.pruned is not None:
        page.figure(figures.accuracy_against(c.pruned, sections.SPARSITY, "measured sparsity", tables.ACCURACY, c.pruned_hue),
                    "accuracy-vs-sparsity", "Test accuracy of every file against the measured fraction of zero weights (structured "
                    "pruning: the fraction of units removed); each file its own marker; bars: 95% intervals over the test set.")
    if c.quantized is not None:
        page.figure(figures.accuracy_against(c.quantized, sections.BITS, "bits per weight", tables.ACCURACY, None, log_x=True,
                                             reference=("float32 base", float(c.base["accuracy"]))),
                    "accuracy-vs-bits", "Test accuracy of every file against its bit-width: each file its own marker "
                    "(files at one bit-width spread slightly sideways); bars: 95% intervals over the test set; dashed: the "
                    "uncompressed float32 base.")
    if not c.pairs.empty:
        page.figure(figures.distillation(c.pairs), "distillation",
                    "Each distilled student (a bar per file: with replicates, one per seed) against its control: the same "
                    "student trained on hard labels alone, with the same budget and seed.")
        page.table(c.pairs)
    render_fronts(page, c, claims or [])
    render_forgets(page, c, links)
    page.h3("The frontier")
    page.table(c.frontier, links=links(c.frontier["run"]))


def render_latencies(page: Page, c: sections.Compression, links: Links) -> None:
    """Each timed setting's latency against its own base's, and where smaller is not faster."""
    t = c.latencies
    if t.empty:
        page.p("No `method: none` file was timed, so no file's latency is compared with its base's: add `none` to the "
               "sweep's compress.method to time the base as it is.")
        return
    slow = c.not_faster
    if not slow.empty:
        said = "; ".join(f"trial {r['trial']} ({r['file']}{', ' + r['kind'].split(', ')[-1] if 'bit' in r['kind'] else ''}): "
                         f"{r['bytes ratio']:.2f}× the bytes, {r['latency ratio']:.2f}× the latency [{r['latency low']:.2f}, {r['latency high']:.2f}]"
                         for _, r in slow.iterrows())
        page.p(f"Smaller is not faster here: {len(slow)} setting(s) whose files are smaller than the base run no faster than "
               f"it on LiteRT (latency of each file ÷ its own base's, geometric mean over the seeds with a 95% interval): {said}.")
    elif (t["bytes ratio"] < 1).any():
        page.p("Every timed setting smaller than the base ran faster than it on average (the claims below test it).")
    else:
        page.p("No timed setting's files are smaller than its base's, so none is expected to run faster; the table "
               "shows how their latency compares.")
    shown = t.rename(columns={"latency ratio": "latency ÷ base's", "latency low": "low", "latency high": "high",
                              "bytes ratio": "bytes ÷ base's"})
    page.table(shown, links=links(shown["run"]))


def render_fronts(page: Page, c: sections.Compression, claims: list) -> None:
    """Each method's front per base, the attainment bands and the dominance tests."""
    if not c.method_fronts:
        return
    page.h3("Fronts over bases, and which method dominates", "fronts")
    page.p("A front drawn from every file at once mixes the bases. Here each base (seed) has its own front per method: "
           "the thin steps, one per base, give the best accuracy a method's files reached at no more than each size (or "
           "latency). The shaded band runs from what every base attained (its lower edge) to what at least one base "
           "attained (its upper edge), with the median over the bases as the thick line: the empirical attainment "
           f"function's surfaces over {c.bases} bases.")
    page.figure(figures.attainment(c.method_fronts), "fronts",
                "Each method's fronts, one thin step line per base; band: from the worst to the best base's front; thick: "
                "the median base's; dashed: the reference point of the hypervolumes.")
    verdict_of = {claim.claim: claim.verdict for claim in claims}
    rows = []
    for f in c.method_fronts:
        for t in f.tests:
            low, high = t.difference.interval() if pd.notna(t.difference.se) else (float("nan"), float("nan"))
            shared = t.shared
            rows.append({"A": t.a, "B": t.b, "cost": f.name, "bases": len(shared),
                         "HV of A": sum(t.hv_a[s] for s in shared) / len(shared) if shared else float("nan"),
                         "HV of B": sum(t.hv_b[s] for s in shared) / len(shared) if shared else float("nan"),
                         "A − B": t.difference.effect, "low": low, "high": high,
                         "verdict": verdict_of.get(f"{t.a} dominates {t.b} on accuracy and {f.name}", "")})
    reference = "; ".join(
        f"{f.name}: accuracy {f.reference[0]:.3g} ({'chance' if f.reference[0] > 0 else 'no predictions read to know chance'}) and "
        + (f"{f.reference[1] * 1000:.3g} µs (the base's own latency, else the slowest file's)" if f.name == "latency"
           else f"{f.reference[1]:,.0f} bytes (the base's float32 file)") for f in c.method_fronts)
    page.p("Does method A dominate method B? The test: each base's front of A and of B gets its hypervolume, the area it "
           "dominates between the front and a reference point, with the cost on a log scale, as a share of the box from the "
           f"reference point to (accuracy 1, the least cost of any file). Reference points: {reference}. A file below chance "
           "or beyond the reference adds nothing. The difference HV(A) − HV(B) of each base is one independent draw (the "
           "base is the unit of replication), tested with Student's t over the bases; fewer than 3 bases give no test and "
           "the claim stays inconclusive. A bootstrap over so few bases is not used: with 3 bases it has 10 distinct "
           "resamples and calls any three differences of one sign significant. A is the method with the larger mean; each "
           "test is a claim below, judged with the page's other claims (Holm), its smallest effect of interest a front "
           "lying the smallest effect higher over the whole box.")
    page.table(pd.DataFrame(rows))


def render_forgets(page: Page, c: sections.Compression, links: Links) -> None:
    """What compression forgets: per setting, the examples its files lost against their own base."""
    page.h3("What compression forgets", "forgets")
    e = c.examples
    page.p("A file's accuracy can hold while it trades examples: it gets some wrong that its base got right, and some "
           "right that its base got wrong (Hooker et al. 2019). Each file is compared example by example with its own "
           "base, the same seed's `method: none` file (the base as it is), from the predictions every trial logs. "
           f"Counts: test examples of {int(len(e.y_test)) if e.y_test is not None else '?'}; mean over the seeds with a "
           "95% interval (Student's t over the seeds).")
    if e.wanted > e.read:
        page.note(f"Predictions of {e.read} of {e.wanted} finished trials were read (at most {e.limit}).")
    if c.forgotten.empty:
        page.note("No file could be compared with its base example by example: the sweep needs `none` among its "
                  "compress.method values (its file is the base as it is), and the trials' predictions.")
        return
    page.table(c.forgotten, links=links(c.forgotten["run"]))
    if not c.lost.empty:
        page.p("The test examples lost most often: by how many compressed files (of all those compared) got them wrong "
               "where their own base got them right, how many bases got them right, and which methods lost them.")
        page.table(c.lost)


# ------------------------------------------------------------------------------------ study
def render_claims(page: Page, claims: list, conclusions: sections.Conclusions | None = None) -> None:
    if not claims:
        return
    page.h3("The article's claims, tested", "claims")
    page.p(verdicts.rules_text())
    if conclusions is not None and conclusions.looks > 1:
        page.p(verdicts.looks_text(conclusions.looks, conclusions.rounds))
    page.note(verdicts.calibration_text())
    page.claims(claims)


def render_study(page: Page, s: sections.StudyInfo) -> None:
    page.h2("The study", "study")
    page.p("Objective: " + (", ".join(f"{m} ({d})" for m, d in s.objective.items()) or "unknown") + ". "
           f"Sampler {s.sampler}, pruner {s.pruner}.")
    if not s.found:
        page.note("The Optuna study was not found in this store; counts come from MLflow alone.")
    page.table(s.counts.table)
    if s.counts.statuses:
        page.p("MLflow run status: " + ", ".join(f"{n} {status}" for status, n in s.counts.statuses.items())
               + " (FINISHED: finished; KILLED: pruned or diverged; FAILED: failed or interrupted).")
    if s.histories:
        page.figure(figures.history(s.histories), "history",
                    "Each objective of every finished trial, and the best so far (each objective on its own).")
    if s.importances:
        page.figure(figures.importances(s.importances), "importances",
                    "How much of each objective's variation each searched parameter explains (Optuna's fANOVA).")
    elif s.found:
        page.p("Parameter importances need at least two finished trials that differ in their settings.")
    if len(s.durations) >= 1:
        page.figure(figures.durations(s.durations), "durations", "Wall time of every trial run, start to end, by state; trials trained together in one pack each show the whole pack's time.")
    if not s.unfinished.empty:
        page.h3("Trials that did not finish")
        page.table(s.unfinished)
    if s.sweep_text:
        page.h3("The sweep file")
        page.pre(s.sweep_text)


# -------------------------------------------------------------------------------- the report
def render_report(report: sections.Report, folder: Path, ui: StoreUI | str | None = None) -> str:
    """The page of `report` (its figures written under folder/figures/), as HTML; run ids link to
    `ui` (serve.store_ui: the address of this store's MLflow UI, and the command that serves it)."""
    page = Page(folder)
    links = Links(ui, report.experiment_id)
    if header := links.header(report.store):
        page.header(*header)
    if report.description:  # Markdown's `code` spans shown as code, not as backticks
        parts = report.description.split("`")
        page.line(*[code(part) if i % 2 else part for i, part in enumerate(parts) if part] if len(parts) % 2 else
                  [report.description])
    page.p(f"Trials: {report.counts.line}. Store: {report.store}.")
    if report.left_out:
        page.note(report.left_out)
    if report.body is None:
        page.note("This sweep has no trial runs yet. Run it with: study run <its sweep file>.")
    elif isinstance(report.body, sections.Compression):
        render_compression(page, report.body, report.counts, links, report.claims)
    else:
        render_bias_variance(page, report.body, report.counts, links)
    render_claims(page, report.claims, report.conclusions)
    render_study(page, report.study)
    render_summary_lines(page, report.summary, links)
    return page.render(f"Sweep report: {report.name}", f"{report.trial_runs} trial runs")


def render_summary_lines(page: Page, found: list[sections.Finding], links: Links) -> None:
    """The summary above the contents: each finding linked to its section (when the page has it)
    and its run (when there is a UI to open it in)."""
    anchors = {h.anchor for h in page.headings}
    runs = links([f.run_id for f in found if f.run_id])
    page.summary = [SummaryLine(f.label, f.text, f.anchor if f.anchor in anchors else "", runs.get(f.run_id, ""), f.verdict)
                    for f in found]


def runs_table(runs: pd.DataFrame, conclusions: sections.Conclusions) -> pd.DataFrame:
    """runs.csv: every trial run's params, metrics and tags, with its regime columns."""
    if conclusions.trials.empty:
        return runs
    return runs.merge(conclusions.trials[["run_id", *sections.REGIME_COLUMNS]], on="run_id", how="left")
