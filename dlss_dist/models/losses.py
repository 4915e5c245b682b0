"""Per-example losses, shape [N], never reduced over the batch.

The trainer scales them once to the global batch with `tf.nn.compute_average_loss`. Every loss
is computed in float32, whatever the model's compute dtype. Adversarial losses take the
discriminators' LOGITS (shape [N] or [N, 1]); the sigmoid is folded into
`tf.nn.sigmoid_cross_entropy_with_logits`, which stays finite for any logit.
"""

from __future__ import annotations

import os
import tempfile

import gin
import keras
import tensorflow as tf

from dlss_dist.models.layers import check_choice, check_positive_float

PIXEL_LOSSES = ("mse", "l1", "charbonnier")
ADVERSARIAL_LOSSES = ("bce", "ragan", "hinge")

# ImageNet channel means in BGR order: what the Keras VGG19 weights were trained with
# (keras.applications.vgg19.preprocess_input, "caffe" mode).
_VGG_BGR_MEAN = (103.939, 116.779, 123.68)


def _per_example_mean(x: tf.Tensor) -> tf.Tensor:
    """Mean over every axis but the first: [N, ...] -> [N]."""
    return tf.reduce_mean(tf.reshape(x, [tf.shape(x)[0], -1]), axis=1)


def _logits(name: str, logits) -> tf.Tensor:
    """Accepts logits shaped [N] or [N, 1]; returns float32 [N]."""
    logits = tf.cast(tf.convert_to_tensor(logits), tf.float32)
    if logits.shape.rank == 2 and logits.shape[1] == 1:
        logits = tf.squeeze(logits, axis=1)
    if logits.shape.rank != 1:
        raise ValueError(f"`{name}` must have shape [N] or [N, 1], got {logits.shape}.")
    return logits


def _bce(labels_value: float, logits: tf.Tensor) -> tf.Tensor:
    return tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.fill(tf.shape(logits), labels_value), logits=logits
    )


def pixel_loss(hr, sr, kind: str = "mse", *, epsilon: float = 1e-3) -> tf.Tensor:
    """Pixel loss between HR and SR images, averaged per example.

    Args:
      hr: target images [N, H, W, C] in [-1, 1].
      sr: generated images, same shape.
      kind: "mse" (the seeds), "l1" or "charbonnier" (mean of sqrt(d² + epsilon²), a
        differentiable L1).
      epsilon: the Charbonnier constant (same units as the images).

    Returns:
      float32 [N].
    """
    check_choice("kind", kind, PIXEL_LOSSES)
    check_positive_float("epsilon", epsilon)
    diff = tf.cast(sr, tf.float32) - tf.cast(hr, tf.float32)
    if kind == "mse":
        return _per_example_mean(tf.square(diff))
    if kind == "l1":
        return _per_example_mean(tf.abs(diff))
    return _per_example_mean(tf.sqrt(tf.square(diff) + epsilon**2))


def discriminator_loss(real_logits, fake_logits, kind: str = "bce") -> tf.Tensor:
    """The discriminator's loss per example, from logits.

    - "bce": BCE(real, 1) + BCE(fake, 0) (the seeds, standard GAN).
    - "ragan": relativistic average GAN (ESRGAN): BCE(real − mean(fake), 1) +
      BCE(fake − mean(real), 0). The means are over the batch this call sees, i.e. the
      replica's share of the global batch under tf.distribute.
    - "hinge": relu(1 − real) + relu(1 + fake).

    Args:
      real_logits: D(hr), [N] or [N, 1].
      fake_logits: D(sr), [N] or [N, 1].
      kind: one of "bce", "ragan", "hinge".

    Returns:
      float32 [N].
    """
    check_choice("kind", kind, ADVERSARIAL_LOSSES)
    real = _logits("real_logits", real_logits)
    fake = _logits("fake_logits", fake_logits)
    if kind == "bce":
        return _bce(1.0, real) + _bce(0.0, fake)
    if kind == "ragan":
        return _bce(1.0, real - tf.reduce_mean(fake)) + _bce(0.0, fake - tf.reduce_mean(real))
    return tf.nn.relu(1.0 - real) + tf.nn.relu(1.0 + fake)


def generator_adversarial_loss(real_logits, fake_logits, kind: str = "bce") -> tf.Tensor:
    """The generator's adversarial loss per example, from logits.

    - "bce": non-saturating BCE(fake, 1) (the seeds); `real_logits` is unused (may be None).
    - "ragan": BCE(real − mean(fake), 0) + BCE(fake − mean(real), 1) (ESRGAN); batch means
      as in `discriminator_loss`.
    - "hinge": −fake; `real_logits` is unused (may be None).

    Args:
      real_logits: D(hr), [N] or [N, 1], or None for "bce" and "hinge".
      fake_logits: D(sr), [N] or [N, 1].
      kind: one of "bce", "ragan", "hinge".

    Returns:
      float32 [N].
    """
    check_choice("kind", kind, ADVERSARIAL_LOSSES)
    fake = _logits("fake_logits", fake_logits)
    if kind == "bce":
        return _bce(1.0, fake)
    if kind == "hinge":
        return -fake
    if real_logits is None:
        raise ValueError('`real_logits` is required for kind="ragan".')
    real = _logits("real_logits", real_logits)
    return _bce(0.0, real - tf.reduce_mean(fake)) + _bce(1.0, fake - tf.reduce_mean(real))


