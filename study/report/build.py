"""`study report`: load -> compute -> draw -> one self-contained HTML file per sweep.

Each sweep gets `reports/<sweep>/index.html` (figures embedded, also saved under `figures/`),
`runs.csv` and `verdicts.json`; the folder is logged to the sweep's parent run in MLflow under
`report/`. With several sweeps, `reports/index.html` links them. The flow is one way: load.py reads
everything the report needs, sections.py computes each section from it (pure), render.py draws the
figures and fills the templates. A sweep with failed, pruned or running trials, missing metrics or
no finished trial still gets a valid report that says what is missing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from study.ledger import Counts
from study.report import regimes, sections, stats, verdicts
from study.report.load import load_sweep_runs, log_report
from study.report.page import render_template
from study.report.render import render_report, runs_table
from study.serve import store_ui
from study.store import Store


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
    counts: Counts | None = None  # Optuna's trials as study.ledger.count_trials counts them (None: no study)
    mlflow: dict = field(default_factory=dict)  # trial runs per study.state tag
    statuses: dict = field(default_factory=dict)  # trial runs per MLflow run status


def build_report(store: Store, name: str, out: Path, mlflow_url: str | None = None, log_to_mlflow: bool = True) -> Built:
    """Write `out/<name>/index.html` (and figures, runs.csv, verdicts.json) for sweep `name`. Its run
    ids link to this store's MLflow UI: `mlflow_url` when given, else the store's tracking server, else
    where `study ui` serves it, with the command that serves this store (serve.store_ui)."""
    start = time.perf_counter()
    data = load_sweep_runs(store, name)
    report = sections.compute_report(data)
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    for old in [*(folder / "figures").glob("*.png"), *(folder / "figures").glob("*.svg")]:
        old.unlink()
    page = render_report(report, folder, store_ui(store, mlflow_url))
    runs_table(data.runs, report.conclusions).to_csv(folder / "runs.csv", index=False)
    (folder / "verdicts.json").write_text(json.dumps(verdicts_json(report, data.searched), indent=2, allow_nan=False) + "\n",
                                          encoding="utf-8")
    index = folder / "index.html"
    index.write_text(page, encoding="utf-8")
    if log_to_mlflow:
        log_report(store, data, folder)
    verdict_counts = pd.Series([c.verdict for c in report.claims], dtype=object).value_counts()
    claims = ", ".join(f"{n} {v}" for v, n in verdict_counts.items())
    line = report.counts.line
    return Built(name, index, time.perf_counter() - start, line + (f"; claims: {claims}" if claims else ""),
                 report.description, line, report.best, {v: int(n) for v, n in verdict_counts.items()},
                 report.counts.optuna, report.counts.mlflow, report.counts.statuses)


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


def verdicts_json(report: sections.Report, searched: list[str]) -> dict:
    """verdicts.json: the page's conclusions with the numbers behind each."""
    conclusions, task = report.conclusions, report.task
    trials = []
    if not conclusions.trials.empty:
        for _, row in conclusions.trials.iterrows():
            trials.append({"trial": int(row["trial"]), "run_id": row["run_id"], "replicates": int(row["replicates"]),
                           **{c: row[c] for c in sections.REGIME_COLUMNS},
                           "params": {k: row[f"params.{k}"] for k in searched if f"params.{k}" in row}})
    decomposition = conclusions.decomposition.drop(columns=[c for c in conclusions.decomposition.columns
                                                            if c.startswith("params.")], errors="ignore")
    return _clean({
        "sweep": report.name,
        "task": task,
        "rules": {"regimes": regimes.Rules(task).text() if task else None, "claims": verdicts.rules_text(),
                  "calibration": verdicts.calibration_text(),
                  "level": stats.LEVEL, "family_wise_alpha": stats.ALPHA},
        "claims": [c.to_dict() for c in conclusions.claims],
        "descents": conclusions.descents,
        "decomposition": decomposition.to_dict(orient="records"),
        "trials": trials,
    })


def build_index(out: Path, built: list[Built]) -> Path:
    """reports/index.html: one row per sweep, linking its report, with what it found."""
    rows = [{"href": f"{b.path.parent.name}/index.html", "name": b.name, "trials": b.trials, "best": b.best,
             "about": b.description.split(". ")[0].rstrip(".") + "." if b.description else "", "claims": b.claims}
            for b in built]
    path = out / "index.html"
    path.write_text(render_template("index.html", rows=rows), encoding="utf-8")
    return path
