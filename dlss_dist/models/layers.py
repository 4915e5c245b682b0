"""Building blocks shared by the generators and discriminators.

Two small serialisable Keras layers (pixel shuffle and the in-graph bicubic resize) and the
argument checks every builder runs before it creates a single variable, so a bad gin binding
fails at build time with a message that names the binding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import tensorflow as tf

from dlss_dist import imaging

NORMALIZATIONS = ("batch", "sync_batch", "none")
ACTIVATIONS = ("relu", "prelu", "leaky_relu")


@keras.saving.register_keras_serializable(package="dlss_dist")
class PixelShuffle(keras.layers.Layer):
    """Sub-pixel convolution upsampling: [N, H, W, C·b²] -> [N, H·b, W·b, C] (depth_to_space)."""

    def __init__(self, block_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.block_size = check_positive_int("block_size", block_size, minimum=2)

    def call(self, inputs):
        return tf.nn.depth_to_space(inputs, self.block_size)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        b = self.block_size
        if c is not None and c % (b * b):
            raise ValueError(
                f"PixelShuffle(block_size={b}) needs channels divisible by {b * b}, got {c}."
            )
        return (
            n,
            None if h is None else h * b,
            None if w is None else w * b,
            None if c is None else c // (b * b),
        )

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


def _keys_cubic(distance: tf.Tensor, a: float = -0.5) -> tf.Tensor:
    """Keys' cubic convolution kernel (a = -0.5), the one MATLAB's imresize uses."""
    near = ((a + 2.0) * distance - (a + 3.0)) * distance * distance + 1.0
    far = ((a * distance - 5.0 * a) * distance + 8.0 * a) * distance - 4.0 * a
    return tf.where(distance <= 1.0, near, tf.where(distance < 2.0, far, 0.0))


def bicubic_upsample_matrix(size: tf.Tensor, scale: int) -> tf.Tensor:
    """The [size·scale, size] matrix of MATLAB `imresize`'s bicubic enlargement on one axis.

    Half-pixel centres, Keys' kernel, and taps outside the image mirrored back in
    (symmetric padding), as in `dlss_dist.imaging.imresize`: the one bicubic of the package,
    so the generators' skip and dlss-eval's bicubic baseline are the same function.
    """
    source = (tf.cast(tf.range(size * scale), tf.float32) + 0.5) / scale - 0.5
    base = tf.floor(source)
    taps = tf.constant([-1.0, 0.0, 1.0, 2.0])
    weights = _keys_cubic(tf.abs(source[:, None] - base[:, None] - taps[None, :]))
    weights /= tf.reduce_sum(weights, axis=1, keepdims=True)
    # MATLAB's mirror: indices 0..n-1, then n-1..0, repeated. Taps reach index -1 at most;
    # shifting by one period keeps the modulo's operand non-negative, where every runtime
    # agrees on its sign (ONNX Runtime's integer Mod does not follow TF's floor semantics).
    taps_index = tf.cast(base[:, None] + taps[None, :], tf.int32) + 2 * size
    index = tf.math.floormod(taps_index, 2 * size)
    index = tf.where(index < size, index, 2 * size - 1 - index)
    one_hot = tf.one_hot(index, size)  # [out, 4, size]
    return tf.reduce_sum(one_hot * weights[..., None], axis=1)


def bicubic_upsample(images: tf.Tensor, scale: int) -> tf.Tensor:
    """Enlarges float32 NHWC images `scale`× with `bicubic_upsample_matrix` on both axes."""
    images = tf.cast(images, tf.float32)
    rows = bicubic_upsample_matrix(tf.shape(images)[1], scale)
    columns = bicubic_upsample_matrix(tf.shape(images)[2], scale)
    resized = tf.einsum("oh,nhwc->nowc", rows, images)
    return tf.einsum("pw,nowc->nopc", columns, resized)


@keras.saving.register_keras_serializable(package="dlss_dist")
class BicubicUpsample(keras.layers.Layer):
    """Enlarges images `scale`× with MATLAB's bicubic (`bicubic_upsample`).

    Written as two matrix products instead of the ResizeBicubic op because XLA has no
    ResizeBicubic kernel on CPU (and `train_loop.jit_compile` must work with the default
    generator), and because TF's op treats borders differently from MATLAB. Computed in
    float32 whatever the precision policy. Only used to enlarge
    (the generators' global skip); LR images are never made with this layer (see
    `dlss_dist.imaging.degrade_bicubic`).
    """

    def __init__(self, scale: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.scale = check_positive_int("scale", scale, minimum=2)

    def call(self, inputs):
        return tf.cast(bicubic_upsample(inputs, self.scale), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        s = self.scale
        return (n, None if h is None else h * s, None if w is None else w * s, c)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="dlss_dist")
class ICNR(keras.initializers.Initializer):
    """Initialises a conv that feeds `PixelShuffle(block_size)` so the shuffle starts as a
    nearest-neighbour upsampling (Aitken et al. 2017, "Checkerboard artifact free sub-pixel
    convolution"): every sub-pixel position gets the same kernel. A plain random init gives
    each of the block_size² positions its own kernel, a checkerboard that training must undo
    and that an adversarial loss amplifies.
    """

    def __init__(self, block_size: int, seed=None):
        self.block_size = int(block_size)
        self.seed = seed

    def __call__(self, shape, dtype=None):
        *kernel, channels = shape
        subpixels = self.block_size**2
        if channels % subpixels:
            raise ValueError(f"ICNR: {channels} output channels are not divisible by {subpixels}.")
        base = keras.initializers.GlorotUniform(seed=self.seed)(
            (*kernel, channels // subpixels), dtype=dtype
        )
        # depth_to_space reads channel (dy * b + dx) * C + c for output channel c at (dy, dx).
        return tf.tile(base, [1] * len(kernel) + [subpixels])

    def get_config(self):
        return {"block_size": self.block_size, "seed": self.seed}


@keras.saving.register_keras_serializable(package="dlss_dist")
class SpectralNormConv2D(keras.layers.Layer):
    """Conv2D whose kernel is divided by its largest singular value (Miyato et al. 2018).

    One power iteration per training call refines the persistent estimate `u` of the leading
    left singular vector, as in PyTorch's `spectral_norm` (which Real-ESRGAN's U-Net
    discriminator uses). Keras's own `SpectralNormalization` wrapper instead rewrites the
    wrapped kernel in place and assigns variables in a replica context, which MirroredStrategy
    forbids; here the normalised kernel is computed in the forward pass, so the gradient flows
    through the normalisation and only `u` is assigned (aggregated as "only_first_replica", so
    every replica keeps the same estimate).
    """

    def __init__(self, filters: int, kernel_size, *, strides=1, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = check_kernel("kernel_size", kernel_size)
        self.strides = int(strides)
        self.use_bias = bool(use_bias)

    def build(self, input_shape):
        in_channels = int(input_shape[-1])
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, in_channels, self.filters),
            initializer="glorot_uniform",
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
            if self.use_bias
            else None
        )
        self.u = self.add_weight(
            name="u",
            shape=(self.filters,),
            initializer=keras.initializers.RandomNormal(seed=0),
            trainable=False,
            aggregation="only_first_replica",
        )

    def _normalized_kernel(self, training: bool) -> tf.Tensor:
        kernel = tf.convert_to_tensor(self.kernel)
        matrix = tf.reshape(kernel, [-1, self.filters])  # [kh*kw*in, out]
        u = tf.math.l2_normalize(tf.convert_to_tensor(self.u))
        v = tf.stop_gradient(tf.math.l2_normalize(tf.linalg.matvec(matrix, u)))
        u = tf.stop_gradient(tf.math.l2_normalize(tf.linalg.matvec(matrix, v, transpose_a=True)))
        if training:
            self.u.assign(u)
        sigma = tf.tensordot(v, tf.linalg.matvec(matrix, u), axes=1)
        return kernel / sigma

    def call(self, inputs, training=False):
        kernel = tf.cast(self._normalized_kernel(bool(training)), inputs.dtype)
        outputs = tf.nn.conv2d(inputs, kernel, strides=self.strides, padding="SAME")
        if self.bias is not None:
            outputs = tf.nn.bias_add(outputs, tf.cast(self.bias, inputs.dtype))
        return outputs

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        s = self.strides
        return (
            n,
            None if h is None else -(-h // s),
            None if w is None else -(-w // s),
            self.filters,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "use_bias": self.use_bias,
        }


def check_positive_int(name: str, value, *, minimum: int = 1) -> int:
    """Returns `value` if it is an int ≥ `minimum`, else raises ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an integer ≥ {minimum}, got {value!r}.")
    return value


