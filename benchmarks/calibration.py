"""How often the report's verdicts and intervals are wrong, measured: many cheap grids whose truth is
known, each run as a real sweep (Optuna, MLflow, the packed engine) and read by the real report
code (load -> sections -> verdicts), in one process and one temporary store.

    .venv/bin/python benchmarks/calibration.py [--null 100] [--planted 40] [--seeds 3] [--save]

- Null grids: a 2 × 2 grid over an L2 penalty of 0 or 1e-12 (an exact no-op) and dropout of 0 or
  1e-6 (a near no-op that re-draws the random stream, like a new initialisation), R seeds each, on
  scikit-learn's digits with a small MLP. Neither knob has an effect worth the name, so a claim
  that comes out confirmed or contradicted is a false verdict (negligible and inconclusive are
  right). Every grid has its own sweep seed: its own data split, test set and initialisations.
- Planted grids: the same grid with a quarter or all of the training set instead of the dropout
  knob, an effect on held-out error the benchmark measures itself (the mean over all planted
  grids); the power is the share of planted grids whose data-size claim is confirmed.
- Coverage: the share of 95% intervals that hold the truth. For differences under the null the
  truth is 0; for a setting's mean training and held-out error and its gap, the truth is that
  setting's mean over every grid (an estimate whose own error is about 1/√grids of a grid's).

It prints each rate with its 95% interval (Wilson's, over grids) and, with --save, writes them to
study/report/calibration.json, which every report prints beside its verdicts.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAVED = ROOT / "study" / "report" / "calibration.json"

GRID = """\
description: calibration grid ({kind}, seed {seed})
dataset:
  name: digits
model:
  kind: mlp
  width: {width}
  depth: 1
train:
  learning_rate: 1e-2
  epochs: {epochs}
search:
  model.l2: [0.0, 1e-12]
  {knob}: {values}
objective: {{val/accuracy: maximize}}
sampler: grid
replicates: {seeds}
seed: {seed}
pack: 16
"""
KINDS = {
    "null": {"width": 32, "epochs": 10, "knob": "model.dropout", "values": "[0.0, 1e-6]"},
    "planted": {"width": 32, "epochs": 10, "knob": "dataset.train_size", "values": "[0.25, 1.0]"},
}
PLANTED = "more training data"  # the planted grid's claim


def wilson(k: int, n: int) -> str:
    from study.report import stats

    if not n:
        return "no grids"
    low, high = stats.wilson(k / n, n)
    return f"{k}/{n} = {k / n:.1%} [{low:.1%}, {high:.1%}]"


def run_grid(kind: str, index: int, seeds: int, folder: Path, store):
    from study.config import load_sweep
    from study.report.load import load_sweep_runs
    from study.report.sections import compute_report
    from study.sweep import run_sweep

    name = f"{kind}_{index:03d}"
    path = folder / f"{name}.yaml"
    path.write_text(GRID.format(kind=kind, seed=1000 + 10 * index + (5 if kind == "planted" else 0), seeds=seeds, **KINDS[kind]))
    run_sweep(load_sweep(path), store)
    report = compute_report(load_sweep_runs(store, name))
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--null", type=int, default=100, help="null grids (default 100)")
    parser.add_argument("--planted", type=int, default=40, help="planted grids (default 40)")
    parser.add_argument("--seeds", type=int, default=3, help="replicates (seeds) per setting (default 3)")
    parser.add_argument("--save", action="store_true", help=f"write the figures to {SAVED.relative_to(ROOT)}")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    import pandas as pd

    from study.store import Store

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.null} null and {args.planted} planted grids, "
          f"{args.seeds} seeds each", flush=True)
    start = time.perf_counter()
    false_verdicts = covered_null = intervals_null = exact = 0
    planted_effects, decided = [], 0
    means = []  # (kind, setting, quantity, value, low, high) per trial
    with tempfile.TemporaryDirectory() as tmp:
        folder, store = Path(tmp), Store.resolve(str(Path(tmp) / "store"), None, None, None)
        for kind, count in (("null", args.null), ("planted", args.planted)):
            for index in range(count):
                report = run_grid(kind, index, args.seeds, folder, store)
                errs = report.conclusions.trials
                for _, row in errs.iterrows():
                    setting = (row["params.model.l2"], row[f"params.{KINDS[kind]['knob']}"])
                    for quantity, value in (("train", row["train_error"]), ("test", row["test_error"]), ("gap", row["gap"])):
                        means.append((kind, setting, quantity, value, row[f"{quantity}_low"], row[f"{quantity}_high"]))
                if kind == "null":
                    false_verdicts += any(c.verdict in ("confirmed", "contradicted") for c in report.claims)
                    for c in report.claims:
                        if c.se == 0:  # an exact no-op (L2 1e-12): identical models, a zero-width interval at 0
                            exact += 1
                        elif math.isfinite(c.low):
                            intervals_null += 1
                            covered_null += c.low <= 0 <= c.high
                else:
                    planted = next(c for c in report.claims if c.claim.startswith(PLANTED))
                    planted_effects.append(planted.effect)
                    decided += planted.verdict == "confirmed"
                done = index + 1
                if done % 10 == 0 or done == count:
                    print(f"  {kind}: {done}/{count} grids, {time.perf_counter() - start:.0f}s", flush=True)
    frame = pd.DataFrame(means, columns=["kind", "setting", "quantity", "value", "low", "high"])
    frame["truth"] = frame.groupby(["kind", "setting", "quantity"])["value"].transform("mean")
    frame = frame.dropna(subset=["low", "high"])
    coverage = {}
    for quantity, rows in frame.groupby("quantity"):
        k = int(((rows["low"] <= rows["truth"]) & (rows["truth"] <= rows["high"])).sum())
        coverage[quantity] = (k, len(rows))
    effect = float(pd.Series(planted_effects).mean()) if planted_effects else math.nan
    minutes = (time.perf_counter() - start) / 60
    print(f"false verdicts (null grids with a confirmed or contradicted claim; target ≤ 5%): {wilson(false_verdicts, args.null)}")
    print(f"coverage of 95% intervals of null differences (truth 0; {exact} exact no-ops with identical models left out): "
          f"{wilson(covered_null, intervals_null)}")
    for quantity, (k, n) in coverage.items():
        print(f"coverage of 95% intervals of a setting's mean {quantity} error (truth: its mean over grids): {wilson(k, n)}")
    print(f"power: '{PLANTED} reduces overfitting' confirmed at a planted effect of {100 * effect:+.1f} points of "
          f"held-out error: {wilson(decided, args.planted)}")
    print(f"took {minutes:.1f} min")
    if args.save:
        SAVED.write_text(json.dumps({
            "date": datetime.now(UTC).strftime("%Y-%m-%d"), "command": "benchmarks/calibration.py " + " ".join(sys.argv[1:]),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "seeds": args.seeds,
            "false_verdicts": [false_verdicts, args.null], "null_difference_coverage": [covered_null, intervals_null],
            "mean_coverage": {q: list(v) for q, v in coverage.items()},
            "power": [decided, args.planted], "planted_effect": effect,
        }, indent=2) + "\n")
        print(f"saved to {SAVED.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
