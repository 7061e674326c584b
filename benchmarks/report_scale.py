"""How long `study report` takes on a sweep of many runs.

Writes a synthetic sweep of N trial runs (params, per-epoch curves, final metrics and tags as a
capacity sweep logs them, plus the matching Optuna study) into a temporary store, then times
building its report and prints the page's size (index.html, figures inline as SVG) and its
figures (the SVG files under the report's figures/ folder), the largest first.

    .venv/bin/python benchmarks/report_scale.py [--runs 2000] [--epochs 20] [--store DIR] [--out DIR]

--store keeps the synthetic store in DIR and reuses it when it is already there (writing 10,000
runs takes minutes); --out keeps the report in DIR.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_sweep(store, name: str, runs: int, epochs: int, seed: int = 0) -> None:
    import optuna
    from mlflow.entities import Metric, Param, RunStatus

    from study.store import quiet_libraries

    quiet_libraries()
    rng = np.random.default_rng(seed)
    store.init()
    client = store.mlflow()
    experiment = client.create_experiment(name, artifact_location=f"{store.artifact_root}/{name}",
                                          tags={"mlflow.note.content": "synthetic capacity sweep", "study.name": name})
    search = {"model.width": {"type": "categorical", "choices": [4, 16, 64, 256]},
              "model.depth": {"type": "categorical", "choices": [1, 2, 3]},
              "model.dropout": {"type": "categorical", "choices": [0.0, 0.25, 0.5]}}
    sweep = client.create_run(experiment, run_name=name, tags={"study.role": "sweep", "study.name": name})
    client.log_batch(sweep.info.run_id, params=[Param("search", json.dumps(search)), Param("objective", json.dumps({"val/accuracy": "maximize"})),
                                                Param("sampler", "random"), Param("pruner", "none")])
    client.set_terminated(sweep.info.run_id)
    study = optuna.create_study(study_name=name, storage=store.optuna(), direction="maximize")
    distributions = {k: optuna.distributions.CategoricalDistribution(v["choices"]) for k, v in search.items()}
    trials = []
    now = int(time.time() * 1000)
    for number in range(runs):
        width, depth, dropout = (int(rng.choice([4, 16, 64, 256])), int(rng.choice([1, 2, 3])), float(rng.choice([0.0, 0.25, 0.5])))
        capacity = np.log2(width) * depth / 24
        train_acc = min(1.0, 0.3 + 0.7 * capacity + rng.normal(0, 0.02))
        test_acc = train_acc - (0.25 * capacity * (1 - dropout)) + rng.normal(0, 0.02)
        params = {"model.width": width, "model.depth": depth, "model.dropout": dropout, "model.kind": "mlp",
                  "train.epochs": epochs, "dataset.name": "mnist1d", "seed": 0, "replicates": 1}
        metrics = {"train/accuracy": train_acc, "val/accuracy": test_acc + 0.01, "test/accuracy": test_acc,
                   "train/loss": 2 * (1 - train_acc), "val/loss": 2 * (1 - test_acc), "test/loss": 2 * (1 - test_acc),
                   "model/params": width * 40 * depth, "data/test_size": 1000, "fit/seconds": 2.0, "fit/epochs": epochs, "fit/best_epoch": epochs // 2}
        run = client.create_run(experiment, run_name=f"trial-{number:04d}", tags={
            "mlflow.parentRunId": sweep.info.run_id, "study.role": "trial", "study.trial": str(number),
            "study.state": "finished", "study.name": name, "study.sampled": json.dumps(list(search))})
        curve = [Metric(f"epoch/{k}", v * (1 + 1 / e), now, e) for e in range(1, epochs + 1)
                 for k, v in (("train_loss", 2 * (1 - train_acc)), ("val_loss", 2 * (1 - test_acc)))]
        client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()] + curve,
                         params=[Param(k, str(v)) for k, v in params.items()])
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FINISHED))
        trials.append(optuna.trial.create_trial(
            params={"model.width": width, "model.depth": depth, "model.dropout": dropout}, distributions=distributions,
            value=metrics["val/accuracy"], user_attrs={"mlflow_run_id": run.info.run_id, "study_state": "finished"}))
    study.add_trials(trials)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--store", type=Path, help="keep the synthetic store here (reused when it is there)")
    parser.add_argument("--out", type=Path, help="keep the report here")
    args = parser.parse_args()

    from study.report.build import build_report
    from study.store import Store

    with tempfile.TemporaryDirectory() as folder:
        name = f"synthetic-{args.runs}"
        where = args.store or Path(folder) / "store"
        store = Store.resolve(where)
        marker = where / f"{name}.written"
        if marker.exists():
            print(f"reusing {args.runs} synthetic trial runs in {where}")
        else:
            start = time.perf_counter()
            synthetic_sweep(store, name, args.runs, args.epochs)
            marker.write_text("done\n")
            print(f"wrote {args.runs} synthetic trial runs in {time.perf_counter() - start:.1f} s")
        built = build_report(store, name, args.out or Path(folder) / "reports")
        report(built.path, args.runs, built.seconds)


def report(index: Path, runs: int, seconds: float) -> None:
    """Print the page's size and its figures (SVG files, each also inline in the page)."""
    page = index.stat().st_size
    svgs = sorted((index.parent / "figures").glob("*.svg"), key=lambda p: p.stat().st_size, reverse=True)
    inline = index.read_text(encoding="utf-8").count("data:image/svg+xml")
    print(f"report of {runs} runs: {seconds:.1f} s, page {page / 1e6:.2f} MB, {len(svgs)} figures "
          f"({inline} inline in index.html), figures {sum(p.stat().st_size for p in svgs) / 1e6:.2f} MB as SVG files")
    for path in svgs:
        print(f"  {path.name}: {path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
