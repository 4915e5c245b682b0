"""Real-world LR synthesis: the high-order blur/resize/noise/JPEG model, in TensorFlow ops.

One implementation of the degradation Real-ESRGAN describes (Wang et al., "Real-ESRGAN:
Training Real-World Blind Super-Resolution with Pure Synthetic Data", ICCVW 2021), written
for ``tf.data``: every random choice comes from a stateless seed, so an example's LR is a
pure function of (HR, seed). The input pipeline derives the seed from (data seed, epoch,
position), so each epoch sees new LR for the same HR and a resumed run is exact.

The model (``RealWorldDegradation``) applied to an HR image ``x`` of size ``H x W``::

    first stage   x = jpeg(noise(resize(blur(x))))            blur/resize/noise/JPEG
    second stage  x = jpeg(noise(resize(blur?(x))))           with probability second_order_prob
    final         x = jpeg(sinc?(resize_to(H/s, W/s)(x)))     or the JPEG first (50/50)

``blur`` draws one kernel per image: isotropic or anisotropic Gaussian, generalized
Gaussian (shape beta), plateau (shape beta), or a 2-D sinc (ideal low-pass with ringing),
of odd size 7..21 on a fixed 21x21 grid (smaller kernels are zero-padded, so shapes stay
static). ``resize`` scales up, down or keeps the size with area, bilinear or bicubic
interpolation (antialiased: this project never makes LR with an aliasing resize, see
DESIGN.md). ``noise`` is Gaussian (sigma in 8-bit levels) or Poisson (shot noise, scaled),
either colour (independent per channel) or grey (the same on all channels). ``jpeg`` is a
real libjpeg round trip at a random quality.

Differences from the reference implementation, on purpose: borders are replicated, not
reflected, so tiny intermediate images are fine; resizes are antialiased; the HR target is
not unsharp-masked; Poisson noise uses 256 intensity levels (the reference counts the
image's unique values, which is 256 for natural 8-bit photographs).

Images are float32 in [0, 1], ``HxWx3``, one at a time (map it over a dataset).
"""

from __future__ import annotations

import dataclasses
import math

import gin
import numpy as np
import tensorflow as tf

from dlss_dist import imaging

KERNEL_GRID = 21  # every blur kernel lives on this odd grid; larger sizes are refused
KERNEL_TYPES = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)
RESIZE_METHODS = ("area", "bilinear", "bicubic")
# ITU-R BT.601 luma weights (what OpenCV's BGR2GRAY uses), for grey Poisson noise.
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)


# ---------------------------------------------------------------- stateless randomness


class _Draws:
    """Hands out independent stateless seeds derived from one seed, in a fixed order.

    Every draw folds a counter into the seed, so the n-th draw of an image is the same
    whatever happened to other images (no shared generator state).
    """

    def __init__(self, seed):
        self._seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
        self._count = 0

    def seed(self) -> tf.Tensor:
        self._count += 1
        return tf.random.experimental.stateless_fold_in(self._seed, self._count)

    def uniform(self, low, high) -> tf.Tensor:
        return tf.random.stateless_uniform([], self.seed(), low, high, dtype=tf.float32)

    def bernoulli(self, probability: float) -> tf.Tensor:
        return self.uniform(0.0, 1.0) < probability

    def categorical(self, probabilities) -> tf.Tensor:
        logits = tf.math.log(tf.constant([probabilities], tf.float32))
        return tf.random.stateless_categorical(logits, 1, self.seed(), dtype=tf.int32)[0, 0]

    def odd_size(self, low: int, high: int) -> tf.Tensor:
        """An odd integer in [low, high], uniformly (Real-ESRGAN's kernel sizes)."""
        index = tf.random.stateless_uniform(
            [], self.seed(), 0, (high - low) // 2 + 1, dtype=tf.int32
        )
        return low + 2 * index


# ---------------------------------------------------------------- kernels


