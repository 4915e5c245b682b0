"""The graph every non-SavedModel export converts: uint8 images in, uint8 images out.

It is the SavedModel ``upscale`` signature's arithmetic (``to_float`` -> generator in
inference mode -> ``to_uint8``: clip, round half to even, cast) without its pixel-limit
assertion: `tf.debugging.Assert` with a formatted message has no ONNX or TFLite builtin
equivalent, so those formats accept any size and the caller bounds memory (tile large images).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from dlss_dist.data.pipeline import to_float, to_uint8
from dlss_dist.export_formats import INPUT_NAME, OUTPUT_NAME


class UpscaleGraph(tf.Module):
    """Tracks the generator's variables (not the Keras object) and one traced function.

    Converters that freeze variables read them through this module: handing TFLite's
    converter the Keras 3 model itself as the trackable object gave NaN outputs here
    (TF 2.21, Keras 3.15), while a plain `tf.Module` over the same variables is exact.
    """

    def __init__(self, generator: keras.Model):
        super().__init__(name="dlss_upscale_graph")
        self.generator_variables = [getattr(v, "value", v) for v in generator.variables]

        def infer(images: tf.Tensor) -> tf.Tensor:
            return generator(images, training=False)

        self._infer = infer

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=INPUT_NAME)])
    def upscale(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """uint8 [N, H, W, 3] -> {"upscaled": uint8 [N, sH, sW, 3]}."""
        return {OUTPUT_NAME: to_uint8(self._infer(to_float(images)))}
