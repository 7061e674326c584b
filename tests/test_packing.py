"""Packed training: a model trained in a pack is the model trained alone.

Each test trains the same settings alone (packs of one) and packed, and compares what a user
sees: per-epoch history, final weights, how and when training stopped (early stopping, pruning,
divergence), the trial's replicates, and (end to end) every MLflow record of a sweep.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

from study.batched import fit_together
from study.config import load_sweep
from study.datasets import load_dataset
from study.keras_compat import keras
from study.models import build_model
from study.multifit import Member
from study.objective import TrialJob, run_trials
from study.schema import ModelSpec, Setup, TrainSpec
from study.sweep import run_sweep
from study.worker import trials_per_pack


def close(a, b, rel=1e-5, tiny=1e-6) -> bool:
    """Equal, with floats equal to float32 rounding: a batched matrix product of several members
    may split its sums differently from one member's, so the last bits of a measurement can move."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or abs(a - b) <= max(tiny, rel * max(abs(a), abs(b)))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], rel, tiny) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(close(x, y, rel, tiny) for x, y in zip(a, b))
    return a == b


def toy(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64)


def member(width=8, depth=1, dropout=0.0, seed=0, on_epoch=None, task="classification", x=None, y=None, **train):
    x, y = (x, y) if x is not None else toy()
    keras.utils.set_random_seed(seed)
    scale = (float(y.mean()), float(y.std())) if task == "regression" else None
    model = build_model(ModelSpec(width=width, depth=depth, dropout=dropout), (4,), "tabular", 1 if scale else 2, scale)
    spec = TrainSpec.model_validate({"epochs": 6, "batch_size": 32, **train})
    return Member(model, spec, task, (x, y), (x[:64], y[:64]), seed, on_epoch=on_epoch)


def alone_and_packed(make):
    """make(i) -> Member, for i in range(k): each trained alone, then all in one pack."""
    keras.backend.clear_session()
    alone = [make(i) for i in range(len(KINDS))]
    for m in alone:
        fit_together([m])
    keras.backend.clear_session()
    packed = [make(i) for i in range(len(KINDS))]
    fit_together(packed)
    return alone, packed


KINDS = [  # settings that may share a pack: widths, depths, dropout, rates, epochs, penalties differ
    dict(width=8, depth=1),
    dict(width=32, depth=2, dropout=0.3, learning_rate=3e-3),
    dict(width=16, depth=3, epochs=3, optimizer="sgd", momentum=0.9, learning_rate=0.05),
    dict(width=4, depth=1, epochs=9, optimizer="rmsprop"),
    dict(width=8, depth=2, early_stopping={"enabled": True, "patience": 1, "min_delta": 0.05}, epochs=30),
]


def same(a: Member, b: Member):
    assert a.result.history == b.result.history
    assert (a.result.epochs, a.result.stopped, a.result.reason, a.result.best_epoch, a.result.stopped_epoch) == (
        b.result.epochs, b.result.stopped, b.result.reason, b.result.best_epoch, b.result.stopped_epoch)
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_a_packed_model_is_the_model_trained_alone():
    alone, packed = alone_and_packed(lambda i: member(seed=i, **KINDS[i]))
    for a, b in zip(alone, packed):
        same(a, b)
    assert [m.result.epochs for m in packed][:4] == [6, 6, 3, 9], "each model keeps its own epoch budget"
    stopped = packed[4].result
    assert stopped.stopped == "early_stopping" and stopped.stopped_epoch == stopped.epochs < 30
    assert "did not improve for 1 epochs" in stopped.reason


def test_early_stopping_restores_the_best_weights_as_keras_does():
    keras.backend.clear_session()
    m = member(epochs=40, learning_rate=0.05, early_stopping={"enabled": True, "patience": 2, "monitor": "val/loss"})
    x_val, _ = toy(64, seed=1)
    m.val = (x_val, np.random.default_rng(2).integers(0, 2, 64))  # labels it cannot learn: val loss soon rises
    fit_together([m])
    losses = [h["val_loss"] for h in m.result.history]
    best = int(np.argmin(losses))
    assert m.result.best_epoch == best + 1 and m.result.epochs == best + 3, "stops `patience` epochs after the best"
    x, y = m.val
    restored = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, m.model(x, training=False)).numpy()
    assert restored == pytest.approx(losses[best], rel=1e-4), "the weights are the best epoch's"


@pytest.mark.slow
def test_pruning_stops_one_member_and_leaves_the_others_as_they_were():
    def make(i):
        return member(seed=i, on_epoch=(lambda e, m: "enough" if e == 2 else None) if i == 1 else None, **KINDS[i])

    alone, packed = alone_and_packed(make)
    for a, b in zip(alone, packed):
        same(a, b)
    assert packed[1].result.stopped == "pruned" and packed[1].result.reason == "enough" and packed[1].result.epochs == 2
    assert len(packed[1].result.history) == 2 and packed[0].result.epochs == 6


