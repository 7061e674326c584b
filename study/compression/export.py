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
    "int4": "tflite int4 weights, float activations (LiteRT quantizer, post-training dynamic range)",
}
# Latency: one example at a time on one thread, as a device serves requests. Warm-up invokes
# first (caches, XNNPACK's packing); then rounds of invokes, so that a burst of load from another
# process on a shared machine shows as spread, not as the answer.
LATENCY_WARMUP = 20
LATENCY_ROUNDS, LATENCY_PER_ROUND = 5, 40


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
    elif mode == "int4":  # converted as float32 first, then its weights quantized by the LiteRT quantizer
        bits = 4
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
        flatbuffer = converter.convert()
    path.write_bytes(int4_weights(flatbuffer) if mode == "int4" else flatbuffer)
    return Artifact(path=path, kind=TFLITE_MODES[mode], deployable=True, bits=bits)


def int4_weights(flatbuffer: bytes) -> bytes:
    """The float32 TFLite model with every fully connected and convolution kernel stored as int4,
    one scale per output channel, computed in float at run time (LiteRT's dynamic-range int4
    kernels). Google's LiteRT quantizer writes it; TFLite's own converter stops at int8."""
    from ai_edge_quantizer import quantizer, recipe

    result = quantizer.Quantizer(flatbuffer, recipe.dynamic_wi4_afp32()).quantize(enable_progress_report=False)
    return bytes(result.quantized_model)


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

    def latency_ms(self, example: np.ndarray) -> tuple[float, float]:
        """Median and interquartile range, in milliseconds, of single-example invokes after a
        warm-up, over several rounds (see LATENCY_ROUNDS)."""
        self._resize((1, *example.shape))
        self.interpreter.set_tensor(self.input["index"], example[None].astype(np.float32))
        for _ in range(LATENCY_WARMUP):
            self.interpreter.invoke()
        times = []
        for _ in range(LATENCY_ROUNDS):
            for _ in range(LATENCY_PER_ROUND):
                start = time.perf_counter()
                self.interpreter.invoke()
                times.append(time.perf_counter() - start)
            time.sleep(0.01)  # rounds apart in time: a passing burst of load touches one, not all
        low, median, high = np.percentile(np.array(times) * 1000, [25, 50, 75])
        return float(median), float(high - low)


class QpackRunner:
    """Runs a .qpack file: our loader rebuilds the model with the file's dequantized weights."""

    def __init__(self, path: Path):
        self.model = load_qpack(path)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.model(x, training=False).numpy()

    def latency_ms(self, example: np.ndarray) -> tuple[float, float]:
        return float("nan"), float("nan")  # no device runtime reads the file: there is no latency to measure


def open_artifact(artifact: Artifact) -> TfliteRunner | QpackRunner:
    """The artifact file, loaded once, ready to run on inputs and to time."""
    return TfliteRunner(artifact.path) if artifact.path.suffix == ".tflite" else QpackRunner(artifact.path)
