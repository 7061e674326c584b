"""Structured pruning (compression/shrink.py): whole units removed, a smaller dense model kept."""

from __future__ import annotations

import numpy as np
import pytest

from study.compression import shrink
from study.keras_compat import keras
from study.models import build_model
from study.schema import ModelSpec


def test_scores_are_each_output_units_weight_norm():
    kernel = np.array([[1.0, -2.0, 0.0], [3.0, 0.5, -0.5]])
    assert shrink.unit_scores(kernel, "l1").tolist() == [4.0, 2.5, 0.5]
    assert shrink.unit_scores(kernel, "l2") == pytest.approx([np.sqrt(10), np.sqrt(4.25), 0.5])
    conv = np.zeros((3, 1, 2, 4))
    conv[..., 2] = 1.0  # a filter's norm runs over its whole kernel: 3 x 1 x 2 weights
    assert shrink.unit_scores(conv, "l1").tolist() == [0.0, 0.0, 6.0, 0.0]


def test_random_structured_pruning_removes_the_same_share_of_other_units():
    keras.utils.set_random_seed(0)
    model = build_model(ModelSpec(kind="mlp", width=20, depth=2), (6,), "tabular", 3)
    by_norm, widths = shrink.shrink(model, 0.6, "l1")
    at_random, random_widths = shrink.shrink(model, 0.6, "random", seed=1)
    assert random_widths == widths == {"dense_1": 8, "dense_2": 8}, "the fraction removed is the same"
    kept = {shrink.units_to_keep(shrink.unit_scores(model.get_layer("dense_1").get_weights()[0], "l1"), 0.6).tobytes()}
    first = model.get_layer("dense_1").get_weights()[0]
    chosen = at_random.get_layer("dense_1").get_weights()[0]
    columns = [int(np.flatnonzero((first == chosen[:, [j]]).all(axis=0))[0]) for j in range(chosen.shape[1])]
    assert np.array(columns, dtype=np.int64).tobytes() not in kept, "other units than the largest-norm ones"
    assert np.array_equal(shrink.shrink(model, 0.6, "random", seed=1)[0].get_layer("dense_1").get_weights()[0], chosen)
    with pytest.raises(ValueError, match="need a random generator"):
        shrink.unit_scores(first, "random")


def test_the_strongest_units_are_kept_ties_to_the_lower_index_and_never_none():
    scores = np.array([1.0, 5.0, 3.0, 5.0, 0.0])
    assert shrink.units_to_keep(scores, 0.5).tolist() == [1, 2, 3]  # ceil(2.5) = 3 kept
    assert shrink.units_to_keep(scores, 0.7).tolist() == [1, 3]
    assert shrink.units_to_keep(scores, 0.9).tolist() == [1]  # the tie at 5.0 goes to index 1
    assert shrink.units_to_keep(scores, 0.0).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="in \\[0, 1\\)"):
        shrink.units_to_keep(scores, 1.0)


MODELS = [
    ("mlp", "standard", "tabular", (40,)),
    ("cnn", "standard", "sequence", (40,)),
    ("cnn", "separable", "sequence", (40,)),
    ("cnn", "standard", "image", (8, 8)),
]


def _model(kind, conv, layout, shape):
    keras.utils.set_random_seed(3)
    spec = ModelSpec(kind=kind, conv=conv, width=12, depth=2, dropout=0.1)
    return build_model(spec, shape, layout, n_outputs=10)


def _silenced(model, small, widths):
    """The original model with every removed unit's outgoing weights set to zero: it computes what
    the smaller model computes, if the surgery kept the right weights in the right places."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    layers = [layer for layer in copy.layers if layer.weights and type(layer).__name__ != "Dropout"]
    for layer, following in zip(layers, layers[1:]):
        if layer.name not in widths:
            continue
        kept = {tuple(np.round(c, 6)) for c in _columns(small.get_layer(layer.name))}
        gone = [i for i, c in enumerate(_columns(layer)) if tuple(np.round(c, 6)) not in kept]
        _zero_inputs(following, gone, layer)
    return copy


def _columns(layer) -> list[np.ndarray]:
    """Each output unit's bias: drawn at random for the test, so it tells the units apart."""
    return [np.array([b]) for b in layer.weights[-1].numpy()]