def test_a_diverging_member_stops_alone_and_the_others_train_on():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype(np.float32)
    y = (x.sum(axis=1) * 100).astype(np.float32)

    def make(i):
        optimizer = {"optimizer": "sgd", "learning_rate": 1e6} if i == 1 else {"optimizer": "adam", "learning_rate": 1e-3}
        return member(seed=i, task="regression", x=x, y=y, epochs=4, **optimizer)

    alone, packed = alone_and_packed(make)
    for a, b in zip(alone, packed):
        same(a, b)
    bad = packed[1].result
    assert bad.stopped == "diverged" and bad.epochs == 1 and "non-finite" in bad.reason and "batch" in bad.reason
    assert all(p.result.stopped is None and p.result.epochs == 4 for i, p in enumerate(packed) if i != 1)
    assert set(packed[0].result.history[0]) == {"train_loss", "val_loss", "train_mae", "val_mae"}


def test_models_that_cannot_share_a_pack_are_refused():
    with pytest.raises(ValueError, match="cannot share a pack"):
        fit_together([member(), member(batch_size=64)])


# ----------------------------------------------------------------------------- trials
class Recorder:
    """A trial observer that prunes replicate 0 at `prune_at` and records what it was told."""

    def __init__(self, prune_at=None):
        self.prune_at, self.events = prune_at, []

    def epoch(self, replicate, epoch, metrics):
        self.events.append(("epoch", replicate, epoch, metrics))
        return "pruned here" if replicate == 0 and epoch == self.prune_at else None

    def replicate_end(self, replicate):
        self.events.append(("end", replicate.index, replicate.status, replicate.metrics.get("test/accuracy")))


def trial_outcomes(pack: int, observers=None, widths=(8, 16, 32), epochs=(4, 4, 4)):
    data = load_dataset(Setup.model_validate({"dataset": {"name": "mnist1d", "num_samples": 400}}).dataset, 0, ".")
    setups = [
        Setup.model_validate({"dataset": {"name": "mnist1d", "num_samples": 400}, "model": {"width": w, "depth": 1},
                              "train": {"epochs": e, "batch_size": 64}})
        for w, e in zip(widths, epochs)
    ]
    observers = observers or [Recorder(), Recorder(prune_at=2), Recorder()]
    with tempfile.TemporaryDirectory() as folder:
        jobs = [TrialJob(s, data, 0, 3, Path(folder) / str(i), o) for i, (s, o) in enumerate(zip(setups, observers))]
        results = run_trials(jobs, pack)
    return results, observers


@pytest.mark.slow
def test_trials_packed_tell_their_observers_what_trials_alone_would():
    alone, seen_alone = trial_outcomes(pack=1)
    packed, seen_packed = trial_outcomes(pack=9)
    for a, p in zip(alone, packed):
        assert close([(r.index, r.seed, r.status, r.reason, r.history) for r in a.replicates],
                    [(r.index, r.seed, r.status, r.reason, r.history) for r in p.replicates])
        assert close({k: v for k, v in a.metrics.items() if "seconds" not in k}, {k: v for k, v in p.metrics.items() if "seconds" not in k})
    assert close([o.events for o in seen_alone], [o.events for o in seen_packed]), "the same calls, in the same order"
    pruned = packed[1]
    assert pruned.status == "pruned" and [r.index for r in pruned.replicates] == [0], "a pruned trial trains no more replicates"
    assert [len(r.replicates) for r in packed] == [3, 1, 3]


def test_the_next_packs_graph_compiles_while_a_pack_trains(monkeypatch):
    from study import batched, objective

    monkeypatch.setattr(batched, "_ENGINES", {})  # no shape seen yet
    monkeypatch.setattr(objective, "LANES", 1)  # one pack at a time
    before, traced = batched.compiled_ahead(), batched.traces()
    results, _ = trial_outcomes(pack=3)  # three packs, one trial each, of three widths
    assert all(not isinstance(r, BaseException) for r in results)
    assert batched.compiled_ahead() - before == 2, "the second and third packs' graphs, each while the one before trained"
    assert batched.traces() - traced == 3, "one trace a shape: the packs ran the graphs compiled ahead"


