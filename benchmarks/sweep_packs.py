"""Where a finished sweep's time went, pack by pack, read back from its store.

A worker asks a pack of trials, trains them (their replicates grouped by shape, `batched.py`),
then tells Optuna and MLflow how each ended; this prints each pack a single worker ran: when it
started, how long it took from its first trial's start to its last trial's end (building,
compiling, training, measuring and logging), its settings, and the arithmetic of its training:
about 6 operations per parameter per training example per epoch, both for the parameters the
models have and for those the batched engine computes (hidden widths padded to their bucket,
`batched.width_bucket`), with the rate each reaches over the pack's time. Packs of MLPs on
MNIST-1D only (`-` otherwise: a conv layer's weights serve every position).

    .venv/bin/python benchmarks/sweep_packs.py SWEEP [--store mlruns]
"""

from __future__ import annotations

import argparse
import sys

from study.batched import width_bucket
from study.names import Attr
from study.store import Store, quiet_libraries


def padded_params(params: dict, inputs: int, outputs: int) -> int | None:
    """Parameters the batched engine computes for an MLP trial (None for other models)."""
    if params.get("model.kind", "mlp") != "mlp":
        return None
    depth, width = int(params["model.depth"]), width_bucket(int(params["model.width"]))
    widths = [inputs, *[width] * depth, outputs]
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep")
    parser.add_argument("--store", default="mlruns")
    args = parser.parse_args()
    quiet_libraries()
    import optuna

    store = Store.resolve(args.store)
    try:
        study = optuna.load_study(study_name=args.sweep, storage=store.optuna())
    except KeyError:
        print(f"error: no sweep {args.sweep!r} in {args.store} (study list --store {args.store} lists them)", file=sys.stderr)
        return 2
    client = store.mlflow()
    ended = [t for t in study.trials if t.datetime_start is not None and t.datetime_complete is not None]
    trials = sorted(ended, key=lambda t: t.datetime_start.timestamp())  # type: ignore[union-attr]
    packs: list[list] = []
    for trial in trials:  # one worker: a pack's trials all start before any of them ends
        if packs and trial.datetime_start < max(t.datetime_complete for t in packs[-1]):
            packs[-1].append(trial)
        else:
            packs.append([trial])
    if not packs:
        print(f"{args.sweep}: no finished trial in {args.store}", file=sys.stderr)
        return 1
    total = (packs[-1][-1].datetime_complete - packs[0][0].datetime_start).total_seconds()
    print(f"{args.sweep}: {len(trials)} trials in {len(packs)} packs, {total:.0f} s from the first start to the last end")
    print(f"  {'start':>8} {'seconds':>8} {'trials':>6} {'TFLOP':>7} {'GFLOP/s':>8} {'padded':>7} {'GFLOP/s':>8}  settings")
    for pack in packs:
        seconds = (max(t.datetime_complete for t in pack) - min(t.datetime_start for t in pack)).total_seconds()
        useful, padded = 0.0, 0.0
        known = True
        settings = []
        for trial in pack:
            run = client.get_run(trial.user_attrs[Attr.RUN_ID])
            m, p = run.data.metrics, run.data.params
            replicates = int(p.get("replicates", 1))
            examples, epochs = m.get("data/train_size", 0.0), m.get("fit/epochs", 0.0)
            if p.get("model.kind", "mlp") != "mlp":  # a conv layer's weights serve every position: not 6 per parameter
                known = False
            useful += 6 * m.get("model/params", 0.0) * examples * epochs * replicates
            mnist1d = p.get("dataset.name") == "mnist1d"  # its shape is in the params: length inputs, 10 classes
            computed = padded_params(p, int(p["dataset.length"]), 10) if mnist1d else None
            if computed is None:
                known = False
            else:
                padded += 6 * computed * examples * epochs * replicates
            settings.append(",".join(f"{v}" for v in trial.params.values()))
        dash = f"{'-':>7} {'-':>8}"
        rate = f"{useful / 1e12:7.2f} {useful / seconds / 1e9:8.0f}" if known and seconds else dash
        extra = f"{padded / 1e12:7.2f} {padded / seconds / 1e9:8.0f}" if known and seconds else dash
        print(f"  {pack[0].datetime_start:%H:%M:%S} {seconds:8.0f} {len(pack):6d} {rate} {extra}  "
              f"{' '.join(sorted(settings))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
