"""The int8 trunk: VGG16's convolutions with quantize/dequantize (QDQ) pairs, rebuilt from the Keras weights.

What a bundle stores is only each convolution's calibrated activation range (`int8.npz`, under 2 KB);
the weights' int8 scales are computed from the Keras ImageNet weights at load, so the same graph comes back
every time and the bundle stays small. ONNX Runtime fuses each DequantizeLinear -> Conv -> Relu ->
QuantizeLinear group into one integer convolution.

- Activations: uint8 per tensor, zero point 0 (every quantized tensor follows a ReLU or a max-pool of one),
  scale = the largest value seen on the calibration films / 255.
- Weights: int8 per output channel, symmetric, in [-64, 64] (7 bits). x86 CPUs without VNNI multiply
  uint8 x int8 pairs into saturating 16-bit sums (VPMADDUBSW); 255 * 64 * 2 = 32,640 never saturates, so the
  integer result, and the bundle's threshold, are the same on every CPU (docs/decisions.md).
- Biases: int32 at the input scale times the weight scale, as ONNX Runtime's integer convolution expects.
- The image itself and the lung decoder stay float: the first convolution reads float pixels (its output is
  quantized), and the decoder reads dequantized block3/4/5 activations.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# onnx is imported where the int8 graph is written (0.8 s: `python -c 'import onnx'`).

INT8_FILE = "int8.npz"
INT8_VERSION = 1  # bump when the QDQ layout changes: older files are then refused
WEIGHT_LEVELS = 64  # 7-bit symmetric weights: no 16-bit saturation on AVX2 (see above)
CALIBRATION_IMAGES = 64  # fit films whose activations set the ranges (a seeded choice)
FP32 = "fp32"  # what bundles made before int8 ran
PRECISIONS = (FP32, "int8")


@dataclass(frozen=True)
class Int8Ranges:
    """The largest activation of each trunk convolution (after its ReLU) over the calibration films."""

    maxima: dict[str, float]
    images: int  # how many films set them

    def scale(self, layer: str) -> float:
        if layer not in self.maxima:
            raise ValueError(f"the int8 ranges have no entry for '{layer}'; recalibrate with train.py.")
        return max(float(self.maxima[layer]), 1e-6) / 255.0

    def fingerprint(self) -> str:
        """Identifies the ranges: features of another int8 trunk are never reused from the cache."""
        digest = hashlib.sha256(str(INT8_VERSION).encode())
        for name in sorted(self.maxima):
            digest.update(name.encode() + np.float32(self.maxima[name]).tobytes())
        return digest.hexdigest()[:10]

    def record(self) -> dict:
        """What the bundle's config says of them: their file, and how they were measured."""
        return {"file": INT8_FILE, "version": INT8_VERSION, "calibration_images": self.images,
                "weight_levels": WEIGHT_LEVELS, "fingerprint": self.fingerprint()}

    def save(self, path: str | Path) -> None:
        names = sorted(self.maxima)
        np.savez(path, version=INT8_VERSION, names=np.array(names),
                 maxima=np.array([self.maxima[n] for n in names], np.float32), images=self.images)

    @classmethod
    def load(cls, path: str | Path) -> Int8Ranges:
        with np.load(path) as arrays:
            version = int(arrays["version"]) if "version" in arrays else None
            if version != INT8_VERSION:
                raise ValueError(f"'{path}' holds int8 ranges of version {version}; this package reads version "
                                 f"{INT8_VERSION}. Retrain with `python train.py --precision int8`.")
            maxima = dict(zip(arrays["names"].tolist(), arrays["maxima"].astype(float).tolist()))
            return cls(maxima, int(arrays["images"]))


def quantized_weights(kernel: np.ndarray, bias: np.ndarray, input_scale: float):
    """OIHW float kernel and bias -> (int8 kernel, per-channel scales, int32 bias, the bias' scales)."""
    absmax = np.abs(kernel).reshape(len(kernel), -1).max(axis=1)
    scales = np.where(absmax > 0, absmax / WEIGHT_LEVELS, 1.0).astype(np.float32)
    q_kernel = np.clip(np.rint(kernel / scales[:, None, None, None]), -WEIGHT_LEVELS, WEIGHT_LEVELS).astype(np.int8)
    bias_scales = (np.float32(input_scale) * scales).astype(np.float32)
    q_bias = np.rint(bias / bias_scales).astype(np.int32)
    return q_kernel, scales, q_bias, bias_scales


def qdq_nodes(source: str, output: str, scale: float, nodes: list, weights: list) -> str:
    """QuantizeLinear -> DequantizeLinear on a non-negative float tensor (uint8, zero point 0)."""
    from onnx import helper, numpy_helper

    s, z = f"{output}_scale", f"{output}_zero"
    weights += [numpy_helper.from_array(np.array(scale, np.float32), s),
                numpy_helper.from_array(np.array(0, np.uint8), z)]
    nodes.append(helper.make_node("QuantizeLinear", [source, s, z], [f"{output}_u8"]))
    nodes.append(helper.make_node("DequantizeLinear", [f"{output}_u8", s, z], [output]))
    return output


def dequantized_initializers(name: str, kernel: np.ndarray, bias: np.ndarray, input_scale: float,
                             nodes: list, weights: list) -> tuple[str, str]:
    """The kernel and bias as int8/int32 initializers behind DequantizeLinear; returns their float names."""
    from onnx import helper, numpy_helper

    q_kernel, scales, q_bias, bias_scales = quantized_weights(kernel, bias, input_scale)
    for suffix, values, scale, zero in (("w", q_kernel, scales, np.zeros(len(scales), np.int8)),
                                        ("b", q_bias, bias_scales, np.zeros(len(scales), np.int32))):
        weights += [numpy_helper.from_array(values, f"{name}_{suffix}_q"),
                    numpy_helper.from_array(scale, f"{name}_{suffix}_scale"),
                    numpy_helper.from_array(zero, f"{name}_{suffix}_zero")]
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_{suffix}_q", f"{name}_{suffix}_scale",
                                                           f"{name}_{suffix}_zero"], [f"{name}_{suffix}"], axis=0))
    return f"{name}_w", f"{name}_b"