def test_a_pack_whose_graph_is_ready_builds_no_model_to_find_its_shape(monkeypatch):
    """Compiling the next pack's graph ahead reads its shape from a model built and thrown away;
    when the same settings come again (a search asks many of one shape), the graph is known ready
    and only the packs' own models are built."""
    from study import batched, objective

    monkeypatch.setattr(batched, "_ENGINES", {})  # no shape seen yet
    monkeypatch.setattr(objective, "_GRAPH_OF", {})
    monkeypatch.setattr(objective, "LANES", 1)  # one pack at a time
    built: list[str] = []
    build = objective.build_for

    def counted(*args, **kwargs):
        built.append("model")
        return build(*args, **kwargs)

    monkeypatch.setattr(objective, "build_for", counted)
    trial_outcomes(pack=3)  # three packs of one trial's 3 replicates each, of three widths
    assert len(built) == 9 + 2, "the 9 models, and one each to read the second and third packs' shapes"
    built.clear()
    before, traced = batched.compiled_ahead(), batched.traces()
    results, _ = trial_outcomes(pack=3)
    assert all(not isinstance(r, BaseException) for r in results)
    assert len(built) == 9, "the graphs are ready: the packs' own models only"
    assert (batched.compiled_ahead(), batched.traces()) == (before, traced), "nothing compiled or traced again"


def seen(results, observers) -> tuple:
    """What trials tell: each replicate's state, history and measurements (times aside), and the
    observers' calls in order."""
    replicates = [[(r.index, r.seed, r.status, r.reason, r.history, {k: v for k, v in r.metrics.items() if "seconds" not in k})
                   for r in result.replicates] for result in results]
    return replicates, [o.events for o in observers]


@pytest.mark.parametrize("engine", ["batched", "graphs"])
def test_packs_side_by_side_end_as_packs_one_after_another(monkeypatch, engine):
    """Two lanes: the three trials' packs (three widths) train two at a time and end, to the bit,
    as they do one at a time (histories, measurements, pruning, the observers' calls in order).
    Models outside the batched engine (`graphs`) train one pack at a time either way."""
    from study import batched, objective

    monkeypatch.setattr(batched, "BATCHED", engine == "batched")
    monkeypatch.setattr(objective, "LANES", 1)
    one_at_a_time = seen(*trial_outcomes(pack=3))
    monkeypatch.setattr(objective, "LANES", 2)
    side_by_side = seen(*trial_outcomes(pack=3))
    assert side_by_side == one_at_a_time
    assert [len(replicates) for replicates in side_by_side[0]] == [3, 1, 3], "the pruned trial trained no more replicates"


def test_a_trials_replicates_end_in_order_beside_other_trials(monkeypatch):
    """Packs of 2 models over three trials of one shape, 3 replicates each: [P0 P1] [P2 Q0] [Q1 Q2]
    [R0 R1] [R2]. Q trains twice P's epochs, so [Q1 Q2] has the most arithmetic, yet it waits for
    [P2 Q0], as R's last pack waits for its first, whose pruned R0 drops R1 and R2."""
    from study import objective

    def observers():
        return [Recorder(), Recorder(), Recorder(prune_at=2)]

    monkeypatch.setattr(objective, "LANES", 1)
    one_at_a_time = seen(*trial_outcomes(pack=2, observers=observers(), widths=(16, 16, 16), epochs=(4, 8, 4)))
    monkeypatch.setattr(objective, "LANES", 2)
    side_by_side = seen(*trial_outcomes(pack=2, observers=observers(), widths=(16, 16, 16), epochs=(4, 8, 4)))
    assert side_by_side == one_at_a_time
    assert [len(replicates) for replicates in side_by_side[0]] == [3, 3, 1]


def test_two_lanes_train_two_packs_at_once(monkeypatch):
    """The first pack to train waits until a second has started: it never does one at a time."""
    from study import objective

    monkeypatch.setattr(objective, "LANES", 2)
    second = threading.Event()
    waited, lanes = [], []
    fit = objective.fit_together

    def watched(members):
        lanes.append(threading.current_thread().name)
        if len(lanes) == 1:
            waited.append(second.wait(timeout=120))
        else:
            second.set()
        return fit(members)

    monkeypatch.setattr(objective, "fit_together", watched)
    results, _ = trial_outcomes(pack=3)
    assert all(not isinstance(r, BaseException) for r in results)
    assert waited == [True], "a second pack started while the first waited"
    assert len(lanes) == 3 and all(name.startswith("study-lane") for name in lanes)


class Interrupting(Recorder):
    """Ctrl+C (a KeyboardInterrupt) from its observer: in a lane (an epoch's call) or in the thread
    that runs the lanes (a trained replicate's)."""

    def __init__(self, where: str):
        super().__init__()
        self.where = where

    def epoch(self, replicate, epoch, metrics):
        if self.where == "epoch" and epoch == 2:
            raise KeyboardInterrupt
        return super().epoch(replicate, epoch, metrics)

    def replicate_end(self, replicate):
        if self.where == "end":
            raise KeyboardInterrupt
        super().replicate_end(replicate)


