"""SavedModel export of a generator for TF Serving, and restoring a generator from a checkpoint.

The exported SavedModel is a `tf.Module` with two explicit signatures (DESIGN.md §4):

* ``serving_default(image_bytes: string[N]) -> {"image_bytes": string[N]}``: encoded images
  (JPEG, PNG, GIF, BMP, WebP) in, PNG bytes out. The names end in ``_bytes`` so TF Serving's
  REST API accepts and returns them as ``{"b64": ...}``. Images in one batch may differ in
  size. Grayscale inputs become RGB; an alpha channel is dropped (``channels=3``), i.e. the
  stored colour of transparent pixels is used as is; an animated GIF gives its first frame
  (only that frame is decoded). Each image's size is read from its header and checked
  against the pixel limit before any pixel is decoded (`dlss_dist.serving_decode`); JPEG XL
  and animated WebP are refused for that reason.
* ``upscale(images: uint8[N, H, W, 3]) -> {"images": uint8[N, sH, sW, 3]}``.

Both run the generator in inference mode (``training=False``), map uint8 to [-1, 1] and back
with clip and round, and fail with a `tf.errors.InvalidArgumentError` whose message says what
is wrong when an input is over the pixel limit chosen at export time, empty (0 pixels or 0
images) or not an image.

Batch semantics of ``serving_default``: a request is all or nothing. Images are processed one
at a time, in order (so memory is bounded by one image at the limit, not by the batch); the
first image that fails stops the request, and the error names it as ``image_bytes[i]``
(0-based position in the request). Clients that want per-image outcomes send one image per
request. (A PNG or JPEG cut short is caught by its missing end marker and named; other
corrupt data under a valid header fails inside TensorFlow's decoder, whose message does not
carry the index.)

The module tracks only the generator's variables and traced graphs, so loading needs nothing
but TensorFlow: no dlss_dist, no Keras custom layers. It also carries two int64 variables,
``scale`` and ``max_input_pixels``, that clients can read after `tf.saved_model.load`.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from dlss_dist import serving_decode
from dlss_dist.data.pipeline import to_float, to_uint8

DEFAULT_MAX_INPUT_PIXELS = 4_000_000


class _GeneratorModule(tf.Module):
    """What gets saved: the generator's variables, its traced inference call, two signatures."""

    def __init__(self, generator: keras.Model, *, scale: int, max_input_pixels: int):
        super().__init__(name="dlss_generator")
        # Track the variables themselves, not the Keras object graph, so that loading does not
        # need Keras or any custom layer class. Keras 3 variables wrap a tf.Variable in `.value`.
        self.generator_variables = [getattr(v, "value", v) for v in generator.variables]
        self.scale = tf.Variable(scale, dtype=tf.int64, trainable=False, name="scale")
        self.max_input_pixels = tf.Variable(
            max_input_pixels, dtype=tf.int64, trainable=False, name="max_input_pixels"
        )
        self._max_input_pixels = int(max_input_pixels)

        # A plain closure is not trackable, so the Keras model stays out of the SavedModel.
        def infer(images: tf.Tensor) -> tf.Tensor:
            return generator(images, training=False)

        self._infer = infer

    def _check_pixels(self, height: tf.Tensor, width: tf.Tensor, what: str, *args) -> tf.Operation:
        """Asserts height*width <= the limit; `what` is a tf.strings.format template for `args`."""
        pixels = tf.cast(height, tf.int64) * tf.cast(width, tf.int64)
        message = tf.strings.format(
            what
            + " is {}x{} = {} pixels, over this export's limit of "
            + str(self._max_input_pixels)
            + " input pixels (max_input_pixels, set at export time): upscale it in tiles "
            "(dlss-upscale --tile=N) or export again with a larger limit",
            (*args, width, height, pixels),  # W x H, as every size the tools print
        )
        return tf.debugging.Assert(pixels <= self._max_input_pixels, [message])

    def _upscale(self, images: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(images)
        empty = tf.strings.format(
            "images has shape {}: upscale needs at least one image of at least 1x1 pixels",
            [shape],
        )
        checks = [
            tf.debugging.Assert(tf.reduce_all(shape[:3] > 0), [empty]),
            self._check_pixels(shape[1], shape[2], "input image"),
        ]
        with tf.control_dependencies(checks):
            return to_uint8(self._infer(to_float(images)))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def upscale(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """uint8 [N, H, W, 3] -> {"images": uint8 [N, sH, sW, 3]}."""
        return {"images": self._upscale(images)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serving_default(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        """Encoded images string[N] -> {"image_bytes": PNG string[N]}."""
        indices = tf.range(tf.size(image_bytes, out_type=tf.int32))

        def one(index: tf.Tensor) -> tf.Tensor:
            # The header's size is checked before anything is decoded (serving_decode).
            image = serving_decode.decode_bounded(
                image_bytes[index],
                what=tf.strings.format("image_bytes[{}]", index),
                max_pixels=self._max_input_pixels,
            )
            sr = to_uint8(self._infer(to_float(image)[tf.newaxis]))[0]
            return tf.io.encode_png(sr)

        # map_fn, not a batched call: the images of one request may have different sizes.
        # parallel_iterations=1: one image in memory at a time, whatever the batch size.
        outputs = tf.map_fn(
            one, indices, fn_output_signature=tf.TensorSpec([], tf.string), parallel_iterations=1
        )
        return {"image_bytes": outputs}


def infer_scale(generator: keras.Model) -> int:
    """Returns the generator's upscaling factor, found by running an 8x8 input."""
    output = generator(np.zeros((1, 8, 8, 3), np.float32), training=False)
    height = int(output.shape[1])
    if height % 8 or int(output.shape[2]) != height:
        raise ValueError(f"generator maps an 8x8 input to {tuple(output.shape)}: not an upscaler")
    return height // 8


def export_generator(
    generator: keras.Model,
    export_path: str,
    *,
    scale: int,
    max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS,
) -> str:
    """Writes `generator` as a TF Serving SavedModel to `export_path` and returns the path.

    Args:
      generator: fully convolutional Keras model, float32 NHWC images in [-1, 1] in and out.
      export_path: directory to write (a version folder, e.g. ``<export_root>/<step>``).
      scale: the generator's upscaling factor; checked against the model by a test call.
      max_input_pixels: largest input H*W the signatures accept (bounds memory per request).
    """
    if max_input_pixels < 1:
        raise ValueError(f"max_input_pixels must be positive, got {max_input_pixels}")
    actual = infer_scale(generator)
    if actual != scale:
        raise ValueError(f"scale={scale} but the generator upscales by {actual}")
    module = _GeneratorModule(generator, scale=scale, max_input_pixels=max_input_pixels)
    signatures = {"serving_default": module.serving_default, "upscale": module.upscale}
    tf.saved_model.save(module, export_path, signatures=signatures)
    logging.debug("Exported the generator (x%d) to %s", scale, export_path)  # callers say where
    return export_path