def _grid(size: int = KERNEL_GRID) -> tuple[tf.Tensor, tf.Tensor]:
    half = (size - 1) / 2
    axis = tf.range(size, dtype=tf.float32) - half
    y, x = tf.meshgrid(axis, axis, indexing="ij")
    return x, y


def _support_mask(kernel_size, grid: int = KERNEL_GRID) -> tf.Tensor:
    """1 inside the centred ``kernel_size`` square of the grid, 0 outside."""
    x, y = _grid(grid)
    half = (tf.cast(kernel_size, tf.float32) - 1.0) / 2.0
    return tf.cast((tf.abs(x) <= half) & (tf.abs(y) <= half), tf.float32)


def _quadratic_form(sigma_x, sigma_y, theta, grid: int = KERNEL_GRID) -> tf.Tensor:
    """``p^T S^-1 p`` on the grid for the covariance ``S = R diag(sx^2, sy^2) R^T``."""
    x, y = _grid(grid)
    cos, sin = tf.cos(theta), tf.sin(theta)
    # Coordinates in the kernel's principal axes.
    u = cos * x + sin * y
    v = -sin * x + cos * y
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def gaussian_kernel(
    sigma_x, sigma_y=None, theta=0.0, *, kernel_size=KERNEL_GRID, grid: int = KERNEL_GRID
) -> tf.Tensor:
    """A normalised (anisotropic) Gaussian: ``exp(-q / 2)``; ``sigma`` in pixels.

    Args:
      sigma_x: standard deviation along the first principal axis, pixels.
      sigma_y: along the second (None: isotropic, = sigma_x).
      theta: rotation of the principal axes, radians.
      kernel_size: odd support size; the kernel is zero outside it.
      grid: the odd size of the returned array.

    Returns:
      ``grid x grid`` float32 kernel summing to 1.
    """
    return _normalised(
        tf.exp(
            -0.5 * _quadratic_form(sigma_x, sigma_x if sigma_y is None else sigma_y, theta, grid)
        ),
        kernel_size,
        grid,
    )


def generalized_gaussian_kernel(
    sigma_x, sigma_y, theta, beta, *, kernel_size=KERNEL_GRID, grid: int = KERNEL_GRID
) -> tf.Tensor:
    """``exp(-q^beta / 2)``: beta < 1 is peakier and heavier-tailed, beta > 1 flatter."""
    q = _quadratic_form(sigma_x, sigma_y, theta, grid)
    return _normalised(tf.exp(-0.5 * tf.pow(q, beta)), kernel_size, grid)


def plateau_kernel(
    sigma_x, sigma_y, theta, beta, *, kernel_size=KERNEL_GRID, grid: int = KERNEL_GRID
) -> tf.Tensor:
    """``1 / (1 + q^beta)``: a flat top with polynomial tails (out-of-focus-like)."""
    q = _quadratic_form(sigma_x, sigma_y, theta, grid)
    return _normalised(1.0 / (1.0 + tf.pow(q, beta)), kernel_size, grid)


def sinc_kernel(cutoff, *, kernel_size=KERNEL_GRID, grid: int = KERNEL_GRID) -> tf.Tensor:
    """The circular ideal low-pass ``w J1(w r) / (2 pi r)``, cutoff ``w`` in radians/pixel.

    Its side lobes produce the ringing and overshoot seen around edges in sharpened or
    over-compressed images; ``w = pi`` passes everything the pixel grid can hold.
    """
    x, y = _grid(grid)
    radius = tf.sqrt(x**2 + y**2)
    safe = tf.where(radius > 0, radius, tf.ones_like(radius))
    values = cutoff * tf.math.special.bessel_j1(cutoff * safe) / (2.0 * math.pi * safe)
    values = tf.where(radius > 0, values, tf.fill(tf.shape(radius), cutoff**2 / (4.0 * math.pi)))
    return _normalised(values, kernel_size, grid)


def identity_kernel(grid: int = KERNEL_GRID) -> tf.Tensor:
    """The pulse: filtering with it changes nothing."""
    center = (grid - 1) // 2
    return tf.scatter_nd([[center, center]], [1.0], [grid, grid])