@gin.configurable
class PerceptualLoss:
    """VGG19 feature-space MSE (SRGAN's "VGG loss"), per example.

    The network is `keras.applications.VGG19(weights=None, include_top=False)` with weights
    loaded from `weights_path`; nothing is ever downloaded. The usual file is Keras's
    `vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5`; any file written by
    `VGG19(weights=None, include_top=False).save_weights("x.weights.h5")` works too. Local
    and `gs://` (any tf.io.gfile) paths are accepted.

    Images in [-1, 1] RGB are mapped to VGG's own preprocessing ([0, 255], BGR, ImageNet mean
    subtracted) before the features are taken. VGG's weights are frozen; gradients flow to
    the SR image only. Create it inside `strategy.scope()` like any other model.
    """

    def __init__(
        self,
        *,
        weights_path: str = gin.REQUIRED,
        layer: str = "block5_conv4",
        before_activation: bool = False,
    ):
        """Builds the frozen feature extractor.

        Args:
          weights_path: path of the VGG19 (no top) weights file.
          layer: name of the VGG19 layer whose output is compared (SRGAN's VGG54 is
            "block5_conv4", VGG22 is "block2_conv2").
          before_activation: compare the conv output before its ReLU (ESRGAN); only for
            conv layers.

        Raises:
          FileNotFoundError: `weights_path` does not exist.
          ValueError: `layer` is not a VGG19 layer, or the file does not hold VGG19 weights.
        """
        if not isinstance(weights_path, str) or not weights_path:
            raise ValueError(f"`weights_path` must be a file path, got {weights_path!r}.")
        if not tf.io.gfile.exists(weights_path):
            raise FileNotFoundError(
                f"`weights_path` {weights_path!r} does not exist. PerceptualLoss never downloads "
                "weights: give the Keras VGG19 no-top weights file "
                "(vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5) or a file saved with "
                "VGG19(weights=None, include_top=False).save_weights(...)."
            )
        vgg = keras.applications.VGG19(weights=None, include_top=False, input_shape=(None, None, 3))
        layer_names = [vgg_layer.name for vgg_layer in vgg.layers[1:]]
        check_choice("layer", layer, layer_names)
        self._load_weights(vgg, weights_path)
        vgg.trainable = False

        feature_layer = vgg.get_layer(layer)
        if before_activation:
            if not isinstance(feature_layer, keras.layers.Conv2D):
                raise ValueError(
                    f"`before_activation=True` needs a conv layer, `layer`={layer!r} is not one."
                )
            # The extractor ends at this layer and the VGG model is private to the loss, so
            # dropping its ReLU changes nothing else.
            feature_layer.activation = keras.activations.linear
        self.layer = layer
        self.before_activation = bool(before_activation)
        self.feature_extractor = keras.Model(vgg.input, feature_layer.output, name=f"vgg19_{layer}")
        self.feature_extractor.trainable = False

    @staticmethod
    def _load_weights(vgg: keras.Model, weights_path: str) -> None:
        # h5py reads local files only: copy remote (gs://...) files next to us first, keeping
        # the basename, because Keras picks the format from the suffix.
        with tempfile.TemporaryDirectory() as tmp:
            local_path = weights_path
            if "://" in weights_path:
                local_path = os.path.join(tmp, os.path.basename(weights_path))
                tf.io.gfile.copy(weights_path, local_path)
            try:
                vgg.load_weights(local_path)
            except (ValueError, OSError, KeyError) as e:
                raise ValueError(
                    f"`weights_path` {weights_path!r} does not hold VGG19 (include_top=False) "
                    f"weights: {e}"
                ) from e

    @staticmethod
    def preprocess(images) -> tf.Tensor:
        """[-1, 1] RGB -> VGG19 input: [0, 255], BGR, ImageNet BGR mean subtracted."""
        images = (tf.cast(images, tf.float32) + 1.0) * 127.5
        return images[..., ::-1] - tf.constant(_VGG_BGR_MEAN, tf.float32)

    def features(self, images) -> tf.Tensor:
        """VGG19 features of images in [-1, 1]."""
        features = self.feature_extractor(self.preprocess(images), training=False)
        return tf.cast(features, tf.float32)

    def __call__(self, hr, sr) -> tf.Tensor:
        """Mean squared VGG feature difference per example: float32 [N]."""
        hr_features = tf.stop_gradient(self.features(hr))
        return _per_example_mean(tf.square(self.features(sr) - hr_features))