def _zero_inputs(layer, gone: list[int], source) -> None:
    values = [w.numpy() for w in layer.weights]
    kind = type(layer).__name__
    channels = source.weights[-1].shape[0]
    if kind == "Dense":
        rows = np.arange(values[0].shape[0])
        values[0][np.isin(rows % channels, gone), :] = 0.0  # through a Flatten: every position's copy
    elif kind == "Conv2D":
        values[0][:, :, gone, :] = 0.0
    else:  # SeparableConv2D: the depthwise filters that read a removed channel
        values[0][:, :, gone, :] = 0.0
    layer.set_weights(values)


@pytest.mark.parametrize("kind, conv, layout, shape", MODELS, ids=[f"{m[0]}-{m[1]}-{m[2]}" for m in MODELS])
def test_a_shrunk_model_computes_what_the_original_does_without_its_removed_units(kind, conv, layout, shape):
    model = _model(kind, conv, layout, shape)
    for layer in model.layers:  # distinct biases, so each unit can be told apart after the surgery
        if layer.weights and type(layer).__name__ != "Dropout":
            values = [w.numpy() for w in layer.weights]
            values[-1] = np.random.default_rng(len(layer.name)).normal(size=values[-1].shape).astype(np.float32)
            layer.set_weights(values)
    x = np.random.default_rng(0).normal(size=(6, *shape)).astype(np.float32)

    same, _ = shrink.shrink(model, 0.0)
    np.testing.assert_allclose(same(x, training=False), model(x, training=False), atol=1e-5)

    small, widths = shrink.shrink(model, 0.5)
    assert widths and all(width == 6 for width in widths.values()), widths  # 12 units, half removed
    assert small.count_params() < model.count_params() / 2 + 200
    assert small.output_shape == model.output_shape
    np.testing.assert_allclose(small(x, training=False), _silenced(model, small, widths)(x, training=False), atol=1e-4)


def test_the_output_layer_keeps_every_class():
    model = _model("mlp", "standard", "tabular", (40,))
    small, widths = shrink.shrink(model, 0.9)
    assert "logits" not in widths and small.get_layer("logits").units == 10
    assert widths == {"dense_1": 2, "dense_2": 2}  # ceil(0.1 * 12)


def test_a_global_fraction_removes_that_share_of_all_hidden_units_and_keeps_a_unit_in_every_layer():
    model = _model("mlp", "standard", "tabular", (40,))
    dense_1 = model.get_layer("dense_1")
    kernel, bias = (w.numpy() for w in dense_1.weights)
    kernel[:, :6] *= 1e-3  # six weak units in the first layer only
    dense_1.set_weights([kernel, bias])
    plan = shrink.global_plan(model, 0.25)  # 6 of the 24 hidden units go
    assert sum(12 - len(keep) for keep in plan.values()) == 6
    assert plan["dense_1"].tolist() == list(range(6, 12)) and len(plan["dense_2"]) == 12, "the weak ones, wherever they are"
    small, widths = shrink.shrink(model, 0.25, scope="global")
    assert widths == {"dense_1": 6, "dense_2": 12}
    assert all(len(keep) >= 1 for keep in shrink.global_plan(model, 0.99).values())
    same, _ = shrink.shrink(model, 0.0, scope="global")
    x = np.random.default_rng(1).normal(size=(4, 40)).astype(np.float32)
    np.testing.assert_allclose(same(x, training=False), model(x, training=False), atol=1e-5)
    with pytest.raises(ValueError, match="unknown scope"):
        shrink.shrink(model, 0.5, scope="everywhere")


def test_a_global_plan_removes_exactly_its_share_when_scores_tie_and_leaves_a_model_without_hidden_layers_alone():
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(4,))
    hidden = keras.layers.Dense(4, kernel_initializer="ones", name="a")(inputs)
    hidden = keras.layers.Dense(4, kernel_initializer="ones", name="b")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(hidden))
    plan = shrink.global_plan(model, 0.25)  # 8 equal units: exactly 2 go, not every unit at the tie
    assert sum(len(keep) for keep in plan.values()) == 6
    linear = build_model(ModelSpec(kind="mlp", depth=0), (40,), "tabular", n_outputs=10)
    assert shrink.global_plan(linear, 0.5) == {}
    small, widths = shrink.shrink(linear, 0.5, scope="global")
    assert widths == {} and small.count_params() == linear.count_params()
