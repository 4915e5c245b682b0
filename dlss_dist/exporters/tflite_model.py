"""TFLite (LiteRT) export of a generator, float32 and float16; `dlss_dist.serving` runs it.

The model has one signature, ``serving_default``: input ``images`` uint8 ``[N, H, W, 3]``
(RGB, NHWC, 0-255), output ``upscaled`` uint8 ``[N, sH, sW, 3]``. Its shape signature is
``[-1, -1, -1, 3]``: any size works after ``resize_tensor_input`` (a signature runner resizes by
itself), at the price of re-planning memory whenever the size changes.

Variants: ``float32`` (the reference) and ``float16`` (weights stored as float16, half the
file; on CPU LiteRT dequantises them to float32 once and computes in float32, GPU delegates
compute in float16).

`dlss_dist.serving.tflite_file` runs it with the maintained LiteRT interpreter
(``ai-edge-litert``); TF 2.21's own `tf.lite.Interpreter` still works but warns that it is
deprecated in its favour.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from absl import logging

from dlss_dist import files
from dlss_dist.exporters.graph import UpscaleGraph

VARIANTS = ("float32", "float16")


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
    logging.debug("Exported the generator (x%d) as TFLite %s to %s", scale, variant, path)
    return path
