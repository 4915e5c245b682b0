"""TFLite (LiteRT) export of a generator, float32 and float16, and a LiteRT runner.

The model has one signature, ``serving_default``: input ``images`` uint8 ``[N, H, W, 3]``
(RGB, NHWC, 0-255), output ``upscaled`` uint8 ``[N, sH, sW, 3]``. Its shape signature is
``[-1, -1, -1, 3]``: any size works after ``resize_tensor_input`` (a signature runner resizes by
itself), at the price of re-planning memory whenever the size changes.

Variants: ``float32`` (the reference) and ``float16`` (weights stored as float16, half the
file; on CPU LiteRT dequantises them to float32 once and computes in float32, GPU delegates
compute in float16).

Runs with the maintained LiteRT interpreter (``ai-edge-litert``); TF 2.21's own
`tf.lite.Interpreter` still works but warns that it is deprecated in its favour.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from dlss_dist import files
from dlss_dist.exporters.graph import INPUT_NAME, OUTPUT_NAME, UpscaleGraph

VARIANTS = ("float32", "float16")
SIGNATURE_KEY = "serving_default"


def convert(generator: keras.Model, variant: str = "float32") -> bytes:
    """Returns the TFLite flatbuffer of `generator`'s uint8 -> uint8 upscaling graph."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    graph = UpscaleGraph(generator)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [graph.upscale.get_concrete_function()], graph
    )
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def export_tflite(
    generator: keras.Model, path: str, *, scale: int, variant: str = "float32"
) -> str:
    """Writes `generator` as a TFLite model file at `path` (atomically); returns `path`.

    Args:
      generator: fully convolutional Keras model, float32 NHWC in [-1, 1] in and out.
      path: the .tflite file to write (local or gs://).
      scale: the generator's upscaling factor (logged; runners find it with a test call).
      variant: "float32" or "float16" (float16 weights).
    """
    content = convert(generator, variant)
    files.atomic_write(path, content)
    logging.info("Exported the generator (x%d) as TFLite %s to %s", scale, variant, path)
    return path


class TFLiteUpscaler:
    """An exported TFLite model in LiteRT: ``upscale_batch(uint8 NHWC) -> uint8 NHWC``.

    Attributes:
      path: the model file.
      scale: upscaling factor, found by upscaling an 8x8 input once.
    """

    def __init__(self, path: str, *, threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as error:
            raise ImportError(
                f"running TFLite models needs LiteRT: pip install 'dlss_dist[tflite]' ({error})"
            ) from error
        self.path = path
        with tf.io.gfile.GFile(path, "rb") as f:
            content = f.read()
        self._interpreter = Interpreter(model_content=content, num_threads=threads)
        signatures = self._interpreter.get_signature_list()
        if SIGNATURE_KEY not in signatures or signatures[SIGNATURE_KEY]["inputs"] != [INPUT_NAME]:
            raise ValueError(f"{path} has no {SIGNATURE_KEY}({INPUT_NAME}): not a dlss_dist export")
        self._runner = self._interpreter.get_signature_runner(SIGNATURE_KEY)
        self.scale = self.upscale_batch(np.zeros((1, 8, 8, 3), np.uint8)).shape[1] // 8

    def upscale_batch(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] -> uint8 [N, sH, sW, 3] in one call (no tiling)."""
        images = np.ascontiguousarray(images, np.uint8)
        # The runner resizes the input tensor and re-plans memory when the shape changes.
        return self._runner(**{INPUT_NAME: images})[OUTPUT_NAME].copy()
