"""Quantization: fewer bits per weight, by bit-width.

- 32: the float model as a TFLite file (the uncompressed reference).
- 16: post-training float16 weights (TFLite).
- 8: post-training dynamic range, post-training full integer with representative data, or
  quantization-aware training with the toolkit's 8-bit scheme (all TFLite int8).
- 2-7: quantization-aware training with our own quantizer (`SymmetricWeights`): symmetric,
  per output channel, weights only, gradients passed straight through. The fine-tuned weights are
  stored at their bit-width in a `.qpack` file (see packing.py), reloaded and evaluated from that
  file. TFLite stores nothing below int8, so these files run on our loader, not on devices:
  their size and accuracy are real, their deployability is not (tagged study.deployable=false).
- 4 with `scheme: ptq_dynamic`: post-training int4 weights (per output channel) written by
  Google's LiteRT quantizer into a .tflite file that LiteRT runs (export.int4_weights): deployable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from study.compression import packing
from study.compression.artifact import Artifact
from study.compression.export import to_tflite
from study.compression.layers import KERNELS, fresh_copy, weight_names
from study.keras_compat import keras, tf, tfmot


def fake_quantize(w, bits: int):
    """The quantized value of every weight, computed exactly as `packing.quantize_kernel` does."""
    levels = float(packing.levels_for(bits))
    flat = tf.reshape(w, [-1, tf.shape(w)[-1]])
    scale = tf.reduce_max(tf.abs(flat), axis=0) / levels
    scale = tf.where(scale == 0.0, tf.ones_like(scale), scale)
    return tf.clip_by_value(tf.round(w / scale), -levels, levels) * scale


def _quantizer_classes():
    """Defined on first use: subclassing the toolkit's classes needs it imported."""
    quantizers = tfmot().quantization.keras

    class SymmetricWeights(quantizers.quantizers.Quantizer):  # type: ignore[name-defined]  # a runtime base
        """n-bit symmetric per-channel fake quantization with a straight-through gradient."""

        def __init__(self, bits: int):
            self.bits = bits

        def build(self, tensor_shape, name, layer):
            return {}

        def __call__(self, inputs, training, weights, **kwargs):
            return tf.grad_pass_through(lambda w: fake_quantize(w, self.bits))(inputs)

        def get_config(self):
            return {"bits": self.bits}

    class WeightsOnly(quantizers.QuantizeConfig):  # type: ignore[name-defined]  # a runtime base
        """Quantize a layer's kernels to n bits; leave activations in float."""

        def __init__(self, bits: int, names: tuple[str, ...]):
            self.bits, self.names = bits, tuple(names)

        def get_weights_and_quantizers(self, layer):
            return [(getattr(layer, name), SymmetricWeights(self.bits)) for name in self.names]

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            for name, weight in zip(self.names, quantize_weights):
                setattr(layer, name, weight)

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return []

        def get_config(self):
            return {"bits": self.bits, "names": list(self.names)}

    return SymmetricWeights, WeightsOnly


def nbit_qat_model(model: keras.Model, bits: int) -> keras.Model:
    """A copy of `model` whose kernels are fake-quantized to `bits` bits (for fine-tuning)."""
    quantization = tfmot().quantization.keras
    SymmetricWeights, WeightsOnly = _quantizer_classes()

    def annotate(layer):
        names = KERNELS.get(type(layer).__name__)
        return quantization.quantize_annotate_layer(layer, WeightsOnly(bits, names)) if names else layer

    annotated = fresh_copy(model, annotate)
    with quantization.quantize_scope({"SymmetricWeights": SymmetricWeights, "WeightsOnly": WeightsOnly}):
        return quantization.quantize_apply(annotated)


def qat8_model(model: keras.Model, preserve_sparsity: bool = False) -> keras.Model:
    """A copy of `model` under the toolkit's 8-bit quantization-aware training (weights and
    activations); with `preserve_sparsity`, zeros stay zero (the prune-then-quantize pipeline)."""
    quantization = tfmot().quantization.keras
    annotated = quantization.quantize_annotate_model(fresh_copy(model))
    if preserve_sparsity:
        scheme = tfmot().experimental.combine.Default8BitPrunePreserveQuantizeScheme()
        return quantization.quantize_apply(annotated, scheme)
    return quantization.quantize_apply(annotated)


def float_weights_of(qat: keras.Model, architecture: keras.Model) -> keras.Model:
    """The float model of `architecture` carrying the (unquantized) weights trained inside `qat`.

    A quantization wrapper keeps the wrapped layer's weights under their original names
    (`conv_1/kernel:0`), next to its own (`quant_conv_1/kernel_min:0`): match by name.
    """
    trained = {w.name: w.numpy() for w in qat.weights}
    model = keras.models.clone_model(architecture)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([trained[f"{layer.name}/{name}:0"] for name in weight_names(layer)])
    return model


def simulate_nbit(model: keras.Model, bits: int) -> keras.Model:
    """The float model whose kernels hold exactly the values the packed file stores."""
    copy = fresh_copy(model)
    for layer in copy.layers:
        for name in KERNELS.get(type(layer).__name__, ()):
            variable = getattr(layer, name)
            codes, scales = packing.quantize_kernel(variable.numpy(), bits)
            variable.assign(packing.dequantize_kernel(codes, scales))
    return copy


POST_TRAINING = {"ptq_dynamic": "dynamic", "ptq_int8": "int8"}  # 8-bit schemes that need no fine-tuning


def export_post_training(model: keras.Model, bits: int, scheme: str, path: Path, representative: np.ndarray) -> Artifact:
    """The TFLite file of `model` quantized after training: float32 (bits 32), float16 weights
    (16), 8-bit by `scheme` (dynamic range, or full integer calibrated on `representative`), or
    int4 weights by the LiteRT quantizer (4)."""
    if bits == 8:
        return to_tflite(model, POST_TRAINING[scheme], path, representative)
    if bits == 4:
        return to_tflite(model, "int4", path)
    return to_tflite(model, {32: "float32", 16: "float16"}[bits], path)
