"""Models to and from .qpack files: kernels stored at 2-8 bits (see packing.py for the format),
everything else in float32. Our loader runs these files; no device runtime reads them."""

from __future__ import annotations

import json
from pathlib import Path

from study.compression import packing
from study.compression.artifact import Artifact
from study.compression.layers import KERNELS, weight_names
from study.keras_compat import keras


def write_packed(model: keras.Model, bits: int, path: Path) -> Artifact:
    """Store `model`'s kernels at `bits` bits (biases in float32) in a .qpack file."""
    layers, floats = [], {}
    for layer in model.layers:
        names = KERNELS.get(type(layer).__name__)
        if not layer.weights:
            continue
        if names:
            for name in names:
                codes, scales = packing.quantize_kernel(getattr(layer, name).numpy(), bits)
                layers.append(packing.PackedLayer(layer.name, name, codes, scales))
        quantized = {getattr(layer, n).name for n in (names or ())}
        floats[layer.name] = [w.numpy() for w in layer.weights if w.name not in quantized]
    packing.write_qpack(path, bits, model.to_json(), layers, floats)
    return Artifact(path=path, kind=f"packed {bits}-bit weights, float activations (our .qpack loader)", deployable=False, bits=bits)


def load_qpack(path: Path) -> keras.Model:
    """Rebuild the model a .qpack file stores, with its dequantized weights."""
    header, kernels, floats = packing.read_qpack(path)
    model = keras.models.model_from_json(json.dumps(header["architecture"]))
    for layer in model.layers:
        if not layer.weights:
            continue
        names = KERNELS.get(type(layer).__name__, ())
        own_floats = iter(floats.get(layer.name, []))
        values = [kernels[layer.name][n] if n in names else next(own_floats) for n in weight_names(layer)]
        layer.set_weights(values)
    return model
