"""The batched engine (batched.py): a pack's MLPs as one model with stacked, padded weights. Its
rules are Keras' own, checked step by step; a member is the same alone and in any pack; padding
stays zero; a shape is traced once."""

from __future__ import annotations

import numpy as np
import pytest

from study import batched
from study.keras_compat import keras
from study.models import build_model
from study.multifit import Member
from study.schema import ModelSpec, TrainSpec


def data(n=96, features=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    return x, (x[:, 0] - x[:, 1] + 0.3 * rng.normal(size=n) > 0).astype(np.int64)


def member(width=8, depth=2, seed=0, dropout=0.0, l1=0.0, l2=0.0, batch_size=32, **train) -> Member:
    x, y = data()
    keras.utils.set_random_seed(seed)
    model = build_model(ModelSpec(width=width, depth=depth, dropout=dropout, l1=l1, l2=l2), (6,), "tabular", 2)
    spec = TrainSpec.model_validate({"epochs": 4, "batch_size": batch_size, **train})
    return Member(model, spec, "classification", (x, y), (x[:32], y[:32]), seed)


def cnn_member(layout="sequence", width=5, depth=2, seed=0, dropout=0.0, l2=0.0, batch_size=32, kernel_size=5, stride=2,
               conv="standard", **train) -> Member:
    x, y = data(features=12)
    shape = (12,) if layout == "sequence" else (4, 3)
    x = x.reshape(-1, *shape)
    keras.utils.set_random_seed(seed)
    model = build_model(ModelSpec(kind="cnn", width=width, depth=depth, dropout=dropout, l2=l2, kernel_size=kernel_size,
                                  stride=stride, conv=conv), shape, layout, 2)
    spec = TrainSpec.model_validate({"epochs": 4, "batch_size": batch_size, **train})
    return Member(model, spec, "classification", (x, y), (x[:32], y[:32]), seed)


def alone_and_packed(make, settings: list[dict]) -> tuple[list[Member], list[Member]]:
    """The same members trained one at a time, then again (built afresh) as one pack."""
    keras.backend.clear_session()
    alone = [make(**s) for s in settings]
    for m in alone:
        batched.fit_together([m])
    keras.backend.clear_session()
    packed = [make(**s) for s in settings]
    batched.fit_together(packed)
    return alone, packed


def assert_identical(alone: list[Member], packed: list[Member]) -> None:
    """Histories, epochs and final weights the same to the last bit."""
    for a, p in zip(alone, packed):
        assert a.result.history == p.result.history and a.result.epochs == p.result.epochs
        for wa, wp in zip(a.model.get_weights(), p.model.get_weights()):
            np.testing.assert_array_equal(wa, wp)


@pytest.mark.parametrize("optimizer, extra", [("adam", {}), ("sgd", {"momentum": 0.9}), ("sgd", {}),
                                              ("rmsprop", {}), ("rmsprop", {"momentum": 0.5})])
def test_each_step_follows_keras_own_optimizer_and_penalties(optimizer, extra):
    """Full-batch steps (one per epoch, so the order of examples cannot matter): the engine's
    weights after every step against Keras' fit with keras.optimizers and L1L2 penalties."""
    from study.training import build_optimizer

    keras.backend.clear_session()
    ours = member(l1=1e-3, l2=1e-2, batch_size=96, optimizer=optimizer, learning_rate=0.05, epochs=5, **extra)
    theirs = keras.models.clone_model(ours.model)
    theirs.set_weights(ours.model.get_weights())
    theirs.compile(optimizer=build_optimizer(ours.spec), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = ours.train
    theirs.fit(x, y, batch_size=96, epochs=5, shuffle=False, verbose=0)
    batched.fit_together([ours])
    for a, b in zip(ours.model.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)


def engine_of(members):
    layouts = [batched.layout_of(m.model) for m in members]
    return batched._engine(members, layouts)


def test_padded_units_and_their_optimizer_state_stay_exactly_zero():
    keras.backend.clear_session()
    members = [member(width=5, seed=0), member(width=8, seed=1)]  # both in the bucket of 8
    batched.fit_together(members)
    engine = engine_of(members)
    assert engine.widths == (6, 8, 8, 2)
    for variable in [*engine.kernels, *[s for slots in engine.slots for s in slots]]:
        values = variable.numpy()[0]  # member 0's kernel rows, then its bias row
        kernel, bias = values[:-1], values[-1]
        assert not kernel[5:, :].any() or kernel.shape[0] == 6, variable.name
        assert not kernel[:, 5:].any() or kernel.shape[-1] == 2, variable.name
        assert not bias[5:].any() or bias.shape[-1] == 2, variable.name
    assert [w.shape for w in members[0].model.get_weights()] == [(6, 5), (5,), (5, 5), (5,), (5, 2), (2,)]


def test_a_member_is_the_same_alone_and_in_a_pack_to_the_last_bit():
    settings = [dict(width=5, seed=0, dropout=0.3, learning_rate=3e-3), dict(width=8, seed=1, l2=1e-3, epochs=2),
                dict(width=7, seed=2, early_stopping={"enabled": True, "patience": 1}, epochs=8),
                dict(width=6, seed=3, dropout=0.5, batch_size=32, learning_rate=1e-2)]
    assert_identical(*alone_and_packed(member, settings))


def test_early_stopping_restores_each_members_best_epoch_to_the_last_bit():
    """A member that stops early gets back the weights it had after its best epoch: the same pack,
    each member cut right after that epoch instead (pruned there, nothing restored), ends with the
    same bits. The engine reads a pack's weights once after an epoch, for every member that improved;
    a read kept past the next epoch would restore an older epoch's weights."""
    x_val, y_val = data(n=64, seed=5)
    y_val = np.where(np.random.default_rng(0).random(64) < 0.2, 1 - y_val, y_val)  # a fifth mislabelled: val loss turns

    def make(**settings) -> Member:
        m = member(width=16, learning_rate=5e-3, epochs=18, **settings)
        m.val = (x_val, y_val)
        return m

    keras.backend.clear_session()
    stopped = [make(seed=seed, early_stopping={"enabled": True, "patience": 2}) for seed in range(3)]
    batched.fit_together(stopped)
    best = [m.result.best_epoch for m in stopped]
    assert all(m.result.stopped == "early_stopping" for m in stopped)
    assert all(1 < b < m.result.epochs - 1 for b, m in zip(best, stopped)), "each improved after its first epoch"
    keras.backend.clear_session()
    cut = [make(seed=seed) for seed in range(3)]
    for m, b in zip(cut, best):
        m.on_epoch = lambda epoch, metrics, b=b: "its best epoch" if epoch == b else None
    batched.fit_together(cut)
    assert [m.result.epochs for m in cut] == best
    assert len(set(best)) > 1, "members restored from different epochs"
    for s, c in zip(stopped, cut):
        assert s.result.history[: len(c.result.history)] == c.result.history
        for ws, wc in zip(s.model.get_weights(), c.model.get_weights()):
            np.testing.assert_array_equal(ws, wc)


@pytest.mark.parametrize("make", [member, cnn_member], ids=["mlp", "cnn"])
def test_members_compiled_by_xla_are_the_same_alone_and_packed_to_the_last_bit(make):
    """Members of JIT_EPOCHS epochs or more train compiled (XLA). Their weights are the same alone
    and packed to the last bit; the losses and accuracies they log, sums over examples, may differ
    in float32's last bit (XLA compiles a pack of one's validation sums apart from a larger pack's)."""
    epochs = batched.JIT_EPOCHS
    settings = [dict(width=5, seed=0, dropout=0.3, l2=1e-3, epochs=epochs),
                dict(width=8, seed=1, dropout=0.1, l2=1e-2, learning_rate=3e-3, epochs=epochs),
                dict(width=7, seed=2, dropout=0.5, l2=1e-4, epochs=epochs + 3)]  # one shape: all with dropout and L2
    alone, packed = alone_and_packed(make, settings)
    engine = engine_of(packed)
    assert engine.n == 3 and engine.epoch_fn._jit_compile
    for a, p in zip(alone, packed):
        assert a.result.epochs == p.result.epochs and len(a.result.history) == len(p.result.history)
        for ha, hp in zip(a.result.history, p.result.history):
            assert hp == pytest.approx(ha, rel=1e-6, abs=1e-7)
        for wa, wp in zip(a.model.get_weights(), p.model.get_weights()):
            np.testing.assert_array_equal(wa, wp)


def test_the_penalty_a_step_checks_is_each_members_l1_and_l2_of_its_kernels_not_its_biases():
    """The engine sums penalties as matrix products and keeps each bias as its kernel's last row;
    the sum must still be l1 · Σ|w| + l2 · Σw² over the kernels alone, member by member."""
    keras.backend.clear_session()
    members = [member(width=5, seed=0, l1=1e-2, l2=1e-3), member(width=8, seed=1, l1=0.0, l2=1e-1)]
    layouts = [batched.layout_of(m.model) for m in members]
    engine = batched._engine(members, layouts)
    engine.load(members, layouts)
    for k, m in enumerate(members):  # nonzero biases, so a bias counted would show
        weights = m.model.get_weights()
        engine.set_weights(k, [w if i % 2 == 0 else w + 0.5 for i, w in enumerate(weights)])
    kernels = [m.model.get_weights()[0::2] for m in members]
    expected = [lay.l1 * sum(np.abs(w).sum() for w in ws) + lay.l2 * sum(np.square(w).sum() for w in ws)
                for lay, ws in zip(layouts, kernels)]
    np.testing.assert_allclose(engine._penalty().numpy(), expected, rtol=1e-5)


def test_width_buckets_pad_by_under_a_quarter_above_128_and_at_most_double_below():
    buckets = {batched.width_bucket(w) for w in range(1, 1025)}
    assert buckets == {1, 2, 4, 8, 16, 32, 64, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024}
    for width in range(1, 1025):
        bucket = batched.width_bucket(width)
        assert width <= bucket < 2 * width or bucket == width == 1
        if width > 128:
            assert bucket < 1.25 * width


def test_wide_members_of_a_bucket_between_powers_of_two_are_the_same_alone_and_packed():
    settings = [dict(width=w, seed=s, epochs=2) for s, w in enumerate((165, 190))]  # both in the bucket of 192
    alone, packed = alone_and_packed(member, settings)
    assert engine_of(packed).widths == (6, 192, 192, 2)
    assert_identical(alone, packed)


def test_the_least_recently_used_shape_is_dropped_first(monkeypatch):
    monkeypatch.setattr(batched, "_ENGINES", {})
    monkeypatch.setattr(batched, "MAX_ENGINES", 2)
    keras.backend.clear_session()
    shapes = {w: [member(width=w, seed=0, epochs=1)] for w in (4, 8, 16)}
    batched.fit_together(shapes[4])
    batched.fit_together(shapes[8])
    batched.fit_together([member(width=4, seed=1, epochs=1)])  # 4 used again: 8 is now the oldest
    batched.fit_together(shapes[16])
    kept = sorted(key[1][1] for key in batched._ENGINES)
    assert kept == [4, 16]
    before = batched.traces()
    batched.fit_together([member(width=3, seed=2, epochs=1)])  # the bucket of 4, still kept: no new trace
    assert batched.traces() == before


def test_a_shape_is_traced_once_and_reused_by_later_packs():
    keras.backend.clear_session()
    batched.fit_together([member(seed=s, width=8) for s in range(3)])
    before = batched.traces()
    batched.fit_together([member(seed=s, width=7) for s in range(3, 6)])  # same bucket, same pack size
    assert batched.traces() == before, "no new trace for a pack of a shape already seen"


@pytest.mark.parametrize("epochs", [3, batched.JIT_EPOCHS], ids=["graph", "xla"])
def test_training_sets_of_one_row_bucket_share_a_graph_and_padding_changes_no_bit(monkeypatch, epochs):
    """Small training sets are held padded to the next power of 8 rows (`held_rows`): a pack of 70
    examples trains in the graph a pack of 90 compiled (both held as 512 rows), and ends with the
    bits it has in a graph of its own length."""
    monkeypatch.setattr(batched, "_ENGINES", {})
    x, y = data(n=90, seed=3)
    held = [batched.held_rows(np.zeros((n, 6), np.float32)) for n in (1, 8, 9, 64, 65, 70, 512, 513, 32769)]
    assert held == [8, 8, 64, 64, 512, 512, 512, 4096, 262144]
    assert batched.held_rows(np.zeros((4097, 200), np.float32)) == 4097  # 32768 rows of 200 pass TRAIN_BYTES

    def make(n: int, seed: int) -> Member:
        m = member(width=8, seed=seed, dropout=0.2, epochs=epochs, early_stopping={"enabled": True, "patience": 1})
        m.train = (x[:n], y[:n])
        return m

    keras.backend.clear_session()
    batched.fit_together([make(90, s) for s in range(3)])
    before = batched.traces()
    shared = [make(70, s) for s in range(3)]
    batched.fit_together(shared)
    assert batched.traces() == before, "no new graph for a training set of the same bucket"
    monkeypatch.setattr(batched, "TRAIN_BYTES", 0)  # every training set held at its own length
    assert batched.held_rows(x[:70]) == 70
    keras.backend.clear_session()
    own = [make(70, s) for s in range(3)]
    batched.fit_together(own)
    assert batched.traces() == before + 1
    assert_identical(own, shared)


@pytest.mark.parametrize("epochs", [2, batched.JIT_EPOCHS], ids=["graph", "xla"])
def test_a_graph_compiled_ahead_is_the_one_its_pack_then_trains_with(monkeypatch, epochs):
    """`compile_ahead` traces and compiles a shape in a thread of its own, from one member of it;
    the pack of that shape then runs that graph (no new trace) and trains exactly as it would
    have with a graph of its own."""
    monkeypatch.setattr(batched, "_ENGINES", {})
    keras.backend.clear_session()
    settings = [dict(width=7, seed=s, dropout=0.2, epochs=epochs) for s in range(3)]
    own = [member(**s) for s in settings]
    batched.fit_together(own)  # compiled at its first run
    batched._ENGINES.clear()
    before, ahead = batched.traces(), batched.compiled_ahead()
    wait = batched.compile_ahead(member(width=5, seed=9, dropout=0.1, epochs=epochs), len(settings))  # bucket of 8, too
    wait()
    assert (batched.traces(), batched.compiled_ahead()) == (before + 1, ahead + 1)
    batched.compile_ahead(member(width=6, seed=8, dropout=0.4, epochs=epochs), len(settings))()  # cached: nothing to do
    assert (batched.traces(), batched.compiled_ahead()) == (before + 1, ahead + 1)
    keras.backend.clear_session()
    later = [member(**s) for s in settings]
    batched.fit_together(later)
    assert batched.traces() == before + 1, "the pack ran the graph compiled ahead"
    assert_identical(own, later)


def test_the_graph_optimizer_is_switched_off_for_the_calling_thread_alone():
    """TensorFlow reads whether grappler rewrites a graph from the calling thread's function-call
    options: a graph compiled ahead in another thread must neither switch it on nor off here."""
    import threading

    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.eager import context

    def disabled() -> bool:
        config = config_pb2.ConfigProto()
        config.ParseFromString(context.context().function_call_options.config_proto_serialized)
        return config.graph_options.rewrite_options.disable_meta_optimizer

    seen: list[bool] = []
    assert not disabled()
    with batched._unoptimized():
        assert disabled()
        other = threading.Thread(target=lambda: seen.append(disabled()))
        other.start()
        other.join()
    assert seen == [False] and not disabled()


def test_dropout_masks_keep_the_share_keras_keeps_and_differ_by_seed_layer_and_step():
    u = batched._uniform(np.array([0, 1]), 0, np.array([0.0, 0.0]), 64, 32).numpy()
    assert u.shape == (2, 64, 32) and 0 <= u.min() and u.max() < 1
    assert abs((u >= 0.3).mean() - 0.7) < 0.02
    assert not np.array_equal(u[0], u[1])
    later = batched._uniform(np.array([0, 1]), 0, np.array([1.0, 0.0]), 64, 32).numpy()
    other_layer = batched._uniform(np.array([0, 1]), 1, np.array([0.0, 0.0]), 64, 32).numpy()
    assert not np.array_equal(u[0], later[0]) and np.array_equal(u[1], later[1]) and not np.array_equal(u[0], other_layer[0])


@pytest.mark.parametrize("layout, kernel_size, stride", [("sequence", 5, 2), ("sequence", 4, 1), ("image", 3, 2)])
def test_a_cnn_computes_keras_conv_layers_as_patches(layout, kernel_size, stride):
    """A CNN's forward pass (patches of "same"-padded inputs times stacked kernels, even kernels and
    images included) is Keras' Conv2D to float32 rounding, and its weights come back as Keras'."""
    keras.backend.clear_session()
    m = cnn_member(layout, kernel_size=kernel_size, stride=stride)
    engine = engine_of([m])
    engine.load([m], [batched.layout_of(m.model)])
    x = m.train[0]
    stacked = np.stack([x.reshape(len(x), -1)] * engine.n)  # a lone member trained without XLA has an idle slot beside it
    ours = engine._forward(batched.tf.constant(stacked), False).numpy()[0]
    np.testing.assert_allclose(ours, m.model(x).numpy(), rtol=1e-5, atol=1e-6)
    for a, b in zip(engine.weights(0), m.model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("layout", ["sequence", "image"])
def test_each_cnn_step_follows_keras_own_fit(layout):
    """Full-batch Adam steps with an L2 penalty on conv and output kernels, against Keras' fit."""
    from study.training import build_optimizer

    keras.backend.clear_session()
    ours = cnn_member(layout, l2=1e-2, batch_size=96, learning_rate=0.02, epochs=5, kernel_size=3)
    theirs = keras.models.clone_model(ours.model)
    theirs.set_weights(ours.model.get_weights())
    theirs.compile(optimizer=build_optimizer(ours.spec), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    theirs.fit(*ours.train, batch_size=96, epochs=5, shuffle=False, verbose=0)
    batched.fit_together([ours])
    for a, b in zip(ours.model.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)


def test_a_cnn_is_the_same_alone_and_in_a_pack_to_the_last_bit_and_its_padded_channels_stay_zero():
    settings = [dict(width=5, seed=0, dropout=0.3), dict(width=8, seed=1, l2=1e-3, epochs=2),
                dict(width=7, seed=2, early_stopping={"enabled": True, "patience": 1}, epochs=8),
                dict(width=6, seed=3, dropout=0.5, learning_rate=1e-2, epochs=25)]  # 25: compiled (XLA) alone too
    alone, packed = alone_and_packed(cnn_member, settings)
    assert_identical(alone, packed)
    engine = engine_of(packed[:3])  # the three of fewer than 20 epochs share a shape: channels padded to 8
    assert engine.widths == (1, 8, 8, 2) and engine.groups == [5, 5, 3]
    for i, variable in enumerate([*engine.kernels, *[v for s in engine.slots for v in s]]):
        values = variable.numpy()[0]  # member 0's kernel rows, then its bias row
        blocks = values[:-1].reshape(engine.groups[i % 3], engine.widths[i % 3], engine.widths[i % 3 + 1])
        assert not blocks[:, 5:, :].any() and (i % 3 == 2 or not blocks[:, :, 5:].any()), variable.name
        assert i % 3 == 2 or not values[-1, 5:].any(), variable.name


def test_a_separable_cnn_trains_as_graphs_side_by_side():
    keras.backend.clear_session()
    m = cnn_member(conv="separable", epochs=2)
    assert batched.layout_of(m.model) is None
    before = batched.traces()
    batched.fit_together([m])
    assert m.result.epochs == 2 and len(m.result.history) == 2 and batched.traces() == before


@pytest.mark.parametrize("monitor, values, patience, min_delta", [
    ("val/loss", [1.0, 0.8, 0.85, 0.9, 0.79, 0.95, 0.96, 0.97, 0.5], 3, 0.0),
    ("val/loss", [1.0, 0.99, 0.985, 0.98, 0.975, 0.97], 2, 0.01),
    ("val/accuracy", [0.5, 0.6, 0.6, 0.55, 0.7, 0.69, 0.68, 0.7, 0.71], 3, 0.0),
    ("val/loss", [0.5, 0.6, 0.7], 0, 0.0),
])
def test_early_stopping_follows_keras_own_callback_epoch_by_epoch(monitor, values, patience, min_delta):
    """The engine's stopping rule (multifit._Stopper, which the packed and batched engines use)
    against keras.callbacks.EarlyStopping fed the same epochs: same stopping epoch, same weights
    restored."""
    from study.multifit import _Stopper
    from study.names import MONITORS
    from study.schema import EarlyStoppingSpec

    spec = EarlyStoppingSpec(enabled=True, monitor=monitor, patience=patience, min_delta=min_delta)
    key = MONITORS[monitor].short
    ours_model, keras_model = (keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]) for _ in range(2))
    callback = keras.callbacks.EarlyStopping(monitor=key, patience=patience, min_delta=min_delta,
                                             restore_best_weights=True, mode="max" if monitor == "val/accuracy" else "min")
    callback.set_model(keras_model)
    callback.on_train_begin()
    stopper = _Stopper(spec)
    ours_stop = keras_stop = None
    for epoch, value in enumerate(values, start=1):
        for model in (ours_model, keras_model):  # each epoch leaves weights of its own
            model.set_weights([np.full((1, 1), epoch, np.float32), np.zeros(1, np.float32)])
        if ours_stop is None and stopper.update(epoch, {key: value}, ours_model):
            ours_stop = epoch
        if keras_stop is None:
            callback.on_epoch_end(epoch - 1, {key: value})
            if keras_model.stop_training:
                keras_stop = epoch
    callback.on_train_end()
    stopper.finish(ours_model)
    assert ours_stop == keras_stop
    assert ours_model.get_weights()[0][0, 0] == keras_model.get_weights()[0][0, 0], "the same epoch's weights restored"


def test_a_lone_member_trained_without_xla_has_an_idle_slot_beside_it():
    """TensorFlow multiplies a batch of one with another kernel than a larger batch, and the two
    round apart on some processors: a lone member trained without XLA gets a second, idle slot, so
    it runs the kernel it runs in any pack. Under XLA every batch is computed alike."""
    keras.backend.clear_session()
    lone = member(epochs=2)
    assert batched.slots([lone]) == 2 and batched.slots([lone, member(seed=1, epochs=2)]) == 2
    assert batched.slots([member(epochs=batched.JIT_EPOCHS)]) == 1
    batched.fit_together([lone])
    engine = engine_of([lone])
    assert engine.n == 2 and all(not w[1].numpy().any() for w in engine.kernels)  # the idle slot stays zero
