"""Where a trial's time goes: training, measuring, saving, and MLflow/Optuna bookkeeping.

Runs a sweep in this process into a temporary store, with timers around the real functions,
and prints a breakdown per trial (trials train in packs, as the sweep's `pack` says; the times of
a pack are shared out over its trials). By default a small search of its own; `--sweep FILE`
runs that sweep file instead (a shipped one, say). Tracking should cost a few percent of a trial.

Where packs train side by side (`objective.LANES`), the packs' training runs in lanes while the
main thread measures, saves and logs: the parts then add up to more than the trials' time, and
each part's seconds are the time its calls took, not time they added to the sweep.

    .venv/bin/python benchmarks/trial_overhead.py [--trials 12] [--epochs 20] [--sweep FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import tempfile
import textwrap
import time
from collections import defaultdict
from pathlib import Path

SWEEP = """
description: overhead benchmark
dataset: {{name: mnist1d}}
model: {{kind: mlp, depth: 2}}
train: {{epochs: {epochs}}}
search:
  model.width: {{type: int, low: 16, high: 128, log: true}}
sampler: random
objective: {{val/accuracy: maximize}}
budget: {{trials: {trials}}}
"""

spent: dict[str, float] = defaultdict(float)


def timed(owner, name: str, label: str) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[label] += time.perf_counter() - start

    setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--sweep", type=Path, help="a sweep file to run instead of the built-in search")
    args = parser.parse_args()

    start = time.perf_counter()
    from study import keras_compat  # noqa: F401
    import_seconds = time.perf_counter() - start

    from study import objective, replicate, runner, sweep, tracking
    from study.config import load_sweep
    from study.store import Store

    # objective calls these by the names it imported, so they are timed there
    timed(objective, "fit_together", "training (packs)")
    timed(replicate, "predict", "predict (3 splits)")
    timed(objective, "save_model", "save model")
    timed(tracking.Tracker, "start_trial", "mlflow: start run")
    timed(tracking.Tracker, "start_replicate", "mlflow: start replicate run")
    timed(tracking.TrialRun, "flush", "mlflow: epoch metrics")
    timed(tracking.TrialRun, "end_replicate", "mlflow: end replicate run")
    timed(tracking.TrialRun, "finish", "mlflow: finish + artifacts")
    timed(replicate, "write_outputs", "write artifacts")
    timed(runner.optuna.Study, "tell", "optuna: tell")
    timed(runner.optuna.Study, "ask", "optuna: ask")
    timed(runner, "best_runs", "optuna: best set")
    timed(runner, "progress_metrics", "sweep progress")
    timed(runner, "run_pack", "trial total")

    with tempfile.TemporaryDirectory() as folder:
        path = args.sweep or Path(folder) / "overhead.yaml"
        if args.sweep is None:
            path.write_text(textwrap.dedent(SWEEP.format(trials=args.trials, epochs=args.epochs)))
        store = Store.resolve(Path(folder) / "store")
        start = time.perf_counter()
        with contextlib.redirect_stderr(None):
            summary = sweep.run_sweep(load_sweep(path), store)
        wall = time.perf_counter() - start
    trials = summary.counts.done if args.sweep else args.trials
    what = f"{path.name}, {trials} trials" if args.sweep else f"{trials} trials, {args.epochs} epochs each"

    total = spent["trial total"]
    print(f"import TensorFlow + Keras: {import_seconds:.2f} s (once per process)")
    print(f"sweep of {what}: {wall:.1f} s wall, {total:.1f} s in trials")
    print(f"{'part':28s} {'s/trial':>8s} {'% of trial':>10s}")
    for label, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        if label == "trial total":
            continue
        print(f"{label:28s} {seconds / trials:8.3f} {100 * seconds / total:9.1f}%")
    tracking_seconds = sum(v for k, v in spent.items() if k.startswith(("mlflow", "optuna", "sweep progress")))
    print(f"{'all tracking':28s} {tracking_seconds / trials:8.3f} {100 * tracking_seconds / total:9.1f}%")
    print(f"{'trial total':28s} {total / trials:8.3f} {100.0:9.1f}%")


if __name__ == "__main__":
    main()