def check_non_negative_int(name: str, value) -> int:
    """Returns `value` if it is an int ≥ 0, else raises ValueError naming `name`."""
    return check_positive_int(name, value, minimum=0)


def check_positive_float(name: str, value) -> float:
    """Returns `value` as float if it is a finite number > 0, else raises ValueError."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"`{name}` must be a positive number, got {value!r}.")
    return float(value)


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    """Returns `value` if it is one of `choices`, else raises ValueError listing them."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(map(repr, choices))}; got {value!r}.")
    return value


def check_scale(name: str, value) -> int:
    """Returns the scale if it is a power of 2 ≥ 2 (one ×2 upsampling stage per factor of 2);
    `imaging.check_scale` is the rule, with the gin binding's name in the message."""
    return imaging.check_scale(value, name=f"`{name}`")


def check_kernel(name: str, value) -> tuple[int, int]:
    """Accepts an int k or a pair (kh, kw) of positive ints; returns the pair."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ValueError(f"`{name}` must be an int or a pair of ints, got {value!r}.")
    for k in value:
        check_positive_int(name, k)
    return int(value[0]), int(value[1])


def num_doublings(scale: int) -> int:
    """log2 of a power-of-2 scale: the number of ×2 upsampling stages."""
    return scale.bit_length() - 1


def normalization_layer(kind: str, name: str) -> keras.layers.Layer | None:
    """A BatchNormalization layer for "batch" / "sync_batch", None for "none".

    "sync_batch" computes the batch statistics over the global batch across replicas, so the
    model's output does not depend on how many replicas share the batch.
    """
    if kind == "batch":
        return keras.layers.BatchNormalization(name=name)
    if kind == "sync_batch":
        return keras.layers.BatchNormalization(synchronized=True, name=name)
    return None


def activation_layer(kind: str, name: str, *, leaky_relu_slope: float = 0.2) -> keras.layers.Layer:
    """A ReLU, PReLU (one slope per channel, so it works at any image size) or LeakyReLU."""
    if kind == "relu":
        return keras.layers.ReLU(name=name)
    if kind == "prelu":
        return keras.layers.PReLU(shared_axes=[1, 2], name=name)
    return keras.layers.LeakyReLU(negative_slope=leaky_relu_slope, name=name)
