"""Our file format for weights below 8 bits, where TFLite cannot go (it stores int8 at the lowest).

Quantization is symmetric and per output channel: with `levels = 2^(bits-1) - 1`, a kernel's
channel c has the scale `s_c = max|w_c| / levels` and codes `round(w / s_c)` in [-levels, levels];
the weight it stands for is `code · s_c`. Codes are stored in exactly `bits` bits each, so the
file's size is the real size of the quantized model.

A `.qpack` file is:
    b"QPCK" | version (1 byte) | header length (4 bytes, little endian) | header JSON | payload
The header holds the bit-width, the Keras architecture (so the file alone rebuilds the model) and,
per layer, where its codes, scales and float32 bias sit in the payload. Everything here is pure
NumPy, so the exact bytes and the round trip can be tested without TensorFlow.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"QPCK"
VERSION = 1


def levels_for(bits: int) -> int:
    """Largest code magnitude at `bits` bits (symmetric, so one code of the 2^bits is unused)."""
    if not 2 <= bits <= 8:
        raise ValueError(f"packed weights take 2 to 8 bits, got {bits}")
    return 2 ** (bits - 1) - 1


def channel_scales(kernel: np.ndarray, bits: int) -> np.ndarray:
    """Per-output-channel scales (last axis), float32; an all-zero channel gets scale 1."""
    kernel = np.asarray(kernel, dtype=np.float32)
    peak = np.max(np.abs(kernel.reshape(-1, kernel.shape[-1])), axis=0)
    scales = (peak / np.float32(levels_for(bits))).astype(np.float32)
    return np.where(scales == 0, np.float32(1.0), scales).astype(np.float32)


def quantize_kernel(kernel: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(codes int8, scales float32) with codes = round(kernel / scale) clipped to ±levels."""
    scales = channel_scales(kernel, bits)
    levels = levels_for(bits)
    codes = np.clip(np.round(np.asarray(kernel, np.float32) / scales), -levels, levels).astype(np.int8)
    return codes, scales


def dequantize_kernel(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    return (codes.astype(np.float32) * scales.astype(np.float32)).astype(np.float32)


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Signed codes in ±levels -> `bits` bits each (offset binary, most significant bit first)."""
    unsigned = (np.asarray(codes, dtype=np.int16).ravel() + levels_for(bits)).astype(np.uint8)
    bit_matrix = np.unpackbits(unsigned[:, None], axis=1)[:, 8 - bits :]
    return np.packbits(bit_matrix.ravel()).tobytes()


def unpack_codes(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of `pack_codes`: `count` signed codes (int8)."""
    bit_stream = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: count * bits].reshape(count, bits)
    padded = np.zeros((count, 8), dtype=np.uint8)
    padded[:, 8 - bits :] = bit_stream
    return (np.packbits(padded, axis=1).ravel().astype(np.int16) - levels_for(bits)).astype(np.int8)


def packed_length(count: int, bits: int) -> int:
    """Bytes that `count` codes take at `bits` bits."""
    return (count * bits + 7) // 8


@dataclass
class PackedLayer:
    name: str
    kernel_name: str  # which weight of the layer: kernel, depthwise_kernel, pointwise_kernel
    codes: np.ndarray
    scales: np.ndarray


def write_qpack(path, bits: int, architecture: str, layers: list[PackedLayer], floats: dict[str, list[np.ndarray]]) -> int:
    """Write a .qpack file; returns its size in bytes.

    layers: quantized kernels; floats: layer name -> the layer's other weights (biases), kept as
    float32; architecture: the Keras model's JSON config.
    """
    payload = bytearray()
    entries = []

    def put(array_bytes: bytes) -> list[int]:
        start = len(payload)
        payload.extend(array_bytes)
        return [start, len(array_bytes)]

    for layer in layers:
        entries.append({
            "layer": layer.name,
            "weight": layer.kernel_name,
            "shape": list(layer.codes.shape),
            "codes": put(pack_codes(layer.codes, bits)),
            "scales": put(layer.scales.astype("<f4").tobytes()),
        })
    float_entries = {
        name: [{"shape": list(w.shape), "at": put(np.asarray(w, dtype="<f4").tobytes())} for w in weights]
        for name, weights in floats.items()
    }
    header = json.dumps({"bits": bits, "architecture": json.loads(architecture), "kernels": entries, "floats": float_entries},
                        separators=(",", ":")).encode()
    blob = MAGIC + struct.pack("<BI", VERSION, len(header)) + header + bytes(payload)
    with open(path, "wb") as handle:
        handle.write(blob)
    return len(blob)


def read_qpack(path) -> tuple[dict, dict[str, dict[str, np.ndarray]], dict[str, list[np.ndarray]]]:
    """(header, {layer: {weight name: float32 kernel}}, {layer: [float32 arrays]}) from a .qpack."""
    blob = open(path, "rb").read()
    if blob[:4] != MAGIC:
        raise ValueError(f"{path} is not a .qpack file")
    version, length = struct.unpack("<BI", blob[4:9])
    if version != VERSION:
        raise ValueError(f"{path} is .qpack version {version}; this reader knows version {VERSION}")
    header = json.loads(blob[9 : 9 + length])
    payload = memoryview(blob)[9 + length :]
    bits = header["bits"]
    kernels: dict[str, dict[str, np.ndarray]] = {}
    for entry in header["kernels"]:
        count = int(np.prod(entry["shape"]))
        start, size = entry["codes"]
        codes = unpack_codes(bytes(payload[start : start + size]), bits, count).reshape(entry["shape"])
        start, size = entry["scales"]
        scales = np.frombuffer(bytes(payload[start : start + size]), dtype="<f4")
        kernels.setdefault(entry["layer"], {})[entry["weight"]] = dequantize_kernel(codes, scales)
    floats = {
        name: [np.frombuffer(bytes(payload[e["at"][0] : e["at"][0] + e["at"][1]]), dtype="<f4").reshape(e["shape"]) for e in entries]
        for name, entries in header["floats"].items()
    }
    return header, kernels, floats
