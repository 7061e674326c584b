"""Artifacts that exist: TFLite files (run by the TFLite interpreter) and our packed files.

Every size is measured on a written file and every accuracy by running that file, so a pruned
model that stores as many bytes as the dense one says so.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from study.compression.artifact import Artifact
from study.compression.qpack import load_qpack
from study.keras_compat import keras, quiet_stderr, tf

# The converter warns that int8 input statistics are missing: our models keep float inputs.
warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")

# How each TFLite flavour is made, and what it is called in MLflow (tag study.artifact).
TFLITE_MODES = {
    "float32": "tflite float32",
    "float16": "tflite float16 weights (post-training)",
    "dynamic": "tflite int8 weights, float activations (post-training dynamic range)",
    "int8": "tflite int8 weights and activations (post-training, representative data)",
    "qat": "tflite int8 (quantization-aware training)",
}
LATENCY_REPEATS = 50


def to_tflite(model: keras.Model, mode: str, path: Path, representative: np.ndarray | None = None) -> Artifact:
    """Convert `model` to a TFLite flatbuffer at `path`. Inputs and outputs stay float32."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    bits = 32
    if mode == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
        bits = 16
    elif mode in ("dynamic", "qat"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        bits = 8
    elif mode == "int8":
        if representative is None:
            raise ValueError("full-integer quantization needs representative inputs")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        samples = representative.astype(np.float32)
        converter.representative_dataset = lambda: ([samples[i : i + 1]] for i in range(len(samples)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        bits = 8
    elif mode != "float32":
        raise ValueError(f"unknown TFLite mode {mode!r}; choose one of {', '.join(TFLITE_MODES)}")
    with quiet_stderr():  # the converter prints its settings to fd 2
        path.write_bytes(converter.convert())
    return Artifact(path=path, kind=TFLITE_MODES[mode], deployable=True, bits=bits)


class TfliteRunner:
    """Runs a .tflite file on batches of float inputs."""

    def __init__(self, path: Path):
        # LiteRT: the runtime devices use
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=1)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = None

    def _resize(self, shape) -> None:
        if self.batch != shape:
            self.interpreter.resize_tensor_input(self.input["index"], list(shape))
            with quiet_stderr():  # "Created TensorFlow Lite XNNPACK delegate for CPU."
                self.interpreter.allocate_tensors()
            self.batch = shape

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self._resize(x.shape)
        self.interpreter.set_tensor(self.input["index"], x.astype(np.float32))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"]).copy()

    def latency_ms(self, example: np.ndarray, repeats: int = LATENCY_REPEATS) -> float:
        """Median wall time of one single-example invoke, in milliseconds."""
        self._resize((1, *example.shape))
        self.interpreter.set_tensor(self.input["index"], example[None].astype(np.float32))
        self.interpreter.invoke()  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            self.interpreter.invoke()
            times.append(time.perf_counter() - start)
        return float(np.median(times) * 1000)


class QpackRunner:
    """Runs a .qpack file: our loader rebuilds the model with the file's dequantized weights."""

    def __init__(self, path: Path):
        self.model = load_qpack(path)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.model(x, training=False).numpy()

    def latency_ms(self, example: np.ndarray) -> float:
        return float("nan")  # no device runtime reads the file: there is no latency to measure


def open_artifact(artifact: Artifact) -> TfliteRunner | QpackRunner:
    """The artifact file, loaded once, ready to run on inputs and to time."""
    return TfliteRunner(artifact.path) if artifact.path.suffix == ".tflite" else QpackRunner(artifact.path)
