"""Models from specs, and training: early stopping, pruning requests and divergence."""

from __future__ import annotations

import numpy as np
import pytest

from study.keras_compat import keras
from study.models import build_model
from study.schema import ModelSpec, TrainSpec
from study.training import compile_model, fit, predict


def layer_types(model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


def test_depth_zero_is_logistic_regression():
    model = build_model(ModelSpec(depth=0), (40,), "sequence", 10)
    assert model.count_params() == 40 * 10 + 10
    assert layer_types(model) == ["InputLayer", "Dense"]


def test_depth_zero_regression_is_a_x_plus_b():
    model = build_model(ModelSpec(depth=0), (1,), "tabular", 1, target_scale=(0.0, 1.0))
    assert model.count_params() == 2


def test_mlp_has_depth_hidden_layers_of_width_units_with_dropout():
    model = build_model(ModelSpec(kind="mlp", width=16, depth=3, dropout=0.5), (8, 8), "image", 10)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [16, 16, 16, 10]
    assert layer_types(model).count("Dropout") == 3
    assert "Flatten" in layer_types(model), "images are flattened for an mlp"


def test_cnn_on_sequences_uses_conv2d_with_k_by_1_kernels():
    model = build_model(ModelSpec(kind="cnn", width=6, depth=2, kernel_size=5), (40,), "sequence", 10)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 2 and all(c.kernel_size == (5, 1) and c.filters == 6 for c in convs)
    assert not any("Conv1D" in t for t in layer_types(model)), "quantization-aware training rejects Conv1D"
    assert model.output_shape == (None, 10)


def test_cnn_on_images_uses_square_kernels():
    model = build_model(ModelSpec(kind="cnn", width=4, depth=1, kernel_size=3), (8, 8), "image", 10)
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert conv.kernel_size == (3, 3)


def test_penalties_reach_every_kernel():
    model = build_model(ModelSpec(width=4, depth=2, l2=0.1), (5,), "tabular", 3)
    assert len(model.losses) == 3


def test_regression_output_is_on_the_target_scale():
    model = build_model(ModelSpec(depth=0), (1,), "tabular", 1, target_scale=(100.0, 10.0))
    assert float(predict(model, np.zeros((1, 1), dtype=np.float32))[0, 0]) == pytest.approx(100.0, abs=1e-4)


# ---------------------------------------------------------------------------------- training
def toy_classification(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    return x, y


def compiled(spec: TrainSpec, task="classification", n_outputs=2):
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = build_model(ModelSpec(width=8, depth=1), (4,), "tabular", n_outputs, (0.0, 1.0) if task == "regression" else None)
    compile_model(model, spec, task)
    return model


def test_fit_records_each_epoch_and_the_best():
    x, y = toy_classification()
    result = fit(compiled(TrainSpec(epochs=3)), (x, y), (x[:64], y[:64]), TrainSpec(epochs=3))
    assert result.epochs == 3 and len(result.history) == 3 and result.stopped is None
    assert set(result.history[0]) == {"train_loss", "val_loss", "train_accuracy", "val_accuracy"}
    val_losses = [row["val_loss"] for row in result.history]
    assert result.best_epoch == 1 + val_losses.index(min(val_losses)), "1-based epoch of the lowest val_loss"
    # a best epoch that is not the last, and a monitor where higher is better
    from study.training import best_epoch

    rows = [{"val_loss": 0.5, "val_accuracy": 0.9}, {"val_loss": 0.3, "val_accuracy": float("nan")}, {"val_loss": 0.4, "val_accuracy": 0.7}]
    assert (best_epoch(rows, "val/loss"), best_epoch(rows, "val/accuracy"), best_epoch([], "val/loss")) == (2, 1, 0)


def test_early_stopping_stops_and_says_why():
    x, y = toy_classification()
    spec = TrainSpec.model_validate(
        {"epochs": 50, "learning_rate": 0.05, "early_stopping": {"enabled": True, "patience": 1, "min_delta": 10.0}}
    )
    result = fit(compiled(spec), (x, y), (x[:64], y[:64]), spec)
    assert result.stopped == "early_stopping" and result.epochs == 2 and result.stopped_epoch == 2
    assert "did not improve for 1 epochs" in result.reason


def test_on_epoch_can_stop_training_with_a_reason():
    x, y = toy_classification()
    seen = []

    def on_epoch(epoch, metrics):
        seen.append(epoch)
        return "enough" if epoch == 2 else None

    result = fit(compiled(TrainSpec(epochs=10)), (x, y), (x, y), TrainSpec(epochs=10), on_epoch)
    assert seen == [1, 2] and result.stopped == "pruned" and result.reason == "enough" and result.epochs == 2


def test_a_loss_that_blows_up_stops_training_as_diverged():
    x = np.random.default_rng(0).normal(size=(512, 4)).astype(np.float32)
    y = (x.sum(axis=1) * 100).astype(np.float32)
    spec = TrainSpec(optimizer="sgd", learning_rate=1e6, epochs=20, batch_size=8)
    result = fit(compiled(spec, "regression", 1), (x, y), (x[:32], y[:32]), spec)
    assert result.stopped == "diverged" and result.epochs == 1
    assert "became" in result.reason and ("nan" in result.reason or "inf" in result.reason)