def _normalised(values: tf.Tensor, kernel_size, grid: int) -> tf.Tensor:
    values = values * _support_mask(kernel_size, grid)
    return values / tf.reduce_sum(values)


# ---------------------------------------------------------------- image operations


def _replicate_pad(image: tf.Tensor, pad: int) -> tf.Tensor:
    """Edge padding for any image size (tf.pad's REFLECT needs size > pad)."""

    def along(values, axis):
        length = tf.shape(values)[axis]
        index = tf.clip_by_value(tf.range(-pad, length + pad), 0, length - 1)
        return tf.gather(values, index, axis=axis)

    return along(along(image, 0), 1)


def filter2d(image: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """Convolves each channel of an ``HxWxC`` image with a square odd kernel (same size)."""
    size = kernel.shape[0]
    channels = image.shape[-1] or 3
    padded = _replicate_pad(image, size // 2)[None]
    # depthwise_conv2d correlates; flip so this is a true convolution (kernels may be
    # asymmetric only through rotation, which flipping maps onto itself, but be exact).
    flipped = tf.reverse(kernel, axis=[0, 1])
    filters = tf.tile(flipped[:, :, None, None], [1, 1, channels, 1])
    return tf.nn.depthwise_conv2d(padded, filters, [1, 1, 1, 1], "VALID")[0]


def resize(image: tf.Tensor, height, width, method: str) -> tf.Tensor:
    """Resizes with one of `RESIZE_METHODS`; bilinear and bicubic are antialiased."""
    if method not in RESIZE_METHODS:
        raise ValueError(f"resize method must be one of {RESIZE_METHODS}, got {method!r}")
    size = tf.stack([tf.cast(height, tf.int32), tf.cast(width, tf.int32)])
    return tf.image.resize(image[None], size, method=method, antialias=method != "area")[0]


def _resize_by_index(image: tf.Tensor, height, width, method_index: tf.Tensor) -> tf.Tensor:
    branches = [(lambda m=method: resize(image, height, width, m)) for method in RESIZE_METHODS]
    return tf.switch_case(method_index, branches)


def add_gaussian_noise(image: tf.Tensor, sigma, seed, *, gray=False) -> tf.Tensor:
    """Adds zero-mean Gaussian noise of std ``sigma`` (in [0, 1] units); not clipped.

    ``gray`` (a bool or scalar bool tensor) adds the same noise to all three channels.
    """
    shape = tf.shape(image)
    colour = tf.random.stateless_normal(shape, seed)
    grey = tf.random.stateless_normal(tf.concat([shape[:2], [1]], 0), seed)
    noise = tf.where(tf.cast(gray, tf.bool), tf.broadcast_to(grey, shape), colour)
    return image + sigma * noise


def add_poisson_noise(image: tf.Tensor, scale, seed, *, gray=False, levels=256) -> tf.Tensor:
    """Adds shot noise: ``(Poisson(levels x) / levels - x) * scale``; not clipped.

    The pixel value x is taken as an expected photon count of ``levels * x``, so noise std
    at value x is ``scale * sqrt(x / levels)``. ``gray`` draws the noise for the luma and
    adds it to all channels.
    """
    image = tf.clip_by_value(tf.round(image * 255.0), 0.0, 255.0) / 255.0
    luma = tf.reduce_sum(image * tf.constant(_GRAY_WEIGHTS), axis=-1, keepdims=True)
    base = tf.where(tf.cast(gray, tf.bool), tf.broadcast_to(luma, tf.shape(image)), image)
    gray_draw = tf.random.stateless_poisson(tf.shape(luma), seed, luma * levels, dtype=tf.float32)
    colour_draw = tf.random.stateless_poisson(
        tf.shape(image), seed, image * levels, dtype=tf.float32
    )
    draw = tf.where(
        tf.cast(gray, tf.bool), tf.broadcast_to(gray_draw, tf.shape(image)), colour_draw
    )
    return image + scale * (draw / levels - base)


def jpeg(image: tf.Tensor, quality) -> tf.Tensor:
    """A libjpeg encode/decode round trip at integer ``quality`` (1-100), 4:2:0 chroma."""
    image = tf.clip_by_value(image, 0.0, 1.0)
    return tf.image.adjust_jpeg_quality(image, tf.cast(quality, tf.int32))


def quantize(image: tf.Tensor) -> tf.Tensor:
    """Clips to [0, 1] and rounds to the 256 levels of an 8-bit image."""
    return tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0) / 255.0


# ---------------------------------------------------------------- the configurable model


def _check_range(name: str, value, low=None, high=None) -> tuple[float, float]:
    if len(value) != 2 or value[0] > value[1]:
        raise ValueError(f"{name} must be a (low, high) pair with low <= high, got {value!r}")
    if (low is not None and value[0] < low) or (high is not None and value[1] > high):
        raise ValueError(f"{name}={value!r} is outside [{low}, {high}]")
    return float(value[0]), float(value[1])


def _check_probabilities(name: str, value, count: int) -> tuple[float, ...]:
    if len(value) != count or any(p < 0 for p in value) or not math.isclose(sum(value), 1.0):
        raise ValueError(f"{name} must be {count} probabilities summing to 1, got {value!r}")
    return tuple(float(p) for p in value)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DegradationStage:
    """One blur -> resize -> noise -> JPEG round of the high-order model.

    Defaults are Real-ESRGAN's first stage (``train_realesrgan_x4plus.yml``).

    Attributes:
      blur_prob: probability that this stage blurs at all (second stage: 0.8).
      kernel_size_range: odd kernel sizes drawn uniformly from this range, <= 21.
      kernel_probs: probabilities of `KERNEL_TYPES` (iso, aniso, generalized_iso,
        generalized_aniso, plateau_iso, plateau_aniso), given a non-sinc blur.
      sinc_prob: probability that the blur is a sinc kernel instead.
      sigma_range: Gaussian-family sigmas (each axis), HR pixels; first 0.2-3, second 0.2-1.5.
      generalized_beta_range: generalized Gaussian shape; half the draws are below 1.
      plateau_beta_range: plateau shape.
      resize_probs: probabilities of (up, down, keep).
      resize_range: (smallest down factor, largest up factor); first 0.15-1.5 (of the HR
        size), second 0.3-1.2 (of the LR size).
      gaussian_noise_prob: Gaussian noise, else Poisson noise.
      noise_sigma_range: Gaussian noise std in 8-bit levels; first 1-30, second 1-25.
      poisson_scale_range: Poisson noise multiplier; first 0.05-3, second 0.05-2.5.
      gray_noise_prob: probability that the noise is the same on all channels.
      jpeg_quality_range: JPEG quality, integers within 1-100; Real-ESRGAN uses 30-95.
    """

    blur_prob: float = 1.0
    kernel_size_range: tuple[int, int] = (7, 21)
    kernel_probs: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    sigma_range: tuple[float, float] = (0.2, 3.0)
    generalized_beta_range: tuple[float, float] = (0.5, 4.0)
    plateau_beta_range: tuple[float, float] = (1.0, 2.0)
    resize_probs: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_sigma_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_quality_range: tuple[int, int] = (30, 95)

    def __post_init__(self):
        for name in ("blur_prob", "sinc_prob", "gaussian_noise_prob", "gray_noise_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        low, high = self.kernel_size_range
        if low < 1 or high > KERNEL_GRID or low > high or low % 2 == 0 or high % 2 == 0:
            raise ValueError(
                f"kernel_size_range must be odd sizes within [1, {KERNEL_GRID}], "
                f"got {self.kernel_size_range!r}"
            )
        _check_probabilities("kernel_probs", self.kernel_probs, len(KERNEL_TYPES))
        _check_probabilities("resize_probs", self.resize_probs, 3)
        _check_range("sigma_range", self.sigma_range, low=1e-3)
        _check_range("generalized_beta_range", self.generalized_beta_range, low=1e-3)
        _check_range("plateau_beta_range", self.plateau_beta_range, low=1e-3)
        lo, hi = _check_range("resize_range", self.resize_range, low=1e-3)
        if lo > 1.0 or hi < 1.0:
            raise ValueError(f"resize_range must contain 1, got {self.resize_range!r}")
        _check_range("noise_sigma_range", self.noise_sigma_range, low=0.0)
        _check_range("poisson_scale_range", self.poisson_scale_range, low=0.0)
        _check_range("jpeg_quality_range", self.jpeg_quality_range, low=1, high=100)


SECOND_STAGE = DegradationStage(
    blur_prob=0.8,
    sigma_range=(0.2, 1.5),
    resize_probs=(0.3, 0.4, 0.3),
    resize_range=(0.3, 1.2),
    noise_sigma_range=(1.0, 25.0),
    poisson_scale_range=(0.05, 2.5),
)


def random_kernel(draws: _Draws, stage: DegradationStage) -> tf.Tensor:
    """One blur kernel of the stage's family, on the 21x21 grid (sums to 1)."""
    size = draws.odd_size(*stage.kernel_size_range)
    kind = draws.categorical(stage.kernel_probs)
    isotropic = tf.equal(kind % 2, 0)  # iso, generalized_iso, plateau_iso are even indices
    sigma_x = draws.uniform(*stage.sigma_range)
    sigma_y = tf.where(isotropic, sigma_x, draws.uniform(*stage.sigma_range))
    theta = tf.where(isotropic, 0.0, draws.uniform(-math.pi, math.pi))
    # Shapes: half the draws below 1 and half above, as the reference does.
    low_half = draws.bernoulli(0.5)
    g_low, g_high = stage.generalized_beta_range
    beta_g = tf.where(
        low_half, draws.uniform(g_low, min(1.0, g_high)), draws.uniform(max(1.0, g_low), g_high)
    )
    p_low, p_high = stage.plateau_beta_range
    beta_p = tf.where(
        low_half, draws.uniform(p_low, min(1.0, p_high)), draws.uniform(max(1.0, p_low), p_high)
    )
    family = kind // 2  # 0 Gaussian, 1 generalized, 2 plateau
    kernels = tf.stack(
        [
            gaussian_kernel(sigma_x, sigma_y, theta, kernel_size=size),
            generalized_gaussian_kernel(sigma_x, sigma_y, theta, beta_g, kernel_size=size),
            plateau_kernel(sigma_x, sigma_y, theta, beta_p, kernel_size=size),
        ]
    )
    blur = tf.gather(kernels, family)
    # Small sinc kernels cannot hold low cutoffs: the reference uses pi/3.. below 13 taps.
    cutoff = tf.where(
        size < 13, draws.uniform(math.pi / 3, math.pi), draws.uniform(math.pi / 5, math.pi)
    )
    sinc = sinc_kernel(cutoff, kernel_size=size)
    return tf.where(draws.bernoulli(stage.sinc_prob), sinc, blur)


def _apply_stage(
    image: tf.Tensor, draws: _Draws, stage: DegradationStage, *, base_height, base_width
) -> tf.Tensor:
    """Blur, resize relative to (base_height, base_width), noise, JPEG.

    The first stage resizes relative to the HR size, the second relative to the LR size
    (as Real-ESRGAN does), so the second stage's noise and JPEG act at about LR scale.
    """
    kernel = random_kernel(draws, stage)
    blurred = filter2d(image, kernel)
    image = tf.where(draws.bernoulli(stage.blur_prob), blurred, image)

    direction = draws.categorical(stage.resize_probs)  # 0 up, 1 down, 2 keep
    low, high = stage.resize_range
    factor = tf.gather(
        tf.stack([draws.uniform(1.0, high), draws.uniform(low, 1.0), tf.constant(1.0)]),
        direction,
    )
    height = tf.maximum(1, tf.cast(tf.cast(base_height, tf.float32) * factor, tf.int32))
    width = tf.maximum(1, tf.cast(tf.cast(base_width, tf.float32) * factor, tf.int32))
    method = draws.categorical([1 / 3, 1 / 3, 1 / 3])
    image = _resize_by_index(image, height, width, method)

    gray = draws.bernoulli(stage.gray_noise_prob)
    sigma = draws.uniform(*stage.noise_sigma_range) / 255.0
    poisson_scale = draws.uniform(*stage.poisson_scale_range)
    noise_seed = draws.seed()
    image = tf.cond(
        draws.bernoulli(stage.gaussian_noise_prob),
        lambda: add_gaussian_noise(image, sigma, noise_seed, gray=gray),
        lambda: add_poisson_noise(image, poisson_scale, noise_seed, gray=gray),
    )
    q_low, q_high = stage.jpeg_quality_range
    quality = tf.random.stateless_uniform(
        [], draws.seed(), int(q_low), int(q_high) + 1, dtype=tf.int32
    )
    return jpeg(image, quality)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class RealWorldDegradation:
    """The high-order model: two `DegradationStage`s, then sinc + resize to size + JPEG.

    Attributes:
      scale: HR -> LR factor; the LR of an ``H x W`` image is ``H/scale x W/scale``.
      first: the first stage (Real-ESRGAN's first-stage defaults).
      second: the second stage (Real-ESRGAN's second-stage defaults: lighter blur).
      second_order_prob: probability of applying the second stage (Real-ESRGAN: 1).
      final_sinc_prob: probability of a sinc filter in the final step (0.8); its kernel
        size is drawn from 7..21 and cutoff from pi/3..pi.
      final_jpeg_quality_range: the last JPEG's quality range (30-95).
    """

    scale: int = 4
    first: DegradationStage = DegradationStage()
    second: DegradationStage = SECOND_STAGE
    second_order_prob: float = 1.0
    final_sinc_prob: float = 0.8
    final_jpeg_quality_range: tuple[int, int] = (30, 95)

    def __post_init__(self):
        if self.scale < 1:
            raise ValueError(f"scale must be >= 1, got {self.scale!r}")
        for name in ("second_order_prob", "final_sinc_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        _check_range("final_jpeg_quality_range", self.final_jpeg_quality_range, low=1, high=100)

    def __call__(self, hr: tf.Tensor, seed) -> tf.Tensor:
        """Degrades one HR image.

        Args:
          hr: ``HxWx3`` uint8 or float32 in [0, 1]; H and W divisible by `scale`.
          seed: shape-[2] integer stateless seed; the same seed gives the same LR.

        Returns:
          ``H/scale x W/scale x 3`` uint8 LR image.
        """
        if hr.dtype == tf.uint8:
            hr = tf.cast(hr, tf.float32) / 255.0
        shape = tf.shape(hr)
        tf.debugging.assert_equal(
            shape[:2] % self.scale,
            0,
            message=f"an HR image's size is not divisible by scale {self.scale}",
        )
        out_height, out_width = shape[0] // self.scale, shape[1] // self.scale
        draws = _Draws(seed)
        image = _apply_stage(hr, draws, self.first, base_height=shape[0], base_width=shape[1])
        second_seed = draws.seed()
        apply_second = draws.bernoulli(self.second_order_prob)
        image = tf.cond(
            apply_second,
            lambda: _apply_stage(
                image,
                _Draws(second_seed),
                self.second,
                base_height=out_height,
                base_width=out_width,
            ),
            lambda: image,
        )
        # Final: resize to the LR size + optional sinc, and the last JPEG, in random order.
        final_size = draws.odd_size(7, KERNEL_GRID)
        sinc = sinc_kernel(draws.uniform(math.pi / 3, math.pi), kernel_size=final_size)
        kernel = tf.where(draws.bernoulli(self.final_sinc_prob), sinc, identity_kernel())
        method = draws.categorical([1 / 3, 1 / 3, 1 / 3])
        q_low, q_high = self.final_jpeg_quality_range
        quality = tf.random.stateless_uniform(
            [], draws.seed(), int(q_low), int(q_high) + 1, dtype=tf.int32
        )

        def resize_then_jpeg():
            resized = _resize_by_index(image, out_height, out_width, method)
            return jpeg(filter2d(resized, kernel), quality)

        def jpeg_then_resize():
            resized = _resize_by_index(jpeg(image, quality), out_height, out_width, method)
            return filter2d(resized, kernel)

        image = tf.cond(draws.bernoulli(0.5), resize_then_jpeg, jpeg_then_resize)
        lr = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0), tf.uint8)
        static = hr.shape
        if static[0] is not None and static[1] is not None:
            lr.set_shape([static[0] // self.scale, static[1] // self.scale, 3])
        else:
            lr.set_shape([None, None, 3])
        return lr

    @property
    def name(self) -> str:
        return f"realworld_x{self.scale}"


# ---------------------------------------------------------------- evaluation degradations


@dataclasses.dataclass(frozen=True)
class EvaluationDegradation:
    """A deterministic, named HR -> LR function for reproducible evaluation.

    Attributes:
      name: what ``dlss-eval --degradation`` selects and metrics.json records.
      blur_sigma: isotropic Gaussian blur on the HR image before downscaling, HR pixels
        (0: none); a 21-tap kernel.
      noise_sigma: Gaussian colour noise std on the LR image, 8-bit levels (0: none); its
        seed comes from the image's key, so the same file always gets the same noise.
      jpeg_quality: JPEG quality of the LR image (None: no JPEG).
    The downscale is always the project's bicubic (`imaging.degrade_bicubic`).
    """

    name: str
    blur_sigma: float = 0.0
    noise_sigma: float = 0.0
    jpeg_quality: int | None = None

    def spec(self) -> dict:
        """The JSON-able description recorded in metrics.json."""
        return {
            "name": self.name,
            "blur": f"isotropic Gaussian sigma={self.blur_sigma} HR px, {KERNEL_GRID} taps"
            if self.blur_sigma
            else None,
            "downscale": "bicubic_matlab_antialias",
            "noise": f"Gaussian colour sigma={self.noise_sigma}/255, seed from the image key"
            if self.noise_sigma
            else None,
            "jpeg_quality": self.jpeg_quality,
        }

    def __call__(self, hr: np.ndarray, scale: int, *, key: str) -> np.ndarray:
        """Degrades a uint8 ``HxWx3`` HR image (H, W divisible by scale) to uint8 LR."""
        image = hr
        if self.blur_sigma:
            blurred = filter2d(
                tf.constant(hr, tf.float32) / 255.0, gaussian_kernel(self.blur_sigma)
            )
            image = (quantize(blurred) * 255.0).numpy().round().astype(np.uint8)
        lr = imaging.degrade_bicubic(image, scale)
        if self.noise_sigma or self.jpeg_quality is not None:
            values = tf.constant(lr, tf.float32) / 255.0
            if self.noise_sigma:
                values = add_gaussian_noise(values, self.noise_sigma / 255.0, key_seed(key))
            if self.jpeg_quality is not None:
                values = jpeg(values, self.jpeg_quality)
            lr = (quantize(values) * 255.0).numpy().round().astype(np.uint8)
        return lr


def key_seed(key: str) -> tf.Tensor:
    """A stateless seed from a string (CRC32 of its UTF-8 bytes): stable across runs."""
    import zlib

    return tf.constant([zlib.crc32(key.encode("utf-8")), 20_211_231], tf.int64)


EVALUATION_DEGRADATIONS = {
    "bicubic": EvaluationDegradation("bicubic"),
    # A phone/web photo: a little optical blur, sensor noise, medium JPEG.
    "realistic": EvaluationDegradation(
        "realistic", blur_sigma=1.5, noise_sigma=5.0, jpeg_quality=75
    ),
}


def evaluation_degradation(name: str) -> EvaluationDegradation:
    """Looks up a named evaluation degradation; the error lists the valid names."""
    try:
        return EVALUATION_DEGRADATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown evaluation degradation {name!r}; choose one of "
            f"{sorted(EVALUATION_DEGRADATIONS)}"
        ) from None
