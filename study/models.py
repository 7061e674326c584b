"""Build Keras models from a `ModelSpec` and the shape of the data.

- `mlp`: `depth` Dense layers of `width` units, then the output layer.
- `cnn`: `depth` conv layers of `width` channels, then the output layer on the flattened maps,
  like the MNIST-1D reference CNN. A 1-D sequence is convolved as a Conv2D with (k, 1) kernels
  rather than a Conv1D, because quantization-aware training in the Model Optimization Toolkit
  rejects Conv1D; images use (k, k) kernels.
- `conv: separable` makes every conv layer after the first depthwise-separable (MobileNet: a
  depthwise filter over one input channel would learn little); `width_multiplier` scales every
  layer's width.
- Dropout, when asked, follows every hidden layer; L1/L2 penalties apply to every kernel. Each
  Dropout layer draws its masks from a generator of its own, seeded as the model is built, so a
  model's masks depend on its seed alone, not on what else trains in the process (`multifit`).
- `depth: 0` leaves only the output layer: logistic regression (classification) or linear
  regression (regression), the article's `y = a·x + b`.

Classifiers output logits (distillation needs them); regressors end in a fixed affine layer that
maps to the target's scale, so the network itself works on standardized targets.
"""

from __future__ import annotations

import numpy as np

from study.keras_compat import keras
from study.schema import ModelSpec


def _regularizer(spec: ModelSpec):
    if spec.l1 == 0 and spec.l2 == 0:
        return None
    return keras.regularizers.L1L2(l1=spec.l1, l2=spec.l2)


def _conv_layers(x, spec: ModelSpec, layout: str):
    """Conv layers over a sequence (n, length) or an image (n, h, w); the channel axis is added here."""
    shape = tuple(x.shape[1:])
    if layout == "sequence":
        x = keras.layers.Reshape((shape[0], 1, 1), name="as_image")(x)
        kernel, strides = (spec.kernel_size, 1), (spec.stride, 1)
    else:
        x = keras.layers.Reshape((*shape, 1), name="add_channel")(x)
        kernel, strides = (spec.kernel_size, spec.kernel_size), (spec.stride, spec.stride)
    for i in range(spec.depth):
        if spec.conv == "separable" and i > 0:
            # TensorFlow's depthwise kernels take equal strides only; on a sequence (width 1, "same"
            # padding) a stride of s across the width changes nothing, so (s, s) is the same layer
            x = keras.layers.SeparableConv2D(
                spec.units, kernel, strides=(strides[0], strides[0]), padding="same", activation=spec.activation,
                depthwise_regularizer=_regularizer(spec), pointwise_regularizer=_regularizer(spec), name=f"sepconv_{i + 1}",
            )(x)
        else:
            x = keras.layers.Conv2D(
                spec.units, kernel, strides=strides, padding="same", activation=spec.activation,
                kernel_regularizer=_regularizer(spec), name=f"conv_{i + 1}",
            )(x)
        if spec.dropout > 0:
            x = keras.layers.Dropout(spec.dropout, name=f"dropout_{i + 1}", force_generator=True)(x)
    return keras.layers.Flatten(name="flatten")(x)


def _dense_layers(x, spec: ModelSpec):
    if len(x.shape) > 2:
        x = keras.layers.Flatten(name="flatten")(x)
    for i in range(spec.depth):
        x = keras.layers.Dense(
            spec.units, activation=spec.activation, kernel_regularizer=_regularizer(spec), name=f"dense_{i + 1}"
        )(x)
        if spec.dropout > 0:
            x = keras.layers.Dropout(spec.dropout, name=f"dropout_{i + 1}", force_generator=True)(x)
    return x


def build_model(
    spec: ModelSpec,
    input_shape: tuple[int, ...],
    layout: str,
    n_outputs: int,
    target_scale: tuple[float, float] | None = None,
) -> keras.Model:
    """An uncompiled Keras model.

    input_shape: one example's shape, e.g. (40,) or (8, 8); layout: 'sequence', 'image' or
    'tabular'; n_outputs: classes, or 1 for regression; target_scale: (mean, std) of the
    regression target, folded into the last layer.
    """
    inputs = keras.Input(shape=input_shape, name="inputs")
    if spec.kind == "cnn" and spec.depth > 0:
        if layout == "tabular":
            raise ValueError("model.kind: cnn needs sequence or image data; use mlp for tabular data")
        x = _conv_layers(inputs, spec, layout)
    else:
        x = _dense_layers(inputs, spec)
    name = "logits" if target_scale is None else "output"
    outputs = keras.layers.Dense(n_outputs, kernel_regularizer=_regularizer(spec), name=name)(x)
    if target_scale is not None:
        mean, std = target_scale
        outputs = keras.layers.Rescaling(scale=std, offset=mean, name="to_target_scale")(outputs)
    return keras.Model(inputs, outputs, name=f"{spec.kind}_d{spec.depth}_w{spec.units}")


def target_scale(y: np.ndarray) -> tuple[float, float]:
    """(mean, std) of a regression target; std 1 when the target is constant."""
    std = float(np.std(y))
    return float(np.mean(y)), std if std > 0 else 1.0
