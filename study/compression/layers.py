"""The layers every compression method works on (pruned, clustered, quantized), and copies of
models that leave the original untouched."""

from __future__ import annotations

from study.keras_compat import keras

# The layers every method compresses (pruned, clustered, quantized), and the names of their kernels.
KERNELS = {
    "Dense": ("kernel",),
    "Conv2D": ("kernel",),
    "DepthwiseConv2D": ("depthwise_kernel",),
    "SeparableConv2D": ("depthwise_kernel", "pointwise_kernel"),
}


def fresh_copy(model: keras.Model, wrap=None) -> keras.Model:
    """A copy with new layer objects and the same weights; `wrap(layer)` may wrap each new layer.

    The toolkit's wrappers reuse the layer objects they are given, so wrapping the original would
    let fine-tuning change it: we always wrap a copy.
    """
    def clone(layer):
        copy = layer.__class__.from_config(layer.get_config())
        return wrap(copy) if wrap else copy

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def weight_names(layer) -> list[str]:
    """Short names of a layer's weights in order: kernel, bias, depthwise_kernel, ..."""
    return [w.name.split("/")[-1].split(":")[0] for w in layer.weights]
