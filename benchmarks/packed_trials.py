"""Trials per hour, one at a time and packed, on the same fixed list of trial settings.

Three workloads, each trained in one process by four engines, interleaved `--repeats` times:

- `search`: 20 settings drawn once (fixed seed) from a naive Optuna + Keras sweep's space: an MLP on
  MNIST-1D, depth 1-3, width 32-512 (log), dropout 0-0.5, L2 1e-6-1e-2 (log), learning rate
  1e-4-1e-2 (log), 10-50 epochs, batch 128, Adam.
- `replicates`: 10 replicates (seeds 0-9) of one setting (2 x 64, dropout 0.1, 30 epochs, batch 128).
- `cnn`: 8 replicates (seeds 0-7) of `demo_compression`'s base, a CNN of 3 conv layers of 32
  channels (kernel 5, stride 2), learning rate 1e-2, 25 epochs, batch 64, on MNIST-1D.

Engines: `keras` trains each model with Keras' `fit` (the engine before packing; compression still
uses it); `graphs` packs `--pack` models as graphs side by side (multifit.Pack, the engine before
batching, which separable CNNs still use); `alone` trains one model at a time with the batched engine
(`pack: 1`); `batched` packs `--pack` models as one batched model (batched.py). Every engine measures and saves each model as a trial does (final metrics in
inference mode, the .keras file); MLflow and Optuna bookkeeping is left out, being the same for
all (see benchmarks/trial_overhead.py). The time includes building models and tracing graphs.

Printed, for the first round and for the median of the later ones apart (the batched engine
traces and compiles each shape in the first round, as a sweep does in its first packs, and reuses
the graphs after, as a sweep's later packs do; each engine keeps graphs of its own, so that its
first round starts cold; the other engines trace every pack anew): seconds,
trials per hour, the ratio to `keras` and to `graphs`, the graphs the batched engine traced in
each round; then the arithmetic the training does against
what this machine's matrix multiply reaches (where the time goes), and the held-out accuracy: the largest
difference between a model trained alone and packed at the same seed (the same computation, so 0
is expected), and the mean difference from `keras` (another batch order and other dropout masks:
seed noise) with a 95% interval over the paired settings.

    .venv/bin/python benchmarks/packed_trials.py [--pack 8] [--repeats 1] [--workload search replicates]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats
from shipped_sweeps import cpu_model  # this folder is the script's first import path

from study.datasets import load_dataset
from study.keras_compat import keras, tf
from study.objective import TrialJob, end_replicate, run_trials
from study.replicate import build_for, prepare_inputs
from study.schema import Setup
from study.training import fit


def search_settings(count: int = 20) -> list[Setup]:
    rng = np.random.default_rng(2026)
    log = lambda low, high: float(np.exp(rng.uniform(np.log(low), np.log(high))))  # noqa: E731
    setups = []
    for _ in range(count):
        setups.append(Setup.model_validate({
            "dataset": {"name": "mnist1d"},
            "model": {"kind": "mlp", "depth": int(rng.integers(1, 4)), "width": round(log(32, 512)),
                      "dropout": float(rng.uniform(0, 0.5)), "l2": log(1e-6, 1e-2)},
            "train": {"optimizer": "adam", "learning_rate": log(1e-4, 1e-2), "batch_size": 128,
                      "epochs": int(rng.integers(10, 51))},
        }))
    return setups


def replicate_setting() -> Setup:
    return Setup.model_validate({
        "dataset": {"name": "mnist1d"},
        "model": {"kind": "mlp", "depth": 2, "width": 64, "dropout": 0.1},
        "train": {"learning_rate": 3e-3, "batch_size": 128, "epochs": 30},
    })


def cnn_setting() -> Setup:
    return Setup.model_validate({
        "dataset": {"name": "mnist1d"},
        "model": {"kind": "cnn", "depth": 3, "width": 32},
        "train": {"learning_rate": 1e-2, "batch_size": 64, "epochs": 25},
    })


def workloads() -> dict[str, list[tuple[Setup, int]]]:
    """(setting, seed) pairs: the trials of each workload."""
    return {
        "search": [(setup, 0) for setup in search_settings()],
        "replicates": [(replicate_setting(), seed) for seed in range(10)],
        "cnn": [(cnn_setting(), seed) for seed in range(8)],
    }


def run_keras(trials, data, folder: Path) -> list[float]:
    accuracies = []
    for number, (setup, seed) in enumerate(trials):
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        inputs = prepare_inputs(setup, data, seed)
        model = build_for(setup, data, inputs)
        fitted = fit(model, (inputs.x_train, inputs.y_train), (inputs.x_val, inputs.y_val), setup.train)
        result = end_replicate(setup, data, 0, seed, inputs, model, fitted, folder / f"k{number}")
        accuracies.append(result.metrics["test/accuracy"])
    return accuracies


ARITHMETIC: dict[str, float] = {}  # workload -> floating-point operations of its training


def run_packed(trials, data, folder: Path, pack: int, workload: str = "") -> list[float]:
    jobs = [TrialJob(setup, data, seed, 1, folder / f"p{pack}-{n}") for n, (setup, seed) in enumerate(trials)]
    results = run_trials(jobs, pack)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    # about 6 operations per parameter per training example: 2 forward, 4 backward
    ARITHMETIC[workload] = sum(
        6 * r.metrics["model/params"] * r.metrics["data/train_size"] * r.metrics["fit/epochs"] for r in results
    )
    return [r.replicates[0].metrics["test/accuracy"] for r in results]


def run_graphs(trials, data, folder: Path, pack: int) -> list[float]:
    """The packed engine before batching: every member its own graph in one tf.function."""
    from study import batched

    batched.BATCHED = False
    try:
        return run_packed(trials, data, folder, pack)
    finally:
        batched.BATCHED = True


def matmul_rate() -> float:
    """Operations per second of a 128 x 512 by 512 x 512 float32 product, called from a graph
    in a loop: roughly the best this machine does on the arithmetic of these models."""

    a, b = tf.random.normal((128, 512)), tf.random.normal((512, 512))
    repeat = tf.function(lambda a, b: tf.foldl(lambda acc, _: acc + tf.matmul(a, b)[0, 0], tf.range(500), 0.0))
    repeat(a, b)
    start = time.perf_counter()
    repeat(a, b)
    return 500 * 2 * 128 * 512 * 512 / (time.perf_counter() - start)


def setup_cost(data, pack: int) -> tuple[float, float, float]:
    """Seconds to trace one pack of the search workload's first `pack` settings, to run its first
    epoch (TensorFlow optimizes the graph then), and to run a later epoch."""
    from study.multifit import Member, Pack
    from study.objective import start_replicate

    keras.backend.clear_session()
    members = []
    for setup in search_settings()[:pack]:
        inputs, model = start_replicate(setup, data, 0)
        members.append(Member(model, setup.train, data.task, (inputs.x_train, inputs.y_train), (inputs.x_val, inputs.y_val), 0))
    built = Pack(members)
    orders = tf.constant(np.stack([np.random.default_rng(0).permutation(built.n) for _ in members]), dtype=tf.int32)
    active = tf.constant(np.ones(len(members), dtype=bool))
    start = time.perf_counter()
    built.epoch_fn.get_concrete_function(orders, active)
    traced = time.perf_counter()
    built.epoch_fn(orders, active)
    first = time.perf_counter()
    built.epoch_fn(orders, active)
    return traced - start, first - traced, time.perf_counter() - first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pack", type=int, default=8, help="models per pack for the packed engine")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds; medians are printed")
    parser.add_argument("--workload", nargs="+", default=["search", "replicates", "cnn"],
                        choices=["search", "replicates", "cnn"])
    parser.add_argument("--packed-only", action="store_true", help="time the packed engine alone (to compare pack sizes)")
    args = parser.parse_args()
    data = load_dataset(Setup.model_validate({"dataset": {"name": "mnist1d"}}).dataset, 0, ".")
    engines = {"keras": lambda t, f: run_keras(t, data, f),
               f"graphs({args.pack})": lambda t, f: run_graphs(t, data, f, args.pack),
               "alone": lambda t, f: run_packed(t, data, f, 1),
               f"batched({args.pack})": lambda t, f: run_packed(t, data, f, args.pack, current[0])}
    current = [""]
    if args.packed_only:
        engines = {name: run for name, run in engines.items() if name.startswith("batched")}
    peak = matmul_rate()
    print(f"packed_trials: pack {args.pack}, {args.repeats} round(s), engines interleaved; {cpu_model()}, {os.cpu_count()} cores")
    from study import batched

    for name in args.workload:
        trials = workloads()[name]
        current[0] = name
        seconds: dict[str, list[float]] = {engine: [] for engine in engines}
        traced: list[int] = []  # graphs the batched engine traced in each round
        accuracy = {}
        # each engine keeps its own traced graphs (a sweep runs one engine): its first round starts
        # with none, as a fresh process does, whatever ran before it here
        caches: dict[str, dict] = {engine: {} for engine in engines}
        for _ in range(args.repeats):
            for engine, run in engines.items():
                batched._ENGINES = caches[engine]
                before = batched.traces()
                with tempfile.TemporaryDirectory() as folder:
                    start = time.perf_counter()
                    accuracy[engine] = run(trials, Path(folder))
                    seconds[engine].append(time.perf_counter() - start)
                if engine == f"batched({args.pack})":
                    traced.append(batched.traces() - before)
        print(f"\n{name}: {len(trials)} trials")
        if args.packed_only:
            s = statistics.median(next(iter(seconds.values())))
            print(f"  batched({args.pack}): {s:.1f} s, {len(trials) * 3600 / s:.0f} trials/hour")
            continue
        # the first round traces every shape of the batched engine (a sweep's first packs); later
        # rounds reuse its graphs (a sweep's later packs); the other engines trace every pack anew
        rounds = {"first round": lambda v: v[0], "later rounds": lambda v: statistics.median(v[1:] or v)}
        for label, pick in rounds.items():
            base, graphs = pick(seconds["keras"]), pick(seconds[f"graphs({args.pack})"])
            print(f"  {label}{' (median)' if label == 'later rounds' else ''}:")
            print(f"    {'engine':<12} {'seconds':>8} {'trials/hour':>12} {'vs keras':>9} {'vs graphs':>10} {'mean test acc':>14}")
            for engine in engines:
                s = pick(seconds[engine])
                print(f"    {engine:<12} {s:8.1f} {len(trials) * 3600 / s:12.0f} {base / s:8.2f}x {graphs / s:9.2f}x "
                      f"{np.mean(accuracy[engine]):14.4f}")
        print(f"  batched({args.pack}) traced {', '.join(map(str, traced))} graph(s) in rounds 1-{len(traced)} "
              "(one per shape, then reused)")
        packed = f"batched({args.pack})"
        if len(seconds[packed]) > 1:
            later = statistics.median(seconds[packed][1:])
            print(f"  batched({args.pack}) setup (tracing and compiling its shapes: first round - later rounds): "
                  f"{seconds[packed][0] - later:.1f} s; steady (a later round): {later:.1f} s")
        gap = np.max(np.abs(np.array(accuracy["alone"]) - np.array(accuracy[packed])))
        print(f"  largest |test accuracy alone - packed| at the same seed: {gap:.4f}")
        diff = np.array(accuracy[packed]) - np.array(accuracy["keras"])
        half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
        print(f"  packed - keras test accuracy, mean over settings: {diff.mean():+.4f} (95% CI {diff.mean() - half:+.4f} to {diff.mean() + half:+.4f})")
        if name == "search":
            trace, first, later = setup_cost(data, args.pack)
            print(f"  graphs, one pack of {args.pack}: tracing {trace:.2f} s, first epoch {first:.2f} s (graph "
                  f"optimization), a later epoch {later:.2f} s; every pack traces again")
        if name == "cnn":  # a conv layer's weights serve every position: not 6 operations per parameter
            continue
        rate = ARITHMETIC[name] / statistics.median(seconds[packed][1:] or seconds[packed])
        print(f"  arithmetic: {ARITHMETIC[name] / 1e9:.0f} GFLOP of training; packed runs it at {rate / 1e9:.1f} GFLOP/s, "
              f"{100 * rate / peak:.0f}% of a 128x512x512 matmul's {peak / 1e9:.1f} GFLOP/s here (later rounds)")


if __name__ == "__main__":
    main()
