"""Where a finished sweep's time went, pack by pack, read back from its store.

A worker asks a pack of trials, trains them (their replicates grouped by shape, `batched.py`),
then tells Optuna and MLflow how each ended; this prints each pack a single worker ran: when it
started, how long it took from its first trial's start to its last trial's end (building,
compiling, training, measuring and logging), the seconds its models spent in their epochs
(`fit/seconds` summed over every model, from the replicates' own runs: compiling and training;
the rest is building, measuring, saving and logging; packs that trained side by side, in lanes,
count each its own wall-clock seconds), its settings, and the arithmetic of its training:
about 6 operations per parameter per training example per epoch, both for the parameters the
models have and for those the batched engine computes (hidden widths padded to their bucket,
`batched.width_bucket`), with the rate each reaches over the pack's time. Packs of MLPs on
MNIST-1D only (`-` otherwise: a conv layer's weights serve every position).

With `--products`, it also times, for each batched model a pack's MLPs on MNIST-1D formed (same
depth and width bucket), plain steps at the same shapes: that many members' padded layers, forward
and back, with a plain gradient step, XLA-compiled with the loop over an epoch's batches inside, as
the engine runs, and nothing else (no loss, masks, optimizer state, validation, dropout or
bookkeeping), for the most epochs a member trained: what the matrix products alone take on this
machine, against the seconds the models spent in their epochs.

Each pack's `idle` column is the share of its slot-epochs that trained no one: a batched model
computes every slot until its last member stops, so a member that stopped early (early stopping,
pruning, a smaller epoch budget) leaves its slot computing zeros; each batched model pays its
members times the most epochs one of them trained (MLP packs; `-` where no model logged epochs).
The batched models are read back from the trials' settings (`batched_models`): members of one
shape beyond the sweep's `pack`, which trained as several batched models, count as one here.

    .venv/bin/python benchmarks/sweep_packs.py SWEEP [--store mlruns] [--products]
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from study.batched import _rows, width_bucket
from study.names import Attr
from study.store import Store, quiet_libraries


def padded_widths(params: dict) -> tuple[int, ...] | None:
    """The layer widths the batched engine computes for an MLP trial on MNIST-1D (its shape is in
    the params: `dataset.length` inputs, 10 classes), hidden ones padded to their bucket; None for
    other models and data."""
    if params.get("model.kind", "mlp") != "mlp" or params.get("dataset.name") != "mnist1d":
        return None
    width = width_bucket(int(params["model.width"]))
    return (int(params["dataset.length"]), *[width] * int(params["model.depth"]), 10)


def model_metrics(client, run, replicates: int) -> list[dict[str, float]]:
    """The metrics of each model a trial trained: its replicates' own runs' (a trial of one
    replicate has no runs of its own: the trial's)."""
    if replicates == 1:
        return [run.data.metrics]
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    return [child.data.metrics for child in children]


def products_seconds(widths: list[int], members: int, batch: int, steps: int, epochs: int, repeats: int = 3) -> float:
    """Seconds `epochs` epochs of `steps` plain steps take for `members` MLPs of these (padded)
    widths as one XLA-compiled batched model: the products forward and back and a gradient step,
    nothing else. Compiled first; the median of `repeats` timed epochs, times `epochs`."""
    from study.keras_compat import tf

    rng = np.random.default_rng(0)
    rows = _rows(batch)  # the engine fills a batch up to a multiple of ROWS
    kernels = [tf.Variable(rng.normal(0, 0.05, (members, a + 1, b)).astype(np.float32))
               for a, b in zip(widths[:-1], widths[1:])]
    x = tf.constant(rng.normal(size=(members, rows, widths[0])).astype(np.float32))
    ones = tf.ones([members, rows, 1])

    @tf.function(jit_compile=True)
    def epoch():
        def body(i):
            with tf.GradientTape() as tape:
                h = x
                for j, w in enumerate(kernels):  # the bias as the kernel's last row, as the engine holds it
                    h = tf.linalg.matmul(tf.concat([h, ones], axis=2), w)
                    h = tf.nn.relu(h) if j < len(kernels) - 1 else h
                total = tf.reduce_sum(h)
            for w, g in zip(kernels, tape.gradient(total, kernels)):
                w.assign_sub(1e-6 * g)
            return (i + 1,)

        tf.while_loop(lambda i: i < steps, body, (tf.constant(0),))

    epoch()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * epochs


def batched_models(pack: list[tuple[dict, dict, list[dict]]]) -> list[tuple[list[int], int, int, int, int, float]]:
    """The batched models a pack's MLP trials on MNIST-1D formed (`batched.shape_key`'s parts that
    these differ in: widths as padded, activation, optimizer, batch, steps, whether they have
    dropout and penalties), from each trial's (params, metrics, its models' metrics), as (padded
    widths, members, batch, steps an epoch, most epochs a member trained, seconds its members
    spent in their epochs)."""
    groups: dict[tuple, list[dict]] = {}
    for p, m, models in pack:
        widths = padded_widths(p)
        if widths is None:
            continue
        batch = int(p["train.batch_size"])
        steps = max(1, math.ceil(m.get("data/train_size", 0.0) / batch))
        flags = (p.get("model.activation"), p.get("train.optimizer"), float(p.get("model.dropout", 0)) > 0,
                 float(p.get("model.l1", 0)) > 0 or float(p.get("model.l2", 0)) > 0)
        groups.setdefault((widths, batch, steps, *flags), []).extend(models)
    return [(list(key[0]), len(models), key[1], key[2], int(max(x.get("fit/epochs", 0.0) for x in models)),
             sum(x.get("fit/seconds", 0.0) for x in models)) for key, models in groups.items()]


def slot_epochs(pack: list[tuple[dict, dict, list[dict]]]) -> tuple[float, float]:
    """(epochs its models trained, slot-epochs its batched models computed) of a pack's MLP trials
    on MNIST-1D: a batched model runs all its slots for as many epochs as its longest member."""
    trained = paid = 0.0
    for _widths, members, _batch, _steps, epochs, _spent in batched_models(pack):
        paid += members * epochs
    for p, _m, models in pack:
        if padded_widths(p) is not None:
            trained += sum(x.get("fit/epochs", 0.0) for x in models)
    return trained, paid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep")
    parser.add_argument("--store", default="mlruns")
    parser.add_argument("--products", action="store_true",
                        help="also time the matrix products alone at each batched model's shapes")
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
    print(f"  {'start':>8} {'seconds':>8} {'epochs s':>8} {'trials':>6} {'TFLOP':>7} {'GFLOP/s':>8} {'padded':>7} {'GFLOP/s':>8} {'idle':>5}  settings")
    in_epochs, products = 0.0, 0.0
    all_trained = all_paid = 0.0
    for pack in packs:
        fitting = 0.0
        seconds = (max(t.datetime_complete for t in pack) - min(t.datetime_start for t in pack)).total_seconds()
        useful, padded = 0.0, 0.0
        known = True
        settings = []
        entries = []  # (params, metrics, its models' metrics) of each trial, read once
        for trial in pack:
            run = client.get_run(trial.user_attrs[Attr.RUN_ID])
            m, p = run.data.metrics, run.data.params
            replicates = int(p.get("replicates", 1))
            models = model_metrics(client, run, replicates)
            entries.append((p, m, models))
            fitting += sum(x.get("fit/seconds", 0.0) for x in models)
            examples, epochs = m.get("data/train_size", 0.0), m.get("fit/epochs", 0.0)
            if p.get("model.kind", "mlp") != "mlp":  # a conv layer's weights serve every position: not 6 per parameter
                known = False
            useful += 6 * m.get("model/params", 0.0) * examples * epochs * replicates
            widths = padded_widths(p)
            if widths is None:
                known = False
            else:
                computed = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
                padded += 6 * computed * examples * epochs * replicates
            settings.append(",".join(f"{v}" for v in trial.params.values()))
        dash = f"{'-':>7} {'-':>8}"
        rate = f"{useful / 1e12:7.2f} {useful / seconds / 1e9:8.0f}" if known and seconds else dash
        extra = f"{padded / 1e12:7.2f} {padded / seconds / 1e9:8.0f}" if known and seconds else dash
        in_epochs += fitting
        trained, paid = slot_epochs(entries)
        all_trained, all_paid = all_trained + trained, all_paid + paid
        idle = f"{1 - trained / paid:5.0%}" if paid else f"{'-':>5}"
        lines = []
        if args.products:
            for widths, members, batch, steps, epochs, spent in sorted(batched_models(entries)):
                alone = products_seconds(widths, members, batch, steps, epochs)
                products += alone
                lines.append(f"    batched model {'x'.join(map(str, widths))}, {members} members, {epochs} epochs: "
                             f"{spent:.0f} s in its epochs, the products alone {alone:.0f} s")
        print(f"  {pack[0].datetime_start:%H:%M:%S} {seconds:8.0f} {fitting:8.0f} {len(pack):6d} {rate} {extra} {idle}  "
              f"{' '.join(sorted(settings))}")
        for line in lines:
            print(line)
    if in_epochs <= total:
        print(f"  in the models' epochs (compiling and training): {in_epochs:.0f} s of {total:.0f} s; "
              f"the rest ({total - in_epochs:.0f} s) built, measured, saved and logged them")
    else:  # a pack's epochs are timed by the wall clock, and packs of several shapes train side by side
        print(f"  in the models' epochs (compiling and training): {in_epochs:.0f} s, more than the {total:.0f} s "
              f"from the first start to the last end: packs trained side by side (`objective.LANES`)")
    if all_paid:
        print(f"  idle slots: {1 - all_trained / all_paid:.0%} of the slot-epochs the batched models computed "
              f"({all_paid - all_trained:.0f} of {all_paid:.0f}) were computed for members that had already stopped")
    if args.products:
        print(f"  the matrix products alone, at the same shapes (MLPs on MNIST-1D): {products:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