@pytest.mark.parametrize("where", ["epoch", "end"])
def test_ctrl_c_in_a_lane_or_beside_them_stops_every_lane(monkeypatch, where):
    from study import objective

    monkeypatch.setattr(objective, "LANES", 2)
    with pytest.raises(KeyboardInterrupt):
        trial_outcomes(pack=3, observers=[Recorder(), Interrupting(where), Recorder()])
    assert not [t.name for t in threading.enumerate() if t.name.startswith("study-lane")], "no lane left running"
    results, _ = trial_outcomes(pack=3)  # and the next packs train as ever
    assert [len(r.replicates) for r in results] == [3, 1, 3]


def test_packs_of_one_graph_share_their_shape_and_no_others():
    """`_shape_of` drops only what members hold in tensors, and keeps the width as padded:
    equal settings mean one graph (a wrong match would only skip a compile ahead)."""
    from study.objective import _shape_of

    data = load_dataset(Setup.model_validate({"dataset": {"name": "mnist1d", "num_samples": 400}}).dataset, 0, ".")

    def shape(count=3, **changes):
        settings = {"dataset": {"name": "mnist1d", "num_samples": 400}, "model": {"width": 40, "depth": 2, "l2": 1e-3},
                    "train": {"epochs": 30}}
        for dotted, value in changes.items():
            part, name = dotted.split("__")
            settings[part][name] = value
        return _shape_of(TrialJob(Setup.model_validate(settings), data, 0, 3, Path(".")), count)

    same = [shape(model__width=64), shape(model__l2=0.5), shape(model__dropout=0.0), shape(train__learning_rate=0.1),
            shape(train__epochs=400), shape(train__early_stopping={"enabled": True})]
    assert all(s == shape() for s in same), "a width of the same bucket, other rates, budgets and stopping"
    other = [shape(count=4), shape(model__width=65), shape(model__depth=3), shape(model__l2=0.0), shape(model__dropout=0.2),
             shape(train__epochs=10), shape(train__batch_size=32), shape(train__optimizer="sgd"),
             shape(model__activation="tanh"), shape(model__poly_degree=2)]
    assert all(s != shape() for s in other)
    assert len(set(other)) == len(other)


# ---------------------------------------------------------------------------- sweeps
RECORDED = """
description: packed and unpacked sweeps must leave the same records
dataset: {name: mnist1d, num_samples: 400}
model: {kind: mlp, width: 8, depth: 1}
train:
  optimizer: sgd
  epochs: 4
  batch_size: 64
  early_stopping: {enabled: true, patience: 1, min_delta: 0.02}
search:
  model.width: [4, 16, 32]
  train.learning_rate: [0.1, 1.0e+9]
  model.dropout: [0.0, 0.2]
objective: {val/accuracy: maximize}
sampler: grid
replicates: 2
"""


def records(store, name):
    """Every MLflow run of the sweep as comparable data: names, params, metrics, histories, tags."""
    client = store.mlflow()
    experiment = client.get_experiment_by_name(name)
    out = {}
    for run in client.search_runs([experiment.experiment_id]):
        metrics = {k: v for k, v in run.data.metrics.items() if "seconds" not in k and not k.startswith(("trials/", "best/"))}
        histories = {k: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, k), key=lambda m: m.step)]
                     for k in run.data.metrics if k.startswith("epoch/")}
        tags = {k: v for k, v in run.data.tags.items() if k.startswith("study.") and k not in ("study.error",)}
        tags.pop("study.host", None)
        tags.pop("study.sweep_run", None)  # a run id: differs between stores
        artifacts = sorted(a.path for a in client.list_artifacts(run.info.run_id))
        out[run.info.run_name] = (run.info.status, run.data.params, metrics, histories, tags, artifacts)
    return out


@pytest.mark.slow
def test_a_packed_sweep_records_what_an_unpacked_sweep_records(write_sweep, tmp_path):
    from study.store import Store

    stores = {}
    for pack in (1, 8):
        sweep = load_sweep(write_sweep("recorded", RECORDED), {"pack": pack})
        assert trials_per_pack(sweep) == max(1, pack // 2)
        store = Store.resolve(tmp_path / f"store{pack}")
        summary = run_sweep(sweep, store)
        assert summary.counts.done == 12
        stores[pack] = records(store, "recorded")
    alone, packed = stores[1], stores[8]
    assert alone.keys() == packed.keys()
    for name in alone:
        assert close(alone[name], packed[name]), name
    states = [record[4].get("study.state") for record in packed.values()]
    assert "diverged" in states and "finished" in states
